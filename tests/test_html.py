"""The HTML pages of ``scan``, ``trial`` and ``report`` (``--html FILE``), and results shown in Jupyter and rich.

The renderers are tested on hand-built results (the golden trials and timelines of ``test_goldens``): every chart is
one well-formed ``<svg>`` (parsed with ``xml.etree``), user strings are escaped, the counts of drawn things match the
data. The CLI tests run the real commands; the screenshot test opens the pages in headless Chromium.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import FAST, MakeReport, asset, chromium, finding, flat_layer, invoke, render_text, run_cli, screenshot
from test_goldens import TRIALS, _timeline

from gradscope.report.html import render_html, report_fragment
from gradscope.report.html_timeline import MAX_CELLS, render_timeline_html
from gradscope.report.html_trial import render_trial_html
from gradscope.results import Positions, Report, Severity, Status
from gradscope.watching.timeline import Step, Timeline, TimelineBuilder

HOSTILE = '<script>alert("x")</script>&amp;'
SVG_NS = "{http://www.w3.org/2000/svg}"


class _Page(HTMLParser):
    """Tags (with attributes) and the text a browser would show."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def count(self, tag: str, **attrs: str) -> int:
        return sum(1 for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items()))


def svgs(page: str) -> list[ET.Element]:
    """Every chart, parsed as XML: an unescaped name or a broken tag fails here."""
    found = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    return [ET.fromstring(s.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)) for s in found]


def self_contained(page: str) -> _Page:
    parsed = _Page(page)
    assert parsed.count("script") == parsed.count("link") == parsed.count("img") == parsed.count("iframe") == 0
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    assert "<script>alert" not in page
    return parsed


def elements(svg: ET.Element, tag: str, **attrs: str) -> list[ET.Element]:
    return [e for e in svg.iter(SVG_NS + tag) if all(e.get(k) == v for k, v in attrs.items())]


# ------------------------------------------------------------------------------------------------------ scan


@pytest.fixture
def scanned(make_report: MakeReport) -> Report:
    layers = [
        flat_layer(0, "embed", 1e-6, 2e-6, Status.VANISHING),
        flat_layer(1, HOSTILE, None, 1e-4, type_="Tanh", parameters=0),
        flat_layer(2, "blocks.0.attn", 1e-3, 1e-3),
        flat_layer(3, "head", 1e-2, 1e-2),
    ]
    report = make_report(
        layers,
        findings=[finding("vanishing_gradient", Severity.ERROR, "embed")],
        target=f"models/{HOSTILE}.py",
    )
    positions = Positions("embed", 1, tuple(10.0 ** (-8 + k / 4) for k in range(32)), 1e-7, "start")
    return dataclasses.replace(report, positions=positions)


def test_scan_page_charts_and_escaping(scanned: Report) -> None:
    page = render_html(scanned)
    parsed = self_contained(page)
    charts = svgs(page)
    # signal RMS, grad RMS (the three layers with parameters), activation RMS, positions
    assert [c.get("aria-label") for c in charts] == [
        "Signal RMS per layer",
        "Grad RMS per layer with parameters",
        "Activation RMS per layer",
        "Gradient per input position",
    ]
    hits = [len(elements(c, "rect", **{"class": "hit"})) for c in charts]
    assert hits == [4, 3, 4, 32]
    # red dots (the legend's one included): 'embed' vanishes, which the forward chart does not claim
    assert [len(elements(c, "circle", fill="#dc2626")) for c in charts[:3]] == [2, 2, 1]
    assert HOSTILE in "".join(parsed.text)  # the name is shown as the user wrote it, escaped in the source
    labels = ["".join(t.itertext()) for t in elements(charts[0], "text")]
    assert "embed" in labels and "head" in labels
    # a log axis: decade ticks 10^k; the positions span 10^-8 .. 10^-0.25
    ticks = ["".join(t.itertext()) for t in elements(charts[3], "text") if t.find(SVG_NS + "tspan") is not None]
    assert "10−8" in ticks and "100" in ticks
    assert "the start gets 1.0e-07× the other end&#x27;s" in page


def test_scan_page_without_positions_has_no_profile(scanned: Report) -> None:
    page = render_html(dataclasses.replace(scanned, positions=None))
    assert len(svgs(page)) == 3 and "Gradient per input position" not in page


def test_repr_html_is_the_page_body(scanned: Report) -> None:
    fragment = scanned._repr_html_()
    assert fragment == report_fragment(scanned)
    assert fragment.startswith('<div class="gs"><style>') and "<html" not in fragment and "<body" not in fragment
    body = fragment.split("<main>", 1)[1].rsplit("</main>", 1)[0]
    page_body = render_html(scanned).split("<main>", 1)[1].rsplit("</main>", 1)[0]
    assert page_body.startswith(body)  # the page adds only its footer
    assert len(svgs(fragment)) == 4
    # the styles are scoped to the wrapper: a notebook's own body and tables keep their look
    style = fragment.split("<style>", 1)[1].split("</style>", 1)[0]
    assert all(rule.lstrip().startswith(".gs") for rule in style.split("}") if rule.strip())


def test_rich_renders_the_terminal_report(scanned: Report) -> None:
    rich_console = pytest.importorskip("rich.console")
    from gradscope.report import render_terminal

    console = rich_console.Console(record=True, width=100, color_system=None, file=io.StringIO())
    console.print(scanned)
    shown = console.export_text()
    expected = render_text(lambda c: render_terminal(scanned, c), width=100)
    assert [line.rstrip() for line in shown.splitlines()] == [line.rstrip() for line in expected.splitlines()]
    assert "embed" in shown


def test_rich_keeps_colour_on_a_colour_console(scanned: Report) -> None:
    rich_console = pytest.importorskip("rich.console")
    buffer = io.StringIO()
    rich_console.Console(file=buffer, width=100, force_terminal=True, color_system="truecolor").print(scanned)
    assert "\x1b[" in buffer.getvalue() and "embed" in buffer.getvalue()


# ----------------------------------------------------------------------------------------------------- trial


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_trial_page_one_curve_per_arm(name: str) -> None:
    report = TRIALS[name]
    page = render_trial_html(report)
    self_contained(page)
    (chart,) = svgs(page)
    arms = elements(chart, "polyline", **{"class": "arm"})
    assert [a.get("data-remedy") for a in arms] == [a.remedy for a in report.arms]
    for arm, line in zip(report.arms, arms, strict=True):
        finite = [v for v in arm.curve if math.isfinite(v)]
        assert len(line.get("points", "").split()) == max(len(finite), 2 if finite else 0)
    bands = elements(chart, "polygon", **{"class": "band"})
    assert len(bands) == sum(1 for a in report.arms if len(a.runs) > 1)
    assert len(elements(chart, "path")) == sum(1 for a in report.arms if a.diverged)


def test_trial_table_gives_mean_and_range() -> None:
    report = dataclasses.replace(TRIALS["helps"], target=f"models/{HOSTILE}.py")
    page = render_trial_html(report)
    parsed = self_contained(page)
    text = "".join(parsed.text)
    assert "0.937 [0.920–0.950]" in text  # normalization's accuracy over three seeds
    assert "0.154 [0.140–0.171]" in text  # its final training loss
    assert HOSTILE in text and "★ best, helps" in text
    one_seed = render_trial_html(TRIALS["caveat"])
    assert "0.410" in one_seed and "[" not in "".join(_Page(one_seed).text).split("Arms", 1)[1].split("What")[0]


def test_trial_repr_html_and_rich() -> None:
    report = TRIALS["helps"]
    assert report._repr_html_().startswith('<div class="gs">')
    rich_console = pytest.importorskip("rich.console")
    console = rich_console.Console(record=True, width=100, color_system=None, file=io.StringIO())
    console.print(report)
    shown = console.export_text()
    assert "normalization" in shown and "Best: normalization" in shown


# -------------------------------------------------------------------------------------------------- timeline


def test_timeline_heatmap_cells_and_legend(make_report: MakeReport) -> None:
    t = _timeline(make_report, True)
    t = dataclasses.replace(t, names=(HOSTILE, *t.names[1:]))
    page = render_timeline_html(t)
    parsed = self_contained(page)
    heatmap = svgs(page)[0]
    cells = elements(heatmap, "rect", **{"class": "cell"})
    assert len(cells) == len(t.names) * len(t.columns) == 5 * 8
    fills = [c.get("fill") for c in cells]
    assert fills.count("#dc2626") == 3  # layer 4 non-finite at steps 10, 12, 14
    assert fills.count("#e2e8f0") == 1  # layer 1 not measured at step 6
    legend = ["".join(e.itertext()) for e in elements(heatmap, "text", **{"class": "tick"})]
    assert legend and all(x.startswith("10") for x in legend)
    assert HOSTILE in "".join(parsed.text)
    assert "First bad step" in page and "nonfinite" in page and "Findings" in page


def _long_timeline(make_report: MakeReport, steps: int) -> Timeline:
    t = _timeline(make_report, False)
    builder = TimelineBuilder(source="long.jsonl", meta=t.run.meta, layers=t.run.layers)
    for k in range(steps):
        layers = {m.name: {"signal_rms": 10.0 ** (-3 + 0.5 * i + k / steps)} for i, m in enumerate(t.run.layers)}
        builder.add(Step(k, layers, {}, 1.0))
    return builder.timeline(report=t.report, first={})


def test_timeline_heatmap_merges_long_runs(make_report: MakeReport) -> None:
    t = _long_timeline(make_report, 450)  # 256 columns, merged to 128, then 97 more
    assert len(t.columns) > MAX_CELLS
    heatmap = svgs(render_timeline_html(t))[0]
    cells = elements(heatmap, "rect", **{"class": "cell"})
    assert len(cells) == len(t.names) * MAX_CELLS
    titles = ["".join(c.itertext()) for c in cells]
    assert titles[0].startswith("0 · steps 0–") and re.search(r"steps \d+–449:", titles[MAX_CELLS - 1])


def test_timeline_repr_html_and_rich(make_report: MakeReport) -> None:
    t = _timeline(make_report, False)
    assert t._repr_html_().startswith('<div class="gs">')
    rich_console = pytest.importorskip("rich.console")
    console = rich_console.Console(record=True, width=100, color_system=None, file=io.StringIO())
    console.print(t)
    assert "signal_rms per layer" in console.export_text()


def test_showing_a_report_loads_neither_trial_nor_watch() -> None:
    code = (
        "import sys, gradscope.results as r, gradscope.report.notebook as n\n"
        "assert n._kind_of(object()) is None\n"
        "print(sorted(m for m in sys.modules if m.startswith(('gradscope.trial', 'gradscope.watching', 'torch'))))"
    )
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


# ------------------------------------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_scan_html_keeps_stdout(tmp_path: Path) -> None:
    out = tmp_path / "scan.html"
    done = run_cli("scan", asset("deep_sigmoid_mlp.py"), *FAST, "--format", "json", "--html", out, cwd=tmp_path)
    assert done.code in (0, 1), done.stderr
    data = json.loads(done.stdout)  # stdout is still exactly one JSON document
    assert data["schema"] == "gradscope.report/1"
    page = out.read_text(encoding="utf-8")
    self_contained(page)
    charts = svgs(page)
    assert len(charts) >= 3
    assert len(elements(charts[0], "rect", **{"class": "hit"})) == len(data["layers"])
    assert "written:" in done.stderr and out.name in done.stderr


@pytest.mark.slow
def test_cli_scan_html_and_table(tmp_path: Path) -> None:
    out = tmp_path / "scan.html"
    done = invoke("scan", asset("tiny_relu_mlp.py"), *FAST, "--html", out)
    assert done.code in (0, 1), done.stderr
    assert "Layer" in done.stdout and "<svg" not in done.stdout
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_cli_html_unwritable_is_one_line_before_any_work(tmp_path: Path) -> None:
    for command in (["scan", "nope.py"], ["trial", "nope.py"], ["report", "nope.jsonl"]):
        done = invoke(*command, "--html", tmp_path / "no" / "such" / "page.html")
        assert done.code == 2 and "--html" in done.stderr and "does not exist" in done.stderr, done.stderr


@pytest.mark.slow
def test_cli_trial_html(tmp_path: Path) -> None:
    out = tmp_path / "trial.html"
    done = invoke(
        "trial", asset("trial_clusters.py"), "--steps", "8", "--seeds", "2", "--remedy", "clip", "--html", out
    )
    assert done.code == 0, done.stderr
    assert "Remedy" in done.stdout
    (chart,) = svgs(out.read_text(encoding="utf-8"))
    assert [p.get("data-remedy") for p in elements(chart, "polyline", **{"class": "arm"})] == ["none", "clip"]


def test_cli_report_html(tmp_path: Path) -> None:
    from test_watch import mlp, train

    from gradscope import watch

    log = tmp_path / "run.jsonl"
    model = mlp()
    with watch(model, log=log, mode="full") as w:
        train(model, w, 6, poison={4: "2.weight"})
    out = tmp_path / "t.html"
    done = invoke("report", log, "--format", "json", "--html", out, "--fail-on", "never")
    assert done.code == 0, done.stderr
    data = json.loads(done.stdout)
    heatmap = svgs(out.read_text(encoding="utf-8"))[0]
    cells = elements(heatmap, "rect", **{"class": "cell"})
    assert len(cells) == len(data["layers"]) * len(data["columns"])
    assert any(c.get("fill") == "#dc2626" for c in cells)


# ------------------------------------------------------------------------------------------------- browser


def _pages(make_report: MakeReport, scanned: Report, directory: Path) -> dict[str, Path]:
    pages = {
        "scan": render_html(scanned),
        "trial": render_trial_html(TRIALS["helps"]),
        "timeline": render_timeline_html(_timeline(make_report, True)),
    }
    paths = {}
    for name, text in pages.items():
        paths[name] = directory / f"{name}.html"
        paths[name].write_text(text, encoding="utf-8")
    return paths


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize(
    ("name", "colour", "least"),
    [
        ("scan", (0x25, 0x63, 0xEB), 300),  # the blue lines and points of the charts
        ("trial", (0x25, 0x63, 0xEB), 300),  # the normalization curve
        ("timeline", (0xDC, 0x26, 0x26), 300),  # the non-finite cells of layer 4
    ],
)
def test_pages_render_in_headless_chromium(
    make_report: MakeReport, scanned: Report, tmp_path: Path, name: str, colour: tuple[int, int, int], least: int
) -> None:
    path = _pages(make_report, scanned, tmp_path)[name]
    width, height, rows = screenshot(path.as_uri(), tmp_path)
    assert (width, height) == (1000, 700)
    hits = sum(
        1
        for row in rows[120:]
        for x in range(0, len(row), 3)
        if all(abs(row[x + k] - colour[k]) <= 12 for k in range(3))
    )
    assert hits > least, (name, hits)
    if name == "timeline":  # the viridis scale: its dark and bright ends both appear
        flat = [row[x : x + 3] for row in rows[120:400] for x in range(0, len(row), 3)]
        assert any(p[0] > 200 and p[1] > 180 and p[2] < 90 for p in flat)  # yellow: the largest values
        assert any(p[0] < 90 and p[1] < 120 and p[2] > 110 for p in flat)  # blue-purple: the smallest
