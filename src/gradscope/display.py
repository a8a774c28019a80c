"""How a result shows itself in a notebook (``_repr_html_``) and in rich (``__rich__``) without importing the
renderers: results sit at the bottom of the package and the renderers above them.

The package (``gradscope/__init__.py``, which always runs before any of its modules) installs the one function
that renders; it imports the renderers only when a result is first shown, so neither ``import gradscope`` nor
``import gradscope.results`` loads them (or rich).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Show = Callable[[str, object], Any]  # (kind: "html" | "rich", result) -> an HTML string or a rich renderable

_show: Show | None = None


def install(show: Show) -> None:
    global _show
    _show = show


def show(kind: str, result: object) -> Any:
    if _show is None:  # pragma: no cover - the package installs it on import
        raise RuntimeError("gradscope's renderers are not installed (import gradscope first)")
    return _show(kind, result)


class Displayable:
    """Mixin for a result dataclass: rich and Jupyter render it as ``gradscope``'s terminal and HTML reports."""

    __slots__ = ()

    def _repr_html_(self) -> str:
        return str(show("html", self))

    def __rich__(self) -> Any:
        return show("rich", self)
