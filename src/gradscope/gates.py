"""Gates closed at init by design: LayerScale (γ = 1e-6), a zero-initialised head or residual norm, ReZero (α = 0),
adaLN-zero, LoRA's zero B. The branch behind such a gate starts with a tiny or zero gradient on purpose and opens in
the first steps, because the gate's own gradient is healthy.

A gate is told from the numbers: a trainable parameter (not a bias) whose RMS is below ``diagnose.gate_closed`` of
its nominal scale (1 for a vector or scalar, 1/√fan-in for a matrix or kernel) while its own gradient is not
vanishing. Which findings the gates explain is measured, not guessed: the scan is repeated with the gates opened
(vectors set to 1, matrices drawn at 1/√fan-in), and whatever disappears was the gates' doing.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .config import DiagnoseConfig
from .diagnose import Diagnosis
from .recorder import norms
from .records import Gate, Gating
from .vocab import Rule, Severity, Status


@dataclass(frozen=True)
class Candidate:
    gate: Gate
    param: nn.Parameter


def worth_checking(diagnosis: Diagnosis) -> bool:
    """Gates only matter when the scan found something to explain (and nothing non-finite)."""
    return diagnosis.nonfinite_origin is None and any(
        f.severity.rank >= Severity.WARNING.rank or f.rule == Rule.ZERO_GRADIENT for f in diagnosis.findings
    )


def find(
    model: nn.Module,
    reference: float | None,
    config: DiagnoseConfig,
    grad_norms: Mapping[int, float],
    additive: Collection[int] = (),
) -> list[Candidate]:
    """Parameters closed next to their nominal scale whose gradient is alive: ``grad_norms`` (id(parameter) → its
    largest gradient norm over the probe batches, as the recorder keeps it), else ``.grad`` (the last batch's).
    Neither a bias nor a parameter in ``additive`` (ids of those that are only added or joined: a class token, a
    position table) holds anything shut. One fused norm call and one host read for all parameters."""
    if reference is None or not math.isfinite(reference) or reference <= 0:
        return []
    named = [
        (name, p)
        for name, p in model.named_parameters()
        if p.requires_grad
        and (id(p) in grad_norms or p.grad is not None)
        and p.is_floating_point()
        and not _is_bias(name)
        and id(p) not in additive
    ]
    if not named:
        return []
    unknown = [p for _, p in named if id(p) not in grad_norms]  # measured per call: only .grad says
    tensors = [p.detach() for _, p in named] + [p.grad.detach() for p in unknown if p.grad is not None]
    with torch.no_grad():
        host = torch.stack([n.to(tensors[0].device) for n in norms(tensors)]).cpu().tolist()
    n = len(named)
    from_grad = dict(zip((id(p) for p in unknown), host[n:], strict=True))
    closed: list[tuple[str, nn.Parameter, float, float]] = []
    for (name, p), weight_norm in zip(named, host[:n], strict=True):
        grad_norm = grad_norms[id(p)] if id(p) in grad_norms else from_grad[id(p)]
        rms = weight_norm / math.sqrt(p.numel())
        if rms <= config.gate_closed * _nominal(p):
            closed.append((name, p, rms, grad_norm / math.sqrt(p.numel()) / reference))
    # A gate is the exception in its model: a zero head, LayerScale gains, LoRA's B next to its A. When most weight
    # matrices are that small it is a tiny init (a broken stack), not a design: only gains (vectors) can be gates.
    matrices = [p for _, p in named if p.dim() >= 2]
    tiny_init = 2 * sum(1 for _, p, _, _ in closed if p.dim() >= 2) > len(matrices)
    return [
        Candidate(Gate(name, rms, ratio), p)
        for name, p, rms, ratio in closed
        if math.isfinite(ratio) and ratio >= config.gate_alive and not (tiny_init and p.dim() >= 2)
    ]


def _is_bias(name: str) -> bool:
    """A bias adds, it gates nothing: ``bias``, ``bias_ih_l0``, and MultiheadAttention's ``in_proj_bias``."""
    last = name.rsplit(".", 1)[-1]
    return last.startswith("bias") or last.endswith("_bias")


def _nominal(p: torch.Tensor) -> float:
    """The scale a parameter of this shape has when it is open: 1 for a gain, 1/√fan-in for a weight."""
    if p.dim() <= 1:
        return 1.0
    fan_in = p.numel() // p.shape[0]
    return 1.0 / math.sqrt(max(fan_in, 1))


@contextlib.contextmanager
def opened(candidates: Sequence[Candidate], seed: int) -> Iterator[None]:
    """The gates set to their nominal scale (gains to 1, weights drawn at 1/√fan-in) for the block, then put back."""
    saved = [c.param.detach().clone() for c in candidates]
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            for c in candidates:
                p = c.param
                if p.dim() <= 1:
                    p.fill_(1.0)
                else:
                    draw = torch.randn(tuple(p.shape), generator=generator) * _nominal(p)
                    p.copy_(draw.to(device=p.device, dtype=p.dtype))
        yield
    finally:
        with torch.no_grad():
            for c, value in zip(candidates, saved, strict=True):
                c.param.copy_(value)


# Findings about a layer's own gradient: the layers a gate explains here must not set the reference.
_GRADIENT_RULES = frozenset({Rule.VANISHING_GRADIENT, Rule.EXPLODING_GRADIENT, Rule.ZERO_GRADIENT, Rule.UNDERFLOW})


def explained(
    candidates: Sequence[Candidate], owners: Mapping[str, str], before: Diagnosis, after: Diagnosis
) -> Gating | None:
    """The layers flagged before the gates were opened and not after, per rule. ``owners``: parameter name →
    the layer that owns it."""
    flagged_after = {(f.rule, name) for f in after.findings for name in f.layers}
    layers: set[str] = set()
    quiet: set[str] = set()
    rules: list[str] = []
    for f in before.findings:
        if f.severity.rank < Severity.WARNING.rank and f.rule != Rule.ZERO_GRADIENT:
            continue
        gone = [name for name in f.layers if (f.rule, name) not in flagged_after]
        if gone:
            layers.update(gone)
            rules.append(str(f.rule))
            if f.rule in _GRADIENT_RULES:
                quiet.update(gone)
    # An exact zero upstream of a zero gate is a status without a finding of its own when the gate layer is the
    # one blocking (zero_gradient is then info): the layers it turned from zero to a live gradient.
    live_after = {la.name for la in after.layers if la.status is Status.OK}
    zeros = {la.name for la in before.layers if la.status in (Status.ZERO, Status.UNDERFLOW) and la.name in live_after}
    layers |= zeros
    quiet |= zeros
    if not layers:
        return None
    persisting: dict[str, str] = {}
    for f in after.findings:
        if f.severity.rank > Severity(persisting.get(f.rule, "info")).rank:
            persisting[str(f.rule)] = f.severity.value
    gate_owners = frozenset(owners[c.gate.parameter] for c in candidates if c.gate.parameter in owners)
    return Gating(
        tuple(c.gate for c in candidates),
        frozenset(layers),
        frozenset(quiet),
        gate_owners,
        tuple(dict.fromkeys(rules)) or (str(Rule.ZERO_GRADIENT),),
        tuple(persisting.items()),
    )
