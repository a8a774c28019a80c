"""Which remedies a trial trains: ``--remedy`` parsed, the scan behind the candidates, and why one is missing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from ..advice import candidates
from ..config import Config
from ..errors import ConfigError
from ..recorder import model_facts
from ..records import LayerFacts
from ..remedies.apply import module_name, residual_blocks
from ..results import Report, Suggestion
from ..vocab import IN_MEMORY, Remedy, Severity

UNTREATED = "none"
REMEDY_NAMES: tuple[str, ...] = tuple(r.option for r in Remedy if r in IN_MEMORY)
SELECTORS: tuple[str, ...] = ("auto", UNTREATED, *REMEDY_NAMES, "all")


UNSEEN_THROUGH_TIME = (
    "the scan found no problems, but it cannot rule out a gradient that vanishes across many steps of a vanilla "
    "nn.RNN when every step has its own loss, so the GRU swap was trained as well"
)


@dataclass(frozen=True)
class Plan:
    """What a trial will train: the selected candidates (by CLI name, in order), and why."""

    selected: dict[str, tuple[Suggestion, ...]]
    available: dict[str, tuple[Suggestion, ...]]
    report: Report | None  # the scan behind the candidates; None for --remedy none
    note: str | None = None
    not_trained: tuple[tuple[str, str], ...] = ()  # --remedy all: (remedy, why) for each remedy left out
    healthy: bool = False  # --remedy auto and the scan found no problem: see ``untrained``


def parse_remedies(text: str) -> tuple[str, ...]:
    """``--remedy``: one selector, or a comma-separated list of remedy names; ConfigError otherwise."""
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not names:
        raise ConfigError(f"--remedy is empty; choose from {', '.join(SELECTORS)}")
    for name in names:
        if name not in SELECTORS:
            raise ConfigError(f"--remedy {name!r} is not a remedy; choose from {', '.join(SELECTORS)}")
    if len(names) > 1 and set(names) & {"auto", "all", UNTREATED}:
        raise ConfigError(
            "--remedy auto, all and none stand alone; list remedy names with commas instead, "
            "e.g. --remedy normalization,init"
        )
    return names


def plan(model: nn.Module, report: Report | None, remedies: Sequence[str], config: Config | None = None) -> Plan:
    """Pick the candidates a trial trains, from ``report`` (the scan of ``model``; None for ``--remedy none``).

    ``auto``: every candidate when the scan has a warning or error finding (info findings such as frozen
    layers ask for no remedy), except ``clip`` unless the scan itself suggested it (clipping does nothing to
    gradients that are too small); with no such finding only the untreated model is trained, or, for a model with
    a vanilla ``nn.RNN``, the untreated model and the GRU swap (``UNSEEN_THROUGH_TIME``). ``all``: every
    candidate. ``none``: no scan, the untreated run only. Names: each must be a candidate, else ConfigError
    saying why not.
    """
    if tuple(remedies) == (UNTREATED,) or report is None:
        return Plan({}, {}, None, "trained the untreated model only (--remedy none)")
    config = config or Config()
    facts = model_facts(model)
    every = tuple(remedies) == ("all",)
    available = _applicable(
        model,
        candidates(
            report.layers,
            facts,
            report.suggestions,
            config,
            every=every,
            reference=report.summary.reference_grad_rms,
            skip_connections=report.model.skip_connections,
        ),
    )
    if every:
        missing = tuple((name, _why_not(name, report, facts)) for name in REMEDY_NAMES if name not in available)
        return Plan(dict(available), available, report, not_trained=missing)
    if tuple(remedies) == ("auto",):
        problems = [f for f in report.findings if f.severity.rank >= Severity.WARNING.rank]
        if not problems:
            # The position profile cannot see decay across many steps when every step has its own loss (a tagger):
            # a vanilla nn.RNN gets its gated swap trained even so (benchmarks/repair.py, the "time" family).
            unseen = {name: available[name] for name in (Remedy.GATED_RECURRENT.option,) if name in available}
            if unseen:
                return Plan(unseen, available, report, UNSEEN_THROUGH_TIME, healthy=True)
            healthy = (
                "the scan found no problems: the model is healthy, so only the untreated model was "
                "trained (use --remedy all to try the remedies anyway)"
            )
            return Plan({}, available, report, healthy, healthy=True)
        suggested = {s.remedy for s in report.suggestions}
        # Clipping alone only when the scan suggested it and did not already pair it with the remedy it belongs to.
        paired = any(len(group) > 1 for group in available.values())
        chosen = {
            name: s for name, s in available.items() if name != "clip" or (Remedy.CLIP in suggested and not paired)
        }
        rules = ", ".join(dict.fromkeys(f.rule for f in problems))
        return Plan(chosen, available, report, f"the scan found {rules}")
    selected: dict[str, tuple[Suggestion, ...]] = {}
    for name in remedies:
        if name not in available:
            why = _why_not(name, report, facts)
            raise ConfigError(f"remedy {name} does not apply to this model: {why}")
        selected[name] = available[name]
    return Plan(selected, available, report)


def untrained(chosen: Plan, best_accuracy: float | None, config: Config | None = None) -> Plan | None:
    """``--remedy auto`` on a model the scan called healthy, after its trial: when no arm trained reached
    ``trial.trained_accuracy`` (mean held-out accuracy of the best arm; classification only), the scan missed
    something (a model that trains only partly is not healthy), so every candidate but clip is trained as well.
    None when the first trial stands (benchmarks/repair.py: on the zoo's tuning half, deep nets that the scan
    called healthy stayed at 0.19-0.47 held-out untreated)."""
    config = config or Config()
    threshold = config.trial.trained_accuracy
    if not chosen.healthy or best_accuracy is None or best_accuracy >= threshold:
        return None
    extra = {name: group for name, group in chosen.available.items() if name != "clip" and name not in chosen.selected}
    if not extra:
        return None
    note = (
        f"the scan found no problems, but no model trained reached trial.trained_accuracy {threshold:g} "
        f"(best {best_accuracy:.2f} held-out), so every candidate was trained"
    )
    return Plan({**chosen.selected, **extra}, chosen.available, chosen.report, note)


def _applicable(model: nn.Module, found: dict[str, tuple[Suggestion, ...]]) -> dict[str, tuple[Suggestion, ...]]:
    """The candidates whose structural change this model allows (skip connections need equal-shape blocks)."""
    out = {}
    for name, group in found.items():
        first = group[0]
        names = [module_name(n) for n in first.layers]
        if first.remedy is Remedy.RESIDUAL and not residual_blocks(model, names, int(first.params["block"])):
            continue
        out[name] = group
    return out


def _why_not(name: str, report: Report, facts: Mapping[str, LayerFacts]) -> str:
    rules = {f.rule for f in report.findings if f.severity.rank >= Severity.WARNING.rank}
    weighted = [layer for layer in report.layers if layer.trainable and (f := facts.get(layer.name)) and f.weighted]
    if name in ("pseudo-norm", "rescale"):
        if "forward_collapse" in rules:
            return (
                "the forward signal has collapsed (forward_collapse), and a backward-only fix cannot "
                "bring it back, so the scan offers none; try normalization or init"
            )
        if "vanishing_gradient" not in rules:
            return f"no layer's gradient is vanishing, so there is nothing to restore ({_verdict(report)})"
        if name == "pseudo-norm":
            return (
                "the measured backward signal never falls below suggest.pseudo_norm_min_ratio between "
                "layers, so there is nowhere to put one"
            )
        return "no layer's gradient is below diagnose.vanishing_warning of the reference, so there is no gain to set"
    if name == "activation":
        return "it has no Sigmoid or Tanh modules to replace"
    if name == "residual":
        if report.model.skip_connections:
            return "it already has skip connections"
        return "no run of equal-shape layers in an nn.Sequential to wrap (skips across shape changes need code)"
    if name == "gated-recurrent":
        return "it has no vanilla nn.RNN to replace"
    if name in ("normalization", "init", "regularize") and not weighted:
        return "it has no trainable Linear or Conv layers to act on"
    return f"the scan offers no {name} candidate ({_verdict(report)})"


def _verdict(report: Report) -> str:
    problems = [f.rule for f in report.findings if f.severity.rank >= Severity.WARNING.rank]
    return "the scan found no problems" if not problems else "scan: " + ", ".join(dict.fromkeys(problems))
