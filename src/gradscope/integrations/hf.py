"""``GradscopeTrainerCallback``: ``gradscope.watch`` inside a Hugging Face ``Trainer``.

``Trainer(..., callbacks=[GradscopeTrainerCallback(every=100, log="run.jsonl")])``. The watch starts at
``on_train_begin`` and records in ``on_pre_optimizer_step`` (transformers >= 4.41: after backward and gradient
accumulation, before the step); ``callback.watch.report()`` after training. Imports ``transformers`` when this
module is imported, not before.
"""

from __future__ import annotations

from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:
    raise ImportError("gradscope.integrations.hf needs transformers: pip install transformers") from exc

from ..watching import Watch, watch


class GradscopeTrainerCallback(TrainerCallback):  # type: ignore[misc]
    def __init__(self, **watch_kwargs: Any) -> None:
        self.watch_kwargs = watch_kwargs
        self.watch: Watch | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is not None:
            self.watch = watch(model, **self.watch_kwargs).__enter__()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watch is not None:
            self.watch.step()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watch is not None:
            self.watch.close()
