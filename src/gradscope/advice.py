"""Findings → suggestions, each tied to the findings that motivate it and naming concrete modules.

Order matters: the first suggestion is the one to try first. When the forward signal has collapsed, the forward
fixes (init, normalization) lead and the backward-only ones (pseudo-norm, rescale) are left out, because a gradient
fix cannot restore inputs that no longer differ between samples (shared/research.md, our digits measurements).

Reads layer facts and numbers only (``records.LayerFacts``), never a module: the watch timeline gets the same advice
from a log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from .config import Config
from .diagnose import Diagnosis, preceding_parametric
from .records import LayerFacts, LayerKind, LayerRecord, ModelShape
from .remedies.placement import Placement, pseudo_norm_every, pseudo_norm_points, rescale_gains
from .results import Finding, LayerStats, Suggestion
from .util import layer_list, times
from .vocab import Optimizer, Remedy, Rule, Severity, Where

Facts = Mapping[str, LayerFacts]


def suggest(
    diagnosis: Diagnosis, records: Sequence[LayerRecord], config: Config, shape: ModelShape | None = None
) -> tuple[Suggestion, ...]:
    findings = {f.rule: f for f in diagnosis.findings}
    layers = diagnosis.layers
    facts = {r.name: r.facts for r in records}
    shape = shape or ModelShape()
    out: list[Suggestion] = []
    if Rule.NONFINITE in findings:
        return (_inspect(findings[Rule.NONFINITE]),)
    if Rule.FORWARD_COLLAPSE in findings:
        rules = (Rule.FORWARD_COLLAPSE, *_also(findings, Rule.VANISHING_GRADIENT))
        out += _forward_fixes(layers, facts, rules, config, shape)
    elif Rule.VANISHING_GRADIENT in findings and _worth_fixing(findings[Rule.VANISHING_GRADIENT], config):
        out += _backward_fixes(layers, facts, diagnosis, config, shape)
    if Rule.DEEP_SATURATING_STACK in findings:
        out += _deep_stack_fixes(layers, facts, config, shape)
    if Rule.VANISHING_THROUGH_TIME in findings:
        out += _through_time_fixes(layers, facts, findings[Rule.VANISHING_THROUGH_TIME], shape)
    # A warning-level growth (scale-invariant layers, a moderate 10–70×) asks for no change.
    exploding = tuple(
        rule for rule in _also(findings, Rule.FORWARD_EXPLOSION, Rule.EXPLODING_GRADIENT)
        if findings[rule].severity is Severity.ERROR
    )  # fmt: skip
    if exploding:
        out += _exploding_fixes(layers, facts, exploding, config)
    if Rule.SATURATION in findings:
        out += _saturation_fixes(layers, facts, findings[Rule.SATURATION], config)
    if Rule.DEAD_UNITS in findings:
        dead = findings[Rule.DEAD_UNITS]
        slope = config.suggest.leaky_relu_slope
        out.append(
            Suggestion(
                Remedy.ACTIVATION,
                dead.layers,
                Where.REPLACE,
                {"activation": "LeakyReLU", "negative_slope": slope},
                f"replace {_list(dead.layers)} with LeakyReLU (or ELU) so units that are negative for every input "
                f"still pass a gradient",
                (Rule.DEAD_UNITS,),
            )
        )
    if Rule.UNDERFLOW in findings and "float16" in findings[Rule.UNDERFLOW].evidence.get("dtypes", ()):
        under = findings[Rule.UNDERFLOW]
        out.append(
            Suggestion(
                Remedy.LOSS_SCALING,
                under.layers,
                Where.MODEL,
                {"use": "torch.amp.GradScaler"},
                "scale the loss before backward (torch.amp.GradScaler) or keep gradients in float32/bfloat16: "
                f"{_list(under.layers)} fall below the smallest normal number of their dtype",
                (Rule.UNDERFLOW,),
            )
        )
    return tuple(_dedupe(out))


def _worth_fixing(finding: Finding, config: Config) -> bool:
    """A backward-only attenuation that is only a warning under Adam (which rescales each parameter's step) asks
    for no change; under SGD, or as an error, it does."""
    return finding.severity is Severity.ERROR or config.diagnose.optimizer == Optimizer.SGD


def _also(findings: Mapping[str, Finding], *rules: Rule) -> tuple[Rule, ...]:
    return tuple(rule for rule in rules if rule in findings)


def _list(names: Sequence[str]) -> str:
    return layer_list(names, quote="'")


def _names(layers: Sequence[LayerStats]) -> tuple[str, ...]:
    return tuple(layer.name for layer in layers)


def _fact(facts: Facts, name: str) -> LayerFacts | None:
    return facts.get(name)


def _weighted(layers: Sequence[LayerStats], facts: Facts) -> list[LayerStats]:
    return [layer for layer in layers if layer.trainable and (f := _fact(facts, layer.name)) and f.weighted]


def _activation(layers: Sequence[LayerStats], facts: Facts) -> LayerFacts | None:
    """The model's most common activation module (the init is chosen for it)."""
    acts = [f for layer in layers if (f := _fact(facts, layer.name)) is not None and f.kind is LayerKind.ACTIVATION]
    if not acts:
        return None
    names = [f.activation for f in acts]
    common = max(sorted(set(names), key=str), key=names.count)
    return next(f for f in acts if f.activation == common)


# Activations without a gain of their own in nn.init.calculate_gain: initialised as ReLU is (fan-in, gain √2),
# which keeps their forward signal of the same order (they are ReLU-like for positive inputs).
_RELU_LIKE = ("GELU", "SiLU", "ELU", "CELU", "Mish", "Softplus", "Hardswish", "PReLU", "ReLU6")


def _init_params(act: LayerFacts | None) -> dict[str, object]:
    """The init for the activation actually used: Xavier with the activation's gain for tanh/sigmoid-type, Kaiming
    for rectifiers (with LeakyReLU's slope), fan-in with gain 1 for SELU, ReLU's Kaiming for GELU/SiLU and kin."""
    name = act.activation if act is not None else None
    if act is not None and act.saturating and act.gain is not None:
        return {"scheme": "xavier_uniform_", "gain": round(act.gain, 4), "bias": 0.0}
    if name == "LeakyReLU" and act is not None and act.gain is not None:
        slope = math.sqrt(max(2.0 / act.gain**2 - 1.0, 0.0))  # calculate_gain('leaky_relu', a) = √(2/(1+a²))
        return {"scheme": "kaiming_normal_", "nonlinearity": "leaky_relu", "a": round(slope, 4), "mode": "fan_in",
                "bias": 0.0}  # fmt: skip
    if name == "SELU":
        return {"scheme": "kaiming_normal_", "nonlinearity": "linear", "mode": "fan_in", "bias": 0.0}
    return {"scheme": "kaiming_normal_", "nonlinearity": "relu", "mode": "fan_in", "bias": 0.0}


def _norm_for(layer: LayerStats, facts: Facts) -> str:
    f = _fact(facts, layer.name)
    if f is not None and f.conv_dims in (1, 2, 3):
        return f"BatchNorm{f.conv_dims}d"
    shape = layer.output_shape or ()
    return "BatchNorm1d" if len(shape) == 2 else "LayerNorm"


_NOT_CENTRED = ("Sigmoid", "Hardsigmoid")  # outputs around 0.5: a variance-preserving init does not keep the signal


def _forward_fixes(
    layers: Sequence[LayerStats],
    facts: Facts,
    rules: tuple[str, ...],
    config: Config,
    shape: ModelShape,
    *,
    why: str | None = None,
) -> list[Suggestion]:
    weighted = _weighted(layers, facts)
    if not weighted:
        return []
    hidden = weighted[:-1] or weighted  # the output layer keeps its scale: normalizing logits is not the fix
    unnormalized = [layer for layer in hidden if not _normalized(layer, layers, facts)]
    act = _activation(layers, facts)
    init = _init_params(act)
    norms = {layer.name: _norm_for(layer, facts) for layer in unnormalized}
    out: list[Suggestion] = []
    if norms:
        out += _normalization(norms, rules, config, why)
    # benchmarks/regimes.py: a sigmoid stack at Xavier init collapses from depth 10 on (0.10 held-out, every
    # optimizer), and re-initialising large-weight sigmoid stacks with it gave 0.10-0.16: no init is the fix there.
    sigmoid = act is not None and act.activation in _NOT_CENTRED
    if (
        act is not None
        and act.activation == "Sigmoid"
        and Rule.FORWARD_COLLAPSE in rules
        and _swap_first(weighted, facts)
    ):
        out.insert(0, _swap(layers, facts, rules, _SWAP_COLLAPSE, "Sigmoid"))
    if not sigmoid and not _same_init(layers, facts, init, config):
        out.append(
            Suggestion(
                Remedy.INIT,
                _names(weighted),
                Where.MODEL,
                init,
                f"re-initialise {_list(_names(weighted))} with {_init_call(init)} and zero biases: the current init "
                f"shrinks the signal at every layer" + (f" ({act.activation})" if act else ""),
                rules,
            )
        )
    if len(weighted) >= config.suggest.residual_min_depth and not shape.skip_connections:
        out.append(_residual(weighted, rules))
    return out


# benchmarks/repair.py, tuning half, sigmoid stacks whose forward signal collapses: with at most 7 weighted layers
# the swap to ReLU with Kaiming init was the best arm in 2 of 2 (0.96-0.97 held-out, normalization 0.94-0.96); from
# 11 on normalization won 4 of 6 (the swapped net is then a deep unnormalized ReLU stack; 0.94-0.97 vs 0.85-0.96).
# The bound sits between the two.
SWAP_FIRST_MAX_DEPTH = 9

_SWAP_COLLAPSE = (
    "σ(x) sits around 0.5 with σ′ ≤ 1/4, so the signal loses its spread and the gradient shrinks at every layer; "
    "in a stack this shallow ReLU with Kaiming init keeps both and trains without norm layers"
)


def _swap_first(weighted: Sequence[LayerStats], facts: Facts) -> bool:
    """Whether an activation swap leads the fixes of a collapsed sigmoid stack: a shallow one (``SWAP_FIRST_MAX_DEPTH``)
    that calls no module twice. A weight-shared loop with ReLU is an iterated ReLU map, which explodes or dies unless
    its weights' spectrum is near 1, as in a ReLU RNN (zoo tuning half, shared_tanh_loop20: swap 0.81 held-out,
    normalization 0.92)."""
    shared = any((f := _fact(facts, layer.name)) is not None and f.shares_parameters_with for layer in weighted)
    return len(weighted) <= SWAP_FIRST_MAX_DEPTH and not shared


def _swap(
    layers: Sequence[LayerStats], facts: Facts, rules: tuple[str, ...], why: str | None = None, activation: str = ""
) -> Suggestion:
    """Replace the Tanh/Sigmoid modules with ReLU and Kaiming init: advice (``why`` continues its sentence about the
    ``activation`` modules), or without ``why`` a trial candidate."""
    acts = _names(_sigmoid_type(layers, facts))
    reason = (
        "trial candidate: ReLU with Kaiming init"
        if why is None
        else f"replace the {activation} modules {_list(acts)} with ReLU (or ELU) and use Kaiming init: {why}"
    )
    params = {"activation": "ReLU", "init": "kaiming_normal_"}
    return Suggestion(Remedy.ACTIVATION, acts, Where.REPLACE, params, reason, rules)


def _deep_stack_fixes(
    layers: Sequence[LayerStats], facts: Facts, config: Config, shape: ModelShape
) -> list[Suggestion]:
    """benchmarks/regimes.py, deep tanh stacks (Xavier, orthogonal; depth 30-60): residual blocks were the best arm
    or within the seed spread of it in 3 of the 4 tuning-half configurations and kept working at depth 60
    (0.84-0.89) where normalization fell to 0.22-0.49; normalization comes next (0.94-0.96 at depth 30).
    Pseudo-norm every 3rd activation at the reference scale helped every seed (0.44 -> 0.89 at depth 30, SGD)
    without changing the forward function, but never beat those two."""
    rules = (Rule.DEEP_SATURATING_STACK,)
    weighted = _weighted(layers, facts)
    hidden = weighted[:-1]
    norms = {layer.name: _norm_for(layer, facts) for layer in hidden if not _normalized(layer, layers, facts)}
    out: list[Suggestion] = []
    if len(weighted) >= 2 and not shape.skip_connections:
        out.append(_residual(weighted, rules))
    if norms:
        out.append(_norm_after(norms, ": it keeps each tanh/sigmoid layer's input in its sloped range however deep "
                               "the stack is", rules))  # fmt: skip
    every = _pseudo_norm_every(layers, facts, config, rules)
    if every is not None:
        out.append(
            replace(
                every,
                reason=f"or, without changing the forward function, insert PseudoNorm after every "
                f"{FIXED_PSEUDO_NORM_EVERY}rd activation ({_list(every.layers)}): it restores the backward "
                f"gradient to the scale of '{every.params['reference_layer']}'",
            )
        )
    return out


def _pseudo_norm_every(
    layers: Sequence[LayerStats], facts: Facts, config: Config, rules: tuple[str, ...]
) -> Suggestion | None:
    """PseudoNorm after every ``FIXED_PSEUDO_NORM_EVERY``-th activation (weighted layer, without activation
    modules), restoring the gradient to the last hidden layer's measured scale."""
    acts = [layer.name for layer in layers if (f := _fact(facts, layer.name)) is not None and f.is_activation]
    placement = pseudo_norm_every(layers, FIXED_PSEUDO_NORM_EVERY, acts or _names(_weighted(layers, facts)))
    if placement is None:
        return None
    params = _pseudo_norm_params(placement, config)
    params.pop("predicted_min_ratio")
    return Suggestion(Remedy.PSEUDO_NORM, placement.after, Where.AFTER, params, "fixed placement", rules)


def _norm_after(norms: dict[str, str], why: str, rules: tuple[str, ...]) -> Suggestion:
    """Normalization layers after ``norms`` (layer → norm type); ``why`` continues "insert X after [layers]"."""
    names = tuple(norms)
    return Suggestion(
        Remedy.NORMALIZATION,
        names,
        Where.AFTER,
        _norm_params(norms),
        f"insert {_common(norms)} after {_list(names)}{why}",
        rules,
    )


def _normalized(layer: LayerStats, layers: Sequence[LayerStats], facts: Facts) -> bool:
    """Whether the next layer to run after ``layer`` is a normalization layer (it is normalized already)."""
    following = layers[layer.index + 1 : layer.index + 2] if layer.index + 1 < len(layers) else ()
    return any((f := _fact(facts, nxt.name)) is not None and f.kind is LayerKind.NORM for nxt in following)


def _normalization(
    norms: dict[str, str], rules: tuple[str, ...], config: Config, why: str | None = None
) -> list[Suggestion]:
    why = why or (
        "so each layer sees inputs that differ between samples again; backward-only fixes (pseudo-norm, rescale) "
        "cannot help here — they rescale gradients but the forward signal they would carry has already collapsed"
    )
    return [
        _norm_after(norms, f" {why}", rules),
        # benchmarks/remedies.py: a norm layer after every layer of a deep stack makes the gradient grow toward
        # the input (10-30x at depth 20-30); with SGD, normalization alone failed at depth >= 30 and
        # normalization with clipping trained (0.90-0.96 held-out on digits).
        _clip(
            rules,
            "together with the norm layers: they make the gradient grow toward the input in a deep "
            "stack, and plain SGD then takes steps too large for the input-side layers",
            config,
        ),
    ]


def _init_call(init: Mapping[str, object]) -> str:
    if "gain" in init:
        arg = f"gain={init['gain']}"
    else:
        arg = (f"a={init['a']}, " if "a" in init else "") + f"nonlinearity='{init.get('nonlinearity', 'relu')}'"
    return f"nn.init.{init['scheme']}({arg})"


def _residual(weighted: Sequence[LayerStats], rules: tuple[str, ...]) -> Suggestion:
    return Suggestion(
        Remedy.RESIDUAL,
        _names(weighted),
        Where.MODEL,
        {"block": 2},
        f"wrap pairs of the {len(weighted)} stacked layers in residual blocks (x + f(x)) so the gradient has an "
        f"identity path around them",
        rules,
    )


def _backward_fixes(
    layers: Sequence[LayerStats], facts: Facts, diagnosis: Diagnosis, config: Config, shape: ModelShape
) -> list[Suggestion]:
    """Vanishing gradients without a collapsed forward signal: the fixes that change the forward function lead
    (normalization, init, then the structural ones; skip connections first from ``RESIDUAL_FIRST_DEPTH`` weighted
    layers on), the backward-only ones (pseudo-norm, rescale) come last. Under Adam, which divides each parameter's
    step by its own gradient's RMS, a constant gradient scale barely changes the steps (benchmarks/repair.py, zoo
    tuning half: pseudo-norm and rescale lost on every vanishing model, 0.1-0.4 vs 0.95-0.98 held-out). Under SGD
    they do help, but never most: pseudo-norm was the best arm in no failing configuration of benchmarks/regimes.py
    (tuning half included) and lost to normalization on the zoo's tuning-half SGD model (0.93 vs 0.98)."""
    out = _backward_only(layers, facts, diagnosis, config, shape)
    backward_only = (Remedy.PSEUDO_NORM, Remedy.RESCALE)
    forward = (
        []
        if _normalized_residual(layers, facts, shape)
        else _forward_fixes(layers, facts, (Rule.VANISHING_GRADIENT,), config, shape, why=_SHRINKING)
    )
    if len(_weighted(layers, facts)) >= RESIDUAL_FIRST_DEPTH:  # very deep: the identity path leads
        forward.sort(key=lambda s: s.remedy is not Remedy.RESIDUAL)
    return forward + [s for s in out if s.remedy not in backward_only] + [s for s in out if s.remedy in backward_only]


def _normalized_residual(layers: Sequence[LayerStats], facts: Facts, shape: ModelShape) -> bool:
    """A model with norm layers and skip connections (a pre- or post-norm transformer, a ResNet): its forward
    signal is kept at scale by design, so a gradient that shrinks without a forward collapse (the attention-score
    projections of a transformer under SGD) is not fixed by more norm layers or a re-init for a shrinking signal;
    what is left are the fixes that act on the gradient's scale (rescale, pseudo-norm)."""
    return shape.skip_connections and any(
        f.kind is LayerKind.NORM and layer.output_shape is not None  # a norm layer that ran
        for layer in layers
        if (f := _fact(facts, layer.name)) is not None
    )


# benchmarks/repair.py, tuning half (Adam, vanishing without collapse): from 20 weighted layers on, skip connections
# won in 3 of 4 stacks (depth 20-60 tanh: 0.95-0.97 held-out; normalization 0.41-0.95) and were within 0.01 in the
# fourth; at depth 10-13 normalization or init won.
RESIDUAL_FIRST_DEPTH = 20

_SHRINKING = (
    "so each layer's input keeps unit scale and the gradient reaching the input side does too; this did more than "
    "a backward-only rescale in every measured case (under Adam, whose per-parameter step size undoes a constant "
    "gradient scale, and under SGD)"
)


def _backward_only(
    layers: Sequence[LayerStats], facts: Facts, diagnosis: Diagnosis, config: Config, shape: ModelShape
) -> list[Suggestion]:
    out: list[Suggestion] = []
    rules = (Rule.VANISHING_GRADIENT,)
    placement = pseudo_norm_points(layers, config.suggest.pseudo_norm_min_ratio)
    if placement is not None and placement.after:
        out.append(
            Suggestion(
                Remedy.PSEUDO_NORM,
                placement.after,
                Where.AFTER,
                _pseudo_norm_params(placement, config),
                f"insert gradscope.PseudoNorm after {_list(placement.after)} ({len(placement.after)} insertion(s)): "
                "the backward signal then never drops below "
                f"{times(config.suggest.pseudo_norm_min_ratio)} its restored value between two of them, instead of "
                f"{times(placement.untreated_ratio)} end to end",
                rules,
            )
        )
    reference = diagnosis.summary.reference_grad_rms
    if reference is not None:
        gains = rescale_gains(layers, reference, config.diagnose.vanishing_warning, config.suggest.rescale_max_gain)
        if gains:
            names = tuple(gains)
            out.append(
                Suggestion(
                    Remedy.RESCALE,
                    names,
                    Where.REPLACE,
                    {"gains": gains},
                    f"reparameterise {_list(names)} as W = g·W_raw with the per-layer gains g (up to "
                    f"{max(gains.values()):.3g}); the forward function is unchanged and each layer's update "
                    f"grows by g², matching the output-side layers",
                    rules,
                )
            )
    if _sigmoid_type(layers, facts):
        act = _activation(layers, facts)
        name = act.activation if act and act.activation else "Tanh"
        slope = "σ′ ≤ 1/4" if name == "Sigmoid" else "tanh′ ≤ 1"
        out.append(_swap(layers, facts, rules, f"{slope} shrinks the gradient at every layer", name))
    recurrent = [
        layer
        for layer in layers
        if (f := _fact(facts, layer.name)) is not None and f.cell == "RNN" and layer.status == "vanishing"
    ]
    if recurrent:
        out.append(
            Suggestion(
                Remedy.GATED_RECURRENT,
                _names(recurrent),
                Where.REPLACE,
                {"module": "GRU"},
                f"replace {_list(_names(recurrent))} with nn.LSTM or nn.GRU: gating keeps gradients over long "
                f"sequences",
                rules,
            )
        )
    weighted = _weighted(layers, facts)
    if len(weighted) >= config.suggest.residual_min_depth and not shape.skip_connections:
        out.append(_residual(weighted, rules))
    return out


def _through_time_fixes(
    layers: Sequence[LayerStats], facts: Facts, finding: Finding, shape: ModelShape
) -> list[Suggestion]:
    """Vanishing through time: gated cells or attention, an init that keeps the recurrence's gain at 1, and
    paths that skip steps; a vanilla RNN's own recurrence is what shrinks the gradient step by step."""
    rules = (Rule.VANISHING_THROUGH_TIME,)
    recurrent = [layer for layer in layers if (f := _fact(facts, layer.name)) is not None and f.cell is not None]
    vanilla = [layer for layer in recurrent if facts[layer.name].cell == "RNN"]
    out: list[Suggestion] = []
    if vanilla:
        out.append(
            Suggestion(
                Remedy.GATED_RECURRENT,
                _names(vanilla),
                Where.REPLACE,
                {"module": "GRU"},
                f"replace {_list(_names(vanilla))} with nn.GRU or nn.LSTM (same arguments): their gates let the "
                f"gradient pass many steps unchanged",
                rules,
            )
        )
    if recurrent:
        out.append(
            Suggestion(
                Remedy.INIT,
                _names(recurrent),
                Where.MODEL,
                {"scheme": "orthogonal_", "parameters": "weight_hh", "forget_bias": 1.0},
                f"initialise the recurrent weights of {_list(_names(recurrent))} orthogonally (nn.init.orthogonal_ "
                f"on each weight_hh) and, for an LSTM, the forget-gate bias to 1: the step-to-step gain then starts "
                f"near 1 instead of shrinking the gradient at every step",
                rules,
            )
        )
    if not recurrent:  # attention and convolutions already read every position: nothing here to replace
        return out
    out.append(
        Suggestion(
            Remedy.RESIDUAL,
            (finding.layers[0],) if finding.layers else (),
            Where.MODEL,
            {"kind": "attention"},
            "let the output read every step directly — attention over the sequence (nn.MultiheadAttention or a "
            "Transformer encoder), or pooling over the steps instead of the last one — so the gradient reaches "
            f"early positions without passing through {finding.evidence.get('length', 'all')} steps; and keep "
            "truncated backpropagation windows at least as long as the dependencies you need",
            rules,
        )
    )
    return out


def _sigmoid_type(layers: Sequence[LayerStats], facts: Facts) -> list[LayerStats]:
    """The Tanh and Sigmoid modules: the ones an activation swap replaces."""
    return [
        layer for layer in layers if (f := _fact(facts, layer.name)) is not None and f.activation in ("Tanh", "Sigmoid")
    ]


def _exploding_fixes(
    layers: Sequence[LayerStats], facts: Facts, rules: tuple[str, ...], config: Config
) -> list[Suggestion]:
    weighted = _weighted(layers, facts)
    act = _activation(layers, facts)
    # A growing gradient in a tanh/sigmoid stack comes from gains above 1 (tanh's 5/3 in a deep stack is already
    # too much: benchmarks/remedies.py, depth 60); unit gain keeps it in check.
    init = _init_params(act)
    if act is not None and act.saturating:
        init = {**init, "gain": 1.0}
    gain = _weight_gain(layers, facts)
    out: list[Suggestion] = []
    if not _same_init(layers, facts, init, config):
        measured = f" (median weight RMS × √fan-in {gain:.3g})" if gain is not None else ""
        out.append(
            Suggestion(
                Remedy.INIT,
                _names(weighted),
                Where.MODEL,
                init,
                f"re-initialise {_list(_names(weighted))} with {_init_call(init)}: the current weights amplify the "
                f"signal at each layer{measured}",
                rules,
            )
        )
    out.append(_clip(rules, "as a safety net while the cause is fixed", config))
    return out


def _clip(rules: tuple[str, ...], why: str, config: Config) -> Suggestion:
    max_norm = config.suggest.clip_max_norm
    return Suggestion(
        Remedy.CLIP,
        (),
        Where.MODEL,
        {"max_norm": max_norm},
        f"clip the global gradient norm before each step (torch.nn.utils.clip_grad_norm_(model.parameters(), "
        f"{max_norm:g})) {why}",
        rules,
    )


def _weight_gain(layers: Sequence[LayerStats], facts: Facts) -> float | None:
    """Median weight RMS × √fan-in of the weighted layers: the gain their current init amounts to."""
    gains = sorted(
        layer.weight_rms * math.sqrt(fan)
        for layer in _weighted(layers, facts)
        if layer.weight_rms is not None and (fan := facts[layer.name].fan_in)
    )
    return gains[len(gains) // 2] if gains else None


def _same_init(layers: Sequence[LayerStats], facts: Facts, init: Mapping[str, object], config: Config) -> bool:
    """Whether the suggested init is what the model already has (within ``suggest.same_init_tolerance``):
    re-drawing the same distribution changes nothing (benchmarks/remedies.py: Xavier-initialised sigmoid stacks
    re-initialised with Xavier trained exactly as untreated)."""
    measured = _weight_gain(layers, facts)
    if measured is None:
        return False
    expected = float(init["gain"]) if "gain" in init else math.sqrt(2.0)  # type: ignore[arg-type]
    return abs(measured / expected - 1.0) < config.suggest.same_init_tolerance


def _saturation_fixes(layers: Sequence[LayerStats], facts: Facts, finding: Finding, config: Config) -> list[Suggestion]:
    """Normalization of the saturated units' inputs first, then (large weights) the weight penalty: in
    benchmarks/regimes.py's large-weight stacks (tanh and sigmoid, depth 10-30, every optimizer) normalization beat
    the L2 penalty in every configuration (0.79-0.96 against 0.16-0.87 held-out)."""
    rules = (Rule.SATURATION,)
    large: dict[str, float] = dict(finding.evidence.get("large_weight_layers", {}))
    sources = [preceding_parametric(layers, layer.index) for layer in layers if layer.name in finding.layers]
    hidden = tuple(dict.fromkeys(s.name for s in sources if s is not None))
    by_name = {layer.name: layer for layer in layers}
    norms = {name: _norm_for(by_name[name], facts) for name in hidden if facts[name].weighted}
    out: list[Suggestion] = []
    if norms:
        cause = (
            "the weights feeding them are large"
            if large
            else "the weights are not large, so the inputs to the saturated units are"
        )
        out.append(
            _norm_after(norms, f": {cause}; normalising the units' inputs keeps them in their sloped range", rules)
        )
    if large:
        out.append(_regularize(tuple(large), config.suggest.regularize_lambda, rules, large_weights=True))
    return out


def _regularize(names: tuple[str, ...], lam: float, rules: tuple[str, ...], *, large_weights: bool) -> Suggestion:
    weights = tuple(f"{n}.weight" for n in names)
    why = (
        f"add λ·Σ‖W‖² with λ={lam:g} on {_list(weights)} (or weight_decay on those parameters): large weights push "
        f"units into the flat part of the activation, where w·φ′(aw) → 0; a penalty pulls them back to where φ′ is "
        f"of order 1 (Ven & Lederer)"
        if large_weights
        else "trial candidate: L2 penalty on every weighted layer"
    )
    return Suggestion(
        Remedy.REGULARIZE, names, Where.MODEL, {"penalty": "l2", "lambda": lam, "parameters": list(weights)}, why, rules
    )


def _inspect(finding: Finding) -> Suggestion:
    origin = str(finding.evidence.get("first_layer"))
    kind = str(finding.evidence.get("first_layer_type", "module"))
    return Suggestion(
        Remedy.INSPECT,
        (origin,),
        Where.REPLACE,
        {"pass": finding.evidence.get("pass")},
        f"look at what '{origin}' ({kind}) computes: a log, sqrt, division or exp of an out-of-range value is the "
        f"usual cause; clamp its input or add an epsilon there. Every number after it is meaningless until then",
        (Rule.NONFINITE,),
    )


def _dedupe(suggestions: list[Suggestion]) -> list[Suggestion]:
    seen: set[tuple[Remedy, tuple[str, ...]]] = set()
    out = []
    for s in suggestions:
        key = (s.remedy, s.layers)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def _pseudo_norm_params(placement: Placement, config: Config) -> dict[str, object]:
    """Where the gradient is restored to: the measured signal of the last hidden layer. ``scale`` holds for the
    probe's loss and batch size; a trial re-measures it with the training loss and batch (``reference_layer``)."""
    return {
        "min_ratio": config.suggest.pseudo_norm_min_ratio,
        "predicted_min_ratio": round(placement.predicted_min_ratio, 4),
        "untreated_ratio": placement.untreated_ratio,
        "reference_layer": placement.reference_layer,
        "scale": float(f"{placement.reference_signal:.4g}"),
    }


def _norm_params(norms: dict[str, str]) -> dict[str, object]:
    """One norm type for every layer (the usual case) reads as one value; mixed types keep the per-layer map."""
    kinds = set(norms.values())
    return {"norm": kinds.pop()} if len(kinds) == 1 else {"norm": dict(norms)}


def _common(norms: dict[str, str]) -> str:
    kinds = sorted(set(norms.values()))
    return kinds[0] if len(kinds) == 1 else "/".join(kinds)


FIXED_PSEUDO_NORM_EVERY = 3  # `trial --remedy all` without a measured placement: after every third activation


def candidates(
    layers: Sequence[LayerStats],
    facts: Facts,
    suggested: Sequence[Suggestion],
    config: Config,
    *,
    every: bool = False,
    reference: float | None = None,
    skip_connections: bool | None = None,
) -> dict[str, tuple[Suggestion, ...]]:
    """Every remedy a training trial can try on this model, by its command-line name, each a ready-to-apply
    suggestion.

    The scan's own suggestions come first (they carry the measured placement and gains); the classic fixes are
    added where the model has what they act on (weighted layers for init/normalization, sigmoid-type modules for an
    activation swap). Names follow the CLI: pseudo-norm, rescale, regularize, activation, normalization, init, clip,
    residual, gated-recurrent. ``every`` (``trial --remedy all``) adds the remedies the scan gave no placement for
    at a fixed one: pseudo-norm after every ``FIXED_PSEUDO_NORM_EVERY``-th activation, rescale gains that bring
    every layer below the ``reference`` grad RMS up to it, skip connections around pairs of weighted layers (no
    ``skip_connections`` yet). A GRU for each vanilla ``nn.RNN`` is always a candidate. Under Adam pseudo-norm and
    rescale come last (``_backward_fixes``), also where the scan left them to the trial's measured placement.
    """
    out: dict[str, tuple[Suggestion, ...]] = {}
    clips = [s for s in suggested if s.remedy is Remedy.CLIP]
    for s in suggested:
        if not s.in_memory:
            continue
        # A clip the advice gives for the same finding trains with the remedy, as the advice means it.
        # Not a swap: ReLU with Kaiming init was measured without clipping, which the advice gives for norm layers.
        pairs = s.remedy not in (Remedy.CLIP, Remedy.ACTIVATION)
        paired = next((c for c in clips if pairs and set(c.rules) & set(s.rules)), None)
        out.setdefault(s.remedy.option, (s,) if paired is None else (s, paired))
    weighted = _weighted(layers, facts)
    if Remedy.PSEUDO_NORM.option not in out:
        placement = pseudo_norm_points(layers, config.suggest.pseudo_norm_min_ratio)
        if placement is not None and placement.after:
            params = _pseudo_norm_params(placement, config)
            candidate = Suggestion(
                Remedy.PSEUDO_NORM, placement.after, Where.AFTER, params, "trial candidate: measured placement", ()
            )
            out[Remedy.PSEUDO_NORM.option] = (candidate,)
    if weighted:
        forward = {s.remedy: s for s in _forward_fixes(layers, facts, (), config, ModelShape())}
        for remedy in (Remedy.NORMALIZATION, Remedy.INIT):  # init is left out when it would re-draw the same
            if remedy in forward:
                out.setdefault(remedy.option, (forward[remedy],))
        if Remedy.REGULARIZE.option not in out:
            lam = config.suggest.regularize_lambda
            out[Remedy.REGULARIZE.option] = (_regularize(_names(weighted), lam, (), large_weights=False),)
    if _sigmoid_type(layers, facts) and Remedy.ACTIVATION.option not in out:
        out[Remedy.ACTIVATION.option] = (_swap(layers, facts, ()),)
    # A vanilla nn.RNN is always worth the gated swap: with a loss at every step the scan's position profile is
    # flat even when the gradient across many steps vanishes (benchmarks/repair.py, the zoo's "time" family).
    vanilla = [layer for layer in layers if (f := _fact(facts, layer.name)) is not None and f.cell == "RNN"]
    if vanilla and Remedy.GATED_RECURRENT.option not in out:
        out[Remedy.GATED_RECURRENT.option] = (
            Suggestion(
                Remedy.GATED_RECURRENT,
                _names(vanilla),
                Where.REPLACE,
                {"module": "GRU"},
                "trial candidate: nn.GRU with the same arguments",
                (),
            ),
        )
    if every:
        _fixed(out, layers, facts, config, reference, skip_connections)
    for name in (Remedy.PSEUDO_NORM.option, Remedy.RESCALE.option):  # last, as in _backward_fixes
        if name in out:
            out[name] = out.pop(name)
    max_norm = config.suggest.clip_max_norm
    clip = Suggestion(
        Remedy.CLIP,
        (),
        Where.MODEL,
        {"max_norm": max_norm},
        f"trial candidate: global gradient-norm clipping at {max_norm:g}",
        (),
    )
    out.setdefault(Remedy.CLIP.option, (clip,))
    return out


def _fixed(
    out: dict[str, tuple[Suggestion, ...]],
    layers: Sequence[LayerStats],
    facts: Facts,
    config: Config,
    reference: float | None,
    skip_connections: bool | None,
) -> None:
    """The remedies the scan's measurements gave no place for, at a fixed one (``candidates(every=True)``)."""
    fixed = "trial candidate (--remedy all): fixed placement"
    if Remedy.PSEUDO_NORM.option not in out and (every := _pseudo_norm_every(layers, facts, config, ())):
        out[Remedy.PSEUDO_NORM.option] = (replace(every, reason=fixed),)
    if Remedy.RESCALE.option not in out and reference is not None:
        gains = rescale_gains(layers, reference, 1.0, config.suggest.rescale_max_gain)
        if gains:
            out[Remedy.RESCALE.option] = (
                Suggestion(Remedy.RESCALE, tuple(gains), Where.REPLACE, {"gains": gains}, fixed, ()),
            )
    weighted = _weighted(layers, facts)
    if Remedy.RESIDUAL.option not in out and len(weighted) >= 2 and not skip_connections:
        out[Remedy.RESIDUAL.option] = (_residual(weighted, ()),)
