"""The HTML page of ``gradscope trial``: the training-loss curves of every arm on one chart, then the arms table.

One inline SVG: per arm a polyline of the training loss averaged over the seeds (``Arm.curve``: it stops where
the first seed diverged) over a pale band from the lowest to the highest seed at each point, all on one shared
linear scale, so a flat line at the top is an arm that did not learn. Hovering a point shows the step and the
values. The arms table gives each number as the mean over the seeds with the min–max range in brackets. Pure
string work on the ``TrialReport``; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..util import displayed
from . import fmt
from .html import esc, fragment, page

if TYPE_CHECKING:  # pragma: no cover
    from ..trial import Arm, TrialReport
    from ..trial.results import Stat

UNTREATED = "#475569"
PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0d9488", "#db2777", "#ca8a04", "#0891b2", "#b45309")


def render_trial_html(report: TrialReport) -> str:
    report = displayed(report)
    title = f"gradscope trial — {report.target}" if report.target else "gradscope trial"
    return page(title, _body(report))


def trial_fragment(report: TrialReport) -> str:
    """The page's body without the document around it (Jupyter's ``_repr_html_``)."""
    return fragment(_body(displayed(report)))


def arm_colors(report: TrialReport) -> dict[str, str]:
    """The untreated arm slate grey, the others from the palette in order."""
    colors = {}
    for i, arm in enumerate(report.arms):
        colors[arm.remedy] = UNTREATED if arm.remedy == "none" else PALETTE[(i - 1) % len(PALETTE)]
    return colors


def _body(report: TrialReport) -> list[str]:
    return [_header(report), _curves(report), _arms(report), _changes(report)]


def _header(report: TrialReport) -> str:
    seeds = report.seeds
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]}"
    if len(seeds) > 1 and not report.init_varies:
        seed_text += " (same init; order and dropout vary)"
    d = report.data
    kind = f"{d.classes} classes, cross-entropy" if d.task.value == "classification" else "regression, MSE"
    ok = report.helps
    badge = f'<span class="badge {"pass" if ok else "fail"}">{esc("HELPS" if ok else "NO CLEAR HELP")}</span>'
    parts = [
        f"<h1>Trial{badge}</h1>",
        f'<p class="sub"><code>{esc(report.target or "(model)")}</code> · {report.steps} steps, '
        f"{esc(report.optimizer.value)} lr {report.lr:g}, batch {report.batch_size}, {esc(seed_text)}</p>",
        f'<p class="sub">data {esc(d.source)}: {d.train} train / {d.test} held out, {esc(kind)}</p>',
        f'<p class="sub"><b>{esc(verdict_text(report))}</b></p>',
    ]
    if report.note:
        parts.append(f'<p class="note">{esc(report.note)}</p>')
    if report.caveat:
        parts.append(f'<p class="note">But {esc(report.caveat)}.</p>')
    return "<header>\n" + "\n".join(parts) + "\n</header>"


def verdict_text(report: TrialReport) -> str:
    if report.best is None:
        if len(report.arms) == 1:
            return "Only the untreated model was trained."
        return "No remedy finished: every treated run diverged."
    verdict = "helps" if report.helps else "does not clearly help"
    return f"Best: {report.best}; it {verdict} (margin: {report.margin})."


# ---------------------------------------------------------------------------------------------------- chart


def _band(arm: Arm) -> list[tuple[int, float, float]]:
    """(point, lowest seed, highest seed) where every seed still has a finite value."""
    out = []
    for i in range(min(len(r.curve) for r in arm.runs)):
        values = [r.curve[i] for r in arm.runs]
        if not all(math.isfinite(v) for v in values):
            break
        out.append((i, min(values), max(values)))
    return out


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _curves(report: TrialReport) -> str:
    colors = arm_colors(report)
    several = len(report.seeds) > 1
    points = max((len(r.curve) for a in report.arms for r in a.runs), default=0)
    values = [v for a in report.arms for r in a.runs for v in r.curve if math.isfinite(v)]
    caption = (
        "mean over the seeds, band from the lowest to the highest seed" if several else "one seed"
    ) + "; shared linear scale"
    if not values or points == 0:
        return "<figure><figcaption>Training loss</figcaption><p>No finite training loss to draw.</p></figure>"
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.04 * (hi - lo)
    lo, hi = max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad
    width, left, right, top, bottom, plot_h = 1000, 64, 16, 16, 40, 300
    height = top + plot_h + bottom
    plot_w = width - left - right

    def step_of(i: int) -> float:
        """The last training step of curve point ``i`` (points bucket the steps evenly)."""
        return (i + 1) * report.steps / points

    def x(i: int) -> float:
        return left + plot_w * step_of(i) / report.steps

    def y(v: float) -> float:
        return top + plot_h * (hi - v) / (hi - lo)

    svg = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="Training loss per arm">']
    for tick in _nice_ticks(lo, hi):
        yy = y(tick)
        svg.append(f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e2e8f0"/>')
        svg.append(f'<text x="{left - 8}" y="{yy + 4:.1f}" text-anchor="end" font-size="11">{tick:g}</text>')
    for tick in _nice_ticks(0, report.steps, 8):
        xx = left + plot_w * tick / report.steps
        svg.append(f'<text x="{xx:.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11">{tick:g}</text>')
    svg.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#cbd5e1"/>')
    svg.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#cbd5e1"/>')
    svg.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="11" text-anchor="middle">training step</text>'
    )
    if several:
        for arm in report.arms:
            band = _band(arm)
            if len(band) > 1:
                upper = " ".join(f"{x(i):.1f},{y(h):.1f}" for i, _, h in band)
                lower = " ".join(f"{x(i):.1f},{y(m):.1f}" for i, m, _ in reversed(band))
                svg.append(
                    f'<polygon class="band" points="{upper} {lower}" fill="{colors[arm.remedy]}" '
                    'fill-opacity="0.12" stroke="none"/>'
                )
    for arm in report.arms:
        color = colors[arm.remedy]
        curve = arm.curve
        finite = [(i, v) for i, v in enumerate(curve) if math.isfinite(v)]
        end = next((i for i, v in enumerate(curve) if not math.isfinite(v)), len(curve))
        drawn = [(i, v) for i, v in finite if i < end]
        best = arm.remedy == report.best
        coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in drawn)
        if len(drawn) == 1:  # a one-point curve: a short tick, still one polyline per arm
            i, v = drawn[0]
            coords = f"{x(i) - 3:.1f},{y(v):.1f} {x(i) + 3:.1f},{y(v):.1f}"
        svg.append(
            f'<polyline class="arm" data-remedy="{esc(arm.remedy)}" points="{coords}" fill="none" stroke="{color}" '
            f'stroke-width="{3 if best else 2}" stroke-linejoin="round"><title>{esc(_tip(arm, drawn, step_of))}'
            "</title></polyline>"
        )
        if arm.diverged and drawn:  # where the mean curve stops: a red cross
            i, v = drawn[-1]
            svg.append(
                f'<path d="M{x(i) - 5:.1f},{y(v) - 5:.1f} l10,10 m0,-10 l-10,10" stroke="#dc2626" stroke-width="2.2">'
                f"<title>{esc(arm.remedy)} diverged on {arm.diverged}/{len(arm.runs)} seed(s)</title></path>"
            )
    svg.append("</svg>")
    legend = "".join(
        f'<li><span class="swatch" style="background:{colors[a.remedy]}"></span>{esc(a.remedy)}'
        + (" (untreated)" if a.remedy == "none" else "")
        + (" ★ best" if a.remedy == report.best else "")
        + (f' <span class="st-bad">✗ diverged {a.diverged}/{len(a.runs)}</span>' if a.diverged else "")
        + "</li>"
        for a in report.arms
    )
    return (
        f"<figure><figcaption>Training loss <span>— {esc(caption)}</span></figcaption>\n"
        f'<ul class="legend">{legend}</ul>\n' + "\n".join(svg) + "\n</figure>"
    )


def _tip(arm: Arm, drawn: Sequence[tuple[int, float]], step_of: object) -> str:
    if not drawn:
        return f"{arm.remedy}: no finite loss"
    first, last = drawn[0], drawn[-1]
    return (
        f"{arm.remedy}: training loss {_g(first[1])} at step {step_of(first[0]):.0f} → "  # type: ignore[operator]
        f"{_g(last[1])} at step {step_of(last[0]):.0f}"  # type: ignore[operator]
    )


# ---------------------------------------------------------------------------------------------------- table


def _g(value: float | None) -> str:
    if value is None:
        return fmt.DASH
    if not math.isfinite(value) or value == 0:
        return fmt.sci(value) if value else "0"
    return f"{value:#.3g}" if 1e-3 <= abs(value) < 1e5 else fmt.sci(value)


def stat_text(stat: Stat | None, several: bool, digits: int | None = None) -> str:
    """``0.940 [0.920–0.950]`` over several seeds, the value alone over one, ``—`` when no seed finished."""

    def one(v: float) -> str:
        return f"{v:.{digits}f}" if digits is not None else _g(v)

    if stat is None:
        return fmt.DASH
    if not several:
        return one(stat.mean)
    return f"{one(stat.mean)} [{one(stat.min)}–{one(stat.max)}]"


def _arms(report: TrialReport) -> str:
    several = len(report.seeds) > 1
    classes = report.data.task.value == "classification"
    colors = arm_colors(report)
    heads = ["Remedy", "Train loss", "Test loss", *(["Test accuracy"] if classes else []), "Diverged", ""]
    rows = []
    for arm in report.arms:
        cells = [
            f'<span class="swatch" style="background:{colors[arm.remedy]}"></span><code>{esc(arm.remedy)}</code>',
            esc(stat_text(arm.train_loss, several)),
            esc(stat_text(arm.test_loss, several)),
            *([esc(stat_text(arm.accuracy, several, 3))] if classes else []),
            esc(f"{arm.diverged}/{len(arm.runs)}"),
            esc(_mark(report, arm)),
        ]
        cls = ' class="best"' if arm.remedy == report.best else ""
        numeric = set(range(1, len(cells) - 1))
        tds = "".join(
            f'<td class="num{" best" if cls else ""}">{c}</td>' if i in numeric else f"<td{cls}>{c}</td>"
            for i, c in enumerate(cells)
        )
        rows.append(f"<tr>{tds}</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in heads)
    what = "mean [min–max] over the seeds" if several else "one seed"
    return (
        f'<h2>Arms <span class="st-dim">({esc(what)})</span></h2>\n'
        f'<table class="arms"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _mark(report: TrialReport, arm: Arm) -> str:
    if arm.remedy == report.best:
        return "★ best, helps" if report.helps else "★ best"
    return "untreated" if arm.remedy == "none" else ""


def _changes(report: TrialReport) -> str:
    items = []
    for arm in report.arms[1:]:
        what = [esc(fmt.suggestion_target(s)) for s in arm.applied]
        what += [f'<span class="st-bad">skipped {esc(s.remedy.value)}: {esc(why)}</span>' for s, why in arm.skipped]
        items.append(f"<li><b>{esc(arm.remedy)}</b>: {'; '.join(what) or 'nothing applied'}</li>")
    for name, why in report.not_trained:
        items.append(f'<li><b>{esc(name)}</b>: <span class="st-dim">not trained: {esc(why)}</span></li>')
    if not items:
        return ""
    return f'<h2>What each run changed</h2><ul class="findings">{"".join(items)}</ul>'
