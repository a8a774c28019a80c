"""The zoo as a gradscope model file: ``GRADSCOPE_ZOO_MODEL=<name> gradscope trial benchmarks/zoo/target.py``.

``build_model()`` builds the named zoo entry, ``dataset()`` gives its task's data (the whole set: the trial holds
out its own split), ``example_inputs()`` the first 64 inputs of that data (so the scan probes with real inputs:
token ids for the sequence models, images in their layout). The entry's optimizer is passed by the caller
(``--optimizer sgd`` for the entries marked sgd). ``benchmarks/repair.py`` sets the variable and calls the same
library function the CLI calls (``gradscope.pipeline.trial_target``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from torch import nn

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.zoo import BY_NAME, Entry  # noqa: E402

VARIABLE = "GRADSCOPE_ZOO_MODEL"


def _entry() -> Entry:
    name = os.environ.get(VARIABLE)
    if not name or name not in BY_NAME:
        raise SystemExit(f"set {VARIABLE} to a zoo model name (benchmarks/zoo/__init__.py), got {name!r}")
    return BY_NAME[name]


def build_model() -> nn.Module:
    return _entry().build()


def dataset() -> Any:
    return _entry().task.data()


def example_inputs() -> Any:
    return _entry().task.data()[0][:64]
