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
- **Seeds.** Every arm is trained once per seed (``trial.seeds``, default 3: seeds ``probe.seed``, +1, …). A
  seed draws the minibatch order, dropout, and — when the model can be built again (``gradscope trial`` rebuilds
  the model file; the library's ``build=``) — the initial weights; all arms of one seed start from the same
  weights and see the same batches. The held-out split is the same for every seed.
- **Minibatches.** Consecutive chunks of a stream of seeded permutations of the training indices: every batch
  has ``batch_size`` samples (capped at the training-set size) and every arm of a seed sees exactly the same
  batches.
- **Optimizer.** ``sgd`` (plain) or ``adam`` (torch defaults otherwise). A remedy's penalty
  (``Patched.penalty()``) is added to the loss; its ``clip_norm`` clips the global gradient norm before the step.
- **Divergence.** A non-finite training loss stops the run; it is reported as diverged, with no held-out
  numbers, and is never the best.
- **Numbers.** ``final_train_loss`` and the held-out numbers are measured after training, in eval mode, over
  the whole training / held-out set. The curve is the per-step training loss, averaged over at most
  ``CURVE_POINTS`` equal buckets of the requested steps, so point i means the same steps in every run.
- **Verdict.** Per arm, the seeds' held-out accuracy (held-out loss without classes) gives a mean and a
  min–max; a diverged seed counts as accuracy 0 (loss ∞). The best remedy has the best mean among the arms
  that diverged on no seed (the earlier candidate wins a tie). It helps when its mean beats the untreated mean
  by at least ``trial.helps_accuracy`` (without classes: a held-out loss at least ``trial.helps_loss_ratio``
  lower) *and* the gap is real: its worst seed beats the untreated best seed, or the gap exceeds both arms'
  seed spread (max − min); or when every untreated seed diverged and none of its own did.
- **State.** The caller's model is never modified (remedies are applied to deep copies); the global RNGs are
  seeded per run (dropout draws the same masks in every run) and put back afterwards. Same seed, same numbers.
"""

from __future__ import annotations

from .data import check_data, dataset_from, synthetic_task
from .planning import REMEDY_NAMES, SELECTORS, UNTREATED, Plan, parse_remedies, plan, untrained
from .results import SCHEMA, Arm, DataInfo, Run, Stat, Task, TrialReport, verdict
from .train import run_trial

__all__ = [
    "SCHEMA",
    "REMEDY_NAMES",
    "SELECTORS",
    "UNTREATED",
    "DataInfo",
    "Plan",
    "Arm",
    "Run",
    "Stat",
    "Task",
    "TrialReport",
    "check_data",
    "dataset_from",
    "parse_remedies",
    "plan",
    "run_trial",
    "synthetic_task",
    "untrained",
    "verdict",
]
