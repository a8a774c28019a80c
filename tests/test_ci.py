"""``gradscope check / baseline / diff`` end to end, ``assert_gradient_health`` and the pytest plugin.

Every exit path of the commands runs the real CLI in a subprocess. The subprocesses that import torch (~3 s
each) start together, in two waves (the second needs the first's baseline file), in one module fixture.

The model: ``tests/assets/normed_tanh_mlp.py``, a 6-block Linear → LayerNorm → Tanh MLP whose
``build_model(norm, gain)`` gives the regressed variant with the same layer names: norms removed (``nn.Identity``,
not a layer) and the init shrunk to gain 0.1, so its input-side gradients vanish. The subprocess tests are marked
``slow``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    CONFIGS,
    FAST,
    ROOT,
    Outcome,
    Proc,
    assert_one_line_error,
    asset,
    chromium,
    cli_env,
    invoke,
    run_without_torch,
    screenshot,
    start,
)

pytest_plugins = ["pytester"]

NORMED = asset("normed_tanh_mlp.py")  # build_model(norm=True, gain=1.0): the baseline; REGRESSED kwargs: vanishing
OTHER = asset("encoder_decoder.py")  # no layer name in common with NORMED
# sgd: a gradient that only shrinks on its way back is an error, which these checks are about
FAST_SGD = [*FAST, "--optimizer", "sgd"]
REGRESSED = ["--model-kwargs", '{"norm": false, "gain": 0.1}']
TRUNCATED = '{"schema": "gradscope.report/1", "healthy": true, "layers": [{"name": "fc0", "grad_rms": 0.0'


@dataclass
class Run:
    directory: Path
    procs: dict[str, Proc]

    def __getitem__(self, name: str) -> Outcome:
        return self.procs[name].result()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    d = tmp_path_factory.mktemp("ci")
    (d / "package.json").write_text('{"name": "not-a-report", "version": "1.0.0"}\n', encoding="utf-8")
    (d / "v2.json").write_text('{"schema": "gradscope.report/2", "layers": []}\n', encoding="utf-8")
    (d / "truncated.json").write_text(TRUNCATED, encoding="utf-8")
    (d / "afile.txt").write_text("a file, not a directory\n", encoding="utf-8")
    env = cli_env(COLUMNS="120")
    procs: dict[str, Proc] = {}

    def begin(name: str, *args: str | Path, **extra_env: str) -> None:
        procs[name] = start(*args, cwd=d, env=env | extra_env)

    try:
        # Wave 1: the baseline, a check without baseline, and the cheap bad inputs (they fail before torch is
        # imported).
        begin("baseline", "baseline", NORMED, "-o", "base.json", *FAST_SGD)
        begin(
            "regressed_no_baseline",
            "check",
            NORMED,
            *REGRESSED,
            "--config",
            CONFIGS / "ci.yaml",
            *FAST_SGD,
            "--junit",
            "nb.xml",
        )
        for name, file in (
            ("not_report", "package.json"),
            ("other_schema", "v2.json"),
            ("truncated", "truncated.json"),
            ("missing", "missing.json"),
        ):
            begin(name, "check", NORMED, "--baseline", file, *FAST_SGD)
        begin(
            "unwritable_junit", "check", NORMED, *FAST_SGD, "--junit", "afile.txt/junit.xml", "--markdown", "early.md"
        )
        assert procs["baseline"].result().code == 0, procs["baseline"].result().stderr
        # Wave 2: against the baseline.
        outputs = lambda stem: ["--junit", f"{stem}.xml", "--markdown", f"{stem}.md", "--html", f"{stem}.html"]  # noqa: E731
        # No probe options: they come from the baseline. Its -o report must equal the baseline, timing apart.
        begin(
            "clean", "check", NORMED, "--baseline", "base.json", *outputs("clean"), "--github", "--output", "again.json"
        )
        # GITHUB_WORKSPACE set: annotations name the model file relative to it.
        begin(
            "regressed",
            "check",
            NORMED,
            *REGRESSED,
            "--baseline",
            "base.json",
            *outputs("reg"),
            "--github",
            "-o",
            "reg.json",
            GITHUB_WORKSPACE=str(ROOT),
        )
        begin("no_match", "check", OTHER, "--baseline", "base.json", "--junit", "nomatch.xml")
        for proc in procs.values():
            proc.result()
        # Wave 3 (no torch): diff the saved reports.
        begin("diff_same", "diff", "base.json", "again.json")
        begin("diff_regressed", "diff", "base.json", "reg.json", "--format", "markdown")
        begin("diff_bad", "diff", "base.json", "truncated.json")
        yield Run(d, procs)
    finally:
        for proc in procs.values():
            proc.stop()


# ------------------------------------------------------------------------------------------- exit codes


@pytest.mark.slow
def test_clean_model_passes_its_own_baseline(run: Run) -> None:
    outcome = run["clean"]
    assert outcome.code == 0, outcome.stderr
    assert "gradscope check  PASSED" in outcome.stdout
    assert "19 matched layers, 0 regressions" in outcome.stdout
    assert "::error" not in outcome.stdout
    junit = ET.parse(run.directory / "clean.xml").getroot()
    from gradscope.vocab import Rule

    # a test case per rule (every rule, baseline_regression included) and layer
    assert junit.get("failures") == "0" and int(junit.get("tests", "0")) == len(Rule) * 19


@pytest.mark.slow
def test_regressed_variant_fails_against_the_baseline(run: Run) -> None:
    outcome = run["regressed"]
    assert outcome.code == 1, outcome.stderr
    assert "FAILED: 13 failing checks" in outcome.stdout
    assert "9 regressions" in outcome.stdout and "6 removed" in outcome.stdout
    assert "4 new failing findings" in outcome.stdout


@pytest.mark.slow
def test_regressed_variant_fails_without_a_baseline_under_ci_yaml(run: Run) -> None:
    outcome = run["regressed_no_baseline"]
    assert outcome.code == 1, outcome.stderr
    root = ET.parse(run.directory / "nb.xml").getroot()
    assert root.get("failures") == "4"
    assert "gradscope.baseline_regression" not in {s.get("name") for s in root}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("not_report", ["baseline package.json:", "not a gradscope report", "without a 'schema' key"]),
        ("other_schema", ["baseline v2.json:", "schema 'gradscope.report/2' is not supported", "gradscope baseline"]),
        ("truncated", ["baseline truncated.json:", "truncated JSON", "regenerate it"]),
        ("missing", ["baseline missing.json: file not found", "gradscope baseline TARGET -o missing.json"]),
        ("no_match", ["base.json: no layer name matches the current model", "another model"]),
        ("unwritable_junit", ["--junit afile.txt/junit.xml:", "afile.txt is not a directory"]),
        ("diff_bad", ["report truncated.json: truncated JSON"]),
    ],
)
def test_bad_input_exits_2_with_one_line(run: Run, name: str, needles: list[str]) -> None:
    assert_one_line_error(run[name], *needles)


@pytest.mark.slow
def test_bad_input_writes_nothing(run: Run) -> None:
    assert not (run.directory / "early.md").exists()  # the other outputs wait for the whole run
    assert not (run.directory / "nomatch.xml").exists()
    assert not list(run.directory.glob(".*.tmp"))


def test_junit_path_that_is_a_directory_is_refused_before_the_scan(tmp_path: Path) -> None:
    target = tmp_path / "junit.xml"
    target.mkdir()
    outcome = invoke("check", tmp_path / "missing_model.py", "--junit", target)  # the model is never loaded
    assert_one_line_error(outcome, f"--junit {target}: is a directory")
    assert list(tmp_path.iterdir()) == [target] and not list(target.iterdir())


@pytest.mark.slow
def test_diff_exit_codes(run: Run) -> None:
    same = run["diff_same"]
    assert same.code == 0, same.stderr
    assert "0 regressions" in same.stdout
    regressed = run["diff_regressed"]
    assert regressed.code == 1, regressed.stderr
    assert regressed.stdout.startswith("## gradscope diff — ❌ regressions")


# ----------------------------------------------------------------------------------------------- outputs


@pytest.mark.slow
def test_baseline_json_is_deterministic_apart_from_timing(run: Run) -> None:
    assert run["baseline"].code == run["clean"].code == 0
    assert "baseline written to base.json: 19 layers, HEALTHY" in run["baseline"].stderr
    a = (run.directory / "base.json").read_text(encoding="utf-8")
    b = (run.directory / "again.json").read_text(encoding="utf-8")
    timing = re.compile(r'"timing": \{[^{}]*\}')
    assert len(timing.findall(a)) == 1
    assert timing.sub("", a) == timing.sub("", b)
    assert json.loads(a)["schema"] == "gradscope.report/1"


@pytest.mark.slow
def test_junit_failures_counted_with_evidence(run: Run) -> None:
    root = ET.parse(run.directory / "reg.xml").getroot()
    failures = root.findall(".//failure")
    assert int(root.get("failures", "-1")) == len(failures) == 13
    by_suite = {s.get("name"): int(s.get("failures", "0")) for s in root}
    assert by_suite["gradscope.vanishing_gradient"] == 4 and by_suite["gradscope.baseline_regression"] == 9
    fc0 = root.find("testsuite[@name='gradscope.baseline_regression']/testcase[@name='fc0']/failure")
    assert fc0 is not None
    numbers = dict(line.split(" = ", 1) for line in fc0.text.splitlines() if " = " in line)
    assert float(numbers["signal_rms"]) < float(numbers["baseline_signal_rms"]) / 10
    assert float(numbers["factor"]) == 10.0
    removed = root.find("testsuite[@name='gradscope.baseline_regression']/testcase[@name='norm0']/system-out")
    assert removed is not None and removed.text.startswith("removed")


@pytest.mark.slow
def test_markdown_summary_contains_the_tables(run: Run) -> None:
    md = (run.directory / "reg.md").read_text(encoding="utf-8")
    assert md.startswith("## ❌ gradscope check: `Sequential` — FAILED: 13 failing checks")
    assert re.search(r"^\| Check +\| Severity +\| Rule +\| Layers +\| Message +\|$", md, re.M)
    assert re.search(r"^\| Layer +\| Type +\| Signal RMS \(baseline\) +\|", md, re.M)
    assert re.search(r"^\| fc0 +\| Linear +\|.*✖ regression \|$", md, re.M)
    clean = (run.directory / "clean.md").read_text(encoding="utf-8")
    assert clean.startswith("## ✅ gradscope check: `Sequential` — PASSED")


@pytest.mark.slow
def test_github_annotations(run: Run) -> None:
    lines = [line for line in run["regressed"].stdout.splitlines() if line.startswith("::")]
    assert [line.split(" ", 1)[0] for line in lines] == ["::error", "::error"]
    file = NORMED.relative_to(ROOT).as_posix()  # relative to GITHUB_WORKSPACE
    assert lines[0].startswith(f"::error file={file},title=gradscope vanishing_gradient::")
    assert "title=gradscope baseline_regression::9 layers moved beyond the baseline factor" in lines[1]


class _Svg:
    """The chart elements of the page, counted with the standard library's HTML parser."""

    def __init__(self, page: str) -> None:
        from html.parser import HTMLParser

        self.tags: list[tuple[str, dict[str, str | None]]] = []
        outer = self

        class P(HTMLParser):
            def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
                outer.tags.append((tag, dict(attrs)))

        P().feed(page)

    def count(self, tag: str, **attrs: str) -> int:
        return sum(1 for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items()))


@pytest.mark.slow
def test_html_structure(run: Run) -> None:
    page = (run.directory / "reg.html").read_text(encoding="utf-8")
    svg = _Svg(page)
    assert svg.count("script") == svg.count("link") == svg.count("img") == 0
    assert "http://" not in page and "https://" not in page
    assert svg.count("svg") == 2
    assert svg.count("rect", **{"class": "hit"}) == 19 + 13  # a hover column per layer in each chart
    assert svg.count("polyline", stroke="#2563eb") >= 2 and svg.count("polyline", stroke="#94a3b8") >= 2
    assert "Signal RMS per layer" in page and "FAILED" in page


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_renders_the_chart_in_headless_chromium(run: Run, tmp_path: Path) -> None:
    width, height, rows = screenshot((run.directory / "reg.html").as_uri(), tmp_path)
    assert (width, height) == (1000, 700)

    def count(rgb: tuple[int, int, int], tolerance: int = 12) -> int:
        total = 0
        for row in rows[180:]:  # below the header: the signal chart
            for x in range(0, len(row), 3):
                if all(abs(row[x + k] - rgb[k]) <= tolerance for k in range(3)):
                    total += 1
        return total

    assert count((0x25, 0x63, 0xEB)) > 300  # the current line and its points (blue)
    assert count((0xDC, 0x26, 0x26)) > 40  # 'not ok' points (red)
    assert count((0xFC, 0xE9, 0xE9), tolerance=4) > 5000  # regression columns (pale red shading)


# --------------------------------------------------------------------------------------- in-process CLI


@pytest.mark.slow
def test_diff_formats(run: Run) -> None:
    base, reg = run.directory / "base.json", run.directory / "reg.json"
    data = json.loads(invoke("diff", base, reg, "--format", "json").stdout)
    assert data["schema"] == "gradscope.diff/1"
    assert data["counts"]["regressions"] == 9 and data["counts"]["matched"] == 13
    assert len(data["removed"]) == 6 and data["added"] == []
    table = invoke("diff", base, reg)
    assert table.code == 1 and "Regressions (9)" in table.stdout and "\x1b[" not in table.stdout
    relaxed = invoke("diff", base, reg, "--factor", "1e6", "--fail-on", "never")
    assert relaxed.code == 0 and "0 regressions" in relaxed.stdout
    html = invoke("diff", base, reg, "--format", "html", "-o", run.directory / "diff.html")
    assert html.code == 1 and "<svg" in (run.directory / "diff.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["diff", "a.json", "b.json", "--factor", "1"], "--factor 1 must be a number > 1"),
        (["check", "m.py", "--config", "missing.yaml"], "config file not found"),
        (["baseline", "m.py", "-o", "no/such/dir/base.json"], "directory no/such/dir does not exist"),
    ],
)
def test_usage_errors(args: list[str], needle: str) -> None:
    assert_one_line_error(invoke(*args), needle)


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["check", "--help"], ["baseline", "--help"], ["diff", "base.json", "again.json"]])
def test_commands_do_not_import_torch_for_help_or_diff(run: Run, argv: list[str]) -> None:
    proc = run_without_torch(*argv, cwd=run.directory)
    assert "TORCH-MODULES: []" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------------------------ testing and plugin


def _tanh_stack(gain: float, depth: int = 8) -> Any:
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(16, 16), nn.Tanh()]
            nn.init.normal_(layers[-2].weight, std=gain / 4)
        return nn.Sequential(*layers)


def test_assert_gradient_health_passes_and_fails() -> None:
    import torch

    from gradscope.testing import GradientHealthError, assert_gradient_health

    config = {"probe": {"batches": 2, "batch_size": 8}}
    result = assert_gradient_health(_tanh_stack(1.0), None, config)  # synthetic batches from the first layer
    assert result.passed and result.report.probe.batch_size == 8
    batches = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with pytest.raises(AssertionError) as info:
        assert_gradient_health(_tanh_stack(0.05), batches, config)
    assert isinstance(info.value, GradientHealthError) and not info.value.report.healthy
    text = str(info.value)
    assert "gradscope check  FAILED" in text and "vanishing_gradient" in text and "Layer" in text
    # A policy that relaxes every rule but the baseline's lets the same model pass (a named rule beats "*").
    relaxed = config | {"policy": {"layers": {"*": {"*": "warning", "baseline_regression": "error"}}}}
    assert assert_gradient_health(_tanh_stack(0.05), batches, relaxed).passed
    # Against a baseline of the healthy stack, the shrunk init is a regression.
    with pytest.raises(AssertionError, match="baseline_regression"):
        assert_gradient_health(_tanh_stack(0.05), batches, relaxed, baseline=result.report)


def test_pytest_plugin_fixture_and_report_option(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(
        test_model=textwrap.dedent("""
        import pytest
        import torch
        from torch import nn


        def tanh_stack(gain):
            torch.manual_seed(0)
            layers = []
            for _ in range(8):
                lin = nn.Linear(16, 16)
                nn.init.normal_(lin.weight, std=gain / 4)
                layers += [lin, nn.Tanh()]
            return nn.Sequential(*layers)


        @pytest.mark.parametrize("gain", [1.0, 0.05])
        def test_gradients(gradient_health, gain):
            gradient_health(tanh_stack(gain), [torch.randn(8, 16) for _ in range(2)])
    """)
    )
    # Load the plugin explicitly and only once, whether or not its entry point is installed.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    reports = pytester.path / "reports"
    result = pytester.runpytest_inprocess("-p", "gradscope.pytest_plugin", "--gradscope-reports", str(reports))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*gradient health check failed*", "*gradscope check  FAILED*"])
    names = sorted(p.name for p in reports.iterdir())
    assert names == sorted(
        f"test_model.py_test_gradients_{g}.{ext}" for g in ("1.0", "0.05") for ext in ("html", "json", "md")
    )
    assert json.loads((reports / "test_model.py_test_gradients_0.05.json").read_text())["healthy"] is False


@pytest.mark.slow
def test_pytest_plugin_is_light_and_declared() -> None:
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"gradscope": "gradscope.pytest_plugin"}
    code = (
        "import sys, gradscope.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'gradscope')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    # gradscope.display: the hook results render through in Jupyter and rich (no imports of its own)
    assert json.loads(proc.stdout.replace("'", '"')) == [
        "gradscope",
        "gradscope._version",
        "gradscope.display",
        "gradscope.pytest_plugin",
    ]
