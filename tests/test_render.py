"""Renderers: golden terminal/markdown output of hand-built reports, the JSON contract, ``write_atomic``."""

from __future__ import annotations

import io
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from helpers import Golden, MakeReport, check_report_schema, render_text, strict_json
from rich.console import Console

from gradscope.errors import OutputError
from gradscope.report import fmt, render_json, render_markdown, render_terminal, write_atomic
from gradscope.report.html import render_html
from gradscope.results import (
    Finding,
    Fix,
    LayerStats,
    ProbeInput,
    Remedy,
    Report,
    SchemaError,
    Severity,
    Spread,
    Status,
    Suggestion,
    Summary,
    Where,
)

NAN = math.nan
INF = math.inf


def _spread(value: float | None) -> Spread | None:
    if value is None:
        return None
    if not math.isfinite(value) or value == 0:
        return Spread(value, value, value)
    return Spread(value, value * 0.8, value * 1.25)


def _layer(
    index: int,
    name: str,
    type_: str,
    shape: tuple[int, ...] | None,
    parameters: int,
    grad: float | None,
    signal: float | None,
    status: Status = Status.OK,
    **extra: Any,
) -> LayerStats:
    return LayerStats(
        index=index,
        name=name,
        type=type_,
        depth=name.count("."),
        output_shape=shape,
        parameters=parameters,
        trainable=extra.pop("trainable", True),
        grad_rms=_spread(grad),
        signal_rms=_spread(signal),
        activation_rms=_spread(extra.pop("act_rms", 0.5 if signal is not None else None)),
        activation_std=_spread(extra.pop("act_std", 0.4 if signal is not None else None)),
        weight_rms=extra.pop("weight_rms", 0.12 if parameters else None),
        status=status,
        **extra,
    )


# -------------------------------------------------------------------------------------- the reports


def _deep_tanh_layers() -> list[LayerStats]:
    v, s = Status.VANISHING, Status.SATURATED
    return [
        _layer(0, "stem", "Linear", (32, 64), 2112, 2.3e-05, 1.1e-05, v),
        _layer(1, "stem_act", "Tanh", (32, 64), 0, None, 4.0e-05, s, saturated_fraction=0.62),
        _layer(2, "blocks.0.fc", "Linear", (32, 64), 4160, 9.8e-05, 7.1e-05, v),
        _layer(3, "blocks.0.act", "Tanh", (32, 64), 0, None, 2.4e-04, s, saturated_fraction=0.41),
        _layer(4, "blocks.1.fc", "Linear", (32, 64), 4160, 4.6e-04, 3.3e-04),
        _layer(5, "blocks.1.act", "Tanh", (32, 64), 0, None, 1.1e-03),
        _layer(6, "blocks.2.fc", "Linear", (32, 64), 4160, 1.9e-03, 1.5e-03),
        _layer(7, "blocks.2.act", "Tanh", (32, 64), 0, None, 4.9e-03),
        _layer(8, "blocks.3.fc", "Linear", (32, 64), 4160, 8.4e-03, 6.2e-03),
        _layer(9, "blocks.3.act", "Tanh", (32, 64), 0, None, 2.0e-02),
        _layer(10, "head.fc", "Linear", (32, 10), 650, 3.1e-02, 2.6e-02),
        _layer(11, "head.log_softmax", "LogSoftmax", (32, 10), 0, None, 3.0e-02),
    ]


PSEUDO_NORM = Suggestion(
    remedy=Remedy.PSEUDO_NORM,
    layers=("stem", "blocks.0.fc", "blocks.1.fc", "blocks.2.fc", "blocks.3.fc"),
    where=Where.AFTER,
    params={"momentum": 0.1, "eps": 1e-05},
    reason="re-centres and re-scales each block's output so the backward signal keeps its size",
    rules=("vanishing_gradient", "gradient_decay"),
)


def _fixed_report(make_report: MakeReport) -> Report:
    layers: list[LayerStats] = []
    grads = {"stem": 1.2e-02, "blocks.0.fc": 1.6e-02, "blocks.1.fc": 1.9e-02}
    grads |= {"blocks.2.fc": 2.2e-02, "blocks.3.fc": 2.6e-02, "head.fc": 3.0e-02}
    for old in _deep_tanh_layers():
        grad = grads.get(old.name)
        signal = None if old.signal_rms is None else (grad or 2.0e-02) * 0.8
        layers.append(_layer(len(layers), old.name, old.type, old.output_shape, old.parameters, grad, signal))
        if old.name in PSEUDO_NORM.layers:
            norm = "stem_pnorm" if old.name == "stem" else old.name.replace(".fc", ".pnorm")
            layers.append(_layer(len(layers), norm, "PseudoNorm", old.output_shape, 0, None, signal))
    return make_report(
        layers,
        summary=Summary(3.0e-02, "stem", 0.4, 0.07, 0.61),
        target="examples/deep_tanh.py",
        class_name="DeepTanhMLP",
        batch_size=32,
    )


@pytest.fixture
def vanishing(make_report: MakeReport) -> Report:
    layers = _deep_tanh_layers()
    decaying = tuple(la.name for la in layers[:10])
    tanh = tuple(la.name for la in layers if la.type == "Tanh")
    findings = [
        Finding(
            "vanishing_gradient",
            Severity.ERROR,
            ("stem", "blocks.0.fc"),
            "grad RMS at the input side is 3.1 orders of magnitude below the output layers",
            {"worst_ratio": 7.4e-04, "threshold": 1e-02},
        ),
        Finding(
            "gradient_decay",
            Severity.ERROR,
            decaying,
            "grad RMS shrinks steadily toward the input",
            {"decay_per_layer": 0.58, "threshold": 0.25, "fit_r2": 0.997},
        ),
        Finding(
            "saturation",
            Severity.WARNING,
            ("stem_act", "blocks.0.act"),
            "tanh units sit in their flat tails for most probe samples",
            {"saturated_fraction": 0.62, "threshold": 0.3},
        ),
        Finding("input_scale", Severity.INFO, (), "probe inputs [32, 32] look standardised", {"input_rms": 1.0}),
    ]
    suggestions = [
        PSEUDO_NORM,
        Suggestion(
            Remedy.ACTIVATION,
            tanh,
            Where.REPLACE,
            {"to": "GELU"},
            "a non-saturating activation keeps the local derivative near 1",
            ("saturation",),
        ),
        Suggestion(
            Remedy.INIT,
            (),
            Where.MODEL,
            {"scheme": "xavier_uniform", "gain": 5 / 3},
            "tanh's gain 5/3 keeps the forward variance steady",
        ),
    ]
    return make_report(
        layers,
        findings=findings,
        suggestions=suggestions,
        summary=Summary(3.1e-02, "stem", 7.4e-04, 0.58, 3.2e-02),
        fix=Fix(applied=(PSEUDO_NORM,), report=_fixed_report(make_report)),
        target="examples/deep_tanh.py",
        class_name="DeepTanhMLP",
        batch_size=32,
    )


@pytest.fixture
def healthy(make_report: MakeReport) -> Report:
    layers = [
        _layer(0, "stem", "Conv2d", (16, 16, 32, 32), 448, 3.9e-03, 2.1e-03),
        _layer(1, "stem_bn", "BatchNorm2d", (16, 16, 32, 32), 32, 4.4e-03, 2.4e-03),
        _layer(2, "stem_act", "ReLU", (16, 16, 32, 32), 0, None, 2.6e-03, dead_fraction=0.0),
        _layer(3, "layer1.0.conv1", "Conv2d", (16, 16, 32, 32), 2320, 4.8e-03, 2.9e-03),
        _layer(4, "layer1.0.bn1", "BatchNorm2d", (16, 16, 32, 32), 32, 5.0e-03, 3.0e-03),
        _layer(5, "layer1.0.relu", "ReLU", (16, 16, 32, 32), 0, None, 3.2e-03),
        _layer(6, "layer1.0.conv2", "Conv2d", (16, 16, 32, 32), 2320, 5.3e-03, 3.4e-03),
        _layer(7, "layer1.0.bn2", "BatchNorm2d", (16, 16, 32, 32), 32, 5.1e-03, 3.5e-03),
        _layer(8, "pool", "AdaptiveAvgPool2d", (16, 16, 1, 1), 0, None, 3.6e-03),
        _layer(9, "fc", "Linear", (16, 10), 170, 6.0e-03, 5.8e-03),
    ]
    return make_report(
        layers,
        summary=Summary(5.6e-03, "stem", 0.7, 0.021, 0.93),
        target="examples/resnetish.py",
        class_name="ResNetish",
        batch_size=16,
    )


@pytest.fixture
def broken(make_report: MakeReport) -> Report:
    layers = [
        _layer(0, "embed", "Embedding", (4, 16, 32), 3200, NAN, NAN, Status.NONFINITE, act_std=NAN),
        _layer(1, "encoder.frozen", "Linear", (4, 16, 32), 1056, None, 2.0e-03, Status.FROZEN, trainable=False),
        _layer(2, "encoder.unused", "Linear", None, 1056, None, None, Status.DISCONNECTED),
        _layer(3, "encoder.act", "ReLU", (4, 16, 32), 0, None, 0.0, Status.DEAD, dead_fraction=1.0),
        _layer(4, "encoder.tiny", "Linear", (4, 16, 32), 1056, 1e-41, 3e-40, Status.UNDERFLOW),
        _layer(5, "encoder.zeroed", "Linear", (4, 16, 32), 1056, 0.0, 1e-3, Status.ZERO),
        _layer(6, "head", "Linear", (4, 16, 100), 3300, INF, 4.2e-01, Status.NONFINITE, weight_rms=INF),
    ]
    findings = [
        Finding(
            "nonfinite",
            Severity.ERROR,
            ("embed", "head"),
            "gradients are NaN/inf in 2 layers",
            {"nan_batches": 2, "max_grad": INF, "first_value": NAN, "ok": False},
        ),
        Finding("frozen", Severity.INFO, ("encoder.frozen",), "1 layer has requires_grad=False", {}),
    ]
    return make_report(
        layers,
        findings=findings,
        summary=Summary(None, "head", NAN, None, None),
        target="tests/fixtures/models.py:BrokenNet",
        class_name="BrokenNet",
        parameters=10724,
        trainable_parameters=9668,
        batch_size=None,
        dtype="float16",
    )


def _terminal(report: Report, width: int = 120) -> str:
    return render_text(lambda console: render_terminal(report, console), width=width)


# ------------------------------------------------------------------------------------ golden output


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("name", ["vanishing", "healthy", "broken"])
def test_terminal_golden(name: str, width: int, request: pytest.FixtureRequest, golden: Golden) -> None:
    golden(f"render_{name}_{width}.txt", _terminal(request.getfixturevalue(name), width=width))


@pytest.mark.parametrize("name", ["vanishing", "healthy", "broken"])
def test_markdown_golden(name: str, request: pytest.FixtureRequest, golden: Golden) -> None:
    golden(f"render_{name}.md", render_markdown(request.getfixturevalue(name)))


# ----------------------------------------------------------------------------------------- terminal


def test_terminal_shows_tree_verdict_and_sections(vanishing: Report) -> None:
    text = _terminal(vanishing)
    assert "DeepTanhMLP" in text and "examples/deep_tanh.py" in text and "19,402 parameters" in text
    assert "2 errors, 1 warning, 1 info" in text
    assert "−0.58 orders of magnitude per layer" in text
    lines = text.splitlines()
    # The container rows appear on their own, before their first child, indented by nesting.
    blocks = next(i for i, line in enumerate(lines) if line.strip() == "blocks")
    assert lines[blocks + 1].strip() == "0" and lines[blocks + 2].lstrip().startswith("fc ")
    assert "stem, blocks.0.fc, blocks.1.fc, …, blocks.3.fc, head.fc (6 layers)" not in text  # 5 is not long
    assert "stem, stem_act, blocks.0.fc, …, blocks.3.fc, blocks.3.act (10 layers)" in text
    assert "[32, 32]" in text  # brackets in a message are text, not rich markup
    for section in ("Findings", "Suggestions", "Fix", "Applied"):
        assert any(line.startswith(section) for line in lines), section


def test_terminal_healthy_has_no_advice_sections(healthy: Report) -> None:
    text = _terminal(healthy)
    assert "HEALTHY" in text
    assert "Findings" not in text and "Suggestions" not in text and "Fix" not in text


def test_terminal_colour_follows_the_console(vanishing: Report) -> None:
    plain = _terminal(vanishing)
    assert "\x1b[" not in plain
    console = Console(file=io.StringIO(), width=120, color_system="truecolor", force_terminal=True)
    render_terminal(vanishing, console)
    assert "\x1b[" in console.file.getvalue()  # type: ignore[attr-defined]


def test_terminal_prints_every_row_of_a_long_model(make_report: MakeReport) -> None:
    layers = [
        _layer(
            i,
            f"layers.{i // 2}.{'fc' if i % 2 == 0 else 'act'}",
            "Linear" if i % 2 == 0 else "Tanh",
            (8, 16),
            272 if i % 2 == 0 else 0,
            10.0 ** (-i / 20) if i % 2 == 0 else None,
            10.0 ** (-i / 20),
        )
        for i in range(150)
    ]
    report = make_report(layers)
    text = _terminal(report)
    assert sum(1 for line in text.splitlines() if line.strip().startswith(("fc ", "act "))) == 150
    md = render_markdown(report)
    assert "<details><summary>Layers (150, forward order)</summary>" in md
    assert md.count("`fc`") + md.count("`act`") == 150


def test_fix_code_keeps_its_lines_and_cleans_each(make_report: MakeReport) -> None:
    """The code to paste is several lines: shown line by line (it used to print as one line of literal \\n), each
    line still cleaned of what a terminal would act on (a name's escape sequence)."""
    code = "nn.Sequential(\n    nn.Linear(4, 4),\n    nn.BatchNorm1d(4),  # \u2190 gradscope\n)\n# at 'red\x1b[31m'"
    report = make_report(fix=Fix(applied=(PSEUDO_NORM,), report=make_report(), code=code))
    terminal = render_text(lambda console: render_terminal(report, console))
    for text in (terminal, render_markdown(report)):
        assert "nn.Sequential(\n" in text and "\\n" not in text
        assert "    nn.Linear(4, 4),\n" in text and ")\n" in text
        assert "\x1b" not in text and "red\\x1b[31m" in text


def test_every_status_renders_in_every_format(make_report: MakeReport) -> None:
    """A layer of each status, in one report: every renderer knows every status (the terminal's colour table had no
    entry for 'gated', so the default output of any model with a closed gate was an internal error)."""
    layers = [
        _layer(i, f"layer{i}", "Linear", (16, 8), 72, 1e-3, 1e-3, status=status) for i, status in enumerate(Status)
    ]
    report = make_report(layers)
    terminal = render_text(lambda console: render_terminal(report, console))
    markdown = render_markdown(report)
    html = render_html(report)
    for status in Status:
        assert status.value in terminal and status.value in markdown and status.value in html
    assert {layer["status"] for layer in strict_json(render_json(report))["layers"]} == {s.value for s in Status}


def test_terminal_narrow_console_does_not_crash(vanishing: Report, broken: Report) -> None:
    for report in (vanishing, broken):
        assert "Summary" in _terminal(report, width=60)


# ------------------------------------------------------------------------------------ shared format


def test_numbers() -> None:
    assert fmt.sci(3.2e-07) == "3.2e-07"
    assert fmt.sci(None) == "—" and fmt.sci(NAN) == "nan" and fmt.sci(INF) == "inf" and fmt.sci(-INF) == "-inf"
    assert fmt.sci(0.0) == "0" and fmt.sci(1234.5) == "1.2e+03"
    assert fmt.num(0.58) == "0.58" and fmt.num(1e-05) == "1.0e-05" and fmt.num(3) == "3"
    assert fmt.num(True) == "true" and fmt.num("GELU") == "GELU" and fmt.num(NAN) == "nan"
    assert fmt.signed(-0.583) == "−0.58" and fmt.signed(0.5) == "+0.50"
    assert fmt.decay_text(0.58) == "−0.58 orders of magnitude per layer (output → input)"
    assert fmt.shape((8, 3, 32, 32)) == "[8, 3, 32, 32]" and fmt.shape(None) == "—" and fmt.shape(()) == "[]"


def test_layer_lists_are_abbreviated() -> None:
    names = [f"l{i}" for i in range(12)]
    assert fmt.layer_list(names) == "l0, l1, l2, …, l10, l11 (12 layers)"
    assert fmt.layer_list(names[:6]) == "l0, l1, l2, l3, l4, l5"
    assert fmt.layer_list(names[:7], quote="`") == "`l0`, `l1`, `l2`, …, `l5`, `l6` (7 layers)"


def test_tree_rows_derive_parents_from_names() -> None:
    layers = [
        _layer(0, "embed", "Embedding", None, 10, 1.0, 1.0),
        _layer(1, "blocks.0.attn.out_proj", "Linear", None, 10, 1.0, 1.0),
        _layer(2, "blocks.0.mlp", "Linear", None, 10, 1.0, 1.0),
        _layer(3, "head", "Linear", None, 10, 1.0, 1.0),
        _layer(4, "blocks.0.norm", "LayerNorm", None, 10, 1.0, 1.0),  # forward order jumps back into blocks.0
        _layer(5, "", "Linear", None, 10, 1.0, 1.0),  # the root module itself
    ]
    rows = [(r.level, r.label, r.layer is not None) for r in fmt.tree_rows(layers)]
    assert rows == [
        (0, "embed", True),
        (0, "blocks", False),
        (1, "0", False),
        (2, "attn", False),
        (3, "out_proj", True),
        (2, "mlp", True),
        (0, "head", True),
        (0, "blocks", False),
        (1, "0", False),
        (2, "norm", True),
        (0, "(model)", True),
    ]


def test_log_bars_span_the_reports_own_range() -> None:
    scale = fmt.LogScale.over([1e-7, 1e-5, None, NAN, 0.0, 1e-2])
    assert scale is not None and (round(scale.lo), round(scale.hi)) == (-7, -2)
    assert scale.bar(1e-7, 20) == "█" and scale.bar(1e-2, 20) == "█" * 20
    assert len(scale.bar(1e-5, 20)) < len(scale.bar(1e-3, 20))
    assert scale.bar(None, 20) == scale.bar(NAN, 20) == scale.bar(0.0, 20) == scale.bar(INF, 20) == ""
    flat = fmt.LogScale.over([1e-3, 1e-3])
    assert flat is not None and flat.bar(1e-3, 10) == "█" * 10
    assert fmt.LogScale.over([None, 0.0]) is None
    # A few percent of spread stays a few percent of bar, not the whole width.
    near = fmt.LogScale.over([4e-3, 6e-3])
    assert near is not None and len(near.bar(4e-3, 20)) >= 18


def test_fix_rows_keep_inserted_layers_in_place(vanishing: Report) -> None:
    assert vanishing.fix is not None
    rows = fmt.fix_rows(vanishing, vanishing.fix.report)
    names = [r.name for r in rows]
    assert names[:3] == ["stem", "stem_pnorm", "stem_act"]
    inserted = [r.name for r in rows if r.before is None]
    assert inserted == ["stem_pnorm", "blocks.0.pnorm", "blocks.1.pnorm", "blocks.2.pnorm", "blocks.3.pnorm"]
    stem = rows[0].change
    assert stem is not None and math.isclose(stem, math.log10(1.2e-02 / 2.3e-05))


def test_verdict_texts(vanishing: Report, healthy: Report, make_report: MakeReport) -> None:
    assert fmt.verdict(vanishing).text == "2 errors, 1 warning, 1 info"
    assert fmt.verdict(healthy).text == "HEALTHY" and fmt.verdict(healthy).severity is None
    warned = make_report(findings=[Finding("saturation", Severity.WARNING, ("a",), "m")])
    assert fmt.verdict(warned).text == "HEALTHY · 1 warning" and warned.healthy


# ----------------------------------------------------------------------------------------- markdown


def test_markdown_is_a_ci_summary(vanishing: Report) -> None:
    md = render_markdown(vanishing)
    assert md.startswith("## gradscope: DeepTanhMLP — ❌ 2 errors, 1 warning, 1 info\n")
    assert "| Layer " in md and "|---" in md
    assert "· · `fc`" in md  # nesting shown with a visible prefix, as table cells drop leading spaces
    assert "1. **pseudo_norm** after `stem`, `blocks.0.fc`" in md
    assert "### Fix" in md and "`stem_pnorm` (new)" in md
    assert "█" not in md  # no bars in markdown
    assert md.endswith("\n") and not md.endswith("\n\n")


def test_markdown_escapes_pipes(make_report: MakeReport) -> None:
    report = make_report([_layer(0, "fc", "My|Linear", (2, 2), 6, 1e-3, 1e-3)])
    assert "My\\|Linear" in render_markdown(report)


# --------------------------------------------------------------------------------------------- json


def test_json_has_the_schema(vanishing: Report) -> None:
    text = render_json(vanishing)
    assert text.endswith("}\n") and text.count("\n}\n") == 1  # exactly one document
    doc = strict_json(text)
    check_report_schema(doc)
    assert doc["healthy"] is False
    assert [la["name"] for la in doc["layers"]][:3] == ["stem", "stem_act", "blocks.0.fc"]
    assert {"applied", "report"} <= doc["fix"].keys()
    check_report_schema(doc["fix"]["report"])
    assert doc["fix"]["applied"][0]["remedy"] == "pseudo_norm"


def test_probe_inputs_and_assumptions_in_json_and_header(make_report: MakeReport) -> None:
    inputs = (ProbeInput((35, 16), "int64"), ProbeInput((2, 16, 8), "float32"), ProbeInput((4,), "bool", "mask"))
    assumed = ("sequence-first inputs, samples along dimension 1", "hidden = None")
    report = make_report([_layer(0, "fc", "Linear", (2, 2), 6, 1e-3, 1e-3)], inputs=inputs, assumed=assumed)
    doc = strict_json(render_json(report))
    assert doc["probe"]["inputs"] == [
        {"shape": [35, 16], "dtype": "int64"},
        {"shape": [2, 16, 8], "dtype": "float32"},
        {"shape": [4], "dtype": "bool", "name": "mask"},
    ]
    assert doc["probe"]["assumed"] == list(assumed)
    assert Report.from_dict(doc).probe == report.probe
    text = fmt.probe_text(report)
    assert text.startswith("4 batches × 16 (inputs int64 [35, 16], float32 [2, 16, 8], mask=bool [4]), seed 0")
    assert text.endswith("; assumed: sequence-first inputs, samples along dimension 1; hidden = None")
    terminal = render_text(lambda console: render_terminal(report, console))
    assert "\nassumed  sequence-first inputs" in terminal
    assert "hidden = None" in render_markdown(report)


def test_probe_inputs_are_optional_and_checked(make_report: MakeReport) -> None:
    doc = make_report([_layer(0, "fc", "Linear", (2, 2), 6, 1e-3, 1e-3)]).to_dict()
    assert "inputs" not in doc["probe"] and "assumed" not in doc["probe"]  # older reports read back as before
    assert Report.from_dict(doc).probe.inputs == ()
    doc["probe"]["inputs"] = [{"shape": ["35"], "dtype": "int64"}]
    with pytest.raises(SchemaError, match=r"probe.inputs\[0\].shape"):
        Report.from_dict(doc)


def test_json_writes_non_finite_as_null(broken: Report) -> None:
    text = render_json(broken)
    assert not re.search(r"[:\[,]\s*-?(NaN|Infinity)\b", text)  # the message may say "NaN"; a value may not
    doc = strict_json(text)
    check_report_schema(doc)
    layers = {la["name"]: la for la in doc["layers"]}
    assert layers["embed"]["grad_rms"] is None and layers["embed"]["status"] == "nonfinite"
    assert layers["head"]["grad_rms"] is None and layers["head"]["weight_rms"] is None
    assert layers["encoder.unused"]["output_shape"] is None and layers["encoder.zeroed"]["grad_rms"] == 0.0
    assert doc["findings"][0]["evidence"] == {
        "nan_batches": 2,
        "max_grad": None,
        "first_value": None,
        "ok": False,
    }
    assert doc["summary"]["worst_ratio"] is None and "fix" not in doc


# ------------------------------------------------------------------------------------- write_atomic


def test_write_atomic_writes_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    write_atomic(target, "# ✅ HEALTHY\n")
    assert target.read_bytes() == "# ✅ HEALTHY\n".encode()
    write_atomic(str(target), "second\r\n")  # str paths too; newlines are written as given
    assert target.read_bytes() == b"second\r\n"
    assert os.listdir(tmp_path) == ["report.md"]


def test_write_atomic_keeps_the_mode_of_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    target.chmod(0o640)
    write_atomic(target, "new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_text() == "new"


def test_write_atomic_new_file_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "r.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.txt").stat().st_mode) == 0o640


def test_write_atomic_through_a_symlink_replaces_the_target(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_write_atomic_dev_full_raises_output_error() -> None:
    with pytest.raises(OutputError) as info:
        write_atomic("/dev/full", "x" * 100_000)
    message = str(info.value)
    assert message.startswith("cannot write /dev/full: ") and "\n" not in message


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_write_atomic_writes_through_special_files() -> None:
    write_atomic("/dev/null", "discarded")  # a device is written, never replaced
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_write_atomic_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "report.json"
    with pytest.raises(OutputError, match=r"^cannot write .*report\.json: No such file or directory$"):
        write_atomic(target, "{}")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_write_atomic_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            write_atomic(locked / "report.json", "{}")
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o700)


def test_write_atomic_permission_error_on_create(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same path as an unwritable directory, for runs as root (where permissions are not enforced).
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(OutputError, match="Permission denied"):
        write_atomic(tmp_path / "report.json", "{}")
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.json"
    target.write_text("old report")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OutputError, match="No space left on device"):
        write_atomic(target, "new report")
    monkeypatch.undo()
    assert target.read_text() == "old report"
    assert os.listdir(tmp_path) == ["report.json"]


def test_unencodable_text_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "report.txt"
    target.write_text("old")
    with pytest.raises(OutputError, match="cannot write"):
        write_atomic(target, "lone surrogate \ud800")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["report.txt"]


def test_interrupted_write_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "report.json", "{}")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------- widths


def test_nested_hugging_face_names_stay_distinguishable_at_80_columns(make_report: MakeReport) -> None:
    """``bert.encoder.layer.N.attention.output.dense`` and friends: at 80 columns every row keeps its whole last
    part (the tree shows the rest), nothing is cut with an ellipsis, no line is wider than the console."""
    parts = ("attention.self.query", "attention.output.dense", "intermediate.dense", "intermediate.intermediate_act_fn")
    names = [f"bert.encoder.layer.{i}.{p}" for i in (0, 10) for p in parts]
    layers = [
        _layer(
            i,
            n,
            "GELUActivation" if n.endswith("fn") else "Linear",
            (16, 128, 768),
            0 if n.endswith("fn") else 9,
            None if n.endswith("fn") else 1e-3 * (i + 1),
            1e-3,
        )  # fmt: skip
        for i, n in enumerate(names)
    ]
    text = _terminal(make_report(layers), width=80)
    table = text.split("log bars")[0]
    assert all("…" not in line.split()[0] for line in table.splitlines() if line.strip())  # a type may shorten
    assert all(len(line) <= 80 for line in text.splitlines())
    labels = [line.split()[0] for line in table.splitlines()[2:] if line.strip()]
    assert labels.count("10") == 1 and labels.count("query") == 2 and labels.count("intermediate_act_fn") == 2


def test_code_hints_fold_into_code_that_still_parses() -> None:
    code = "\n".join(
        [
            "# model.bert.encoder is an nn.Sequential; its new layer list, with every change marked for review:",
            "nn.Sequential(",
            "    nn.Linear(in_features=768, out_features=768, bias=True),  # ← gradscope (was nn.Linear(768, 3072))",
            ")",
            "loss = loss + 0.001 * sum(w.pow(2).sum() for w in [model.body[0].weight, model.body[2].weight, "
            "model.body[4].weight])",
        ]
    )
    for width in (40, 60, 78):
        lines = fmt.code_lines(code, width)
        compile("\n".join(lines), "<hint>", "exec")  # still valid Python
        assert all(len(line) <= width for line in lines), lines
        assert sum(line.lstrip().startswith("#") for line in lines) >= 3  # every comment piece keeps its "#"


def test_bar_legend_starts_at_the_smallest_value(make_report: MakeReport) -> None:
    layers = [_layer(0, "a", "Linear", (4, 4), 20, 2e-3, 1e-3), _layer(1, "b", "Linear", (4, 4), 20, 3e-3, 1e-3)]
    assert "█ grad RMS 2.0e-03 … 3.0e-03" in _terminal(make_report(layers))


def test_ratio_and_rms_formats() -> None:
    assert fmt.sci(5e-07) == "5.0e-07" and fmt.times(5e-07) == "5.0e-07×"
    assert fmt.times(0.42) == "0.42×" and fmt.times(120.0) == "120×" and fmt.times(1e4) == "10,000×"
    assert fmt.num(1000.0) == "1000"
