"""The CI policy, baselines and the CI renderers on hand-built reports: pure functions, no model, no torch scan.

Policy: per-rule and per-layer-glob severities, fail_statuses, config validation. Baseline: reading and validating
a report file, layer-by-layer comparison (regressions, improvements, added/removed, new/known findings).
Renderers: JUnit XML structure and counts, GitHub annotation escaping, the HTML page's structure and escaping.
"""

from __future__ import annotations

import dataclasses
import json
import math
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from helpers import CONFIGS, MakeReport, finding, flat_layer, make_policy

from gradscope.ci.baseline import Change, read_baseline
from gradscope.ci.policy import BASELINE_RULE, MODEL_LAYER, State, apply_policy, compare, evaluate
from gradscope.config import PolicyConfig, load_config
from gradscope.errors import ConfigError
from gradscope.report.check import check_markdown
from gradscope.report.diff import render_comparison
from gradscope.report.github import annotation, escape_data, escape_property, render_github
from gradscope.report.html import render_html
from gradscope.report.junit import render_junit
from gradscope.results import Report, Severity, Spread, Status, Summary


@pytest.fixture
def healthy(make_report: MakeReport) -> Report:
    layers = [
        flat_layer(0, "embed", 1e-2, 1e-2),
        flat_layer(1, "body.0", 2e-2, 1e-2),
        flat_layer(2, "body.1", None, 1e-2, type_="ReLU", parameters=0),
        flat_layer(3, "head", 3e-2, 2e-2),
    ]
    return make_report(layers, summary=Summary(2e-2, "embed", 0.5, 0.01, 0.9))


@pytest.fixture
def sick(make_report: MakeReport) -> Report:
    """Same layer names; 'embed' and 'body.0' vanish (error), 'body.1' is dead (warning)."""
    layers = [
        flat_layer(0, "embed", 1e-7, 1e-7, Status.VANISHING),
        flat_layer(1, "body.0", 1e-6, 1e-6, Status.VANISHING),
        flat_layer(2, "body.1", None, 1e-2, Status.DEAD, type_="ReLU", parameters=0),
        flat_layer(3, "head", 3e-2, 2e-2),
    ]
    findings = [
        finding("vanishing_gradient", Severity.ERROR, "embed", "body.0", reference_grad_rms=3e-2, threshold=1e-3),
        finding("dead_units", Severity.WARNING, "body.1", dead_fraction=0.8),
    ]
    return make_report(layers, findings=findings, summary=Summary(3e-2, "embed", 3e-6, 1.5, 0.9))


# --------------------------------------------------------------------------------------------------- policy


def test_default_policy_fails_on_errors_only_one_check_per_rule_and_layer(sick: Report) -> None:
    checks = apply_policy(sick, PolicyConfig())
    assert [(c.rule, c.layer, c.state) for c in checks] == [
        ("vanishing_gradient", "embed", State.FAIL),
        ("vanishing_gradient", "body.0", State.FAIL),
        ("dead_units", "body.1", State.WARN),
    ]
    # Each check carries the finding's evidence and the layer's own numbers.
    assert checks[0].evidence["grad_rms"] == 1e-7 and checks[0].evidence["threshold"] == 1e-3
    assert math.isclose(checks[0].evidence["ratio_to_reference"], 1e-7 / 3e-2)
    result = evaluate(sick, PolicyConfig())
    assert not result.passed and len(result.failures) == 2


def test_fail_on_warning_and_never(sick: Report) -> None:
    assert len(evaluate(sick, PolicyConfig(), fail_on="warning").failures) == 3
    assert evaluate(sick, PolicyConfig(), fail_on="never").passed
    assert len(evaluate(sick, make_policy(fail_on="warning")).failures) == 3


def test_layer_glob_relaxes_only_matching_layers(sick: Report) -> None:
    policy = make_policy(layers={"embed*": {"vanishing_gradient": "warning"}})
    states = {c.key: (c.state, c.severity, c.source) for c in apply_policy(sick, policy)}
    assert states[("vanishing_gradient", "embed")] == (State.WARN, Severity.WARNING, "policy.layers['embed*']")
    assert states[("vanishing_gradient", "body.0")][0] is State.FAIL


def test_rule_severity_star_ignore_and_last_glob_wins(sick: Report) -> None:
    policy = make_policy(
        severity={"dead_units": "error"},
        layers={"body.*": {"*": "ignore"}, "body.1": {"dead_units": "error"}},
    )
    states = {c.key: c.state for c in apply_policy(sick, policy)}
    assert states[("vanishing_gradient", "body.0")] is State.IGNORED  # "*" in the body.* entry
    assert states[("dead_units", "body.1")] is State.FAIL  # the later, more specific glob
    assert states[("vanishing_gradient", "embed")] is State.FAIL


def test_yaml_off_reads_as_ignore(sick: Report, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("policy:\n  severity:\n    vanishing_gradient: off\n", encoding="utf-8")
    policy = load_config(path).policy
    assert policy.severity == {"vanishing_gradient": False}
    assert evaluate(sick, policy).passed


def test_fail_statuses_fail_a_layer_whatever_the_severity(sick: Report) -> None:
    result = evaluate(sick, make_policy(fail_statuses=["dead"]))
    failing = {c.key for c in result.failures}
    assert ("dead_units", "body.1") in failing
    assert result.checks[-1].source == "policy.fail_statuses (dead)"


def test_model_level_findings_are_one_check(make_report: MakeReport) -> None:
    report = make_report([flat_layer(0, "a", 1e-2, 1e-2)], findings=[finding("nonfinite", Severity.ERROR)])
    (check,) = apply_policy(report, PolicyConfig())
    assert (check.layer, check.state) == (MODEL_LAYER, State.FAIL)


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"fail_on": "sometimes"}, "policy.fail_on='sometimes'"),
        ({"fail_statuses": ["wobbly"]}, "unknown status 'wobbly'"),
        ({"fail_statuses": "dead"}, "must be a list of strings"),
        ({"severity": {"vanishing": "error"}}, "unknown rule 'vanishing'"),
        ({"severity": {"dead_units": "fatal"}}, "policy.severity.dead_units='fatal'"),
        ({"layers": {"embed*": "warning"}}, "policy.layers['embed*'] must be a mapping"),
        ({"layers": {"embed*": {"baseline_factor": 0.5}}}, "baseline_factor=0.5 must be a number > 1"),
        ({"baseline_factor": 1}, "policy.baseline_factor=1.0 must be a number > 1"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_bad_policy_is_a_config_error_naming_the_key(section: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_policy(**section)
    assert needle in str(info.value)


def test_shipped_configs_load_and_default_yaml_matches_the_defaults() -> None:
    assert load_config(CONFIGS / "default.yaml").policy == PolicyConfig()
    ci = load_config(CONFIGS / "ci.yaml").policy
    assert ci.fail_statuses == ("nonfinite",) and "*embed*" in ci.layers
    assert load_config(CONFIGS / "strict.yaml").policy.fail_on == "warning"


# ------------------------------------------------------------------------------------------------- baseline


def test_report_round_trips_through_json(sick: Report) -> None:
    data = json.loads(json.dumps(sick.to_dict()))
    assert Report.from_dict(data).to_dict() == sick.to_dict()


def test_comparison_regressions_improvements_added_removed(
    healthy: Report, sick: Report, make_report: MakeReport
) -> None:
    c = compare(healthy, sick)
    assert [d.name for d in c.regressions] == ["embed", "body.0"]
    assert c.regressions[0].moves[0].ratio == pytest.approx(1e-5)
    assert {(f.rule, f.layer) for f in c.new_findings} == {
        ("vanishing_gradient", "embed"),
        ("vanishing_gradient", "body.0"),
    }
    # Reversed: the vanishing layers grew back to ok, which is the cure, not a regression.
    back = compare(sick, healthy)
    assert [d.name for d in back.improvements] == ["embed", "body.0", "body.1"]
    assert not back.regressions and back.known_failures and not back.new_findings
    assert {(f.rule, f.layer) for f in back.resolved_findings} == {
        ("vanishing_gradient", "embed"),
        ("vanishing_gradient", "body.0"),
    }
    renamed = make_report([*healthy.layers[:3], dataclasses.replace(healthy.layers[3], name="out")])
    c2 = compare(healthy, renamed)
    assert (c2.added, c2.removed) == (("out",), ("head",))
    assert [d.change for d in c2.layers][-2:] == [Change.REMOVED, Change.ADDED]


def test_a_still_vanishing_layer_that_grew_is_an_improvement(make_report: MakeReport) -> None:
    before = make_report([flat_layer(0, "a", 1e-8, 1e-8, Status.VANISHING), flat_layer(1, "b", 1e-2, 1e-2)])
    after = make_report([flat_layer(0, "a", 1e-5, 1e-5, Status.VANISHING), flat_layer(1, "b", 1e-2, 1e-2)])
    assert [d.name for d in compare(before, after).improvements] == ["a"]
    assert [d.name for d in compare(after, before).regressions] == ["a"]


def test_factor_per_layer_and_on_the_command_line(healthy: Report, make_report: MakeReport) -> None:
    moved = make_report(
        [
            dataclasses.replace(la, grad_rms=Spread(la.grad_rms.median * 5, 0, 0)) if la.grad_rms else la
            for la in healthy.layers
        ]
    )
    assert not compare(healthy, moved).regressions  # 5× < 10×
    assert len(compare(healthy, moved, factor=3).regressions) == 3
    relaxed = make_policy(baseline_factor=3, layers={"head": {"baseline_factor": 10}})
    assert [d.name for d in compare(healthy, moved, policy=relaxed).regressions] == ["embed", "body.0"]


def test_known_failures_do_not_fail_and_regressions_do(healthy: Report, sick: Report) -> None:
    same = evaluate(sick, PolicyConfig(), comparison=compare(sick, sick))
    assert same.passed
    assert {c.state for c in same.checks if c.rule == "vanishing_gradient"} == {State.KNOWN}
    worse = evaluate(sick, PolicyConfig(), comparison=compare(healthy, sick))
    rules = {c.rule for c in worse.failures}
    assert rules == {"vanishing_gradient", BASELINE_RULE}
    ignored = evaluate(
        sick,
        make_policy(severity={BASELINE_RULE: "ignore", "vanishing_gradient": "warning"}),
        comparison=compare(healthy, sick),
    )
    assert ignored.passed


def test_timing_and_probe_device_do_not_change_a_comparison(healthy: Report) -> None:
    slower = dataclasses.replace(healthy, timing={"seconds": 99.0})
    c = compare(healthy, slower)
    assert not c.failed and all(d.change is Change.UNCHANGED for d in c.layers) and not c.notes
    other = dataclasses.replace(healthy, probe=dataclasses.replace(healthy.probe, batch_size=8))
    assert "batch_size 16 → 8" in compare(healthy, other).notes[0]


def test_no_matching_layer_is_a_config_error(healthy: Report, make_report: MakeReport) -> None:
    other = make_report([flat_layer(0, "encoder", 1e-2, 1e-2)])
    with pytest.raises(ConfigError, match="no layer name matches the current model .*another model"):
        compare(healthy, other, baseline_label="base.json")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "base.json"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "the file is empty"),
        ("hello", "not a gradscope report (invalid JSON at line 1 column 1"),
        ('{"schema": "gradscope.report/1", "layers": [', "truncated JSON"),
        ("[1, 2]", "not a gradscope report (the JSON is a list)"),
        ('{"name": "package.json"}', "not a gradscope report (the JSON is an object without a 'schema' key)"),
        ('{"schema": "other/1"}', "not a gradscope report (schema 'other/1'"),
        ('{"schema": "gradscope.report/2"}', "schema 'gradscope.report/2' is not supported by gradscope"),
        ('{"schema": "gradscope.report/1", "healthy": NaN}', "non-standard JSON constant NaN"),
    ],
)
def test_bad_baseline_files(tmp_path: Path, content: str, needle: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        read_baseline(path)
    message = str(info.value)
    assert message.startswith(f"baseline {path}: ") and needle in message, message
    assert "\n" not in message


def test_baseline_with_a_broken_layer_names_the_key(tmp_path: Path, healthy: Report) -> None:
    data = healthy.to_dict()
    data["layers"][2]["signal_rms"] = "big"
    with pytest.raises(ConfigError, match=r"layers\[2\]\.signal_rms must be a number, got \"big\""):
        read_baseline(_write(tmp_path, json.dumps(data)))
    del data["layers"][1]["name"]
    with pytest.raises(ConfigError, match=r"layers\[1\] has no 'name'"):
        read_baseline(_write(tmp_path, json.dumps(data)))
    with pytest.raises(ConfigError, match="file not found"):
        read_baseline(tmp_path / "missing.json")


def test_comparison_renders_in_three_formats(healthy: Report, sick: Report) -> None:
    c = compare(healthy, sick, baseline_label="base.json", current_label="now.json")
    data = json.loads(render_comparison(c, "json"))
    assert data["schema"] == "gradscope.diff/1" and data["failed"] is True
    assert data["regressions"] == ["embed", "body.0"] and data["counts"]["matched"] == 4
    md = render_comparison(c, "markdown")
    assert "| Layer " in md and "✖ regression" in md and "↓10,000×" in md and "↓1.0e+05×" in md
    text = render_comparison(c, "table")
    assert "Regressions (2)" in text and "base.json" in text and "\x1b[" not in text


def test_comparison_table_keeps_layer_names_and_whole_numbers_at_120_columns(healthy: Report, sick: Report) -> None:
    text = render_comparison(compare(healthy, sick), "table", width=120)
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line) == {"─"})
    assert lines[rule - 1].split()[:2] == ["Layer", "Type"]
    rows = lines[rule + 1 : rule + 5]
    assert [row.split()[0] for row in rows] == ["embed", "body.0", "body.1", "head"]
    assert "↓1.0e+05×" in rows[0] and "ok → vanishing" in rows[0] and "✖ regression" in rows[0]


# ------------------------------------------------------------------------------------------------ renderers


def test_junit_has_a_case_per_rule_and_layer(healthy: Report, sick: Report) -> None:
    result = evaluate(sick, PolicyConfig(), comparison=compare(healthy, sick))
    root = ET.fromstring(render_junit(result))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites][-1] == "gradscope.baseline_regression"
    assert all(len(s.findall("testcase")) == 4 for s in suites)
    failures = root.findall(".//failure")
    assert int(root.get("failures")) == len(failures) == len(result.failures) == 4
    vanishing = root.find("testsuite[@name='gradscope.vanishing_gradient']/testcase[@name='embed']/failure")
    assert vanishing is not None and "grad_rms = 1e-07" in vanishing.text and "threshold = 0.001" in vanishing.text
    regression = root.find("testsuite[@name='gradscope.baseline_regression']/testcase[@name='body.0']/failure")
    assert regression is not None and "baseline_grad_rms = 0.02" in regression.text
    dead = root.find("testsuite[@name='gradscope.dead_units']/testcase[@name='body.1']/system-out")
    assert dead is not None and "below --fail-on error" in dead.text


def test_junit_marks_known_failures_skipped_and_survives_control_characters(sick: Report) -> None:
    evil = dataclasses.replace(
        sick, findings=(*sick.findings, finding("frozen", Severity.ERROR, "head")), layers=sick.layers
    )
    evil = dataclasses.replace(
        evil, findings=tuple(dataclasses.replace(f, message=f.message + " \x00\x1b<&>") for f in evil.findings)
    )
    result = evaluate(evil, PolicyConfig(), comparison=compare(sick, evil))
    root = ET.fromstring(render_junit(result))  # parses: control characters were replaced
    skipped = root.findall(".//skipped")
    assert len(skipped) == 2 and all("known in the baseline" in s.get("message", "") for s in skipped)
    assert root.get("failures") == "1"  # only the new 'frozen' error


def test_github_escaping_follows_the_runner_rules() -> None:
    assert escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert escape_property("a: b, c%") == "a%3A b%2C c%25"
    line = annotation("error", "line1\n::warning::injected", title="gradscope: x,y", file="m.py")
    assert line == "::error file=m.py,title=gradscope%3A x%2Cy::line1%0A::warning::injected"
    assert "\n" not in line


def test_github_annotations_one_per_group(healthy: Report, sick: Report) -> None:
    result = evaluate(sick, PolicyConfig(), comparison=compare(healthy, sick))
    lines = render_github(result).splitlines()
    assert [line.split("::")[1].split(" ")[0] for line in lines] == ["error", "warning", "error"]
    assert "title=gradscope vanishing_gradient::" in lines[0] and "layers: embed, body.0" in lines[0]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_and_escapes_names(make_report: MakeReport, healthy: Report) -> None:
    layers = [*healthy.layers[:3], dataclasses.replace(healthy.layers[3], name='<script>alert("x")</script>')]
    current = make_report(layers, findings=[finding("dead_units", Severity.WARNING, layers[3].name)])
    result = evaluate(current, PolicyConfig(), comparison=compare(healthy, current))
    page = render_html(current, result=result)
    parser = _Tags()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags and "iframe" not in tags
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert tags.count("svg") == 2 and tags.count("polyline") >= 3  # baseline and current lines
    assert '<script>alert("x")</script>' in "".join(parser.text)  # shown as text, escaped in the source
    assert "<script>alert" not in page
    # One hover column per layer of either report (5: 'head' removed, the script-named layer added).
    assert sum(1 for t, a in parser.tags if t == "rect" and a.get("class") == "hit") == 2 * 5 - 1


def test_check_markdown_has_the_table(healthy: Report, sick: Report) -> None:
    md = check_markdown(evaluate(sick, PolicyConfig(), comparison=compare(healthy, sick)))
    assert md.startswith("## ❌ gradscope check")
    assert "| Check " in md and "| ❌ fail " in md and "`baseline_regression`" in md
    assert "| Layer " in md and "Signal RMS (baseline)" in md
