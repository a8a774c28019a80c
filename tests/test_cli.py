"""The CLI contract of design.md, end to end: exit codes, stdout/stderr separation, JSON schema, errors.

Most cases run in-process through Typer's ``CliRunner`` (torch is imported once). Real subprocesses are used
only where the process boundary is the point: ``--help``/``--version`` must not import torch, exit codes and
the stdout/stderr split of the real entry point, plain output when piped or under ``NO_COLOR``. The slow ones
(each imports torch, ~3 s) start together in one module fixture so they overlap.

The target models are files under ``tests/assets/`` (read, never written; outputs go to ``tmp_path``); the
deliberately broken one-off files are written into ``tmp_path``. Every scan uses ``--batches 2 --batch-size 8``.
Tests that start real subprocesses are marked ``slow``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    ANSI,
    ASSETS,
    FAST,
    Proc,
    assert_one_line_error,
    asset,
    check_report_schema,
    cli_env,
    invoke,
    net_source,
    run_cli,
    run_without_torch,
    scan_cli,
    start,
    strict_json,
    without_timing,
    write_source,
)
from typer.testing import CliRunner

from gradscope import __version__
from gradscope.cli import app

HEALTHY = asset("healthy_mlp.py")  # exit 0, no findings
DEEP = asset("deep_sigmoid_mlp.py")  # 30 Linear layers with Sigmoid between: vanishing, exit 1
UNUSED = asset("unused_layer.py")  # only finding: the unused Linear is 'disconnected', a warning
REORDERED = asset("reordered_layers.py")  # registered in the opposite order to the one forward() runs them in


# ------------------------------------------------------------------------ subprocesses, started together


@pytest.fixture(scope="module")
def procs() -> Iterator[dict[str, Proc]]:
    jobs = {
        "healthy_json": ["scan", HEALTHY.name, *FAST, "--format", "json"],
        "piped_table": ["scan", DEEP.name, *FAST],
        "missing_file": ["scan", "missing.py", *FAST],
        # Fails before torch is imported: cheap, and enough to see --debug's traceback.
        "debug": ["scan", HEALTHY.name, *FAST, "--model-kwargs", "{bad", "--debug"],
        "no_debug": ["scan", HEALTHY.name, *FAST, "--model-kwargs", "{bad"],
    }
    started = {name: start(*args, cwd=ASSETS) for name, args in jobs.items()}
    try:
        yield started
    finally:
        for proc in started.values():
            proc.stop()


# ---------------------------------------------------------------------------------- 1. help and version


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--help"], ["scan", "--help"], ["--version"]])
def test_help_and_version_do_not_import_torch(argv: list[str]) -> None:
    proc = run_without_torch(*argv)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH-MODULES: []" in proc.stderr
    assert "Traceback" not in proc.stderr
    if argv == ["--version"]:
        assert proc.stdout.strip() == f"gradscope {__version__}"
    else:
        assert "Usage" in proc.stdout


@pytest.mark.slow
def test_version_through_the_console_script() -> None:
    proc = run_cli("--version")
    assert proc.code == 0
    assert proc.stdout == f"gradscope {__version__}\n"
    assert proc.stderr == ""
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", __version__)


def test_version_in_process() -> None:
    outcome = invoke("--version")
    assert outcome.code == 0
    assert __version__ in outcome.stdout


# ------------------------------------------------------------------------------------------ 2. exit codes


@pytest.mark.slow
def test_exit_codes_through_subprocess(procs: dict[str, Proc]) -> None:
    assert procs["healthy_json"].result().code == 0
    assert procs["piped_table"].result().code == 1
    assert procs["missing_file"].result().code == 2


def test_healthy_model_exits_0() -> None:
    outcome = scan_cli(HEALTHY)
    assert outcome.code == 0, outcome.stderr
    assert "MLP" in outcome.stdout


def test_vanishing_deep_sigmoid_exits_1() -> None:
    outcome = scan_cli(DEEP, "--format", "json")
    assert outcome.code == 1, outcome.stderr
    report = strict_json(outcome.stdout)
    assert report["healthy"] is False
    assert any(f["severity"] == "error" for f in report["findings"])
    assert any(f["rule"] == "vanishing_gradient" for f in report["findings"])


def test_fail_on_never_exits_0_despite_errors() -> None:
    outcome = scan_cli(DEEP, "--fail-on", "never", "--format", "json")
    assert outcome.code == 0
    assert strict_json(outcome.stdout)["healthy"] is False  # the report still says so


@pytest.mark.parametrize(("extra", "code"), [([], 0), (["--fail-on", "error"], 0), (["--fail-on", "warning"], 1)])
def test_fail_on_warning(extra: list[str], code: int) -> None:
    outcome = scan_cli(UNUSED, "--format", "json", *extra)
    assert outcome.code == code
    report = strict_json(outcome.stdout)
    assert report["healthy"] is True
    assert {f["severity"] for f in report["findings"]} == {"warning"}
    assert any(f["rule"] == "disconnected" and f["layers"] == ["unused"] for f in report["findings"])
    status = {layer["name"]: layer["status"] for layer in report["layers"]}
    assert status["unused"] == "disconnected"


def test_a_slow_run_outside_a_terminal_says_where_it_is_now_and_then(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No spinner when stderr is not a terminal (a CI log), and nothing at all for a quick run; a slow one prints
    one plain line per ``HEARTBEAT_S`` at the next step it reaches."""
    from gradscope.cli import common

    clock = iter([0.0, 1.0, 31.0, 40.0, 75.0])
    monkeypatch.setattr(common.time, "monotonic", lambda: next(clock))
    with common.progress() as tick:
        for message in ("loading m.py", "probing batch 1/4", "probing batch 2/4", "probing batch 3/4"):
            tick(message)
    assert capsys.readouterr().err.splitlines() == [
        "gradscope: probing batch 1/4 (31 s)",
        "gradscope: probing batch 3/4 (75 s)",
    ]


def test_fail_on_invalid_value_is_a_usage_error() -> None:
    assert scan_cli(HEALTHY, "--fail-on", "sometimes").code == 2


# --------------------------------------------------------------------------------------------- 3. JSON


@pytest.mark.slow
def test_json_stdout_is_one_document(procs: dict[str, Proc]) -> None:
    outcome = procs["healthy_json"].result()
    assert outcome.code == 0, outcome.stderr
    assert outcome.stderr == ""  # no progress when stderr is not a terminal, and nothing else
    report = strict_json(outcome.stdout)  # the whole of stdout, nothing before or after
    assert outcome.stdout.lstrip().startswith("{") and outcome.stdout.rstrip().endswith("}")
    check_report_schema(report)
    model = report["model"]
    assert (model["target"], model["class"], model["parameters"], model["trainable_parameters"]) == (
        "healthy_mlp.py",
        "MLP",
        1732,
        1732,
    )
    probe = report["probe"]
    assert (probe["batches"], probe["batch_size"], probe["seed"], probe["device"], probe["dtype"]) == (
        2,
        8,
        0,
        "cpu",
        "float32",
    )
    assert [layer["name"] for layer in report["layers"]] == ["net.0", "net.1", "net.2", "net.3", "net.4"]
    assert report["healthy"] is True
    assert all(layer["status"] == "ok" for layer in report["layers"])


def test_json_of_a_failing_model_is_still_one_document() -> None:
    outcome = scan_cli(DEEP, "--format", "json")
    assert outcome.code == 1
    report = strict_json(outcome.stdout)
    check_report_schema(report)
    assert report["healthy"] is False
    assert len([layer for layer in report["layers"] if layer["type"] == "Linear"]) == 30
    assert report["findings"] and report["suggestions"]


def test_layers_are_in_forward_order_not_registration_order() -> None:
    # The input shape is given: inference looks at the first *registered* layer, which is not the first run.
    outcome = scan_cli(REORDERED, "--format", "json", "--input-shape", "8,16")
    assert outcome.code == 0, outcome.stderr
    report = strict_json(outcome.stdout)
    check_report_schema(report)
    assert [layer["name"] for layer in report["layers"]] == ["first", "middle", "last"]


def test_cli_options_reach_the_probe_section() -> None:
    outcome = invoke(
        "scan",
        HEALTHY,
        "--batches",
        "3",
        "--batch-size",
        "5",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--format",
        "json",
    )
    assert outcome.code == 0, outcome.stderr
    probe = strict_json(outcome.stdout)["probe"]
    assert (probe["batches"], probe["batch_size"], probe["seed"], probe["device"]) == (3, 5, 7, "cpu")


def test_config_file_is_used_and_cli_wins(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("probe:\n  batches: 3\n  batch_size: 4\n  seed: 5\n", encoding="utf-8")
    outcome = invoke("scan", HEALTHY, "--config", config, "--batch-size", "6", "--format", "json")
    assert outcome.code == 0, outcome.stderr
    probe = strict_json(outcome.stdout)["probe"]
    assert (probe["batches"], probe["batch_size"], probe["seed"]) == (3, 6, 5)


# -------------------------------------------------------------------------------- 4. markdown and output


def test_markdown_has_a_table() -> None:
    outcome = scan_cli(HEALTHY, "--format", "markdown")
    assert outcome.code == 0, outcome.stderr
    table_rows = [line for line in outcome.stdout.splitlines() if line.startswith("|")]
    assert any(re.fullmatch(r"\|[\s\-:|]+\|", line) for line in table_rows), "no header separator row"
    assert any("Linear" in line for line in table_rows)
    assert "net.0" in outcome.stdout or "`0`" in outcome.stdout
    assert not ANSI.search(outcome.stdout)


@pytest.mark.parametrize("fmt", ["json", "markdown", "table"])
def test_output_writes_the_file_and_leaves_stdout_empty(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"report.{fmt}"
    outcome = scan_cli(HEALTHY, "--format", fmt, "--output", target)
    assert outcome.code == 0, outcome.stderr
    assert outcome.stdout == ""
    text = target.read_text(encoding="utf-8")
    if fmt == "json":
        assert strict_json(text)["schema"] == "gradscope.report/1"
    elif fmt == "markdown":
        assert "| Linear" in text
    else:
        assert "Linear" in text and "net" in text
        assert not ANSI.search(text)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp file left


def test_output_keeps_the_exit_code(tmp_path: Path) -> None:
    target = tmp_path / "deep.json"
    outcome = scan_cli(DEEP, "--format", "json", "--output", target)
    assert outcome.code == 1
    assert outcome.stdout == ""
    assert strict_json(target.read_text(encoding="utf-8"))["healthy"] is False


def test_output_into_a_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "nowhere" / "report.json"
    outcome = scan_cli(HEALTHY, "--format", "json", "--output", target)
    assert_one_line_error(outcome, "nowhere")
    assert not target.parent.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("fmt", ["json", "table"])
def test_output_to_a_full_device(fmt: str) -> None:
    outcome = scan_cli(HEALTHY, "--format", fmt, "--output", "/dev/full")
    assert_one_line_error(outcome, "/dev/full")


# ---------------------------------------------------------------------------------------- 5. plain text


@pytest.mark.slow
def test_piped_output_has_no_escape_sequences(procs: dict[str, Proc]) -> None:
    outcome = procs["piped_table"].result()
    assert outcome.code == 1, outcome.stderr
    assert "vanishing" in outcome.stdout and "Sigmoid" in outcome.stdout
    assert not ANSI.search(outcome.stdout)
    assert not ANSI.search(outcome.stderr)


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {}], ids=["NO_COLOR", "plain"])
def test_in_process_output_has_no_escape_sequences(env: dict[str, str]) -> None:
    outcome = scan_cli(UNUSED, env=env)
    assert outcome.code == 0
    assert "disconnected" in outcome.stdout
    assert not ANSI.search(outcome.stdout)


def _run_in_pty(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=follower, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    os.close(follower)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO once the child has closed its end
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
        proc.wait(timeout=60)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_no_color_in_a_terminal_gives_plain_text() -> None:
    code, text = _run_in_pty(
        [sys.executable, "-m", "gradscope", "scan", UNUSED.name, *FAST], ASSETS, cli_env(NO_COLOR="1")
    )
    assert code == 0
    assert "disconnected" in text
    assert not ANSI.search(text), sorted(set(re.findall(r"\x1b\[[0-9;?]*[A-Za-z]", text)))


# ------------------------------------------------------------------------------------------ 6. determinism


def test_same_seed_gives_identical_json() -> None:
    runs = [scan_cli(DEEP, "--format", "json", "--seed", "3") for _ in range(2)]
    reports = [without_timing(strict_json(run.stdout)) for run in runs]
    assert reports[0] == reports[1]
    assert reports[0]["probe"]["seed"] == 3


# ------------------------------------------------------------------------------------------- 7. bad input


@pytest.mark.slow
def test_missing_file_through_subprocess(procs: dict[str, Proc]) -> None:
    assert_one_line_error(procs["missing_file"].result(), "missing.py", "not found")


@pytest.mark.slow
def test_debug_shows_a_traceback(procs: dict[str, Proc]) -> None:
    plain = procs["no_debug"].result()
    assert_one_line_error(plain, "--model-kwargs", "JSON")
    debug = procs["debug"].result()
    assert debug.code != 0
    assert "Traceback" in debug.stderr
    assert "ConfigError" in debug.stderr
    assert debug.stdout == ""


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(scan_cli(tmp_path / "missing.py"), "missing.py", "not found")


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write_source(tmp_path, "broken.py", "import torch\n\nx = (\ndef f(:\n    pass\n")
    line = assert_one_line_error(scan_cli(path), "broken.py", "syntax")
    assert re.search(r"line [34]\b", line), line


def test_import_error_names_the_missing_module(tmp_path: Path) -> None:
    path = write_source(tmp_path, "needs_pkg.py", "import torch\nimport gradscope_no_such_module_xyz\n")
    assert_one_line_error(scan_cli(path), "needs_pkg.py", "gradscope_no_such_module_xyz")


def test_no_candidate_model(tmp_path: Path) -> None:
    path = write_source(tmp_path, "plain.py", "X = 1\n\n\ndef helper():\n    return 2\n")
    assert_one_line_error(scan_cli(path), "plain.py", "nn.Module")


def test_several_candidates_are_listed(tmp_path: Path) -> None:
    path = write_source(tmp_path, "two.py", net_source("return self.l(x)", extra="\n\nclass Other(Net):\n    pass\n"))
    line = assert_one_line_error(scan_cli(path), "Net", "Other")
    assert re.search(r"two\.py:(Net|Other)\b", line), line


def test_constructor_needing_arguments_suggests_model_kwargs(tmp_path: Path) -> None:
    path = write_source(
        tmp_path,
        "needs_args.py",
        """
        from torch import nn


        class Wide(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.l = nn.Linear(16, width)

            def forward(self, x):
                return self.l(x)
    """,
    )
    assert_one_line_error(scan_cli(path), "width", "--model-kwargs")
    assert scan_cli(path, "--model-kwargs", '{"width": 4}').code == 0


def test_model_kwargs_reach_the_factory() -> None:
    outcome = scan_cli(DEEP, "--model-kwargs", '{"depth": 3}', "--format", "json")
    assert outcome.code in (0, 1)
    layers = strict_json(outcome.stdout)["layers"]
    assert len([layer for layer in layers if layer["type"] == "Linear"]) == 3


@pytest.mark.parametrize("text", ["{bad", "[1, 2]"])
def test_invalid_model_kwargs(text: str) -> None:
    assert_one_line_error(scan_cli(HEALTHY, "--model-kwargs", text), "--model-kwargs")


def test_wrong_input_shape_names_the_layer() -> None:
    line = assert_one_line_error(scan_cli(HEALTHY, "--input-shape", "4,7"), "net.0")
    assert "input-shape" in line or "shape" in line


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ("self.l(x)\nreturn None", ["None"]),
        ("return self.l(x).argmax(dim=-1)", ["integer"]),
        ("self.l(x)\nreturn torch.ones(x.shape[0], 4)", ["parameter"]),
    ],
    ids=["returns-None", "returns-int", "returns-constant"],
)
def test_bad_model_output(tmp_path: Path, body: str, needles: list[str]) -> None:
    path = write_source(tmp_path, "bad_output.py", net_source(body))
    assert_one_line_error(scan_cli(path), *needles)


def test_no_trainable_parameters(tmp_path: Path) -> None:
    factory = "\n\ndef build_model():\n    net = Net()\n    net.requires_grad_(False)\n    return net\n"
    path = write_source(tmp_path, "frozen.py", net_source("return self.l(x)", extra=factory))
    assert_one_line_error(scan_cli(path), "trainable")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--batches", "0"], "batches"),
        (["--batch-size", "-1"], "--batch-size -1"),
        (["--device", "tpu"], "tpu"),
        (["--input-shape", "abc"], "--input-shape"),
        (["--input-shape", "8,0"], "--input-shape"),
    ],
)
def test_invalid_option_values(args: list[str], needle: str) -> None:
    # `args` come after FAST, so they win over its --batches / --batch-size.
    assert_one_line_error(scan_cli(HEALTHY, *args), needle)


def test_invalid_format_is_a_usage_error() -> None:
    outcome = scan_cli(HEALTHY, "--format", "xml")
    assert outcome.code == 2
    assert outcome.stdout == ""
    assert "xml" in outcome.stderr
    assert "Traceback" not in outcome.stderr


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("probe:\n  batches: 2\n  bogus_knob: 3\n", encoding="utf-8")
    assert_one_line_error(scan_cli(HEALTHY, "--config", config), "bogus_knob", "bad.yaml")


def test_missing_config_file(tmp_path: Path) -> None:
    assert_one_line_error(scan_cli(HEALTHY, "--config", tmp_path / "nope.yaml"), "nope.yaml")


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "in-section"])
def test_yaml_python_tag_is_refused_and_not_executed(tmp_path: Path, nested: bool) -> None:
    marker = tmp_path / "pwned.txt"
    tag = f'!!python/object/apply:os.system ["echo pwned > {marker}"]'
    config = tmp_path / "evil.yaml"
    config.write_text(f"probe: {tag}\n" if nested else f"{tag}\n", encoding="utf-8")
    assert_one_line_error(scan_cli(HEALTHY, "--config", config), "evil.yaml")
    assert not marker.exists()


def test_model_file_calling_sys_exit(tmp_path: Path) -> None:
    path = write_source(tmp_path, "exits.py", "import sys\n\nsys.exit(3)\n")
    assert_one_line_error(scan_cli(path), "exits.py", "exit")


def test_factory_that_raises_shows_its_message(tmp_path: Path) -> None:
    path = write_source(
        tmp_path,
        "raises.py",
        """
        def build_model():
            raise RuntimeError("weights file missing: ./w.pt")
    """,
    )
    assert_one_line_error(scan_cli(path), "raises.py", "weights file missing: ./w.pt")


def test_debug_in_process_reraises(tmp_path: Path) -> None:
    path = write_source(
        tmp_path,
        "raises.py",
        """
        def build_model():
            raise RuntimeError("weights file missing")
    """,
    )
    result = CliRunner().invoke(app, ["scan", str(path), *FAST, "--debug"])  # catches the exception
    assert result.exit_code != 0
    assert result.exception is not None
    assert "weights file missing" in str(result.exception)


# ----------------------------------------------------------------------------------- 8. the file is kept


def test_scan_does_not_modify_the_model_file() -> None:
    before = (HEALTHY.read_bytes(), HEALTHY.stat().st_mtime_ns)
    assert scan_cli(HEALTHY, "--format", "json").code == 0
    assert (HEALTHY.read_bytes(), HEALTHY.stat().st_mtime_ns) == before


def test_scan_leaves_sys_path_and_modules_alone() -> None:
    path_before = list(sys.path)
    modules_before = {name for name in sys.modules if name.startswith("_gradscope_model")}
    assert scan_cli(HEALTHY).code == 0
    assert sys.path == path_before
    assert {name for name in sys.modules if name.startswith("_gradscope_model")} == modules_before
