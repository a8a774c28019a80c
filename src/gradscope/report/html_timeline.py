"""The HTML page of ``gradscope report RUN.jsonl``: a layers × steps heatmap of the run's gradient RMS, the first
step each layer went bad, then the findings of the last recorded steps.

The heatmap is one inline SVG: a row per measured layer (forward order), a column per group of recorded steps (at
most ``MAX_CELLS`` columns; neighbours are merged as the text heatmap merges them), coloured on a log scale fitted
to the run's own range (dark = small, bright = large) with a legend of decades; red is non-finite, pale grey not
measured. Hovering a cell shows the layer, the steps and the value. Pure string work on the ``Timeline``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..util import displayed
from ..watching.timeline import EMPTY, EVENTS, Cell, Timeline
from . import fmt
from .html import chart_layers, esc, findings_html, fragment, log_range, page, sup
from .timeline import columns, event_rows, skipped_line

MAX_CELLS = 200  # heatmap columns drawn at most
NONFINITE = "#dc2626"
MISSING = "#e2e8f0"
ZERO = "#0b0b0b"
# viridis, low → high: dark purple for a vanishing gradient, yellow for an exploding one
STOPS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


def render_timeline_html(t: Timeline) -> str:
    t = displayed(t)
    return page(f"gradscope watch — {t.run.meta.get('model', 'model')}", _body(t))


def timeline_fragment(t: Timeline) -> str:
    """The page's body without the document around it (Jupyter's ``_repr_html_``)."""
    return fragment(_body(displayed(t)))


def color(x: float) -> str:
    """The colour at ``x`` in [0, 1] of the scale (clamped)."""
    x = min(1.0, max(0.0, x)) * (len(STOPS) - 1)
    i = min(int(x), len(STOPS) - 2)
    f = x - i
    rgb = (round(a + (b - a) * f) for a, b in zip(STOPS[i], STOPS[i + 1], strict=True))
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _group_value(row: Sequence[Cell], group: Sequence[int]) -> float | None:
    total = EMPTY
    for i in group:
        total = total + row[i]
    return total.value


def _body(t: Timeline) -> list[str]:
    meta = t.run.meta
    model = str(meta.get("model", "model"))
    first, last = (t.columns[0].first, t.columns[-1].last) if t.columns else (0, 0)
    parts = [
        f'<h1>{esc(model)} <span class="st-dim">· watched training run</span></h1>',
        f'<p class="sub"><code>{esc(t.run.source or "(in memory)")}</code> · mode {esc(meta.get("mode", "?"))}, '
        f"every {esc(meta.get('every', '?'))} step(s) · {t.recorded} recorded steps ({first}–{last})</p>",
    ]
    if t.skipped.count:
        parts.append(f'<p class="note">{esc(skipped_line(t))}; left out of the heatmap and the report.</p>')
    if t.run.skipped_lines:
        parts.append(
            f'<p class="note">{t.run.skipped_lines} unreadable line(s) skipped (a torn last line from a crash?)</p>'
        )
    body = ["<header>\n" + "\n".join(parts) + "\n</header>", heatmap_svg(t), _events(t)]
    body.append(f"<h2>Report of the last {t.report.probe.batches} recorded step(s)</h2>")
    body.append(f'<p class="sub"><b>{esc(fmt.verdict(t.report).text)}</b></p>')
    body += chart_layers(t.report)
    body.append(findings_html(t.report))
    return body


def heatmap_svg(t: Timeline) -> str:
    groups = columns(t.steps, MAX_CELLS)
    values = [[_group_value(row, g) for g in groups] for row in t.cells]
    lo, hi, tick = log_range([v for row in values for v in row])
    label_chars = min(max([len(n or "(model)") for n in t.names] + [5]), 28)
    width, right, top = 1000, 16, 8
    left = 14 + int(label_chars * 6.6)
    row_h = 16 if len(t.names) <= 40 else 10
    plot_w = width - left - right
    plot_h = row_h * len(t.names)
    legend_y = top + plot_h + 34
    height = legend_y + 46
    col_w = plot_w / max(len(groups), 1)

    def scaled(v: float) -> float:
        return (math.log10(v) - lo) / (hi - lo)

    svg = [
        f'<svg class="heatmap" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(t.stat)} per layer over steps">'
    ]
    for r, (name, row) in enumerate(zip(t.names, values, strict=True)):
        y = top + r * row_h
        shown = name or "(model)"
        label = shown if len(shown) <= label_chars else "…" + shown[-(label_chars - 1) :]
        svg.append(
            f'<text x="{left - 6}" y="{y + row_h * 0.72:.1f}" text-anchor="end" font-size="{min(11, row_h - 2)}" '
            f'class="mono">{esc(label)}<title>{esc(shown)}</title></text>'
        )
        for c, (group, v) in enumerate(zip(groups, row, strict=True)):
            a, b = t.columns[group[0]].first, t.columns[group[-1]].last
            steps = f"step {a}" if a == b else f"steps {a}–{b}"
            if v is None:
                fill, text = MISSING, "not measured"
            elif not math.isfinite(v):
                fill, text = NONFINITE, "non-finite"
            elif v <= 0:
                fill, text = ZERO, "0"
            else:
                fill, text = color(scaled(v)), fmt.sci(v)
            svg.append(
                f'<rect class="cell" x="{left + c * col_w:.2f}" y="{y}" width="{col_w + 0.3:.2f}" '
                f'height="{row_h - 1}" fill="{fill}"><title>{esc(shown)} · {steps}: {esc(text)}</title></rect>'
            )
    # Step axis: the first and last step and a few between, at their columns.
    axis_y = top + plot_h + 14
    marks = sorted({0, len(groups) - 1, *(round(k * (len(groups) - 1) / 5) for k in range(1, 5))})
    for c in marks if groups else ():
        xx = left + (c + 0.5) * col_w
        svg.append(
            f'<text x="{xx:.1f}" y="{axis_y}" text-anchor="middle" font-size="10.5">'
            f"{t.columns[groups[c][0]].first}</text>"
        )
    svg.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{axis_y + 14}" text-anchor="middle" font-size="11">'
        "training step (hover a cell for its value)</text>"
    )
    # Legend: the colour bar over the run's decades, then the special cells.
    bar_w = 320
    svg.append(
        '<defs><linearGradient id="gs-scale" x1="0" x2="1" y1="0" y2="0">'
        + "".join(
            f'<stop offset="{k / (len(STOPS) - 1):.2f}" stop-color="{color(k / (len(STOPS) - 1))}"/>'
            for k in range(len(STOPS))
        )
        + "</linearGradient></defs>"
    )
    svg.append(f'<rect x="{left}" y="{legend_y}" width="{bar_w}" height="10" fill="url(#gs-scale)"/>')
    for e in range(lo, hi + 1, tick):
        xx = left + bar_w * (e - lo) / (hi - lo)
        svg.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{legend_y + 10}" y2="{legend_y + 14}" stroke="#475569"/>')
        svg.append(
            f'<text class="tick" x="{xx:.1f}" y="{legend_y + 27}" text-anchor="middle" font-size="10.5">{sup(e)}</text>'
        )
    sx = left + bar_w + 30
    for k, (fill, text) in enumerate(((NONFINITE, "non-finite"), (ZERO, "zero"), (MISSING, "not measured"))):
        svg.append(
            f'<rect x="{sx + k * 120}" y="{legend_y}" width="12" height="10" fill="{fill}"/>'
            f'<text x="{sx + k * 120 + 18}" y="{legend_y + 9}" font-size="11">{text}</text>'
        )
    svg.append("</svg>")
    grouped = (
        f"; {len(t.columns)} columns of recorded steps merged into {len(groups)}"
        if len(groups) < len(t.columns)
        else ""
    )
    return (
        f"<figure><figcaption>{esc(t.stat)} per layer over steps <span>— rows: layers in forward order; log colour "
        f"scale fitted to this run{esc(grouped)}</span></figcaption>\n" + "\n".join(svg) + "\n</figure>"
    )


def _events(t: Timeline) -> str:
    rows = event_rows(t)
    if not rows:
        return "<h2>First bad step</h2><p>No layer vanished, exploded or went non-finite at any recorded step.</p>"
    head = "<th>Layer</th>" + "".join(f"<th>{esc(e)}</th>" for e in EVENTS)
    body = "".join(
        f"<tr><td><code>{esc(name)}</code></td>" + "".join(f'<td class="num">{esc(c)}</td>' for c in cells) + "</tr>"
        for name, cells in rows
    )
    return f"<h2>First bad step</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
