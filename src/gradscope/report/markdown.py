"""The markdown report (tabulate "github"): fit for a CI step summary or a pull-request comment.

Plain GitHub-flavoured markdown only: a title with the verdict, a summary table, the layer table, then
findings, suggestions and the fix. Long layer tables fold into ``<details>`` so the verdict stays on the
first screen.
"""

from __future__ import annotations

from collections.abc import Sequence

import tabulate as tabulate_module
from tabulate import tabulate

from ..results import Finding, Report, Suggestion
from ..util import displayed, md_cell
from ..vocab import Severity, Status
from . import fmt

FOLD_LAYERS_OVER = 60  # tables longer than this fold into <details>

_VERDICT_ICON = {None: "✅", Severity.INFO: "✅", Severity.WARNING: "⚠️", Severity.ERROR: "❌"}
_SEVERITY_ICON = {Severity.ERROR: "❌", Severity.WARNING: "⚠️", Severity.INFO: "ℹ️"}
_INDENT = "· "  # leading spaces collapse in a table cell; a visible prefix keeps the tree readable


def render_markdown(report: Report) -> str:
    report = displayed(report)
    parts = [_title(report), _summary(report), *_layers(report)]
    if report.findings:
        parts += ["### Findings", _findings(report.findings)]
    if report.suggestions:
        parts += ["### Suggestions", _suggestions(report.suggestions)]
    if report.fix is not None:
        parts += _fix(report)
    return "\n\n".join(parts) + "\n"


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    return markdown_table([[md_cell(c) for c in row] for row in rows], headers)


def markdown_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """tabulate's "github" table, identical on every machine: tabulate measures emoji with ``wcwidth`` when that
    package happens to be installed, which would change the padding with the environment."""
    module = vars(tabulate_module)  # module globals: WIDE_CHARS_MODE is not in tabulate's type stubs
    saved = {key: module.get(key) for key in ("WIDE_CHARS_MODE", "wcwidth")}
    module.update(WIDE_CHARS_MODE=False, wcwidth=None)  # some paths test wcwidth alone
    try:
        return str(tabulate(list(rows), headers=list(headers), tablefmt="github", disable_numparse=True))
    finally:
        module.update(saved)


def _status(status: Status | None) -> str:
    if status is None:
        return fmt.DASH
    return status.value if status is Status.OK else f"**{status.value}**"


def _verdict(report: Report) -> str:
    v = fmt.verdict(report)
    return f"{_VERDICT_ICON[v.severity]} {v.text}"


def _title(report: Report) -> str:
    return f"## gradscope: {report.model.class_name} — {_verdict(report)}"


def _summary(report: Report) -> str:
    s = report.summary
    rows = [
        ("Target", _code(report.model.target)),
        ("Model", f"{_code(report.model.class_name)}, {fmt.params_text(report)}"),
        ("Probe", fmt.probe_text(report)),
        ("Verdict", _verdict(report)),
        ("Reference grad RMS", fmt.sci(s.reference_grad_rms)),
        ("Worst layer", fmt.worst_text(report)),
        ("Decay", fmt.decay_text(s.decay_per_layer)),
        ("Forward spread", fmt.spread_text(s.forward_spread_ratio)),
        *([("Gradient by position", fmt.positions_text(report))] if report.positions is not None else []),
    ]
    return _table(rows, ("", ""))


def _layers(report: Report) -> list[str]:
    rows: list[tuple[str, ...]] = []
    for row in fmt.tree_rows(report.layers):
        label = _INDENT * row.level + (_code(row.label) if row.layer is not None else f"*{row.label}*")
        layer = row.layer
        if layer is None:
            rows.append((label, "", "", "", "", ""))
            continue
        rows.append(
            (
                label,
                layer.type,
                fmt.shape(layer.output_shape),
                fmt.sci(fmt.median(layer.grad_rms)),
                fmt.sci(fmt.median(layer.signal_rms)),
                _status(layer.status),
            )
        )
    table = _table(rows, ("Layer", "Type", "Output shape", "Grad RMS", "Signal RMS", "Status"))
    if len(report.layers) > FOLD_LAYERS_OVER:
        # Blank lines around the table: GitHub renders markdown in <details> only when set apart from HTML.
        summary = f"<details><summary>Layers ({len(report.layers)}, forward order)</summary>"
        return ["### Layers", f"{summary}\n\n{table}\n\n</details>"]
    return ["### Layers", table]


def _findings(findings: Sequence[Finding]) -> str:
    lines: list[str] = []
    for f in findings:
        lines.append(f"- {_SEVERITY_ICON[f.severity]} **{f.severity.value}** `{f.rule}` — {f.message}")
        if f.layers:
            lines.append(f"  - layers: {fmt.layer_list(f.layers, quote='`')}")
        if f.evidence:
            lines.append(f"  - evidence: {fmt.mapping(f.evidence)}")
    return "\n".join(lines)


def _suggestions(suggestions: Sequence[Suggestion]) -> str:
    lines: list[str] = []
    for i, s in enumerate(suggestions, 1):
        lines.append(f"{i}. **{s.remedy.value}** {fmt.suggestion_target(s, quote='`')}")
        if s.params:
            lines.append(f"   - params: `{fmt.mapping(s.params)}`")
        lines.append(f"   - why: {s.reason}")
    return "\n".join(lines)


def _fix(report: Report) -> list[str]:
    assert report.fix is not None
    after = report.fix.report
    rows: list[tuple[str, ...]] = []
    for row in fmt.fix_rows(report, after):
        before_status, after_status = fmt.status_of(row.before), fmt.status_of(row.after)
        status = _status(before_status)
        if before_status != after_status:
            status += f" → {_status(after_status)}"
        change = row.change
        rows.append(
            (
                _code(row.name) + (" (new)" if row.before is None else ""),
                fmt.sci(None if row.before is None else fmt.median(row.before.grad_rms)),
                fmt.sci(None if row.after is None else fmt.median(row.after.grad_rms)),
                fmt.DASH if change is None else fmt.signed(change, 1),
                status,
            )
        )
    head = (
        f"Applied {fmt.plural(len(report.fix.applied), 'suggestion')} and re-scanned: **{_verdict(after)}**. "
        f"Decay {fmt.decay_change_text(report.summary.decay_per_layer, after.summary.decay_per_layer)}."
    )
    table = _table(rows, ("Layer", "Grad RMS before", "Grad RMS after", "Δ orders", "Status"))
    parts = ["### Fix", head, table, "Applied:", _suggestions(report.fix.applied)]
    if report.fix.skipped:
        parts += ["Not applied:", "\n".join(f"- `{s.remedy.value}`: {why}" for s, why in report.fix.skipped)]
    if report.fix.code:
        parts += ["In your code:", f"```python\n{report.fix.code}\n```"]
    return parts
