"""Pseudo-normalization: identity forward, gradient divided by its RMS on the way back.

DEFAULTS_PLACEHOLDER
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["PseudoNorm", "pseudo_norm", "DEFAULT_EPS", "DEFAULT_SCALE", "DEFAULT_PER_SAMPLE"]

DEFAULT_PER_SAMPLE = True
DEFAULT_SCALE = 1.0
# Far below any gradient worth rescuing (depth-30 default-init MLPs reach ~1e-8), far above float32's
# denormals, so a vanished but non-zero gradient is restored almost fully while an exact zero stays zero.
DEFAULT_EPS = 1e-12

# How the defaults read in generated code (empty: the defaults are what a user should start from).
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


def _check(per_sample: bool, eps: float, scale: float) -> None:
    if not isinstance(per_sample, bool):
        raise ConfigError(f"PseudoNorm per_sample must be a bool, got {per_sample!r}")
    if not (math.isfinite(eps) and eps > 0):
        raise ConfigError(f"PseudoNorm eps must be a finite number > 0, got {eps!r}")
    if not (math.isfinite(scale) and scale > 0):
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

    ``per_sample=True`` takes the RMS over the non-batch dimensions of each sample (dim 0 is the batch), so
    every sample's gradient is restored to RMS ``scale``; ``per_sample=False`` takes one RMS over the whole
    tensor. 0-D and 1-D tensors are always normalised as a whole. Half-precision gradients are reduced in
    float32 and cast back. An exactly zero gradient stays zero. The module has no parameters and no buffers.
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
