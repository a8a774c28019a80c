"""Rules: recorded numbers → per-layer status, findings and a summary. Every threshold comes from ``DiagnoseConfig``.

Vanishing and exploding are judged scale-free: each trainable layer's gradient RMS is divided by the model's own
reference, the median gradient RMS of the output-side layers (``reference_layers``). A loss twice as large, or a
learning-rate-free rescaling of the whole model, changes no verdict. A separate absolute floor catches underflow:
a gradient RMS below the smallest normal number of its dtype has lost precision whatever the reference says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .config import DiagnoseConfig
from .records import SMALLEST_NORMAL, Gating, LayerKind, LayerRecord, PositionProfile
from .results import Finding, LayerStats, Positions, Spread, Summary
from .util import layer_list, sci, times
from .vocab import STATUS_PRIORITY, Rule, Severity, Status


@dataclass(frozen=True)
class Diagnosis:
    layers: tuple[LayerStats, ...]
    findings: tuple[Finding, ...]
    summary: Summary
    nonfinite_origin: str | None
    forward_collapse: bool
    positions: Positions | None = None


# Statuses a gate explains: what a closed gate does to the layers behind it at init.
_GATEABLE = frozenset({Status.VANISHING, Status.EXPLODING, Status.ZERO, Status.UNDERFLOW, Status.OK})


def diagnose(
    records: Sequence[LayerRecord],
    config: DiagnoseConfig,
    nonfinite_culprit: tuple[str, str] | None = None,
    *,
    profile: PositionProfile | None = None,
    gating: Gating | None = None,
    ignored_outputs: int = 0,
) -> Diagnosis:
    """``nonfinite_culprit``: (name, type) of the first module of any kind whose output was non-finite, when the
    scan looked for it (a module without parameters, such as a custom op, is not a layer but can be the cause).
    ``profile``: the gradient reaching each input position of a sequence model. ``gating``: layers whose small
    gradients a gate closed at init explains (the scan found them by opening the gates); they are ``gated``, and
    left out of the reference, the spread and every other rule. ``ignored_outputs``: output tensors the default
    loss left out (a layer that feeds only those gets no gradient from it)."""
    gated = gating.layers if gating is not None else frozenset()
    quiet = gating.quiet if gating is not None else frozenset()
    # Left out of the forward rules: layers a gate explains, the gates' own layers (their outputs are ~0 by
    # design), and containers (the root, a block that owns a gain): their output is their children's, combined.
    by_design = gated | (gating.owners if gating is not None else frozenset())
    by_design |= {r.name for r in records if r.facts.container}
    stats = [_stats(index, record) for index, record in enumerate(records)]
    # the reference is a weight gradient's scale: not a gated layer's, not an additive one's (a token's)
    quiet = quiet | {r.name for r in records if r.additive}
    reference = _reference([s for s in stats if s.name not in quiet], config.reference_layers)
    growth = _forward_growth(stats, records, config.reference_layers, by_design)
    output_side = _reference_layers([s for s in stats if s.name not in quiet], config.reference_layers)
    statuses = [
        _statuses(s, r, reference, growth, config, s.name in output_side) for s, r in zip(stats, records, strict=True)
    ]
    _underflowed_zeros(stats, statuses, reference, config)
    _flushed_loss_gradient(stats, records, statuses)
    layers = tuple(
        _with_status(s, _status_of(found, s.name in gated)) for s, found in zip(stats, statuses, strict=True)
    )
    findings: list[Finding] = []
    origin = _nonfinite(layers, findings, nonfinite_culprit)
    spread_ratio = _forward_spread_ratio([la for la in layers if la.name not in by_design], config.reference_layers)
    collapse = spread_ratio is not None and spread_ratio < config.collapse_ratio
    positions = _positions(profile)
    saturating = _saturating_stack(records)
    lenient = config.optimizer == "adam" and not saturating
    # A tanh/sigmoid stack whose spread shrinks less than collapse_ratio still trains only partly (README: regimes).
    shrinking = not collapse and saturating and spread_ratio is not None and spread_ratio < config.collapse_warning
    if origin is None:
        if collapse or shrinking:
            assert spread_ratio is not None
            _forward_collapse(
                [la for la in layers if la.name not in by_design], spread_ratio, config, lenient, findings
            )
        if saturating and not collapse:
            _deep_saturating_stack(records, config, findings)
        if growth is not None and growth.ratio > config.exploding_warning:
            _forward_explosion(layers, growth, config, findings)
        collapse_error = collapse and any(
            f.rule == Rule.FORWARD_COLLAPSE and f.severity is Severity.ERROR for f in findings
        )
        _attenuation(
            layers,
            reference,
            config,
            collapse,
            collapse_error,
            lenient,
            _normalized(records),
            findings,
            spread_measured=spread_ratio is not None,
        )
        at_cell = positions is not None and any(r.facts.cell for r in records if r.name == positions.layer)
        _through_time(positions, config, any(r.facts.cell for r in records), findings, at_cell=at_cell)
        _underflow(layers, records, config, findings)
        _saturation(layers, records, config, findings)
        _dead_units(layers, config, findings)
    _zero_and_disconnected(layers, records, findings, ignored_outputs)
    if gating is not None and gated:
        findings = _capped(findings, gating)
        _gated(layers, gating, reference, findings)
    summary = _summary([la for la in layers if la.name not in gated], reference, spread_ratio)
    return Diagnosis(layers, tuple(findings), summary, origin, collapse, positions)


def _status_of(found: list[Status], gated: bool) -> Status:
    status = min(found, key=STATUS_PRIORITY.index)
    return Status.GATED if gated and status in _GATEABLE else status


# -- per layer ---------------------------------------------------------------------------------------------------
def _stats(index: int, r: LayerRecord) -> LayerStats:
    def median(values: list[float]) -> float | None:
        spread = Spread.of(values)
        return None if spread is None else spread.median

    return LayerStats(
        index=index,
        name=r.name,
        type=r.type_name,
        depth=0 if not r.name else r.name.count(".") + 1,
        output_shape=r.output_shape,
        parameters=r.facts.parameters,
        trainable=r.facts.trainable,
        grad_rms=Spread.of(r.grad_rms),
        signal_rms=Spread.of(r.signal_rms),
        activation_rms=Spread.of(r.activation_rms),
        activation_std=Spread.of(r.activation_std),
        weight_rms=r.weight_rms,
        saturated_fraction=median(r.saturated_fraction),
        dead_fraction=median(r.dead_fraction),
        shares_parameters_with=r.facts.shares_parameters_with,
    )


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _reference_layers(stats: Sequence[LayerStats], count: int) -> frozenset[str]:
    """The output-side layers the reference is taken from: they cannot grow "toward the input" from themselves."""
    usable = [s.name for s in stats if s.grad_rms is not None and _usable(s.grad_rms.median)]
    return frozenset(usable[-count:])


def _reference(stats: Sequence[LayerStats], count: int) -> float | None:
    """Median grad RMS of the ``count`` output-side trainable layers: the scale the model's own head trains at."""
    values = [s.grad_rms.median for s in stats if s.grad_rms is not None and _usable(s.grad_rms.median)]
    if not values:
        return None
    tail = sorted(values[-count:])
    mid = len(tail) // 2
    return tail[mid] if len(tail) % 2 else math.sqrt(tail[mid - 1] * tail[mid])


def _nonfinite_spread(s: Spread | None) -> bool:
    return s is not None and not (math.isfinite(s.median) and math.isfinite(s.min) and math.isfinite(s.max))


def _statuses(
    s: LayerStats,
    r: LayerRecord,
    reference: float | None,
    growth: Growth | None,
    c: DiagnoseConfig,
    output_side: bool = False,
) -> list[Status]:
    found = [Status.OK]
    if any(_nonfinite_spread(x) for x in (s.grad_rms, s.signal_rms, s.activation_rms)):
        found.append(Status.NONFINITE)
    facts = r.facts
    if facts.owns_parameters and not facts.trainable:
        found.append(Status.FROZEN)
    if facts.trainable and not r.grad_rms:
        found.append(Status.DISCONNECTED)
    if facts.is_activation and r.order < 0:
        found.append(Status.DISCONNECTED)  # an activation module that never ran
    if facts.is_activation and r.output_needs_grad and not r.signal_rms:
        found.append(Status.DISCONNECTED)
    grad = s.grad_rms.median if s.grad_rms is not None else None
    if grad == 0.0 or (facts.is_activation and s.signal_rms is not None and s.signal_rms.median == 0.0):
        found.append(Status.ZERO)
    dtype = r.grad_dtype if grad is not None else r.signal_dtype
    value = grad if grad is not None else (s.signal_rms.median if s.signal_rms is not None else None)
    if _usable(value) and dtype is not None and value < SMALLEST_NORMAL.get(dtype, 0.0) * c.underflow_margin:  # type: ignore[operator]
        found.append(Status.UNDERFLOW)
    if _usable(grad) and _usable(reference) and not r.additive:
        ratio = grad / reference  # type: ignore[operator]
        if ratio < c.vanishing_warning:
            found.append(Status.VANISHING)
        elif ratio > c.exploding_warning and not output_side:
            found.append(Status.EXPLODING)
    if growth is not None and growth.ratio > c.exploding_warning and s.index in growth.exploding(c.exploding_warning):
        found.append(Status.EXPLODING)
    if s.saturated_fraction is not None and s.saturated_fraction > c.saturated_units:
        found.append(Status.SATURATED)
    if s.dead_fraction is not None and s.dead_fraction > c.dead_units:
        found.append(Status.DEAD)
    return found


def _underflowed_zeros(
    stats: Sequence[LayerStats], statuses: list[list[Status]], reference: float | None, c: DiagnoseConfig
) -> None:
    """An exactly-zero gradient upstream of a vanishing layer is the vanishing gradient rounded to zero: the
    float range ran out (underflow), which is not the same as a zero-valued path."""
    downstream_vanishing = False
    for s, found in zip(reversed(stats), reversed(statuses), strict=True):
        grad = s.grad_rms.median if s.grad_rms is not None else None
        if Status.ZERO in found and downstream_vanishing:
            found.remove(Status.ZERO)
            found.append(Status.UNDERFLOW)
        elif _usable(grad) and _usable(reference):
            downstream_vanishing = grad / reference < c.vanishing_warning  # type: ignore[operator]


def _flushed_loss_gradient(
    stats: Sequence[LayerStats], records: Sequence[LayerRecord], statuses: list[list[Status]]
) -> None:
    """float16: when even the output-side layer's gradient is exactly zero, the loss gradient itself rounded to
    zero on its way into float16 (a tiny loss scale, a mean over many elements). Every exact zero is then underflow,
    which loss scaling fixes — not a zero-valued path, which is what "zero" tells the user to look for."""
    last = next(
        (i for i in reversed(range(len(stats))) if records[i].facts.trainable and stats[i].grad_rms is not None), None
    )
    # grad_dtype for .half() models; signal_dtype (the output's) under autocast, where parameters stay float32
    if (
        last is None
        or Status.ZERO not in statuses[last]
        or "float16" not in (records[last].grad_dtype, records[last].signal_dtype)
    ):
        return
    for found in statuses:
        if Status.ZERO in found:
            found.remove(Status.ZERO)
            found.append(Status.UNDERFLOW)


def _with_status(s: LayerStats, status: Status) -> LayerStats:
    from dataclasses import replace

    return s if s.status is status else replace(s, status=status)


# -- rules -------------------------------------------------------------------------------------------------------
def _names(layers: Sequence[LayerStats]) -> tuple[str, ...]:
    return tuple(layer.name for layer in layers)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2g}"


def _nonfinite(layers: Sequence[LayerStats], findings: list[Finding], culprit: tuple[str, str] | None) -> str | None:
    bad = [layer for layer in layers if layer.status is Status.NONFINITE]
    if not bad:
        return None
    forward = [layer for layer in bad if _nonfinite_spread(layer.activation_rms)]
    if forward and culprit is not None:
        # The first module of any kind whose output went non-finite (found by a second, hooked pass).
        name, kind = culprit
        place = f"the output of '{name}' ({kind}) in the forward pass"
    else:
        if forward:
            origin, where = forward[0], "forward pass (its output)"
        else:
            backward = [layer for layer in bad if _nonfinite_spread(layer.signal_rms)]
            origin = backward[-1] if backward else bad[0]
            where = "backward pass (the gradient of its output)" if backward else "parameter gradients"
        name, kind = origin.name, origin.type
        place = f"'{name}' ({kind}) in the {where}"
    findings.append(
        Finding(
            rule=Rule.NONFINITE,
            severity=Severity.ERROR,
            layers=_names(bad),
            message=f"non-finite values (NaN/Inf) first appear in {place}; {len(bad)} layer(s) are affected after it",
            evidence={
                "first_layer": name,
                "first_layer_type": kind,
                "pass": "forward" if forward else "backward",
                "layers_affected": len(bad),
            },
        )
    )
    return name


def _forward_spread(layer: LayerStats) -> float | None:
    """Between-sample spread relative to the activation's size: scale-free, 1 for centred diverse outputs."""
    if layer.activation_std is None or layer.activation_rms is None:
        return None
    rms = layer.activation_rms.median
    return layer.activation_std.median / rms if rms > 0 else 0.0


def _forward_spread_ratio(layers: Sequence[LayerStats], count: int) -> float | None:
    """Relative spread of the deepest parametric layers over that of the first one."""
    spreads = [
        (layer, v)
        for layer in layers
        if layer.is_parametric and (v := _forward_spread(layer)) is not None and math.isfinite(v)
    ]
    if len(spreads) < 2 or spreads[0][1] <= 0:
        return None
    tail = sorted(v for _, v in spreads[-count:])
    return tail[len(tail) // 2] / spreads[0][1]


def _saturating_stack(records: Sequence[LayerRecord]) -> bool:
    """Whether the model's most common activation module is tanh/sigmoid-type: its contraction comes from the
    nonlinearity itself (tanh′ ≤ 1, σ′ ≤ 1/4), which Adam's rescaling cannot undo. Rectifier-like stacks (ReLU,
    GELU, SiLU, ELU) shrink by their weights' scale, which Adam's per-parameter steps regrow. A model without
    activation modules (functional activations) counts as rectifier-like."""
    acts = [r.facts.saturating for r in records if r.facts.kind is LayerKind.ACTIVATION]
    return bool(acts) and 2 * sum(acts) > len(acts)


def _forward_collapse(
    layers: Sequence[LayerStats], ratio: float, c: DiagnoseConfig, lenient: bool, findings: list[Finding]
) -> None:
    """An error below ``collapse_ratio`` (a warning under Adam in a rectifier-like stack, above
    ``adam_collapse_error``); between ``collapse_ratio`` and ``collapse_warning`` (tanh/sigmoid stacks only) a
    warning that the signal is shrinking: benchmarks/regimes.py, such stacks trained only partly."""
    shrinking = ratio >= c.collapse_ratio
    threshold = c.collapse_warning if shrinking else c.collapse_ratio
    spreads = [(layer, _forward_spread(layer)) for layer in layers if layer.is_parametric]
    first = next(layer for layer, v in spreads if v is not None)
    base = _forward_spread(first) or 1.0
    collapsed = [layer for layer, v in spreads if v is not None and v / base < threshold]
    start = collapsed[0].name if collapsed else layers[-1].name
    # benchmarks/validity.py: under Adam, collapsed rectifier-like stacks trained down to a spread of 3e-6 and
    # failed at 8.5e-8; tanh/sigmoid stacks and every stack under SGD failed from collapse_ratio on.
    failing = not shrinking and (not lenient or ratio < c.adam_collapse_error)
    if shrinking:
        message = (
            f"the forward signal is shrinking: from '{start}' on, outputs differ between samples {times(ratio)} as "
            f"much as at the first layer '{first.name}' (a collapse below {times(c.collapse_ratio)}); tanh/sigmoid "
            f"stacks with a spread below {times(c.collapse_warning)} trained only partly in our measurements"
        )
    else:
        message = (
            f"the forward signal collapses: from '{start}' on, outputs barely differ between samples "
            f"(spread {times(ratio)} that of the first layer '{first.name}'); later layers see one input, and "
            f"no backward-only fix can restore that"
            + (
                ""
                if failing
                else f"; with Adam a rectifier-like stack regrows its scale, so this is a warning until the "
                f"spread falls below {times(c.adam_collapse_error)} (with SGD it is an error)"
            )
        )
    findings.append(
        Finding(
            rule=Rule.FORWARD_COLLAPSE,
            severity=Severity.ERROR if failing else Severity.WARNING,
            layers=_names(collapsed),
            message=message,
            evidence={
                "spread_ratio": ratio,
                "first_layer": first.name,
                "first_collapsed_layer": start,
                "threshold": threshold,
            },
        )
    )


def _deep_saturating_stack(records: Sequence[LayerRecord], c: DiagnoseConfig, findings: list[Finding]) -> None:
    """A warning for ``saturating_depth`` or more tanh/sigmoid-type activation calls without a normalization
    layer: benchmarks/regimes.py, such stacks (depth 30-60 at Xavier or orthogonal init) trained only partly
    although their gradient RMS was flat across depth, which no per-layer RMS rule can see."""
    if any(r.facts.kind is LayerKind.NORM for r in records):
        return
    acts = [r for r in records if r.facts.kind is LayerKind.ACTIVATION and r.facts.saturating and r.order >= 0]
    if len(acts) < c.saturating_depth:
        return
    kinds = sorted({r.facts.activation or "?" for r in acts})
    findings.append(
        Finding(
            rule=Rule.DEEP_SATURATING_STACK,
            severity=Severity.WARNING,
            layers=tuple(r.name for r in acts),
            message=(
                f"{len(acts)} {'/'.join(kinds)} activations run in sequence without normalization: the gradient "
                f"RMS looks even, but stacks of {c.saturating_depth} or more such layers trained only partly in "
                f"our measurements (normalization or residual blocks trained them)"
            ),
            evidence={"depth": len(acts), "threshold": c.saturating_depth},
        )
    )


@dataclass(frozen=True)
class Growth:
    """Forward growth: activation RMS of the deepest weighted layers (Linear/Conv) over the first one's.

    Weighted layers only: an embedding table's scale is arbitrary (GPT-style 0.02) and norm layers reset it, so
    neither says whether the weights amplify the signal layer after layer. Growth compounds only along a chain of
    weighted layers that no norm layer interrupts, so it is measured along the longest such chain (in execution
    order): in a pre-norm transformer or a BatchNorm convnet the chains are a layer or two long, and the sizes of
    layers in different chains say how each is initialised (GPT-2's scaled-down residual projections), not growth."""

    ratio: float
    first: str
    sizes: tuple[tuple[int, float], ...]  # (layer index, activation RMS) of the weighted layers

    def exploding(self, threshold: float) -> set[int]:
        base = self.sizes[0][1]
        return {index for index, size in self.sizes if size / base > threshold}


def _forward_growth(
    stats: Sequence[LayerStats], records: Sequence[LayerRecord], count: int, gated: frozenset[str] = frozenset()
) -> Growth | None:
    chains: list[list[tuple[LayerStats, float]]] = [[]]
    for s, r in zip(stats, records, strict=True):
        if r.facts.kind is LayerKind.NORM and r.order >= 0:  # a norm that ran (one only defined cuts nothing)
            if chains[-1]:
                chains.append([])
        elif (
            r.facts.fan_in is not None
            and s.name not in gated
            and s.activation_rms is not None
            and _usable(s.activation_rms.median)
        ):
            chains[-1].append((s, s.activation_rms.median))
    sizes = max(chains, key=len)
    if len(sizes) < 2:
        return None
    tail = sorted(size for _, size in sizes[-count:])
    return Growth(tail[len(tail) // 2] / sizes[0][1], sizes[0][0].name, tuple((s.index, v) for s, v in sizes))


def _forward_explosion(
    layers: Sequence[LayerStats], growth: Growth, c: DiagnoseConfig, findings: list[Finding]
) -> None:
    grown = growth.exploding(c.exploding_warning)
    findings.append(
        Finding(
            rule=Rule.FORWARD_EXPLOSION,
            severity=Severity.ERROR if growth.ratio > c.exploding_error else Severity.WARNING,
            layers=tuple(layer.name for layer in layers if layer.index in grown),
            message=(
                f"the forward signal grows with depth: the deepest layers' outputs are {times(growth.ratio)} the "
                f"size of the first layer's ('{growth.first}'); the weights amplify the signal at every layer, and "
                f"the backward signal grows toward the input the same way"
            ),
            evidence={"growth": growth.ratio, "first_layer": growth.first, "threshold": c.exploding_error},
        )
    )


def _normalized(records: Sequence[LayerRecord]) -> frozenset[str]:
    """Weighted layers whose output goes straight into a normalization layer, and the norm layers: the loss is
    invariant to the scale of those weights, so a large gradient there shrinks its own steps (the weights grow,
    the effective step falls as 1/‖W‖²)."""
    feeding = {
        r.name
        for r, nxt in zip(records, records[1:], strict=False)
        if r.facts.weighted and nxt.facts.kind is LayerKind.NORM
    }
    return frozenset(feeding | {r.name for r in records if r.facts.kind is LayerKind.NORM})


def _attenuation(
    layers: Sequence[LayerStats],
    reference: float | None,
    c: DiagnoseConfig,
    collapse: bool,
    collapse_error: bool,
    lenient: bool,
    normalized: frozenset[str],
    findings: list[Finding],
    spread_measured: bool = True,  # False without forward statistics (watch's param mode): no word on the spread
) -> None:
    if not _usable(reference):
        return
    assert reference is not None
    decay = _decay_per_layer([la for la in layers if la.status is not Status.GATED])
    # Adam divides each parameter's step by its own gradient's scale, so in a rectifier-like stack a gradient
    # that shrinks on its way back costs it little until it nears Adam's epsilon (``lenient``); plain SGD steps
    # in proportion to it. After a forward collapse the vanishing is the collapse's, and as severe.
    backward_only_adam = lenient and not collapse
    vanishing_error = c.adam_vanishing_error if backward_only_adam else c.vanishing_error
    if collapse and lenient and not collapse_error:
        vanishing_error = 0.0  # the collapse above is a warning; so is its consequence
    for status, rule, error_at, word in (
        (Status.VANISHING, Rule.VANISHING_GRADIENT, vanishing_error, "vanish"),
        (Status.EXPLODING, Rule.EXPLODING_GRADIENT, c.exploding_error, "explode"),
    ):
        hit = [
            layer
            for layer in layers
            if layer.status is status
            and layer.grad_rms is not None
            and _usable(layer.grad_rms.median)
            and (
                layer.grad_rms.median / reference < c.vanishing_warning
                if status is Status.VANISHING
                else layer.grad_rms.median / reference > c.exploding_warning
            )
        ]
        if not hit:
            continue
        ratios = [layer.grad_rms.median / reference for layer in hit]  # type: ignore[union-attr]
        worst_i = (
            min(range(len(hit)), key=lambda i: ratios[i])
            if status is Status.VANISHING
            else max(range(len(hit)), key=lambda i: ratios[i])
        )
        worst, worst_ratio = hit[worst_i], ratios[worst_i]
        harmless = False
        if status is Status.VANISHING:
            failing = worst_ratio < error_at
            self_correcting = False
        else:  # judged on the layers that are not scale-invariant
            free = [r for layer, r in zip(hit, ratios, strict=True) if layer.name not in normalized]
            failing = bool(free) and max(free) > error_at
            self_correcting = worst_ratio > error_at and not failing
            # Every such layer feeds a norm (scale-invariant) and Adam's step does not follow the gradient's scale:
            # a large gradient there changes neither the function nor the step (a convnet's stem conv).
            harmless = not free and c.optimizer == "adam"
        orders = abs(math.log10(worst_ratio))
        cause = (
            " — a consequence of the forward collapse above"
            if collapse and status is Status.VANISHING
            else " in the backward pass while the forward signal keeps its spread"
            if not collapse and spread_measured
            else ""
        )
        findings.append(
            Finding(
                rule=rule,
                severity=Severity.ERROR if failing else Severity.INFO if harmless else Severity.WARNING,
                layers=_names(hit),
                message=(
                    f"gradients {word} toward the input{cause}: {len(hit)} layer(s) are more than "
                    f"{_orders(c.vanishing_warning if status is Status.VANISHING else c.exploding_warning)} "
                    f"orders of magnitude off the output-side reference ({sci(reference)}); worst is "
                    f"'{worst.name}' at {times(worst_ratio)} ({orders:.1f} orders)"
                    + (f", {abs(decay):.2f} orders of magnitude per layer" if decay is not None else "")
                    + (
                        "; Adam rescales each parameter's step, so this is a warning until the gradient falls below "
                        f"{times(c.adam_vanishing_error)} the reference (with SGD it is an error below "
                        f"{times(c.vanishing_error)})"
                        if backward_only_adam and status is Status.VANISHING and not failing
                        else "; each feeds a normalization layer, which makes it scale-invariant, and Adam's step does "
                        "not follow the gradient's scale, so this is information (with SGD it is a warning)"
                        if harmless
                        else "; each feeds a normalization layer, which makes it scale-invariant: the weights grow "
                        "and the steps shrink on their own, so this is a warning"
                        if self_correcting
                        else ""
                    )
                ),
                evidence={
                    "reference_grad_rms": reference,
                    "worst_layer": worst.name,
                    "worst_ratio": worst_ratio,
                    "decay_per_layer": decay,
                    "threshold": error_at,
                    "kind": "after_forward_collapse" if collapse else "backward_only",
                    "optimizer": c.optimizer,
                },
            )
        )


def _positions(profile: PositionProfile | None) -> Positions | None:
    """Median over batches of the gradient at each position, and how the two ends of the sequence compare."""
    if profile is None or not profile.rms:
        return None
    per_position = [Spread.of([batch[i] for batch in profile.rms]) for i in range(profile.length)]
    values = tuple(math.nan if s is None else s.median for s in per_position)
    k = max(1, len(values) // 8)  # an eighth of the sequence at each end
    start = _rms(values[:k])
    end = _rms(values[-k:])
    ratio: float | None = None
    weak: str | None = None
    if start is not None and end is not None and max(start, end) > 0:
        ratio, weak = (start / end, "start") if start <= end else (end / start, "end")
    return Positions(profile.layer, profile.axis, values, ratio, weak)


def _rms(values: Sequence[float]) -> float | None:
    if not values or not all(math.isfinite(v) for v in values):
        return None
    return math.sqrt(sum(v * v for v in values) / len(values))


def _through_time(
    positions: Positions | None, c: DiagnoseConfig, recurrent: bool, findings: list[Finding], *, at_cell: bool = False
) -> None:
    """The gradient reaching one end of the sequence is orders of magnitude below the other end's: what the
    model sees there does not reach its weights (a recurrent layer read at its last step, over many steps).
    Attention and convolutions reach every position; their uneven start (a [CLS] token read, near-uniform
    attention) is a warning only in a recurrent model, and an error only below ``time_error`` in any."""
    if positions is None or positions.ratio is None or positions.ratio >= c.time_warning:
        return
    if not recurrent and positions.ratio >= c.time_error:
        return
    # Measured at a recurrent layer's own output (it runs first, on the raw input), an exactly-zero end means the
    # loss never reads those steps' outputs (``out[:, -1]``), which says nothing about the gradient through time.
    if at_cell and positions.ratio == 0.0:
        return
    ratio, length = positions.ratio, len(positions.grad_rms)
    orders = "all" if ratio == 0 else f"{-math.log10(ratio):.1f} orders of magnitude"
    findings.append(
        Finding(
            rule=Rule.VANISHING_THROUGH_TIME,
            severity=Severity.ERROR if ratio < c.time_error else Severity.WARNING,
            layers=(positions.layer,),
            message=(
                f"gradients vanish through time: the {positions.weak_end} of the {length}-step sequence receives "
                f"{times(ratio)} the gradient of the other end ({orders} less) at '{positions.layer}', so what the "
                f"model sees there barely changes its weights: long-range dependencies cannot be learned"
            ),
            evidence={"ratio": ratio, "length": length, "weak_end": positions.weak_end, "threshold": c.time_error},
        )
    )


def _capped(findings: list[Finding], gating: Gating) -> list[Finding]:
    """A problem that is still there with the gates opened is judged as it is then: gates in series (CaiT's trunk
    behind its class-attention gates) make it look orders of magnitude worse at init than it is."""
    persisting = dict(gating.persisting)
    out = []
    for f in findings:
        then = persisting.get(f.rule)
        if then is not None and Severity(then).rank < f.severity.rank:
            f = Finding(
                f.rule,
                Severity(then),
                f.layers,
                f"{f.message}; with the gates below opened it is only a {then}",
                {**f.evidence, "severity_at_init": f.severity.value},
            )
        out.append(f)
    return out


def _gated(layers: Sequence[LayerStats], gating: Gating, reference: float | None, findings: list[Finding]) -> None:
    names = tuple(layer.name for layer in layers if layer.status is Status.GATED)
    if not names:
        return
    gates = gating.gates
    shown = ", ".join(f"'{g.parameter}' ({g.rms:.2g})" for g in gates[:3]) + (
        f" and {len(gates) - 3} more" if len(gates) > 3 else ""
    )
    findings.append(
        Finding(
            rule=Rule.GATED_AT_INIT,
            severity=Severity.INFO,
            layers=names,
            message=(
                f"{len(names)} layer(s) sit behind gates that start closed by design: {shown}; each gate's own "
                f"gradient is healthy, so it opens in the first steps (LayerScale, a zero-initialised head or "
                f"residual norm, ReZero, adaLN-zero, LoRA). With the gates opened the scan finds no "
                f"{'/'.join(gating.explains)} there"
            ),
            evidence={
                "gates": {g.parameter: g.rms for g in gates},
                "gate_grad_ratio": {g.parameter: g.grad_ratio for g in gates},
                "explains": list(gating.explains),
                "reference_grad_rms": reference,
            },
        )
    )


def _orders(ratio: float) -> str:
    return f"{abs(math.log10(ratio)):g}"


def _decay_per_layer(layers: Sequence[LayerStats]) -> float | None:
    """Least-squares slope of log10(grad RMS) over trainable layers in forward order: orders of magnitude the
    gradient loses per layer going from the output back toward the input (negative: it grows)."""
    ys = [
        math.log10(layer.grad_rms.median)
        for layer in layers
        if layer.grad_rms is not None and _usable(layer.grad_rms.median)
    ]
    n = len(ys)
    if n < 3:
        return None
    mean_x, mean_y = (n - 1) / 2, sum(ys) / n
    var = sum((i - mean_x) ** 2 for i in range(n))
    return sum((i - mean_x) * (y - mean_y) for i, y in enumerate(ys)) / var


def preceding_parametric(layers: Sequence[LayerStats], index: int) -> LayerStats | None:
    """The nearest trainable layer that runs before ``layers[index]`` — the one whose weights feed it."""
    for layer in reversed(layers[:index]):
        if layer.is_parametric and layer.trainable:
            return layer
    return None


def _saturation(
    layers: Sequence[LayerStats], records: Sequence[LayerRecord], c: DiagnoseConfig, findings: list[Finding]
) -> None:
    hit = [layer for layer in layers if layer.status is Status.SATURATED]
    if not hit:
        return
    by_name = {r.name: r for r in records}
    feeding: dict[str, float] = {}
    for layer in hit:
        source = preceding_parametric(layers, layer.index)
        if source is None or source.weight_rms is None:
            continue
        fan = by_name[source.name].facts.fan_in
        if fan is not None:
            feeding[source.name] = source.weight_rms * math.sqrt(fan)
    large = {name: gain for name, gain in feeding.items() if gain > c.large_weight_gain}
    worst = max(hit, key=lambda layer: layer.saturated_fraction or 0.0)
    cause = (
        f"the weights feeding them are large (weight RMS × √fan-in up to {max(large.values()):.3g}, "
        f"above {c.large_weight_gain:g})"
        if large
        else "their inputs are large although the weights are not"
    )
    # Saturation is harmful through what it does to the gradient, which the scan measures: an error when the
    # gradient vanishes (or underflows) as well, a warning when it still flows (a shallow stack, a residual branch;
    # benchmarks/validity.py: large-weight depth-4 nets and saturated residual branches train).
    harmful = any(
        f.severity is Severity.ERROR and f.rule in (Rule.VANISHING_GRADIENT, Rule.UNDERFLOW) for f in findings
    )
    findings.append(
        Finding(
            rule=Rule.SATURATION,
            severity=Severity.ERROR if harmful else Severity.WARNING,
            layers=_names(hit),
            message=(
                f"{len(hit)} activation layer(s) are saturated: up to {worst.saturated_fraction:.0%} of outputs of "
                f"'{worst.name}' sit where the slope is below {c.saturation_derivative:.0%} of its peak; {cause}"
                + ("" if harmful else "; the gradient still flows past them, so this is a warning")
            ),
            evidence={
                "worst_layer": worst.name,
                "worst_fraction": worst.saturated_fraction,
                "large_weight_layers": dict(large),
                "weight_gain": dict(feeding),
                "threshold": c.saturated_units,
            },
        )
    )


def _dead_units(layers: Sequence[LayerStats], c: DiagnoseConfig, findings: list[Finding]) -> None:
    hit = [layer for layer in layers if layer.status is Status.DEAD]
    if not hit:
        return
    worst = max(hit, key=lambda layer: layer.dead_fraction or 0.0)
    everything = (worst.dead_fraction or 0.0) >= c.dead_units_error
    findings.append(
        Finding(
            rule=Rule.DEAD_UNITS,
            severity=Severity.ERROR if everything else Severity.WARNING,
            layers=_names(hit),
            message=(
                f"{len(hit)} rectifier layer(s) have mostly dead units: {worst.dead_fraction:.0%} of the outputs "
                f"of '{worst.name}' are zero for every probe sample, so no gradient passes them"
            ),
            evidence={"worst_layer": worst.name, "worst_fraction": worst.dead_fraction},
        )
    )


def _underflow(
    layers: Sequence[LayerStats], records: Sequence[LayerRecord], c: DiagnoseConfig, findings: list[Finding]
) -> None:
    hit = [(layer, r) for layer, r in zip(layers, records, strict=True) if layer.status is Status.UNDERFLOW]
    if not hit:
        return
    dtypes = sorted({str(r.grad_dtype or r.signal_dtype) for _, r in hit})
    # float16 has a narrow exponent range that loss scaling widens; float32/bfloat16 only run out of range when
    # the gradient has already vanished by tens of orders of magnitude, and then the vanishing is the thing to fix.
    advice = (
        "use torch.amp.GradScaler, or bfloat16/float32 gradients"
        if "float16" in dtypes
        else "this is the vanishing gradient running out of float range: fix the vanishing and it goes"
    )
    findings.append(
        Finding(
            rule=Rule.UNDERFLOW,
            severity=Severity.ERROR,
            layers=tuple(layer.name for layer, _ in hit),
            message=(
                f"gradients of {len(hit)} layer(s) are below the smallest normal {'/'.join(dtypes)} number or "
                f"rounded to exactly zero: precision is lost before any update ({advice})"
            ),
            evidence={"dtypes": dtypes, "margin": c.underflow_margin},
        )
    )


def _zero_and_disconnected(
    layers: Sequence[LayerStats], records: Sequence[LayerRecord], findings: list[Finding], ignored_outputs: int = 0
) -> None:
    frozen = [layer for layer in layers if layer.status is Status.FROZEN]
    if frozen:
        findings.append(
            Finding(
                rule=Rule.FROZEN,
                severity=Severity.INFO,
                layers=_names(frozen),
                message=f"{len(frozen)} layer(s) are frozen (requires_grad=False) and are not judged",
                evidence={"parameters": sum(layer.parameters for layer in frozen)},
            )
        )
    gone = [layer for layer in layers if layer.status is Status.DISCONNECTED and layer.is_parametric]
    if gone:
        findings.append(
            Finding(
                rule=Rule.DISCONNECTED,
                severity=Severity.WARNING,
                layers=_names(gone),
                message=(
                    f"no gradient reaches {len(gone)} trainable layer(s) ({layer_list(_names(gone))}): they are "
                    f"unused in forward or cut from the loss "
                    f"(detach, no_grad, an unused output), so they will never train"
                    + (
                        f"; the model returns {ignored_outputs + 1} tensors and the default loss uses only the "
                        f"first, so a layer that feeds only another one (a value head, say) gets no gradient "
                        f"from it: define loss_fn(output, batch) in the model file to probe with every output"
                        if ignored_outputs
                        else ""
                    )
                ),
                evidence={
                    "parameters": sum(layer.parameters for layer in gone),
                    **({"ignored_outputs": ignored_outputs} if ignored_outputs else {}),
                },
            )
        )
    zero = [layer for layer in layers if layer.status is Status.ZERO and layer.is_parametric]
    if zero:
        zero_weight = [layer for layer in layers if layer.weight_rms == 0.0 and layer.trainable]
        explained = bool(zero_weight) and zero_weight[-1].index > zero[0].index
        because = (
            f"'{zero_weight[-1].name}' has all-zero weights, which blocks the gradient at initialisation "
            f"(zero-init by design is fine: it gets a gradient itself and opens after the first steps)"
            if explained
            else "the gradient reaching them is exactly zero (a multiplication by zero, a mask, or a zero-valued path)"
        )
        findings.append(
            Finding(
                rule=Rule.ZERO_GRADIENT,
                severity=Severity.INFO if explained else Severity.WARNING,
                layers=_names(zero),
                message=f"{len(zero)} layer(s) receive an exactly-zero gradient: {because}",
                evidence={"zero_weight_layer": zero_weight[-1].name if explained else None},
            )
        )
    del records


def _summary(layers: Sequence[LayerStats], reference: float | None, spread_ratio: float | None) -> Summary:
    worst: LayerStats | None = None
    worst_ratio: float | None = None
    if _usable(reference):
        assert reference is not None
        for layer in layers:
            if layer.grad_rms is None or not _usable(layer.grad_rms.median):
                continue
            ratio = layer.grad_rms.median / reference
            if worst_ratio is None or abs(math.log10(ratio)) > abs(math.log10(worst_ratio)):
                worst, worst_ratio = layer, ratio
    return Summary(
        reference_grad_rms=reference,
        worst_layer=None if worst is None else worst.name,
        worst_ratio=worst_ratio,
        decay_per_layer=_decay_per_layer(layers),
        forward_spread_ratio=spread_ratio,
    )


__all__ = ["Diagnosis", "diagnose", "preceding_parametric"]
