"""A CI policy laid over a Report: which (rule, layer) checks fail, after per-rule and per-layer-glob overrides.

Pure functions on ``Report`` data (no torch, no printing). The unit of a verdict is a **check**: one rule on one
layer. A finding that names 22 layers gives 22 checks, so that a glob such as ``embed*`` can relax exactly the
layers it names, JUnit can show a test case per rule and layer, and a baseline can say which layers are new.

Severity of a check, lowest priority first: the finding's own severity → ``policy.severity[rule]`` → each
``policy.layers[glob]`` whose glob matches the layer, in file order (``"*"`` inside a glob entry means every rule;
a rule named in the same entry beats ``"*"``). ``ignore`` drops the check from the verdict (it is still listed).
A check fails when its severity is at or above ``policy.fail_on`` and it is not *known* (present at a failing
severity in the baseline). ``policy.fail_statuses`` makes every layer in one of those statuses fail, whatever its
finding's severity.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from ..config import ALL_RULES, IGNORE, PolicyConfig
from ..errors import ConfigError
from ..results import Finding, LayerStats, Report
from ..vocab import DIAGNOSE_RULES, STATUS_RULE, FailOn, Rule, Severity
from .baseline import Comparison, FindingRef, layer_deltas, probe_notes

BASELINE_RULE = Rule.BASELINE_REGRESSION
KNOWN_RULES: tuple[str, ...] = tuple(Rule)
DEFAULT_BASELINE_SEVERITY = Severity.ERROR
MODEL_LAYER = "(model)"  # the layer name of a check whose finding names no layer


class State(StrEnum):
    """What a check means for the verdict."""

    FAIL = "fail"  # at or above fail_on, new: the check fails
    WARN = "warn"  # below fail_on: reported, does not fail
    KNOWN = "known"  # would fail, but the baseline has it too: accepted debt, does not fail
    IGNORED = "ignored"  # the policy says ignore


@dataclass(frozen=True)
class Check:
    """One rule on one layer, with the policy applied."""

    rule: str
    layer: str  # qualified name; MODEL_LAYER when the finding names no layer
    severity: Severity | None  # None: ignored by the policy
    original: Severity  # what the scan said
    state: State
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)  # the finding's evidence plus this layer's numbers
    source: str = ""  # which policy entry set the severity, e.g. "policy.layers['embed*']"

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.layer)

    @property
    def failed(self) -> bool:
        return self.state is State.FAIL


@dataclass(frozen=True)
class CheckResult:
    """The verdict of ``gradscope check``: the report, every check, and the comparison with a baseline if any."""

    report: Report
    checks: tuple[Check, ...]
    fail_on: str
    comparison: Comparison | None = None

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.state is State.FAIL)

    @property
    def passed(self) -> bool:
        return not self.failures

    def rules(self) -> tuple[str, ...]:
        """Every rule a report of this kind checks, in a fixed order (JUnit has a suite per rule)."""
        extra = sorted({c.rule for c in self.checks} - set(KNOWN_RULES))
        rules = [*DIAGNOSE_RULES, *extra]
        if self.comparison is not None:
            rules.append(BASELINE_RULE)
        return tuple(rules)


def _severity(value: Any) -> Severity | None:
    """A validated policy value → a Severity, or None for ignore (YAML reads a bare ``off`` as False)."""
    if value is False or value == IGNORE:
        return None
    return Severity(value)


# -------------------------------------------------------------------------------------------- the policy


def layer_overrides(policy: PolicyConfig, layer: str) -> list[tuple[str, Mapping[str, Any]]]:
    """The ``policy.layers`` entries whose glob matches ``layer``, in file order (later ones win)."""
    return [(glob, entry) for glob, entry in policy.layers.items() if fnmatch.fnmatchcase(layer, glob)]


def severity_for(policy: PolicyConfig, rule: str, layer: str | None, original: Severity) -> tuple[Severity | None, str]:
    """The severity the policy gives ``rule`` on ``layer``, and which entry decided it ("" when none did)."""
    severity: Severity | None = original
    source = ""
    if rule in policy.severity:
        severity, source = _severity(policy.severity[rule]), f"policy.severity.{rule}"
    if layer is None:
        return severity, source
    for glob, entry in layer_overrides(policy, layer):
        # Within one entry a named rule is more specific than "*".
        for key in (ALL_RULES, rule):
            if key in entry:
                severity, source = _severity(entry[key]), f"policy.layers[{glob!r}]"
    return severity, source


def baseline_factor_for(policy: PolicyConfig, layer: str) -> float:
    factor = float(policy.baseline_factor)
    for _, entry in layer_overrides(policy, layer):
        if "baseline_factor" in entry:
            factor = float(entry["baseline_factor"])
    return factor


def fails(severity: Severity | None, fail_on: str) -> bool:
    return FailOn(fail_on).fails(severity)


def apply_policy(
    report: Report,
    policy: PolicyConfig,
    *,
    fail_on: str | None = None,
    known: Iterable[tuple[str, str]] = (),
) -> tuple[Check, ...]:
    """Every (rule, layer) check of ``report`` under ``policy``. ``known``: keys that the baseline already fails."""
    threshold = fail_on or policy.fail_on
    known_keys = set(known)
    layers = {la.name: la for la in report.layers}
    checks: dict[tuple[str, str], Check] = {}
    for finding in report.findings:
        for name in finding.layers or (None,):
            check = _check(
                finding, name, layers.get(name) if name is not None else None, policy, threshold, report, known_keys
            )
            previous = checks.get(check.key)
            # Two findings of one rule on one layer (rare): keep the more severe.
            if previous is None or _rank(check.severity) > _rank(previous.severity):
                checks[check.key] = check
    for layer in report.layers:
        if layer.status.value not in policy.fail_statuses:
            continue
        rule = STATUS_RULE.get(layer.status)
        if rule is None:
            continue
        key = (rule, layer.name)
        base = checks.get(key)
        message = base.message if base is not None else f"layer '{layer.name}' has status {layer.status.value}"
        evidence = dict(base.evidence) if base is not None else _layer_evidence(layer, report)
        state = State.KNOWN if key in known_keys else State.FAIL
        checks[key] = Check(
            rule,
            layer.name,
            Severity.ERROR,
            base.original if base else Severity.ERROR,
            state,
            message,
            evidence,
            f"policy.fail_statuses ({layer.status.value})",
        )
    return tuple(sorted(checks.values(), key=lambda c: (_rule_order(c.rule), _layer_order(report, c.layer))))


def _check(
    finding: Finding,
    name: str | None,
    layer: LayerStats | None,
    policy: PolicyConfig,
    threshold: str,
    report: Report,
    known: set[tuple[str, str]],
) -> Check:
    severity, source = severity_for(policy, finding.rule, name, finding.severity)
    layer_name = MODEL_LAYER if name is None else name
    if severity is None:
        state = State.IGNORED
    elif fails(severity, threshold):
        state = State.KNOWN if (finding.rule, layer_name) in known else State.FAIL
    else:
        state = State.WARN
    # The layer's own numbers first: they are what differs between the checks of one finding.
    evidence = {**(_layer_evidence(layer, report) if layer is not None else {}), **finding.evidence}
    return Check(finding.rule, layer_name, severity, finding.severity, state, finding.message, evidence, source)


def _layer_evidence(layer: LayerStats, report: Report) -> dict[str, Any]:
    """This layer's own numbers, the ones a reviewer wants next to a failure."""
    out: dict[str, Any] = {"layer_status": layer.status.value}
    grad = None if layer.grad_rms is None else layer.grad_rms.median
    signal = None if layer.signal_rms is None else layer.signal_rms.median
    if grad is not None:
        out["grad_rms"] = grad
        ref = report.summary.reference_grad_rms
        if ref and math.isfinite(ref) and math.isfinite(grad):
            out["ratio_to_reference"] = grad / ref
    if signal is not None:
        out["signal_rms"] = signal
    if layer.saturated_fraction is not None:
        out["saturated_fraction"] = layer.saturated_fraction
    if layer.dead_fraction is not None:
        out["dead_fraction"] = layer.dead_fraction
    return out


def _rank(severity: Severity | None) -> int:
    return -1 if severity is None else severity.rank


def _rule_order(rule: str) -> int:
    return KNOWN_RULES.index(rule) if rule in KNOWN_RULES else len(KNOWN_RULES)


def _layer_order(report: Report, name: str) -> int:
    for layer in report.layers:
        if layer.name == name:
            return layer.index
    return -1  # model-level checks first


def evaluate(
    report: Report,
    policy: PolicyConfig,
    *,
    fail_on: str | None = None,
    comparison: Comparison | None = None,
) -> CheckResult:
    """The check verdict: the policy's checks, known ones accepted from the baseline, plus its regressions."""
    threshold = fail_on or policy.fail_on
    if threshold not in [f.value for f in FailOn]:
        raise ConfigError(f"--fail-on {threshold!r} must be one of {', '.join(FailOn)}")
    known = comparison.known_failures if comparison is not None else frozenset()
    checks = list(apply_policy(report, policy, fail_on=threshold, known=known))
    if comparison is not None:
        checks += regression_checks(comparison, policy, threshold)
    return CheckResult(report, tuple(checks), threshold, comparison)


def regression_checks(comparison: Comparison, policy: PolicyConfig, fail_on: str) -> list[Check]:
    """A ``baseline_regression`` check per layer that moved beyond its factor."""
    out: list[Check] = []
    for delta in comparison.regressions:
        severity, source = severity_for(policy, BASELINE_RULE, delta.name, DEFAULT_BASELINE_SEVERITY)
        if severity is None:
            state = State.IGNORED
        else:
            state = State.FAIL if fails(severity, fail_on) else State.WARN
        out.append(
            Check(
                BASELINE_RULE,
                delta.name,
                severity,
                DEFAULT_BASELINE_SEVERITY,
                state,
                delta.reason,
                delta.evidence(),
                source,
            )
        )
    return out


def group(checks: Sequence[Check]) -> list[tuple[tuple[str, State, Severity | None], list[Check]]]:
    """Checks grouped by (rule, state, severity), in order of first appearance: one line or annotation each."""
    groups: dict[tuple[str, State, Severity | None], list[Check]] = {}
    for check in checks:
        groups.setdefault((check.rule, check.state, check.severity), []).append(check)
    return list(groups.items())


def compare(
    baseline: Report,
    current: Report,
    *,
    policy: PolicyConfig | None = None,
    fail_on: str | None = None,
    factor: float | None = None,
    baseline_label: str | None = None,
    current_label: str | None = None,
) -> Comparison:
    """Compare two reports by layer name under ``policy``: layer moves beyond the factor, and the findings that are
    new, resolved or known (failing in the baseline too). ``factor`` overrides ``policy.baseline_factor``
    (per-layer glob overrides still apply). Raises ``ConfigError`` when no layer name matches."""
    policy = policy if policy is not None else PolicyConfig()
    if factor is not None:
        policy = replace(policy, baseline_factor=factor)
    base_label = baseline_label or baseline.model.target
    cur_label = current_label or current.model.target
    threshold = fail_on or policy.fail_on
    deltas = layer_deltas(baseline, current, lambda name: baseline_factor_for(policy, name), base_label)
    base_failing = {c.key: c for c in apply_policy(baseline, policy, fail_on=threshold) if c.state is State.FAIL}
    cur_failing = {c.key: c for c in apply_policy(current, policy, fail_on=threshold) if c.state is State.FAIL}
    return Comparison(
        baseline=baseline,
        current=current,
        baseline_label=base_label,
        current_label=cur_label,
        factor=float(policy.baseline_factor),
        fail_on=threshold,
        layers=tuple(deltas),
        new_findings=tuple(_ref(c) for k, c in cur_failing.items() if k not in base_failing),
        resolved_findings=tuple(_ref(c) for k, c in base_failing.items() if k not in cur_failing),
        known_failures=frozenset(base_failing),
        notes=probe_notes(baseline, current),
    )


def _ref(check: Check) -> FindingRef:
    severity = check.severity.value if check.severity is not None else IGNORE
    return FindingRef(check.rule, check.layer, severity, check.message)


def judge(
    report: Report,
    policy: PolicyConfig,
    *,
    baseline: Report | None = None,
    baseline_label: str | None = None,
    current_label: str | None = None,
    fail_on: str | None = None,
    factor: float | None = None,
) -> CheckResult:
    """The verdict of ``gradscope check`` (and ``assert_gradient_health``): ``report`` under ``policy``, compared
    with ``baseline`` when there is one."""
    comparison = None
    if baseline is not None:
        comparison = compare(
            baseline,
            report,
            policy=policy,
            fail_on=fail_on,
            factor=factor,
            baseline_label=baseline_label,
            current_label=current_label,
        )
    return evaluate(report, policy, fail_on=fail_on, comparison=comparison)
