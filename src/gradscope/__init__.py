"""gradscope: gradient-flow diagnostics for PyTorch.

The public names are loaded lazily so that ``import gradscope`` (and ``gradscope --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import display as _display
from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from .errors import ConfigError, GradscopeError, ModelLoadError, ProbeError
    from .loading import load
    from .results import Report
    from .scanner import scan
    from .trial import run_trial
    from .watching import watch

__all__ = [
    "__version__",
    "scan",
    "load",
    "Report",
    "GradscopeError",
    "ModelLoadError",
    "ProbeError",
    "ConfigError",
    "run_trial",
    "watch",
]

_LAZY = {
    "scan": "gradscope.scanner",
    "load": "gradscope.loading",
    "Report": "gradscope.results",
    "GradscopeError": "gradscope.errors",
    "ModelLoadError": "gradscope.errors",
    "ProbeError": "gradscope.errors",
    "ConfigError": "gradscope.errors",
    "run_trial": "gradscope.trial",
    "watch": "gradscope.watching",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gradscope' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _show(kind: str, result: object) -> Any:
    from .report.notebook import show

    return show(kind, result)


_display.install(_show)  # results render themselves in Jupyter and rich (gradscope.display)
