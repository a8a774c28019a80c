"""Findings → suggestions, each tied to the findings that motivate it and naming concrete modules.

Order matters: the first suggestion is the one to try first. When the forward signal has collapsed, the forward
fixes (init, normalization) lead and the backward-only ones (pseudo-norm, rescale) are left out, because a gradient
fix cannot restore inputs that no longer differ between samples (shared/research.md, our digits measurements).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from .config import Config
from .diagnose import Diagnosis, preceding_parametric
from .recorder import SATURATING, LayerRecord
from .remedies.apply import IN_MEMORY
from .remedies.placement import Placement, pseudo_norm_points, rescale_gains
from .results import Finding, LayerStats, Remedy, Status, Suggestion, Where

_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)


def suggest(diagnosis: Diagnosis, records: Sequence[LayerRecord], config: Config) -> tuple[Suggestion, ...]:
    findings = {f.rule: f for f in diagnosis.findings}
    layers = diagnosis.layers
    modules = {r.name: r.module for r in records}
    out: list[Suggestion] = []
    if "nonfinite" in findings:
        return (_inspect(findings["nonfinite"], layers),)
    if "forward_collapse" in findings:
        out += _forward_fixes(layers, modules, ("forward_collapse", *_also(findings, "vanishing_gradient")))
    elif "vanishing_gradient" in findings:
        out += _backward_fixes(layers, modules, findings["vanishing_gradient"], diagnosis, config)
    exploding = _also(findings, "forward_explosion", "exploding_gradient")
    if exploding:
        out += _exploding_fixes(layers, modules, exploding)
    if "saturation" in findings:
        out += _saturation_fixes(layers, modules, findings["saturation"], config)
    if "dead_units" in findings:
        dead = findings["dead_units"]
        out.append(
            Suggestion(
                Remedy.ACTIVATION,
                dead.layers,
                Where.REPLACE,
                {"activation": "LeakyReLU", "negative_slope": 0.01},
                f"replace {_list(dead.layers)} with LeakyReLU (or ELU) so units that are negative for every input "
                f"still pass a gradient",
                ("dead_units",),
            )
        )
    if "underflow" in findings and "float16" in findings["underflow"].evidence.get("dtypes", ()):
        under = findings["underflow"]
        out.append(
            Suggestion(
                Remedy.LOSS_SCALING,
                under.layers,
                Where.MODEL,
                {"use": "torch.amp.GradScaler"},
                "scale the loss before backward (torch.amp.GradScaler) or keep gradients in float32/bfloat16: "
                f"{_list(under.layers)} fall below the smallest normal number of their dtype",
                ("underflow",),
            )
        )
    return tuple(_dedupe(out))


def _also(findings: dict[str, Finding], *rules: str) -> tuple[str, ...]:
    return tuple(rule for rule in rules if rule in findings)


def _weighted(layers: Sequence[LayerStats], modules: dict[str, nn.Module]) -> list[LayerStats]:
    return [layer for layer in layers if layer.trainable and isinstance(modules.get(layer.name), _WEIGHTED)]


def _activation_kind(layers: Sequence[LayerStats], modules: dict[str, nn.Module]) -> str | None:
    kinds = [
        type(modules[layer.name]).__name__
        for layer in layers
        if layer.parameters == 0 and isinstance(modules.get(layer.name), (*SATURATING, nn.ReLU))
    ]
    return max(set(kinds), key=kinds.count) if kinds else None


def _init_params(kind: str | None) -> dict[str, object]:
    if kind == "Tanh":
        return {"scheme": "xavier_uniform_", "gain": round(5 / 3, 4), "bias": 0.0}  # nn.init.calculate_gain("tanh")
    if kind == "Sigmoid":
        return {"scheme": "xavier_uniform_", "gain": 1.0, "bias": 0.0}
    return {"scheme": "kaiming_normal_", "nonlinearity": "relu", "mode": "fan_in", "bias": 0.0}


def _norm_for(module: nn.Module, layer: LayerStats) -> str:
    if isinstance(module, nn.Conv1d):
        return "BatchNorm1d"
    if isinstance(module, nn.Conv2d):
        return "BatchNorm2d"
    if isinstance(module, nn.Conv3d):
        return "BatchNorm3d"
    shape = layer.output_shape or ()
    return "BatchNorm1d" if len(shape) == 2 else "LayerNorm"


def _forward_fixes(
    layers: Sequence[LayerStats], modules: dict[str, nn.Module], rules: tuple[str, ...]
) -> list[Suggestion]:
    weighted = _weighted(layers, modules)
    if not weighted:
        return []
    hidden = weighted[:-1] or weighted  # the output layer keeps its scale: normalizing logits is not the fix
    kind = _activation_kind(layers, modules)
    init = _init_params(kind)
    norms = {layer.name: _norm_for(modules[layer.name], layer) for layer in hidden}
    out = [
        Suggestion(
            Remedy.NORMALIZATION,
            _names(hidden),
            Where.AFTER,
            _norm_params(norms),
            f"insert {_common(norms)} after {_list(_names(hidden))} so each layer sees inputs that differ between "
            f"samples again; backward-only fixes (pseudo-norm, rescale) cannot help here — they rescale gradients "
            f"but the forward signal they would carry has already collapsed",
            rules,
        ),
        # benchmarks/remedies.py: a norm layer after every layer of a deep stack makes the gradient grow toward
        # the input (10-30x at depth 20-30); with SGD, normalization alone failed at depth >= 30 and
        # normalization with clipping trained (0.90-0.96 held-out on digits).
        _clip(
            rules,
            "together with the norm layers: they make the gradient grow toward the input in a deep "
            "stack, and plain SGD then takes steps too large for the input-side layers",
        ),
    ]
    if not _same_init(layers, modules, init):
        out.append(
            Suggestion(
                Remedy.INIT,
                _names(weighted),
                Where.MODEL,
                init,
                f"re-initialise {_list(_names(weighted))} with nn.init.{init['scheme']}"
                + (f"(gain={init['gain']})" if "gain" in init else "(nonlinearity='relu')")
                + " and zero biases: the current init shrinks the signal at every layer"
                + (f" ({kind})" if kind else ""),
                rules,
            )
        )
    if len(weighted) >= 10:
        out.append(_residual(weighted, rules))
    return out


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
    layers: Sequence[LayerStats], modules: dict[str, nn.Module], finding: Finding, diagnosis: Diagnosis, config: Config
) -> list[Suggestion]:
    out: list[Suggestion] = []
    rules = ("vanishing_gradient",)
    placement = pseudo_norm_points(layers, config.suggest.pseudo_norm_min_ratio)
    if placement is not None and placement.after:
        out.append(
            Suggestion(
                Remedy.PSEUDO_NORM,
                placement.after,
                Where.AFTER,
                _pseudo_norm_params(placement, config),
                f"insert gradscope.PseudoNorm after {_list(placement.after)} ({len(placement.after)} insertion(s)): "
                f"the backward signal then never drops below {config.suggest.pseudo_norm_min_ratio:g}× its restored "
                f"value between two of them, instead of {placement.untreated_ratio:.2g}× end to end",
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
                    f"grows by g², "
                    f"matching the output-side layers",
                    rules,
                )
            )
    acts = [layer for layer in layers if isinstance(modules.get(layer.name), (nn.Sigmoid, nn.Tanh))]
    if acts:
        kind = _activation_kind(layers, modules)
        out.append(
            Suggestion(
                Remedy.ACTIVATION,
                _names(acts),
                Where.REPLACE,
                {"activation": "ReLU", "init": "kaiming_normal_"},
                f"replace the {kind} modules {_list(_names(acts))} with ReLU (or ELU) and use Kaiming init: "
                f"{'σ′ ≤ 1/4' if kind == 'Sigmoid' else 'tanh′ ≤ 1'} shrinks the gradient at every layer",
                rules,
            )
        )
    recurrent = [
        layer for layer in layers if type(modules.get(layer.name)) is nn.RNN and layer.status is Status.VANISHING
    ]
    if recurrent:
        out.append(
            Suggestion(
                Remedy.GATED_RECURRENT,
                _names(recurrent),
                Where.REPLACE,
                {"module": "LSTM"},
                f"replace {_list(_names(recurrent))} with nn.LSTM or nn.GRU: gating keeps gradients over long "
                f"sequences",
                rules,
            )
        )
    weighted = _weighted(layers, modules)
    if len(weighted) >= 10:
        out.append(_residual(weighted, rules))
    del finding
    return out


def _exploding_fixes(
    layers: Sequence[LayerStats], modules: dict[str, nn.Module], rules: tuple[str, ...]
) -> list[Suggestion]:
    weighted = _weighted(layers, modules)
    kind = _activation_kind(layers, modules)
    # A growing gradient in a tanh/sigmoid stack comes from gains above 1 (tanh's 5/3 in a deep stack is already
    # too much: benchmarks/remedies.py, depth 60); unit gain keeps it in check.
    init = {**_init_params(kind), "gain": 1.0} if kind in ("Tanh", "Sigmoid") else _init_params(kind)
    gain = _weight_gain(layers, modules)
    out: list[Suggestion] = []
    if not _same_init(layers, modules, init):
        call = f"nn.init.{init['scheme']}" + (f"(gain={init['gain']})" if "gain" in init else "")
        measured = f" (median weight RMS × √fan-in {gain:.3g})" if gain is not None else ""
        out.append(
            Suggestion(
                Remedy.INIT,
                _names(weighted),
                Where.MODEL,
                init,
                f"re-initialise {_list(_names(weighted))} with {call}: the current weights amplify the signal at each "
                f"layer{measured}",
                rules,
            )
        )
    out.append(_clip(rules, "as a safety net while the cause is fixed"))
    return out


def _clip(rules: tuple[str, ...], why: str) -> Suggestion:
    return Suggestion(
        Remedy.CLIP,
        (),
        Where.MODEL,
        {"max_norm": 1.0},
        f"clip the global gradient norm before each step (torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)) "
        f"{why}",
        rules,
    )


def _weight_gain(layers: Sequence[LayerStats], modules: dict[str, nn.Module]) -> float | None:
    """Median weight RMS × √fan-in of the weighted layers: the gain their current init amounts to."""
    gains = sorted(
        layer.weight_rms * math.sqrt(_fan(modules[layer.name]))
        for layer in _weighted(layers, modules)
        if layer.weight_rms is not None and _fan(modules[layer.name])
    )
    return gains[len(gains) // 2] if gains else None


def _same_init(layers: Sequence[LayerStats], modules: dict[str, nn.Module], init: dict[str, object]) -> bool:
    """Whether the suggested init is what the model already has (within 25 %): re-drawing the same distribution
    changes nothing (benchmarks/remedies.py: Xavier-initialised sigmoid stacks re-initialised with Xavier trained
    exactly as untreated)."""
    measured = _weight_gain(layers, modules)
    if measured is None:
        return False
    expected = float(init["gain"]) if "gain" in init else math.sqrt(2.0)  # type: ignore[arg-type]
    return abs(measured / expected - 1.0) < 0.25


def _fan(module: nn.Module) -> int:
    from .diagnose import fan_in

    return fan_in(module) or 0


def _saturation_fixes(
    layers: Sequence[LayerStats], modules: dict[str, nn.Module], finding: Finding, config: Config
) -> list[Suggestion]:
    rules = ("saturation",)
    large: dict[str, float] = dict(finding.evidence.get("large_weight_layers", {}))
    if large:
        lam = config.suggest.regularize_lambda
        names = tuple(large)
        return [
            Suggestion(
                Remedy.REGULARIZE,
                names,
                Where.MODEL,
                {"penalty": "l2", "lambda": lam, "parameters": [f"{n}.weight" for n in names]},
                f"add λ·Σ‖W‖² with λ={lam:g} on {_list(tuple(f'{n}.weight' for n in names))} (or weight_decay on "
                f"those parameters): large weights push units into the flat part of the activation, where "
                f"w·φ′(aw) → 0; a penalty pulls them back to where φ′ is of order 1 (Ven & Lederer)",
                rules,
            )
        ]
    sources = [preceding_parametric(layers, layer.index) for layer in layers if layer.name in finding.layers]
    hidden = tuple(dict.fromkeys(s.name for s in sources if s is not None))
    norms = {
        name: _norm_for(modules[name], next(x for x in layers if x.name == name))
        for name in hidden
        if isinstance(modules.get(name), _WEIGHTED)
    }
    if not norms:
        return []
    return [
        Suggestion(
            Remedy.NORMALIZATION,
            tuple(norms),
            Where.AFTER,
            _norm_params(norms),
            f"insert {_common(norms)} after {_list(tuple(norms))}: the weights are not large, so the inputs to the "
            f"saturated units are; normalising them keeps the units in their sloped range",
            rules,
        )
    ]


def _inspect(finding: Finding, layers: Sequence[LayerStats]) -> Suggestion:
    origin = str(finding.evidence.get("first_layer"))
    kind = str(finding.evidence.get("first_layer_type", "module"))
    del layers
    return Suggestion(
        Remedy.INSPECT,
        (origin,),
        Where.REPLACE,
        {"pass": finding.evidence.get("pass")},
        f"look at what '{origin}' ({kind}) computes: a log, sqrt, division or exp of an out-of-range value is the "
        f"usual cause; clamp its input or add an epsilon there. Every number after it is meaningless until then",
        ("nonfinite",),
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


def _names(layers: Sequence[LayerStats]) -> tuple[str, ...]:
    return tuple(layer.name for layer in layers)


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


def _list(names: Sequence[str], head: int = 3, tail: int = 1) -> str:
    quoted = [f"'{n}'" for n in names]
    if len(quoted) <= head + tail + 1:
        return ", ".join(quoted)
    return f"{', '.join(quoted[:head])}, … {', '.join(quoted[-tail:])} ({len(quoted)} layers)"


def candidates(
    report_layers: Sequence[LayerStats], modules: dict[str, nn.Module], suggested: Sequence[Suggestion], config: Config
) -> dict[str, tuple[Suggestion, ...]]:
    """Every remedy a training trial can try on this model, by name, each a ready-to-apply suggestion.

    The scan's own suggestions come first (they carry the measured placement and gains); the classic fixes are
    added where the model has what they act on (weighted layers for init/normalization, sigmoid-type modules for an
    activation swap). Names follow the CLI: pseudo-norm, rescale, regularize, activation, normalization, init, clip.
    """
    out: dict[str, tuple[Suggestion, ...]] = {}
    clips = [s for s in suggested if s.remedy is Remedy.CLIP]
    for s in suggested:
        if s.remedy not in IN_MEMORY:
            continue
        name = s.remedy.value.replace("_", "-")
        # A clip the advice gives for the same finding trains with the remedy, as the advice means it.
        paired = next((c for c in clips if s.remedy is not Remedy.CLIP and set(c.rules) & set(s.rules)), None)
        out.setdefault(name, (s,) if paired is None else (s, paired))
    weighted = _weighted(report_layers, modules)
    if "pseudo-norm" not in out:
        placement = pseudo_norm_points(report_layers, config.suggest.pseudo_norm_min_ratio)
        if placement is not None and placement.after:
            out["pseudo-norm"] = (
                Suggestion(
                    Remedy.PSEUDO_NORM,
                    placement.after,
                    Where.AFTER,
                    _pseudo_norm_params(placement, config),
                    "trial candidate: measured placement",
                    (),
                ),
            )
    if weighted:
        forward = {s.remedy: s for s in _forward_fixes(report_layers, modules, ())}
        for remedy in (Remedy.NORMALIZATION, Remedy.INIT):  # init is left out when it would re-draw the same
            if remedy in forward:
                out.setdefault(remedy.value, (forward[remedy],))
        if "regularize" not in out:
            lam = config.suggest.regularize_lambda
            names = _names(weighted)
            out["regularize"] = (
                Suggestion(
                    Remedy.REGULARIZE,
                    names,
                    Where.MODEL,
                    {"penalty": "l2", "lambda": lam, "parameters": [f"{n}.weight" for n in names]},
                    "trial candidate: L2 penalty on every weighted layer",
                    (),
                ),
            )
    acts = [layer for layer in report_layers if isinstance(modules.get(layer.name), (nn.Sigmoid, nn.Tanh))]
    if acts and "activation" not in out:
        out["activation"] = (
            Suggestion(
                Remedy.ACTIVATION,
                _names(acts),
                Where.REPLACE,
                {"activation": "ReLU", "init": "kaiming_normal_"},
                "trial candidate: ReLU with Kaiming init",
                (),
            ),
        )
    out.setdefault(
        "clip",
        (
            Suggestion(
                Remedy.CLIP,
                (),
                Where.MODEL,
                {"max_norm": 1.0},
                "trial candidate: global gradient-norm clipping at 1.0",
                (),
            ),
        ),
    )
    return out
