"""``trial``: prove a remedy by training. Copies of one model, from the same weights, are trained untreated
(``none``) and with each candidate remedy for the same steps on the same minibatches; the held-out numbers say
which remedy helps, and by how much.

Decisions (README, "gradscope trial"; the numbers are the ``trial`` section of the config):

- **Data.** The model file's ``dataset()`` → ``(inputs, targets)``, two tensors with the same first dimension
  and at least ``MIN_SAMPLES`` rows. Integer targets mean classes: cross-entropy for outputs ``(B, C)`` with
  targets ``(B,)`` or ``(B, T, C)`` with ``(B, T)``. Float targets mean regression: mean squared error against
  an output of the target's shape (or the same number of elements per sample). Without ``dataset()``: a
  synthetic task of Gaussian class clusters in the probe's input shape (``data.synthetic_task``).
- **Split.** A seeded permutation; the last ``trial.test_fraction`` (at least one sample) is held out.
- **Minibatches.** Consecutive chunks of a stream of seeded permutations of the training indices: every batch
  has ``batch_size`` samples (capped at the training-set size) and every run sees exactly the same batches.
- **Optimizer.** ``sgd`` (plain) or ``adam`` (torch defaults otherwise). A remedy's penalty
  (``Patched.penalty()``) is added to the loss; its ``clip_norm`` clips the global gradient norm before the step.
- **Divergence.** A non-finite training loss stops the run; it is reported as diverged, with no held-out
  numbers, and is never the best.
- **Numbers.** ``final_train_loss`` and the held-out numbers are measured after training, in eval mode, over
  the whole training / held-out set. The curve is the per-step training loss, averaged over at most
  ``CURVE_POINTS`` equal buckets of the requested steps, so point i means the same steps in every run.
- **Verdict.** The best remedy is the non-diverged one with the highest held-out accuracy (the lowest held-out
  loss without classes; ties go to the lower held-out loss, then to the earlier candidate). It helps when its
  accuracy beats the untreated run's by at least ``trial.helps_accuracy``, or, without classes, when its held-out
  loss is at least ``trial.helps_loss_ratio`` lower; or when the untreated run diverged and it did not.
- **State.** The caller's model is never modified (remedies are applied to deep copies); the global RNGs are
  seeded per run (dropout draws the same masks in every run) and put back afterwards. Same seed, same numbers.
"""

from __future__ import annotations

from .data import check_data, dataset_from, synthetic_task
from .planning import REMEDY_NAMES, SELECTORS, UNTREATED, Plan, parse_remedies, plan
from .results import SCHEMA, DataInfo, Run, Task, TrialReport, verdict
from .train import run_trial

__all__ = [
    "SCHEMA",
    "REMEDY_NAMES",
    "SELECTORS",
    "UNTREATED",
    "DataInfo",
    "Plan",
    "Run",
    "Task",
    "TrialReport",
    "check_data",
    "dataset_from",
    "parse_remedies",
    "plan",
    "run_trial",
    "synthetic_task",
    "verdict",
]
