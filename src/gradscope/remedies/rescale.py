"""Per-layer rescaling as a reparameterization, and the weight penalty (Ven & Lederer's two remedies).

Rescaling
---------
A *uniform* rescaled activation ``α·tanh(z/α)`` changes nothing that training cannot undo: it only rescales
the input and the biases (research.md reports the null result). A *per-layer* gain is different.
:func:`apply_rescale` re-expresses a layer's weight as

    W = gain · raw,        raw initialised to W / gain,

so the function the network computes is unchanged at the moment of application (bit for bit when ``gain``
is a power of two; otherwise within one float rounding of ``gain·(W/gain)``, a relative 2⁻²⁴ per element in
float32). What changes is how the layer learns: by the chain rule

    ∂L/∂raw = gain · ∂L/∂W,

so one SGD step ``raw ← raw − lr·∂L/∂raw`` moves the effective weight by

    ΔW = gain · Δraw = −gain² · lr · ∂L/∂W,

i.e. the layer's effective SGD learning rate is ``gain²·lr``. Adam divides by the gradient's own scale, so
there ``|Δraw| ≈ lr`` and ``ΔW ≈ gain·Δraw``: the effective step grows like ``gain``, not ``gain²``. A coupled
L2 term ``λ‖raw‖²`` equals ``(λ/gain²)‖W‖²``; decoupled weight decay (AdamW) shrinks ``raw`` and ``W`` alike.
Ven and Lederer's ``W_k → (α_{k-1}/α_k)·W_k`` is this operator with ``gain = α_{k-1}/α_k`` on layer k.

It uses :mod:`torch.nn.utils.parametrize`, which keeps the *same* ``nn.Parameter`` object (its storage now
holds ``raw``), so an optimizer built before :func:`apply_rescale` keeps stepping the right tensor; its moment
buffers, however, were accumulated in units of W. The state-dict key moves from ``weight`` to
``parametrizations.weight.original``; :func:`remove_rescale` bakes ``gain·raw`` back into a plain parameter
(the same object again) under the original key.

Regularization
--------------
:func:`weight_penalty` is ``λ·Σ‖W‖²`` over weight matrices and kernels (not biases, not the 1-D gains of norm
layers): it pulls saturated weights back to where ``φ'`` is of order one. The public replication in
research.md found λ ≈ 0.01 best on a large-init tanh MLP and λ > 0.2 worse than none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import ConfigError

__all__ = ["Rescale", "apply_rescale", "remove_rescale", "rescale_gain", "rescale_layers", "weight_penalty"]


class Rescale(nn.Module):
    """The parametrization ``W = gain · raw`` (``right_inverse``: ``raw = W / gain``)."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        if isinstance(gain, bool) or not (isinstance(gain, (int, float)) and math.isfinite(gain) and gain > 0):
            raise ConfigError(f"rescale gain must be a finite number > 0, got {gain!r}")
        # A float, not a buffer: a constant to torch.compile, and the gain is a choice, not state to train.
        self.gain = float(gain)

    def forward(self, raw: Tensor) -> Tensor:
        return raw * self.gain

    def right_inverse(self, weight: Tensor) -> Tensor:
        return weight / self.gain

    def extra_repr(self) -> str:
        return f"gain={self.gain:g}"


def _plist(module: nn.Module, name: str) -> nn.ModuleList:
    """The ``ParametrizationList`` of ``module.<name>``; its ``original`` is the stored tensor."""
    return cast(nn.ModuleList, cast(nn.ModuleDict, module.parametrizations)[name])


def _rescales(module: nn.Module, name: str) -> list[nn.Module] | None:
    """The parametrizations on ``module.<name>``, or None when it has none."""
    if not parametrize.is_parametrized(module, name):
        return None
    return list(_plist(module, name))


def rescale_gain(module: nn.Module, name: str = "weight") -> float | None:
    """The gain :func:`apply_rescale` put on ``module.<name>``, or None when it is not rescaled."""
    plist = _rescales(module, name)
    if plist and len(plist) == 1 and isinstance(plist[0], Rescale):
        return plist[0].gain
    return None


def apply_rescale(module: nn.Module, gain: float, name: str = "weight") -> nn.Module:
    """Reparameterize ``module.<name>`` as ``gain · raw``, keeping the module's output; returns ``module``.

    Applying it again to a rescaled tensor replaces the gain (the current effective weight is kept), so gains
    do not silently compound. A tensor that carries another parametrization is refused: putting a gain on top
    of it would change the forward function. The parameter's storage now holds ``raw``, so a weight tied to
    another module would change that module too: :func:`rescale_layers` refuses tied weights.
    """
    rescale = Rescale(gain)  # validates before anything is touched
    plist = _rescales(module, name)
    if plist is not None:
        if rescale_gain(module, name) is None:
            kinds = ", ".join(type(p).__name__ for p in plist)
            raise ConfigError(
                f"{type(module).__name__}.{name} is already parametrized ({kinds}); remove "
                f"those parametrizations before rescaling it"
            )
        remove_rescale(module, name)
    tensor = getattr(module, name, None)
    if not isinstance(tensor, nn.Parameter):
        raise ConfigError(
            f"{type(module).__name__}.{name} is not a parameter (got {type(tensor).__name__}); "
            f"only a module's own parameters can be rescaled"
        )
    if not tensor.is_floating_point():
        raise ConfigError(f"{type(module).__name__}.{name} has dtype {tensor.dtype}; rescaling needs floats")
    parametrize.register_parametrization(module, name, rescale)
    return module


def remove_rescale(module: nn.Module, name: str = "weight") -> nn.Module:
    """Bake the current effective weight ``gain · raw`` back into a plain parameter; returns ``module``."""
    if rescale_gain(module, name) is None:
        raise ConfigError(f"{type(module).__name__}.{name} carries no rescale to remove")
    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return module


def rescale_layers(model: nn.Module, gains: Mapping[str, float], name: str = "weight") -> nn.Module:
    """:func:`apply_rescale` on each submodule named (as ``named_modules()`` names it) in ``gains``.

    All names are checked before any layer is changed, so a typo leaves the model untouched. A weight shared
    with another module (tied embeddings) is refused: its storage would hold ``raw`` for the other one too.
    """
    modules = dict(model.named_modules(remove_duplicate=False))
    missing = [layer for layer in gains if layer not in modules]
    if missing:
        raise ConfigError(f"no such layer(s) to rescale: {', '.join(missing)}")
    owners: dict[int, list[str]] = {}
    for mod_name, mod in modules.items():
        for pname, p in mod.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{mod_name}.{pname}" if mod_name else pname)
    for layer in gains:
        tensor = getattr(modules[layer], name, None)
        shared = owners.get(id(tensor), []) if isinstance(tensor, nn.Parameter) else []
        if len(shared) > 1:
            raise ConfigError(f"cannot rescale {layer}.{name}: it is tied to {', '.join(shared)}")
    for layer, gain in gains.items():
        apply_rescale(modules[layer], gain, name)
    return model


def _penalised(module: nn.Module) -> Iterable[tuple[int, Tensor]]:
    """(identity, effective tensor) of each weight a module owns directly: names starting with ``weight`` (so
    RNN ``weight_ih_l0`` too) with at least two dimensions (so not biases or norm-layer gains)."""
    names = [n for n, _ in module.named_parameters(recurse=False)]
    if parametrize.is_parametrized(module):
        names += list(cast(nn.ModuleDict, module.parametrizations).keys())
    for n in names:
        if not n.startswith("weight"):
            continue
        tensor = getattr(module, n)  # a parametrized name evaluates to the effective weight, gain·raw
        if not isinstance(tensor, Tensor) or tensor.dim() < 2 or not tensor.is_floating_point():
            continue
        # Tied weights are told apart by the stored tensor; a parametrized getattr builds a new one each time.
        key = _plist(module, n).original if parametrize.is_parametrized(module, n) else tensor
        yield id(key), tensor


def weight_penalty(modules_or_params: nn.Module | Iterable[nn.Module | Tensor], lam: float) -> Tensor:
    """``lam · Σ‖W‖²`` (squared Frobenius norms), differentiable, accumulated in at least float32.

    A module (or modules) contributes every weight matrix/kernel in it — parameters named ``weight*`` with two
    or more dimensions, rescaled ones through their effective weight — and never biases or 1-D norm gains.
    Tensors passed directly are all penalised, since the caller chose them. A shared weight counts once.
    """
    if isinstance(lam, bool) or not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
        raise ConfigError(f"weight_penalty lam must be a finite number >= 0, got {lam!r}")
    items: Iterable[nn.Module | Tensor] = (
        [modules_or_params] if isinstance(modules_or_params, (nn.Module, Tensor)) else modules_or_params
    )
    seen: set[int] = set()
    tensors: list[Tensor] = []
    for item in items:
        if isinstance(item, Tensor):
            found: Iterable[tuple[int, Tensor]] = [(id(item), item)]
        elif isinstance(item, nn.Module):
            found = (pair for m in item.modules() for pair in _penalised(m))
        else:
            raise ConfigError(f"weight_penalty takes modules or tensors, got {type(item).__name__}")
        for key, tensor in found:
            if key not in seen:
                seen.add(key)
                tensors.append(tensor)
    if not tensors:
        return torch.zeros(())
    acc = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    device = tensors[0].device
    total = torch.zeros((), dtype=acc, device=device)
    for t in tensors:
        total = total + t.to(acc).pow(2).sum().to(device)
    return total * lam
