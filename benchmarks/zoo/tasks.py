"""The zoo's tasks: scikit-learn's digits in three input layouts, and a synthetic memory task for sequence models.

digits        scikit-learn's bundled ``load_digits`` (1797 8x8 grey images, 10 classes, chance ≈ 0.10), pixels
              divided by 16 (to [0, 1], as ``benchmarks/remedies.py``); as flat 64-feature rows (``digits``), as
              1x8x8 images (``digits-1x8x8``) or as 3x8x8 images with the grey channel repeated, the way a
              grey dataset is fed to a colour network (``digits-3x8x8``). Trained bar: 0.90 held-out accuracy
              (``trial.trained_accuracy``).
hold-first-T  ``hold_first(T)``: 2000 sequences of T uniform tokens from a vocabulary of 16; the label at *every*
              position is the first token's class (token mod 8; chance 0.125), so the model must carry the first
              token to the end. Per-position labels make the task learnable in a few hundred steps: position t
              asks for a memory of t steps, so the short lags train first and the gradient at every lag from 1 to
              T-1 is in the loss. What blocks a vanilla ``nn.RNN`` is the gradient through time: from position t
              back to the first input it is a product of t recurrent Jacobians, which decays geometrically (or
              explodes), so only positions near the start are learned. A gated network of the same size (the
              healthy reference, ``gru_reference``) carries the token across the whole sequence within the budget;
              the trained bar is 0.90 × its measured held-out accuracy. The same inputs are also given as one-hot
              float vectors (``hold-first-onehot-T``) for recurrent models without an embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn

VOCAB = 16
SEQ_CLASSES = 8
SEQ_SAMPLES = 2000
DIGITS_BAR = 0.90
REFERENCE_FRACTION = 0.90


@dataclass(frozen=True)
class Task:
    """One task: ``data()`` gives ``(inputs, targets)`` for ``run_trial``; ``bar`` is what "trained" means, fixed
    (digits) or relative to a healthy reference model (sequences; see ``reference``)."""

    name: str
    bar: float | None  # None: REFERENCE_FRACTION × the healthy reference's measured accuracy
    reference_hidden: int | None = None  # sequence tasks: the hidden size of the healthy GRU reference

    def data(self) -> tuple[Tensor, Tensor]:
        return _data(self.name)


@cache
def _digits() -> tuple[Tensor, Tensor]:
    digits = load_digits()
    return torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target, dtype=torch.long)


@cache
def _hold_first(length: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1234 + length)
    x = torch.randint(0, VOCAB, (SEQ_SAMPLES, length), generator=g)
    y = (x[:, :1] % SEQ_CLASSES).expand(SEQ_SAMPLES, length).clone()
    return x, y


def _data(name: str) -> tuple[Tensor, Tensor]:
    if name == "digits":
        return _digits()
    if name == "digits-1x8x8":
        x, y = _digits()
        return x.view(-1, 1, 8, 8), y
    if name == "digits-3x8x8":
        x, y = _digits()
        return x.view(-1, 1, 8, 8).expand(-1, 3, 8, 8).contiguous(), y
    if name.startswith("hold-first-onehot-T"):
        x, y = _hold_first(int(name.rsplit("T", 1)[1]))
        return nn.functional.one_hot(x, VOCAB).float(), y
    if name.startswith("hold-first-T"):
        return _hold_first(int(name.rsplit("T", 1)[1]))
    raise KeyError(f"unknown task {name!r}")


def digits(layout: str = "flat") -> Task:
    name = {"flat": "digits", "1x8x8": "digits-1x8x8", "3x8x8": "digits-3x8x8"}[layout]
    return Task(name, DIGITS_BAR)


def hold_first(length: int, *, onehot: bool = False, hidden: int = 64) -> Task:
    name = f"hold-first-onehot-T{length}" if onehot else f"hold-first-T{length}"
    return Task(name, None, reference_hidden=hidden)
