"""Gradient health inside a training loop: ``watch`` records per-layer statistics every Nth step into a JSONL log;
``timeline`` reads such a log back into the same Report ``scan`` gives, plus a per-step timeline."""

from __future__ import annotations

from .timeline import Timeline, build_report, read_log, read_timeline
from .watch import NonFiniteGradientError, OnNonFinite, Watch, WatchMode, watch

__all__ = [
    "NonFiniteGradientError",
    "OnNonFinite",
    "Timeline",
    "Watch",
    "WatchMode",
    "build_report",
    "read_log",
    "read_timeline",
    "watch",
]
