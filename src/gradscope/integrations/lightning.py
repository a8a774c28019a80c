"""``GradscopeCallback``: ``gradscope.watch`` inside a Lightning ``Trainer``.

``Trainer(callbacks=[GradscopeCallback(every=100, log="run.jsonl")])``. The watch starts at ``on_fit_start`` and
records in ``on_before_optimizer_step`` (after backward, gradient accumulation and AMP unscaling, before the step:
the gradients the optimizer will use); ``callback.watch.report()`` after ``fit``. Imports ``lightning`` (or the
older ``pytorch_lightning``) when this module is imported, not before.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - the older package name
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError as exc:
        raise ImportError("gradscope.integrations.lightning needs Lightning: pip install lightning") from exc

from ..watching import Watch, watch


class GradscopeCallback(Callback):  # type: ignore[misc]
    def __init__(self, **watch_kwargs: Any) -> None:
        super().__init__()
        self.watch_kwargs = watch_kwargs
        self.watch: Watch | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.watch = watch(pl_module, **self.watch_kwargs).__enter__()

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.watch is not None:
            self.watch.step()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.watch is not None:
            self.watch.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.watch is not None:
            self.watch.close()
