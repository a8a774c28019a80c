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
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .results import Finding, LayerStats, Report, Severity, Status

if TYPE_CHECKING:  # pragma: no cover
    from .baseline import Comparison
    from .config import PolicyConfig

# The rules diagnose.py emits (README, "JSON report"), plus the one a baseline comparison adds.
DIAGNOSE_RULES: tuple[str, ...] = (
    "vanishing_gradient",
    "exploding_gradient",
    "forward_collapse",
    "forward_explosion",
    "nonfinite",
    "saturation",
    "dead_units",
    "underflow",
    "frozen",
    "disconnected",
    "zero_gradient",
)
BASELINE_RULE = "baseline_regression"
KNOWN_RULES: tuple[str, ...] = (*DIAGNOSE_RULES, BASELINE_RULE)

# The rule that reports a layer status; fail_statuses turns a layer's status into a failure of this rule.
STATUS_RULE: dict[Status, str] = {
    Status.VANISHING: "vanishing_gradient",
    Status.EXPLODING: "exploding_gradient",
    Status.NONFINITE: "nonfinite",
    Status.FROZEN: "frozen",
    Status.DISCONNECTED: "disconnected",
    Status.ZERO: "zero_gradient",
    Status.SATURATED: "saturation",
    Status.DEAD: "dead_units",
    Status.UNDERFLOW: "underflow",
}

IGNORE = "ignore"
ALL_RULES = "*"
FAIL_ON = ("error", "warning", "info", "never")
LAYER_KEYS = (ALL_RULES, "baseline_factor")
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


# ----------------------------------------------------------------------------------------------- validation


def validate_policy(policy: PolicyConfig) -> None:
    """Raise ``ConfigError`` naming the key when the policy section is malformed (called by PolicyConfig)."""
    if policy.fail_on not in FAIL_ON:
        raise ConfigError(f"policy.fail_on={policy.fail_on!r} must be one of {', '.join(FAIL_ON)}")
    statuses = {s.value for s in Status}
    for status in policy.fail_statuses:
        if status not in statuses:
            raise ConfigError(f"policy.fail_statuses: unknown status {status!r} (known: {', '.join(statuses)})")
    if not isinstance(policy.severity, Mapping):
        raise ConfigError(f"policy.severity must be a mapping of rule: severity, got {policy.severity!r}")
    for rule, value in policy.severity.items():
        _check_rule(rule, f"policy.severity.{rule}")
        _check_severity(value, f"policy.severity.{rule}")
    _check_factor(policy.baseline_factor, "policy.baseline_factor")
    if not isinstance(policy.layers, Mapping):
        raise ConfigError(f"policy.layers must be a mapping of glob: overrides, got {policy.layers!r}")
    for glob, entry in policy.layers.items():
        where = f"policy.layers[{glob!r}]"
        if not isinstance(glob, str) or not glob:
            raise ConfigError(f"{where}: a layer glob must be a non-empty string")
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"{where} must be a mapping such as {{vanishing_gradient: warning}} or {{'*': ignore}}, got {entry!r}"
            )
        for key, value in entry.items():
            if key == "baseline_factor":
                _check_factor(value, f"{where}.baseline_factor")
                continue
            if key != ALL_RULES:
                _check_rule(key, f"{where}.{key}")
            _check_severity(value, f"{where}.{key}")


def _check_rule(rule: Any, where: str) -> None:
    if rule not in KNOWN_RULES:
        raise ConfigError(f"{where}: unknown rule {rule!r} (known: {', '.join(KNOWN_RULES)})")


def _check_severity(value: Any, where: str) -> None:
    if value is False or value in (*(s.value for s in Severity), IGNORE):
        return
    raise ConfigError(f"{where}={value!r} must be error, warning, info or ignore")


def _check_factor(value: Any, where: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 1
    if not ok:
        raise ConfigError(f"{where}={value!r} must be a number > 1 (e.g. 10: a tenfold move is a regression)")


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
    if severity is None or fail_on == "never":
        return False
    return severity.rank >= Severity(fail_on).rank


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
    if threshold not in FAIL_ON:
        raise ConfigError(f"--fail-on {threshold!r} must be one of {', '.join(FAIL_ON)}")
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


# --------------------------------------------------------------------------------------------- rendering
# The check's own summary (the scan report is rendered by gradscope.report; this adds the verdict on top).


def _evidence_text(evidence: Mapping[str, Any], limit: int = 6) -> str:
    from .report import _format as fmt

    items = list(evidence.items())[:limit]
    return ", ".join(f"{k}={fmt.num(v)}" for k, v in items)


def verdict_line(result: CheckResult) -> str:
    failures = result.failures
    known = sum(1 for c in result.checks if c.state is State.KNOWN)
    warns = sum(1 for c in result.checks if c.state is State.WARN)
    head = "PASSED" if result.passed else f"FAILED: {len(failures)} failing check{'s' if len(failures) != 1 else ''}"
    extras = []
    if warns:
        extras.append(f"{warns} below --fail-on {result.fail_on}")
    if known:
        extras.append(f"{known} known in the baseline")
    return head + (f" ({', '.join(extras)})" if extras else "")


def summary_rows(result: CheckResult, *, limit: int | None = None) -> list[tuple[str, str, str, str, str]]:
    """(state, severity, rule, layers, message) per group of checks that are not ignored, failures first."""
    order = {State.FAIL: 0, State.WARN: 1, State.KNOWN: 2, State.IGNORED: 3}
    from .report import _format as fmt

    rows = []
    for (rule, state, severity), checks in sorted(group(result.checks), key=lambda g: order[g[0][1]]):
        if state is State.IGNORED:
            continue
        names = [c.layer for c in checks]
        first = checks[0]
        message = first.message
        if rule == BASELINE_RULE and len(checks) > 1:
            message = f"{len(checks)} layers moved beyond the allowed factor; first: '{first.layer}': {message}"
        rows.append((state.value, "—" if severity is None else severity.value, rule, fmt.layer_list(names), message))
    return rows if limit is None else rows[:limit]


def print_check(result: CheckResult, console: Any) -> None:
    """The verdict block printed after the report: the failing checks, then the comparison headline."""
    from rich.text import Text

    style = {"fail": "bold red", "warn": "yellow", "known": "dim", "ignored": "dim"}
    console.print()
    title = Text("gradscope check  ", style="bold")
    title.append(verdict_line(result), style="bold green" if result.passed else "bold red")
    console.print(title)
    for state, severity, rule, layers, message in summary_rows(result):
        line = Text(f"  {state:<5} ", style=style[state])
        line.append(f"{severity:<7} {rule}", style="bold" if state == "fail" else "")
        line.append(f"  {layers}\n        {message}", style="" if state == "fail" else "dim")
        console.print(line)
    if result.comparison is not None:
        from .baseline import headline

        c = result.comparison
        console.print(Text(f"baseline {c.baseline_label}: {headline(c)}", style="dim"))
        for note in c.notes:
            console.print(Text(f"note: {note}", style="yellow"))


def check_markdown(result: CheckResult, *, full_report: bool = True) -> str:
    """A Markdown summary for a CI step summary or a PR comment: verdict, failing checks table, comparison."""
    from .report import render_markdown
    from .report.markdown import markdown_table

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    report = result.report
    icon = "✅" if result.passed else "❌"
    parts = [
        f"## {icon} gradscope check: `{cell(report.model.class_name)}` — {cell(verdict_line(result))}",
        f"Target `{cell(report.model.target)}` · fail on `{result.fail_on}`"
        + (f" · baseline `{cell(result.comparison.baseline_label)}`" if result.comparison else ""),
    ]
    rows = summary_rows(result)
    if rows:
        icons = {"fail": "❌ fail", "warn": "⚠️ warn", "known": "➖ known", "ignored": "ignored"}
        table_rows = [[icons[s], sev, f"`{r}`", cell(layers), cell(msg)] for s, sev, r, layers, msg in rows]
        parts.append(markdown_table(table_rows, ["Check", "Severity", "Rule", "Layers", "Message"]))
    else:
        parts.append("No findings.")
    failures = result.failures
    if failures:
        lines = [f"- `{c.rule}` on `{cell(c.layer)}`: {cell(_evidence_text(c.evidence))}" for c in failures[:20]]
        if len(failures) > 20:
            lines.append(f"- … and {len(failures) - 20} more (see the JUnit report)")
        parts.append(
            "<details><summary>Failing checks with evidence</summary>\n\n" + "\n".join(lines) + "\n\n</details>"
        )
    if result.comparison is not None:
        from .baseline import render_comparison_markdown

        parts.append(render_comparison_markdown(result.comparison, level=3).rstrip("\n"))
    if full_report:
        body = render_markdown(report).replace("\n## ", "\n### ")
        if body.startswith("## "):
            body = "#" + body
        parts.append(f"<details><summary>Full scan report</summary>\n\n{body.rstrip()}\n\n</details>")
    return "\n\n".join(parts) + "\n"
