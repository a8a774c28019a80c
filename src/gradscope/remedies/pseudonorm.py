"""Pseudo-normalization: identity in the forward pass, the gradient divided by its RMS on the way back.

Bu et al. (Entropy 2025) "enlarge some gradients by dividing them by the root mean square ... every few layers";
Backward Gradient Normalization (Cabana & Lago-Fernández, arXiv 2106.09475) is the closest public operator. Here
the incoming gradient ``g`` becomes ``g · scale / (rms(g) + eps)``.

Defaults, decided by ``benchmarks/pseudonorm_choices.py`` (digits, MLP 64→64×depth→10, tanh and sigmoid, depth
20 and 30, PyTorch-default and Xavier init, SGD lr 0.1 and Adam lr 1e-3, 300 minibatch steps of 64, 2 seeds;
held-out accuracy; "ref" = the RMS of the gradient at the last hidden layer, the output side, which nothing
attenuates; PseudoNorm after every k-th hidden layer)::

                        untreated  s1 k=2  b1 k=2  sref k=2  bref k=1  bref k=2  bref k=4  sdyn k=2
    mean SGD  (8 runs)      0.176   0.102   0.101     0.337     0.333     0.327     0.330     0.335
    mean Adam (8 runs)      0.322   0.318   0.368     0.328     0.358     0.356     0.353     0.301
    tanh d30 xavier SGD     0.10    0.10    0.10      0.91      0.89      0.87      0.91      0.88
    tanh d20 default Adam   0.19    0.20    0.47      0.24      0.45      0.46      0.45      0.10

    (s = per-sample RMS, b = whole-batch RMS; 1 = scale 1, ref = scale ref, dyn = ref re-measured every step.
    All sigmoid runs stay at chance 0.10 whatever the variant: their forward signal has already collapsed,
    between-sample std 7e-9 or less at the last hidden layer, and a backward-only remedy cannot bring it back.)

How far ``scale`` may be off the reference (tanh settings, per-batch, k=2, ``--sensitivity``)::

                 untreated  ref×0.1  ref×1  ref×4  ref×10  ref×100
    mean SGD         0.250    0.416  0.552  0.332   0.143    0.101
    mean Adam        0.543    0.627  0.611  0.636   0.615    0.622

- ``scale``: with SGD the restored RMS must match the output-side gradient closely: ×4 already loses a run
  (tanh d30 Xavier: 0.87 → 0.10), ×10 and scale 1 (about ×900 here) fail outright, ×0.1 keeps half the gain.
  Adam is insensitive. No constant can be right: the reference is ∝ 1/batch size for a mean-reduced loss
  (0.07/B on digits at every depth and init). So pass ``scale=reference_scale(...)`` measured at the training
  batch size. The constructor's default 1.0 is the paper's amplitude, kept so that ``PseudoNorm()`` can be
  built at all; it is only fit for Adam-type optimizers. The per-step re-measured reference ("dyn") did no
  better than one measured before training (SGD 0.335 vs 0.337), so a plain float suffices.
- ``per_sample=False``: one RMS over the whole tensor keeps the loss's relative weighting of samples (a
  per-sample RMS lifts every well-classified sample to the size of the worst ones). With the reference scale
  it matches per-sample on SGD (0.327-0.333 vs 0.337) and beats it on Adam (0.353-0.358 vs 0.328); with
  scale 1 it does so on Adam too (0.368 vs 0.318).
- ``k``: once the scale is right, every 1, 2 or 4 layers are within 0.005 of each other, so insert them where
  the measured signal has fallen (``placement.pseudo_norm_points``), not at a fixed period.
- ``eps=1e-12``: far below any gradient worth rescuing (a depth-30 default-init MLP reaches ~1e-8) and above
  float32's denormals, so a vanished but non-zero gradient is restored to within 1e-4 while an exact zero stays
  zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ProbeError
from ..torchutil import first_float_tensor

__all__ = ["PseudoNorm", "pseudo_norm", "reference_scale", "DEFAULT_EPS", "DEFAULT_SCALE", "DEFAULT_PER_SAMPLE"]

# The reasons and the numbers are in the module docstring.
DEFAULT_PER_SAMPLE = False
DEFAULT_SCALE = 1.0
DEFAULT_EPS = 1e-12

# How the defaults read in generated code. Empty means ``PseudoNorm()``: right for Adam-type optimizers; code
# meant for SGD should carry ``scale=<reference_scale at the training batch size>`` (module docstring).
DEFAULT_PSEUDO_NORM_ARGS = ""

# Reductions of half-precision gradients run in float32: squares of fp16 values underflow below ~2.4e-4 and
# bf16 sums lose the small terms.
_UPCAST = (torch.float16, torch.bfloat16)


def _normalize(grad: Tensor, per_sample: bool, eps: float, scale: float) -> Tensor:
    g = grad.float() if grad.dtype in _UPCAST else grad
    # A 0-D or 1-D tensor has no feature axis: a per-sample RMS of a scalar is |g|, which would turn the
    # gradient into its sign, so such tensors are normalised as a whole.
    if per_sample and g.dim() >= 2:
        ms = g.pow(2).mean(dim=tuple(range(1, g.dim())), keepdim=True)
    else:
        ms = g.pow(2).mean()
    out = g * (scale / (ms.sqrt() + eps))
    return out.to(grad.dtype)


class _PseudoNormFn(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, per_sample: bool, eps: float, scale: float) -> Tensor:
        # A view, not the input itself: autograd needs a distinct output to attach this node to.
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        _, ctx.per_sample, ctx.eps, ctx.scale = inputs

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        return _normalize(grad, ctx.per_sample, ctx.eps, ctx.scale), None, None, None


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check(per_sample: bool, eps: float, scale: float) -> None:
    if not isinstance(per_sample, bool):
        raise ConfigError(f"PseudoNorm per_sample must be a bool, got {per_sample!r}")
    if not _positive(eps):
        raise ConfigError(f"PseudoNorm eps must be a finite number > 0, got {eps!r}")
    if not _positive(scale):
        raise ConfigError(f"PseudoNorm scale must be a finite number > 0, got {scale!r}")


def pseudo_norm(
    x: Tensor, per_sample: bool = DEFAULT_PER_SAMPLE, eps: float = DEFAULT_EPS, scale: float = DEFAULT_SCALE
) -> Tensor:
    """Functional :class:`PseudoNorm`: returns ``x`` as is; its gradient becomes ``g·scale/(rms(g)+eps)``."""
    _check(per_sample, eps, scale)
    return _PseudoNormFn.apply(  # type: ignore[no-untyped-call,no-any-return]
        x, per_sample, float(eps), float(scale)
    )


class PseudoNorm(nn.Module):
    """Identity in the forward pass; in the backward pass the incoming gradient ``g`` becomes
    ``g · scale / (rms(g) + eps)``.

    ``per_sample=False`` (the default) takes one RMS over the whole tensor; ``per_sample=True`` takes it over
    the non-batch dimensions of each sample (dim 0 is the batch), so every sample's gradient is restored to RMS
    ``scale``. 0-D and 1-D tensors are always normalised as a whole. Half-precision gradients are reduced in
    float32 and cast back. An exactly zero gradient stays zero. The module has no parameters and no buffers.

    For SGD pass ``scale=reference_scale(...)``: the default 1.0 makes SGD steps hundreds of times too large
    (module docstring: measured), while Adam-type optimizers do not mind the scale.
    """

    def __init__(
        self, per_sample: bool = DEFAULT_PER_SAMPLE, eps: float = DEFAULT_EPS, scale: float = DEFAULT_SCALE
    ) -> None:
        super().__init__()
        _check(per_sample, eps, scale)
        self.per_sample = per_sample
        # Plain floats, not buffers: they are constants to torch.compile and stay out of the state dict.
        self.eps = float(eps)
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        return _PseudoNormFn.apply(  # type: ignore[no-untyped-call,no-any-return]
            x, self.per_sample, self.eps, self.scale
        )

    def extra_repr(self) -> str:
        return f"per_sample={self.per_sample}, eps={self.eps:g}, scale={self.scale:g}"


def reference_scale(model: nn.Module, layer: nn.Module | str, loss_fn: Callable[[], Tensor]) -> float:
    """The RMS of ∂loss/∂(output of ``layer``): the ``scale`` to give the pseudo-norms below it.

    ``layer`` should be the output side of the attenuating stack, the last hidden layer whose output feeds the
    head (not the logits: their gradient is a few times larger). ``loss_fn()`` runs one forward pass of
    ``model`` on a batch of the *training* batch size and returns the scalar loss: with a mean-reduced loss the
    reference is ∝ 1/batch size. Only this one gradient is computed (``torch.autograd.grad``), so parameters'
    ``.grad`` are left as they were. A layer that runs several times (shared weights) counts every call.
    """
    if isinstance(layer, str):
        try:
            base = layer.partition("#")[0]  # 'block.1#3': the third call of the shared module 'block.1'
            module = model.get_submodule(base) if base else model
        except AttributeError:
            raise ConfigError(f"reference_scale: the model has no layer named '{layer}'") from None
        name = layer
    else:
        module, name = layer, type(layer).__name__
    outputs: list[Tensor] = []

    def keep(_m: nn.Module, _args: Any, out: Any) -> None:
        t = first_float_tensor(out)
        if t is not None and t.requires_grad:
            outputs.append(t)

    handle = module.register_forward_hook(keep)
    try:
        loss = loss_fn()
    finally:
        handle.remove()
    if not outputs:
        raise ProbeError(f"reference_scale: layer '{name}' did not run in loss_fn, or its output needs no gradient")
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise ProbeError("reference_scale: loss_fn must return a scalar tensor")
    grads = [g for g in torch.autograd.grad(loss, outputs, allow_unused=True) if g is not None]
    if not grads:
        raise ProbeError(f"reference_scale: the loss does not depend on the output of layer '{name}'")
    # float32 at least (half-precision squares underflow), not float64 (not every device has it).
    total = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum()
    value = math.sqrt(float(total) / sum(g.numel() for g in grads))  # one host read: a calibration step
    if not (math.isfinite(value) and value > 0):
        raise ProbeError(
            f"reference_scale: the gradient at layer '{name}' is {value:g}; it cannot serve as the "
            f"scale (a layer nearer the output may)"
        )
    return value
