"""A self-contained HTML report: inline CSS and inline SVG charts, no script, nothing fetched from the network.

The page leads with the verdict and a chart of per-layer signal RMS (the gradient reaching each layer's output) on
a log axis, in forward order, the baseline as a dashed grey line and the current scan in blue, with regressions
and improvements shaded behind their layers; a second chart does the same for the parameter gradients. A scan page
(no baseline) adds the forward activation RMS per layer, and a sequence model's report the gradient reaching each
input position. Hovering a layer's column shows its numbers (SVG ``<title>``, no JavaScript). Tables follow: failing
checks, the baseline comparison, findings, suggestions, every layer.

The page's CSS is scoped to one wrapper element (``<div class="gs">``), so the same body embeds in a notebook
(``report_fragment``, what ``Report._repr_html_`` shows) without restyling the notebook around it. The trial and
timeline pages (``html_trial``, ``html_timeline``) are built from the public helpers here: ``page``, ``fragment``,
``esc``, ``log_range``, ``sup``, ``chart_layers``, ``findings_html``.

Every string that comes from a model or a report goes through ``html.escape`` (layer names are user data).
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..results import LayerStats, Report
from ..util import displayed
from ..vocab import Status
from . import fmt

if TYPE_CHECKING:  # pragma: no cover
    from ..ci.baseline import Comparison
    from ..ci.policy import CheckResult

CURRENT = "#2563eb"
BASELINE = "#94a3b8"
BAD = "#dc2626"
GOOD = "#16a34a"

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { background: #f8fafc; color: #0f172a;
  font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 24px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 32px 0 10px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.sub { color: #475569; margin: 0; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 999px; font-weight: 600; font-size: 13px;
  vertical-align: 3px; margin-left: 8px; }
.pass { background: #dcfce7; color: #166534; } .fail { background: #fee2e2; color: #991b1b; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 18px 0 8px; }
.card { flex: 1 1 0; background: #fff; border: 1px solid #e2e8f0; border-radius: 10px; padding: 10px 14px;
  min-width: 104px; }
.card b { display: block; font-size: 22px; }
.card span { color: #64748b; font-size: 12px; white-space: nowrap; }
.card.bad b { color: #b91c1c; } .card.good b { color: #15803d; }
figure { background: #fff; border: 1px solid #e2e8f0; border-radius: 10px; margin: 16px 0; padding: 12px 12px 4px; }
figcaption { font-weight: 600; margin: 0 0 4px 6px; } figcaption span { font-weight: 400; color: #64748b; }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: inherit; fill: #475569; }
.col:hover rect.hit { fill: #0f172a; fill-opacity: 0.05; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #e2e8f0; }
th, td { padding: 5px 10px; border-bottom: 1px solid #f1f5f9; text-align: left; vertical-align: top; }
th { background: #f1f5f9; font-weight: 600; font-size: 13px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.cmp td:last-child { white-space: nowrap; }
tr.regression td { background: #fef2f2; } tr.improvement td { background: #f0fdf4; }
tr.added td { background: #ecfeff; } tr.removed td { background: #f8fafc; color: #64748b; }
.st-bad { color: #b91c1c; font-weight: 600; } .st-dim { color: #64748b; }
.fail-row td:first-child { color: #b91c1c; font-weight: 600; }
ul.findings { padding-left: 18px; } ul.findings li { margin: 6px 0; }
.ev { color: #475569; font-size: 12.5px; }
details { margin: 8px 0; } summary { cursor: pointer; color: #1d4ed8; }
.note { background: #fffbeb; border: 1px solid #fde68a; border-radius: 8px; padding: 8px 12px; }
footer { margin-top: 32px; color: #94a3b8; font-size: 12px; }
ul.legend { list-style: none; padding: 0 6px; margin: 2px 0 8px; display: flex; flex-wrap: wrap; gap: 4px 18px; }
ul.legend li { white-space: nowrap; } .swatch { display: inline-block; width: 22px; height: 4px; border-radius: 2px;
  vertical-align: middle; margin-right: 6px; }
table.arms td.best { font-weight: 600; }
"""

_PAGE_CSS = "html, body { margin: 0; background: #f8fafc; }"


def _scoped(css: str, scope: str) -> str:
    """Every rule of ``css`` limited to the elements inside ``scope`` (``body``/``:root`` rules style ``scope``
    itself), so the report can sit inside someone else's page."""
    out = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        scoped = []
        for sel in (x.strip() for x in selectors.split(",")):
            scoped.append(scope if sel in ("body", ":root") else f"{scope} {sel}")
        out.append(f"{', '.join(scoped)} {{{body}}}")
    return "\n".join(out)


SCOPE = "gs"
CSS = _scoped(_CSS, f".{SCOPE}")


def esc(text: object) -> str:
    """``text`` safe inside an element or a quoted attribute."""
    return html.escape(str(text), quote=True)


_e = esc


def fragment(body: Sequence[str]) -> str:
    """The report's body as one self-styled element: what a notebook shows, and what ``page`` wraps."""
    return f'<div class="{SCOPE}"><style>{CSS}</style>\n<main>\n' + "\n".join(body) + "\n</main></div>"


def page(title: str, body: Sequence[str]) -> str:
    """A whole self-contained document around ``fragment(body)``."""
    footer = "<footer>gradscope · self-contained report: no scripts, no external resources</footer>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_PAGE_CSS}</style>\n</head>\n<body>\n"
        + fragment([*body, footer])
        + "\n</body>\n</html>\n"
    )


@dataclass(frozen=True)
class _Point:
    name: str
    type: str
    baseline: float | None
    current: float | None
    baseline_status: Status | None
    current_status: Status | None
    change: str  # regression, improvement, unchanged, added, removed ("" without a baseline)
    tip: str | None = None  # the hover text, when not a layer's


def render_html(report: Report, *, result: CheckResult | None = None, comparison: Comparison | None = None) -> str:
    """The whole page. ``result`` (a check) and ``comparison`` (a baseline) add their sections when given."""
    report, result, comparison = displayed((report, result, comparison))
    return page(f"gradscope — {report.model.class_name}", _body(report, result, comparison))


def report_fragment(report: Report) -> str:
    """The scan page's body without the document around it (Jupyter's ``_repr_html_``)."""
    return fragment(_body(displayed(report), None, None))


def _body(report: Report, result: CheckResult | None, comparison: Comparison | None) -> list[str]:
    if comparison is None and result is not None:
        comparison = result.comparison
    body = [_header(report, result, comparison)]
    for note in comparison.notes if comparison is not None else ():
        body.append(f'<p class="note">{_e(note)}</p>')
    body += chart_layers(report, comparison)
    if result is not None:
        body.append(_checks(result))
    if comparison is not None:
        body.append(_comparison(comparison))
    body.append(findings_html(report))
    body.append(_layers(report))
    return body


def chart_layers(report: Report, comparison: Comparison | None = None) -> list[str]:
    """The per-layer charts: signal RMS, parameter-gradient RMS, and without a baseline the forward activation RMS;
    then the per-position profile when the report has one."""
    charts = [
        _chart(
            _points(report, comparison, "signal_rms"),
            "Signal RMS per layer",
            "RMS of the gradient reaching each layer's output, forward order, log scale",
            comparison is not None,
        )
    ]
    grad_points = [
        p for p in _points(report, comparison, "grad_rms") if p.baseline is not None or p.current is not None
    ]
    if grad_points:
        charts.append(
            _chart(
                grad_points,
                "Grad RMS per layer with parameters",
                "RMS of each layer's own parameter gradients, log scale",
                comparison is not None,
            )
        )
    # The forward pass has no baseline comparison (regressions are judged on gradients): a scan page only.
    if comparison is None:
        # The status dots speak of gradients: here a point is red only when the activation itself is not finite.
        act_points = [
            dataclasses.replace(
                p,
                current_status=Status.OK if math.isfinite(p.current) else Status.NONFINITE,
                tip=f"{p.name or '(model)'} ({p.type})\nactivation RMS {fmt.sci(p.current)}",
            )
            for p in _points(report, None, "activation_rms")
            if p.current is not None
        ]
        if act_points:
            charts.append(
                _chart(
                    act_points,
                    "Activation RMS per layer",
                    "RMS of each layer's output in the forward pass, forward order, log scale",
                    False,
                )
            )
    if report.positions is not None and report.positions.grad_rms:
        charts.append(_positions_chart(report))
    return charts


def _positions_chart(report: Report) -> str:
    p = report.positions
    assert p is not None
    points = [
        _Point(
            str(i),
            "",
            None,
            v,
            None,
            Status.OK if math.isfinite(v) else Status.NONFINITE,
            "",
            tip=f"position {i}: gradient RMS {fmt.sci(v)}",
        )
        for i, v in enumerate(p.grad_rms)
    ]
    ratio = "" if p.ratio is None else f"; the {p.weak_end or 'start'} gets {fmt.sci(p.ratio)}× the other end's"
    return _chart(
        points,
        "Gradient per input position",
        f"RMS of the gradient at each position of '{p.layer or '(model)'}' (dimension {p.axis}), log scale{ratio}",
        False,
        axis=f"position along dimension {p.axis} (hover a column for its value)",
    )


# ------------------------------------------------------------------------------------------------- header


def _header(report: Report, result: CheckResult | None, comparison: Comparison | None) -> str:
    if result is not None:
        from .check import verdict_line

        ok = result.passed
        verdict = verdict_line(result)
    else:
        ok = report.healthy if comparison is None else not comparison.failed
        verdict = fmt.verdict(report).text if comparison is None else ("no regressions" if ok else "regressions")
    badge = f'<span class="badge {"pass" if ok else "fail"}">{_e("PASSED" if ok else "FAILED")}</span>'
    parts = [
        f"<h1>{_e(report.model.class_name)}{badge}</h1>",
        f'<p class="sub"><code>{_e(report.model.target)}</code> · {_e(fmt.params_text(report))}</p>',
        f'<p class="sub">probe {_e(fmt.probe_text(report))}</p>',
    ]
    if comparison is not None:
        parts.append(
            f'<p class="sub">baseline <code>{_e(comparison.baseline_label)}</code> · regression factor '
            f"{_e(f'{comparison.factor:g}')}×</p>"
        )
    parts.append(f'<p class="sub"><b>{_e(verdict)}</b></p>')
    cards = []
    if result is not None:
        cards.append(_card(len(result.failures), "failing checks", bad=bool(result.failures)))
    cards.append(_card(len(report.findings), "findings", bad=not report.healthy))
    if comparison is not None:
        cards += [
            _card(len(comparison.regressions), "regressions", bad=bool(comparison.regressions)),
            _card(len(comparison.improvements), "improvements", good=bool(comparison.improvements)),
            _card(len(comparison.added), "added layers"),
            _card(len(comparison.removed), "removed layers"),
        ]
    s = report.summary
    cards.append(
        _card(
            fmt.signed(-s.decay_per_layer)
            if s.decay_per_layer is not None and math.isfinite(s.decay_per_layer)
            else fmt.DASH,
            "decay, orders/layer",
        )
    )
    return "<header>\n" + "\n".join(parts) + f'\n<div class="cards">{"".join(cards)}</div>\n</header>'


def _card(value: object, label: str, *, bad: bool = False, good: bool = False) -> str:
    cls = "card bad" if bad else ("card good" if good else "card")
    return f'<div class="{cls}"><b>{_e(value)}</b><span>{_e(label)}</span></div>'


# -------------------------------------------------------------------------------------------------- chart


def _median(layer: LayerStats | None, metric: str) -> float | None:
    if layer is None:
        return None
    spread = getattr(layer, metric)
    return None if spread is None else spread.median


def _points(report: Report, comparison: Comparison | None, metric: str) -> list[_Point]:
    if comparison is None:
        return [_Point(la.name, la.type, None, _median(la, metric), None, la.status, "") for la in report.layers]
    return [
        _Point(
            d.name,
            d.type,
            _median(d.baseline, metric),
            _median(d.current, metric),
            None if d.baseline is None else d.baseline.status,
            None if d.current is None else d.current.status,
            d.change.value,
        )
        for d in comparison.layers
    ]


def _ok(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and v > 0


def sup(exponent: int) -> str:
    """``10^exponent`` as SVG text: the log-axis tick label."""
    return f'10<tspan dy="-6" font-size="9">{_e(fmt.MINUS if exponent < 0 else "")}{abs(exponent)}</tspan>'


def log_range(values: Sequence[float | None]) -> tuple[int, int, int]:
    """Decades ``lo``..``hi`` (at least two) that hold every positive finite value, and the tick step."""
    ok = [v for v in values if v is not None and _ok(v)]
    if ok:
        lo = math.floor(math.log10(min(ok)))
        hi = math.ceil(math.log10(max(ok)))
        if hi - lo < 2:
            lo, hi = lo - 1, hi + (1 if hi - lo < 1 else 0)
    else:
        lo, hi = -3, 0
    return lo, hi, max(1, math.ceil((hi - lo) / 8))


def _chart(points: Sequence[_Point], title: str, caption: str, with_baseline: bool, *, axis: str | None = None) -> str:
    """A log-scale chart of one value per column. ``axis``: the columns are numbered positions, not layers (x
    labels are indices, this text under them, no status legend)."""
    n = len(points)
    width, left, right, top = 1000, 64, 16, 28
    label_every = max(1, math.ceil(n / 40))
    longest = max((len(_short(p.name)) for p in points), default=4)
    bottom = 26 + (min(longest, 18) * 6 if label_every == 1 and axis is None else 18)
    plot_h = 260
    height = top + plot_h + bottom
    plot_w = width - left - right
    lo, hi, step = log_range([v for p in points for v in (p.baseline, p.current)])

    def y(v: float) -> float:
        return top + plot_h * (hi - math.log10(v)) / (hi - lo)

    col_w = plot_w / max(n, 1)

    def x(i: int) -> float:
        return left + (i + 0.5) * col_w

    svg: list[str] = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">']
    # Shaded columns: regressions red, improvements green, added/removed layers pale.
    shade = {
        "regression": (BAD, 0.10),
        "improvement": (GOOD, 0.10),
        "added": ("#06b6d4", 0.07),
        "removed": ("#64748b", 0.06),
    }
    for i, p in enumerate(points):
        if p.change in shade:
            color, alpha = shade[p.change]
            svg.append(
                f'<rect x="{x(i) - col_w / 2:.1f}" y="{top}" width="{col_w:.1f}" height="{plot_h}" '
                f'fill="{color}" fill-opacity="{alpha}"/>'
            )
    # Decade grid and labels.
    for e in range(lo, hi + 1, step):
        yy = y(10.0**e)
        svg.append(f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e2e8f0"/>')
        svg.append(f'<text x="{left - 8}" y="{yy + 4:.1f}" text-anchor="end" font-size="11">{sup(e)}</text>')
    svg.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#cbd5e1"/>')
    svg.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#cbd5e1"/>')
    # Lines, broken where a value is missing (no gradient, zero, non-finite).
    # A layer one side does not have (added/removed) is stepped over, not a break: the line stays readable.
    if with_baseline:
        svg += _polylines(
            [(p.baseline, p.baseline_status is not None) for p in points],
            x,
            y,
            BASELINE,
            'stroke-dasharray="5 4" stroke-width="1.6"',
        )
    svg += _polylines([(p.current, p.current_status is not None) for p in points], x, y, CURRENT, 'stroke-width="2.2"')
    floor_y = top + plot_h - 6
    for i, p in enumerate(points):
        if with_baseline and _ok(p.baseline):
            svg.append(
                f'<circle cx="{x(i):.1f}" cy="{y(p.baseline):.1f}" r="2.8" fill="#fff" '  # type: ignore[arg-type]
                f'stroke="{BASELINE}" stroke-width="1.4"/>'
            )
        if _ok(p.current):
            bad = p.current_status not in (None, Status.OK)
            svg.append(
                f'<circle cx="{x(i):.1f}" cy="{y(p.current):.1f}" r="{4.2 if bad else 3.2}" '  # type: ignore[arg-type]
                f'fill="{BAD if bad else CURRENT}" stroke="#fff" stroke-width="1"/>'
            )
        elif p.current_status is not None and (p.current is not None or p.current_status is Status.NONFINITE):
            # Zero or non-finite: no place on a log axis; a red cross on the floor says so.
            svg.append(
                f'<path d="M{x(i) - 4:.1f},{floor_y - 4:.1f} l8,8 m0,-8 l-8,8" stroke="{BAD}" stroke-width="2"/>'
            )
    # Hover columns with the numbers, and x labels.
    for i, p in enumerate(points):
        tip = p.tip if p.tip is not None else _tooltip(p, with_baseline)
        svg.append(
            f'<g class="col"><rect class="hit" x="{x(i) - col_w / 2:.1f}" y="{top}" width="{col_w:.1f}" '
            f'height="{plot_h}" fill="transparent"><title>{_e(tip)}</title></rect></g>'
        )
        if i % label_every == 0:
            tx, ty = x(i), top + plot_h + 12
            if label_every == 1 and axis is None:
                svg.append(
                    f'<text x="{tx:.1f}" y="{ty:.1f}" font-size="10.5" text-anchor="end" '
                    f'transform="rotate(-40 {tx:.1f} {ty:.1f})">{_e(_short(p.name))}</text>'
                )
            else:
                svg.append(f'<text x="{tx:.1f}" y="{ty + 2:.1f}" font-size="10.5" text-anchor="middle">{i}</text>')
    if axis is not None:
        svg.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="11" text-anchor="middle">{_e(axis)}</text>'
        )
        svg.append("</svg>")
        return (
            f"<figure><figcaption>{_e(title)} <span>— {_e(caption)}</span></figcaption>\n"
            + "\n".join(svg)
            + "\n</figure>"
        )
    # Legend.
    lx = width - right - (430 if with_baseline else 150)
    svg.append(f'<g font-size="11.5" transform="translate({lx},{12})">')
    svg.append(
        f'<line x1="0" x2="22" y1="0" y2="0" stroke="{CURRENT}" stroke-width="2.2"/>'
        f'<circle cx="11" cy="0" r="3.2" fill="{CURRENT}"/><text x="28" y="4">current</text>'
    )
    svg.append(f'<circle cx="88" cy="0" r="4.2" fill="{BAD}"/><text x="96" y="4">not ok</text>')
    if with_baseline:
        svg.append(
            f'<line x1="160" x2="182" y1="0" y2="0" stroke="{BASELINE}" stroke-width="1.6" '
            f'stroke-dasharray="5 4"/><text x="188" y="4">baseline</text>'
            f'<rect x="248" y="-6" width="12" height="12" fill="{BAD}" fill-opacity="0.18"/>'
            '<text x="264" y="4">regression</text>'
            f'<rect x="336" y="-6" width="12" height="12" fill="{GOOD}" fill-opacity="0.18"/>'
            '<text x="352" y="4">improvement</text>'
        )
    svg.append("</g>")
    if label_every > 1:
        svg.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="11" text-anchor="middle">'
            "layer index (forward order; hover a column for its name)</text>"
        )
    svg.append("</svg>")
    return (
        f"<figure><figcaption>{_e(title)} <span>— {_e(caption)}</span></figcaption>\n" + "\n".join(svg) + "\n</figure>"
    )


def _polylines(values: Sequence[tuple[float | None, bool]], x: object, y: object, color: str, style: str) -> list[str]:
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if len(run) > 1:
            out.append(
                f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" {style} stroke-linejoin="round"/>'
            )
        run.clear()

    for i, (v, present) in enumerate(values):
        if not present:
            continue
        if _ok(v):
            run.append(f"{x(i):.1f},{y(v):.1f}")  # type: ignore[operator]
        else:
            flush()
    flush()
    return out


def _short(name: str, limit: int = 18) -> str:
    name = name or "(model)"
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def _tooltip(p: _Point, with_baseline: bool) -> str:
    lines = [
        f"{p.name or '(model)'} ({p.type})",
        f"current {fmt.sci(p.current)}"
        + (f" · {p.current_status.value}" if p.current_status else " · not in the current model"),
    ]
    if with_baseline:
        lines.append(
            f"baseline {fmt.sci(p.baseline)}"
            + (f" · {p.baseline_status.value}" if p.baseline_status else " · not in the baseline")
        )
        if _ok(p.baseline) and _ok(p.current):
            from ..ci.baseline import ratio_text

            lines.append(f"change {ratio_text(p.current / p.baseline)}")  # type: ignore[operator]
        if p.change and p.change != "unchanged":
            lines.append(p.change)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- tables


def _table(headers: Sequence[str], rows: Sequence[tuple[Sequence[str], str]], numeric: set[int], cls: str = "") -> str:
    """``rows``: (cells already escaped, row class)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for cells, cls in rows:
        tds = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(cells))
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _checks(result: CheckResult) -> str:
    from .check import summary_rows

    rows = summary_rows(result)
    if not rows:
        return "<h2>Checks</h2><p>No findings: every check passes.</p>"
    table = _table(
        ["Check", "Severity", "Rule", "Layers", "Message"],
        [
            ([_e(s), _e(sev), f"<code>{_e(rule)}</code>", _e(layers), _e(msg)], "fail-row" if s == "fail" else "")
            for s, sev, rule, layers, msg in rows
        ],
        set(),
    )
    return f"<h2>Checks (fail on {_e(result.fail_on)})</h2>\n{table}"


def _status_cell(status: Status | None) -> str:
    if status is None:
        return "—"
    cls = (
        ""
        if status is Status.OK
        else ("st-dim" if status in (Status.FROZEN, Status.DISCONNECTED, Status.ZERO) else "st-bad")
    )
    return f'<span class="{cls}">{_e(status.value)}</span>' if cls else _e(status.value)


def _comparison(c: Comparison) -> str:
    from .diff import COMPARISON_HEADERS, comparison_rows, headline

    rows = []
    for d, cells in zip(c.layers, comparison_rows(c), strict=True):
        escaped = [f"<code>{_e(cells[0])}</code>", *(_e(x) for x in cells[1:])]
        rows.append((escaped, d.change.value if d.change.value != "unchanged" else ""))
    table = _table(COMPARISON_HEADERS, rows, {2, 3, 4, 5, 6, 7}, cls="cmp")
    parts = [f"<h2>Baseline comparison</h2>\n<p>{_e(headline(c))}.</p>"]
    for title, items in (
        ("Regressions", [f"{d.name or '(model)'}: {d.reason}" for d in c.regressions]),
        ("Improvements", [f"{d.name or '(model)'}: {d.reason}" for d in c.improvements]),
        ("New failing findings", [f"{f.severity} {f.rule} on {f.layer}: {f.message}" for f in c.new_findings]),
        ("Resolved findings", [f"{f.rule} on {f.layer}" for f in c.resolved_findings]),
    ):
        if items:
            lis = "".join(f"<li>{_e(item)}</li>" for item in items)
            parts.append(f'<p><b>{_e(title)}</b></p><ul class="findings">{lis}</ul>')
    open_attr = " open" if len(c.layers) <= 60 else ""
    parts.append(f"<details{open_attr}><summary>Every layer ({len(c.layers)})</summary>\n{table}\n</details>")
    return "\n".join(parts)


def findings_html(report: Report) -> str:
    """The report's findings and suggestions, as sections."""
    parts = ["<h2>Findings</h2>"]
    if not report.findings:
        parts.append("<p>None.</p>")
    else:
        items = []
        for f in report.findings:
            ev = _e(fmt.mapping(f.evidence)) if f.evidence else ""
            layers = _e(fmt.layer_list(f.layers)) if f.layers else "whole model"
            items.append(
                f'<li><span class="{"st-bad" if f.severity.value == "error" else ""}">{_e(f.severity.value)}</span> '
                f'<code>{_e(f.rule)}</code> — {_e(f.message)}<br><span class="ev">layers: {layers}'
                + (f" · {ev}" if ev else "")
                + "</span></li>"
            )
        parts.append(f'<ul class="findings">{"".join(items)}</ul>')
    if report.suggestions:
        items = []
        for s in report.suggestions:
            params = f' <span class="ev">{_e(fmt.mapping(s.params))}</span>' if s.params else ""
            items.append(
                f"<li><b>{_e(s.remedy.value)}</b> {_e(fmt.suggestion_target(s))}{params}<br>{_e(s.reason)}</li>"
            )
        parts.append(f'<h2>Suggestions</h2><ol class="findings">{"".join(items)}</ol>')
    return "\n".join(parts)


def _layers(report: Report) -> str:
    rows = [
        (
            [
                _e(str(la.index)),
                f"<code>{_e(la.name or '(model)')}</code>",
                _e(la.type),
                _e(fmt.shape(la.output_shape)),
                _e(fmt.sci(fmt.median(la.grad_rms))),
                _e(fmt.sci(fmt.median(la.signal_rms))),
                _status_cell(la.status),
            ],
            "",
        )
        for la in report.layers
    ]
    table = _table(["#", "Layer", "Type", "Output shape", "Grad RMS", "Signal RMS", "Status"], rows, {0, 4, 5})
    return f"<details><summary>All layers of the current scan ({len(report.layers)})</summary>\n{table}\n</details>"
