"""A trial's data: the model file's ``dataset()`` checked, or a synthetic task; the split and the minibatches."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .. import probes
from ..errors import GradscopeError, ProbeError
from ..loading import ModelFileHooks
from ..torchutil import device_of, float_dtype, set_training
from ..util import describe
from .results import TOKEN_LAG

MIN_SAMPLES = 5


def dataset_from(hooks: ModelFileHooks) -> tuple[Tensor, Tensor] | None:
    """Call the model file's ``dataset()`` and check its form; None when the file has none."""
    if hooks.dataset is None:
        return None
    try:
        data = hooks.dataset()
    except GradscopeError:
        raise
    except Exception as exc:
        raise ProbeError(f"dataset() raised {describe(exc)}") from None
    return check_data(data, "dataset()")


def check_data(data: Any, label: str = "data") -> tuple[Tensor, Tensor]:
    """``(inputs, targets)``: two tensors, same first dimension, at least MIN_SAMPLES rows, finite inputs."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        kind = (
            f"a {type(data).__name__} of length {len(data)}"
            if isinstance(data, (tuple, list))
            else f"a {type(data).__name__}"
        )
        raise ProbeError(f"{label} returned {kind}; it must return a pair (inputs, targets) of tensors")
    inputs, targets = data
    for what, value in (("inputs", inputs), ("targets", targets)):
        if not isinstance(value, Tensor):
            raise ProbeError(
                f"{label} {what} is a {type(value).__name__}; return torch tensors "
                "(e.g. torch.tensor(x, dtype=torch.float32))"
            )
        if value.dim() == 0:
            raise ProbeError(f"{label} {what} is a 0-d tensor; the first dimension must index the samples")
    if inputs.shape[0] != targets.shape[0]:
        raise ProbeError(
            f"{label} returned {inputs.shape[0]} inputs but {targets.shape[0]} targets; the first dimensions must match"
        )
    if inputs.shape[0] < MIN_SAMPLES:
        raise ProbeError(
            f"{label} returned {inputs.shape[0]} sample(s); a trial needs at least "
            f"{MIN_SAMPLES} (one fifth is held out)"
        )
    if targets.dtype == torch.bool or targets.is_complex():
        raise ProbeError(f"{label} targets are {targets.dtype}; use int64 class labels or float regression targets")
    for what, value in (("inputs", inputs), ("targets", targets)):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ProbeError(f"{label} {what} contain NaN or Inf values; return finite data")
    return inputs, targets


def synthetic_task(model: nn.Module, example: Any, *, seed: int, samples: int) -> tuple[Tensor, Tensor]:
    """A learnable task in the shape of ``example`` (one probe batch; None: the inferred input shape).

    Float inputs: C Gaussian class clusters (C = the model's output classes), class means and noise both N(0, 1)
    per element, scaled by 1/√2 so the inputs have unit variance; for inputs with channels (``(C, L)``,
    ``(C, H, W)``, …) half of each class mean's variance is a per-channel level, so the classes survive global
    average pooling. The classes are far apart, so a healthy model learns them quickly.

    Token ids ``(B, T)``: uniform random tokens of the model's vocabulary; the label is the class (id modulo C) of
    the token ``TOKEN_LAG`` positions back — from the end for ``(B, C)`` logits, from each position for
    ``(B, T, C)`` (the first token where there is none that far back). A model learns it only if the gradient
    carries that far back through the sequence: what a recurrent model's through-time remedies are about.

    Raises ProbeError (advising ``dataset()``) when the model does not take one such tensor or does not output
    ``(B, C)`` (``(B, T, C)`` for tokens) logits with C ≥ 2."""
    advice = "define dataset() in the model file returning (inputs, targets) tensors"
    if example is None:
        try:
            example = probes.build_batches(
                model, ModelFileHooks(), n=1, batch_size=2, seed=seed, device=device_of(model)
            )[0]
        except ProbeError as exc:
            raise ProbeError(f"no dataset() and no synthetic task for this model ({exc}); {advice}") from None
    batch = example
    tokens = isinstance(batch, Tensor) and batch.dtype == torch.int64 and batch.dim() == 2
    if not isinstance(batch, Tensor) or not (batch.is_floating_point() or tokens):
        kind = (
            f"{batch.dtype} tensor of shape {tuple(batch.shape)}" if isinstance(batch, Tensor) else type(batch).__name__
        )
        raise ProbeError(
            f"no dataset() in the model file, and the synthetic task needs one float input tensor or one (batch, "
            f"length) tensor of token ids; this model takes a {kind}: {advice}"
        )
    try:
        with torch.no_grad(), kept_mode(model):
            set_training(model, False)
            out = output_tensor(probes.call_model(model, batch))
    except ProbeError:
        raise
    except Exception as exc:
        raise ProbeError(
            f"the model's forward failed on a synthetic batch of shape {tuple(batch.shape)} ({describe(exc)}); {advice}"
        ) from None
    generator = torch.Generator().manual_seed(seed)
    if tokens:
        return _token_task(model, batch, out, generator, samples, advice)
    if out.dim() != 2 or out.shape[1] < 2:
        raise ProbeError(
            f"no dataset() in the model file, and the synthetic task needs (batch, classes) "
            f"logits; this model outputs shape {tuple(out.shape)}: {advice}"
        )
    classes = int(out.shape[1])
    sample_shape = tuple(batch.shape[1:])
    means = torch.randn((classes, *sample_shape), generator=generator)
    if len(sample_shape) >= 2:  # (channels, *spatial): a per-channel level survives global pooling
        level = torch.randn((classes, sample_shape[0], *([1] * (len(sample_shape) - 1))), generator=generator)
        means = (means + level) / math.sqrt(2.0)
    labels = torch.randint(0, classes, (samples,), generator=generator)
    noise = torch.randn((samples, *sample_shape), generator=generator)
    inputs = ((means[labels] + noise) / math.sqrt(2.0)).to(batch.dtype)
    return inputs, labels


def _token_task(
    model: nn.Module, batch: Tensor, out: Tensor, generator: torch.Generator, samples: int, advice: str
) -> tuple[Tensor, Tensor]:
    length = int(batch.shape[1])
    per_position = out.dim() == 3 and out.shape[1] == length
    if not (out.dim() == 2 or per_position) or out.shape[-1] < 2:
        raise ProbeError(
            f"no dataset() in the model file, and the synthetic token task needs (batch, classes) or (batch, "
            f"length, classes) logits; this model outputs shape {tuple(out.shape)}: {advice}"
        )
    classes = int(out.shape[-1])
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    vocab = embedding.num_embeddings if embedding is not None else int(batch.max()) + 1
    inputs = torch.randint(0, vocab, (samples, length), generator=generator)
    lag = min(TOKEN_LAG, length - 1)
    if per_position:
        back = (torch.arange(length) - lag).clamp(min=0)
        return inputs, inputs[:, back] % classes
    return inputs, inputs[:, length - 1 - lag] % classes


def inputs_are_floats(data: tuple[Tensor, Tensor]) -> bool:
    return bool(data[0].is_floating_point())


def cast_inputs(inputs: Tensor, model: nn.Module) -> Tensor:
    # dataset() often hands over float64 (numpy's default); the model computes in its own dtype.
    return inputs.to(float_dtype(model)) if inputs.is_floating_point() else inputs


def split(n: int, seed: int, test_fraction: float) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    test = max(1, round(n * test_fraction))
    return perm[: n - test], perm[n - test :]


def batch_order(train_idx: Tensor, batch: int, steps: int, seed: int) -> Tensor:
    """(steps, batch) training indices: consecutive chunks of a stream of seeded permutations."""
    generator = torch.Generator().manual_seed(seed + 1)  # not the split's stream
    n = int(train_idx.numel())
    needed = steps * batch
    epochs = -(-needed // n)
    stream = torch.cat([train_idx[torch.randperm(n, generator=generator)] for _ in range(epochs)])
    return stream[:needed].view(steps, batch)


@contextlib.contextmanager
def kept_mode(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag


def output_tensor(output: Any) -> Tensor:
    # Under no_grad the output does not require grad, which select_output (made for backward) refuses.
    tensor = probes.find_output_tensor(output)
    if tensor is None or not tensor.is_floating_point():
        raise ProbeError(f"the model returned {type(output).__name__}, which holds no floating-point tensor")
    return tensor
