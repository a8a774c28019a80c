"""The CLI contract of design.md, end to end: exit codes, stdout/stderr separation, JSON schema, errors.

Most cases run in-process through Typer's ``CliRunner`` (torch is imported once). Real subprocesses are used
only where the process boundary is the point: ``--help``/``--version`` must not import torch, exit codes and
the stdout/stderr split of the real entry point, plain output when piped or under ``NO_COLOR``. The slow ones
(each imports torch, ~3 s) start together in one module fixture so they overlap.

Model files are tiny and written into ``tmp_path``; every scan uses ``--batches 2 --batch-size 8``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gradscope import __version__
from gradscope.cli import app

FAST = ["--batches", "2", "--batch-size", "8"]
ANSI = re.compile(r"\x1b\[")  # any CSI sequence: colour, bold, cursor movement
STATUSES = {
    "ok",
    "vanishing",
    "exploding",
    "nonfinite",
    "frozen",
    "disconnected",
    "saturated",
    "dead",
    "underflow",
    "zero",
}

# ------------------------------------------------------------------------------------------------ model files

HEALTHY = """
    import torch
    from torch import nn


    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.net = nn.Sequential(
                    nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
                )

        def forward(self, x):
            return self.net(x)
"""

DEEP_SIGMOID = """
    import torch
    from torch import nn


    def build_model(depth=30, width=16):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            layers = [nn.Linear(width, width)]
            for _ in range(depth - 1):
                layers += [nn.Sigmoid(), nn.Linear(width, width)]
            return nn.Sequential(*layers)
"""

# Only finding: the unused Linear is 'disconnected', a warning.
UNUSED = """
    import torch
    from torch import nn


    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.a = nn.Linear(16, 32)
                self.b = nn.Linear(32, 4)
                self.unused = nn.Linear(8, 8)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))
"""

# Registered in the opposite order to the one forward() runs them in.
REORDERED = """
    import torch
    from torch import nn


    class Reordered(nn.Module):
        def __init__(self):
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.last = nn.Linear(32, 4)
                self.middle = nn.Linear(32, 32)
                self.first = nn.Linear(16, 32)

        def forward(self, x):
            return self.last(torch.relu(self.middle(torch.relu(self.first(x)))))
"""

_LINEAR_MODULE = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(16, 4)

    def forward(self, x):
        {body}
"""


def _net(body: str) -> str:
    """A one-Linear model file whose forward() is ``body`` (statements separated by newlines)."""
    return _LINEAR_MODULE.replace("{body}", body.replace("\n", "\n        "))


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- helpers


runner = CliRunner()


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def cli(*args: str | Path, env: dict[str, str] | None = None) -> Outcome:
    result = runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def scan(target: Path | str, *args: str | Path, env: dict[str, str] | None = None) -> Outcome:
    return cli("scan", target, *FAST, *args, env=env)


def assert_one_line_error(outcome: Outcome, *needles: str) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr, no traceback, every needle in that line."""
    assert outcome.code == 2, (outcome.code, outcome.stdout, outcome.stderr)
    assert outcome.stdout == ""
    assert "Traceback" not in outcome.stderr
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, outcome.stderr
    line = lines[0]
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"non-standard JSON constant {name} in the report")


def strict_json(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess, without anything that forces or disables colour."""
    drop = {"NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"}
    return {k: v for k, v in os.environ.items() if k not in drop} | extra


@pytest.fixture
def models(tmp_path: Path) -> Path:
    write(tmp_path, "healthy.py", HEALTHY)
    write(tmp_path, "deep.py", DEEP_SIGMOID)
    write(tmp_path, "unused.py", UNUSED)
    return tmp_path


# ------------------------------------------------------------------------ subprocesses, started together


@dataclass
class Proc:
    args: list[str]
    popen: subprocess.Popen[str]
    _result: Outcome | None = None

    def result(self) -> Outcome:
        if self._result is None:
            out, err = self.popen.communicate(timeout=120)
            self._result = Outcome(self.popen.returncode, out, err)
        return self._result


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    directory = tmp_path_factory.mktemp("subprocess_models")
    write(directory, "healthy.py", HEALTHY)
    write(directory, "deep.py", DEEP_SIGMOID)
    write(directory, "unused.py", UNUSED)
    gradscope = [sys.executable, "-m", "gradscope"]
    jobs = {
        "healthy_json": [*gradscope, "scan", "healthy.py", *FAST, "--format", "json"],
        "piped_table": [*gradscope, "scan", "deep.py", *FAST],
        "missing_file": [*gradscope, "scan", "missing.py", *FAST],
        # Fails before torch is imported: cheap, and enough to see --debug's traceback.
        "debug": [*gradscope, "scan", "healthy.py", *FAST, "--model-kwargs", "{bad", "--debug"],
        "no_debug": [*gradscope, "scan", "healthy.py", *FAST, "--model-kwargs", "{bad"],
    }
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    pipes["stdin"] = subprocess.DEVNULL
    started = {
        name: Proc(args, subprocess.Popen(args, cwd=directory, env=clean_env(), text=True, **pipes))
        for name, args in jobs.items()
    }
    try:
        yield started
    finally:
        for proc in started.values():
            if proc.popen.poll() is None:
                proc.popen.kill()
            proc.popen.communicate()


def _run_blocking_torch(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter where importing torch raises; report what of torch got loaded."""
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.argv = ["gradscope", *{list(argv)!r}]
        try:
            runpy.run_module("gradscope", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
        else:
            code = 0
        loaded = sorted(m for m, mod in sys.modules.items()
                        if (m == "torch" or m.startswith("torch.")) and mod is not None)
        print("TORCH-MODULES:", loaded, file=sys.stderr)
        sys.exit(code)
    """)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------------------------- 1. help and version


@pytest.mark.parametrize("argv", [["--help"], ["scan", "--help"], ["--version"]])
def test_help_and_version_do_not_import_torch(argv: list[str]) -> None:
    proc = _run_blocking_torch(*argv)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH-MODULES: []" in proc.stderr
    assert "Traceback" not in proc.stderr
    if argv == ["--version"]:
        assert proc.stdout.strip() == f"gradscope {__version__}"
    else:
        assert "Usage" in proc.stdout


def test_version_through_the_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gradscope", "--version"], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert proc.returncode == 0
    assert proc.stdout == f"gradscope {__version__}\n"
    assert proc.stderr == ""
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", __version__)


def test_version_in_process() -> None:
    outcome = cli("--version")
    assert outcome.code == 0
    assert __version__ in outcome.stdout


# ------------------------------------------------------------------------------------------ 2. exit codes


def test_exit_codes_through_subprocess(procs: dict[str, Proc]) -> None:
    assert procs["healthy_json"].result().code == 0
    assert procs["piped_table"].result().code == 1
    assert procs["missing_file"].result().code == 2


def test_healthy_model_exits_0(models: Path) -> None:
    outcome = scan(models / "healthy.py")
    assert outcome.code == 0, outcome.stderr
    assert "MLP" in outcome.stdout


def test_vanishing_deep_sigmoid_exits_1(models: Path) -> None:
    outcome = scan(models / "deep.py", "--format", "json")
    assert outcome.code == 1, outcome.stderr
    report = strict_json(outcome.stdout)
    assert report["healthy"] is False
    assert any(f["severity"] == "error" for f in report["findings"])
    assert any(f["rule"] == "vanishing_gradient" for f in report["findings"])


def test_fail_on_never_exits_0_despite_errors(models: Path) -> None:
    outcome = scan(models / "deep.py", "--fail-on", "never", "--format", "json")
    assert outcome.code == 0
    assert strict_json(outcome.stdout)["healthy"] is False  # the report still says so


@pytest.mark.parametrize(("extra", "code"), [([], 0), (["--fail-on", "error"], 0), (["--fail-on", "warning"], 1)])
def test_fail_on_warning(models: Path, extra: list[str], code: int) -> None:
    outcome = scan(models / "unused.py", "--format", "json", *extra)
    assert outcome.code == code
    report = strict_json(outcome.stdout)
    assert report["healthy"] is True
    assert {f["severity"] for f in report["findings"]} == {"warning"}
    assert any(f["rule"] == "disconnected" and f["layers"] == ["unused"] for f in report["findings"])
    status = {layer["name"]: layer["status"] for layer in report["layers"]}
    assert status["unused"] == "disconnected"


def test_fail_on_invalid_value_is_a_usage_error(models: Path) -> None:
    assert scan(models / "healthy.py", "--fail-on", "sometimes").code == 2


# --------------------------------------------------------------------------------------------- 3. JSON


def _check_schema(report: dict[str, Any]) -> None:
    assert report["schema"] == "gradscope.report/1"
    assert isinstance(report["healthy"], bool)
    assert {"target", "class", "parameters", "trainable_parameters"} <= set(report["model"])
    assert {"batches", "batch_size", "seed", "loss", "device", "dtype"} <= set(report["probe"])
    layer_keys = {
        "index",
        "name",
        "type",
        "grad_rms",
        "signal_rms",
        "activation_rms",
        "activation_std",
        "weight_rms",
        "status",
    }
    assert report["layers"], "a scan with no layers"
    for layer in report["layers"]:
        assert layer_keys <= set(layer), layer_keys - set(layer)
        assert layer["status"] in STATUSES, layer["status"]
        for key in ("grad_rms", "signal_rms", "activation_rms", "activation_std", "weight_rms"):
            assert layer[key] is None or isinstance(layer[key], (int, float)), (key, layer[key])
    indices = [layer["index"] for layer in report["layers"]]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    for finding in report["findings"]:
        assert {"rule", "severity", "layers", "message", "evidence"} <= set(finding)
        assert finding["severity"] in {"error", "warning", "info"}
        assert isinstance(finding["layers"], list) and isinstance(finding["evidence"], dict)
    for suggestion in report["suggestions"]:
        assert {"remedy", "layers", "where", "params", "reason"} <= set(suggestion)
        assert suggestion["where"] in {"after", "before", "replace", "model"}
        assert isinstance(suggestion["params"], dict)
    assert report["healthy"] == (not any(f["severity"] == "error" for f in report["findings"]))


def test_json_stdout_is_one_document(procs: dict[str, Proc]) -> None:
    outcome = procs["healthy_json"].result()
    assert outcome.code == 0, outcome.stderr
    assert outcome.stderr == ""  # no progress when stderr is not a terminal, and nothing else
    report = strict_json(outcome.stdout)  # the whole of stdout, nothing before or after
    assert outcome.stdout.lstrip().startswith("{") and outcome.stdout.rstrip().endswith("}")
    _check_schema(report)
    model = report["model"]
    assert (model["target"], model["class"], model["parameters"], model["trainable_parameters"]) == (
        "healthy.py",
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


def test_json_of_a_failing_model_is_still_one_document(models: Path) -> None:
    outcome = scan(models / "deep.py", "--format", "json")
    assert outcome.code == 1
    report = strict_json(outcome.stdout)
    _check_schema(report)
    assert report["healthy"] is False
    assert len([layer for layer in report["layers"] if layer["type"] == "Linear"]) == 30
    assert report["findings"] and report["suggestions"]


def test_layers_are_in_forward_order_not_registration_order(tmp_path: Path) -> None:
    path = write(tmp_path, "reordered.py", REORDERED)
    # The input shape is given: inference looks at the first *registered* layer, which is not the first run.
    outcome = scan(path, "--format", "json", "--input-shape", "8,16")
    assert outcome.code == 0, outcome.stderr
    report = strict_json(outcome.stdout)
    _check_schema(report)
    assert [layer["name"] for layer in report["layers"]] == ["first", "middle", "last"]


def test_cli_options_reach_the_probe_section(models: Path) -> None:
    outcome = cli(
        "scan",
        models / "healthy.py",
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


def test_config_file_is_used_and_cli_wins(models: Path) -> None:
    config = models / "settings.yaml"
    config.write_text("probe:\n  batches: 3\n  batch_size: 4\n  seed: 5\n", encoding="utf-8")
    outcome = cli("scan", models / "healthy.py", "--config", config, "--batch-size", "6", "--format", "json")
    assert outcome.code == 0, outcome.stderr
    probe = strict_json(outcome.stdout)["probe"]
    assert (probe["batches"], probe["batch_size"], probe["seed"]) == (3, 6, 5)


# -------------------------------------------------------------------------------- 4. markdown and output


def test_markdown_has_a_table(models: Path) -> None:
    outcome = scan(models / "healthy.py", "--format", "markdown")
    assert outcome.code == 0, outcome.stderr
    table_rows = [line for line in outcome.stdout.splitlines() if line.startswith("|")]
    assert any(re.fullmatch(r"\|[\s\-:|]+\|", line) for line in table_rows), "no header separator row"
    assert any("Linear" in line for line in table_rows)
    assert "net.0" in outcome.stdout or "`0`" in outcome.stdout
    assert not ANSI.search(outcome.stdout)


@pytest.mark.parametrize("fmt", ["json", "markdown", "table"])
def test_output_writes_the_file_and_leaves_stdout_empty(models: Path, fmt: str) -> None:
    target = models / f"report.{fmt}"
    outcome = scan(models / "healthy.py", "--format", fmt, "--output", target)
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
    assert [p.name for p in models.iterdir() if p.name.startswith(".report")] == []  # no temp file left


def test_output_keeps_the_exit_code(models: Path) -> None:
    target = models / "deep.json"
    outcome = scan(models / "deep.py", "--format", "json", "--output", target)
    assert outcome.code == 1
    assert outcome.stdout == ""
    assert strict_json(target.read_text(encoding="utf-8"))["healthy"] is False


def test_output_into_a_missing_directory(models: Path) -> None:
    target = models / "nowhere" / "report.json"
    outcome = scan(models / "healthy.py", "--format", "json", "--output", target)
    assert_one_line_error(outcome, "nowhere")
    assert not target.parent.exists()
    assert sorted(p.name for p in models.iterdir()) == ["deep.py", "healthy.py", "unused.py"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("fmt", ["json", "table"])
def test_output_to_a_full_device(models: Path, fmt: str) -> None:
    outcome = scan(models / "healthy.py", "--format", fmt, "--output", "/dev/full")
    assert_one_line_error(outcome, "/dev/full")


# ---------------------------------------------------------------------------------------- 5. plain text


def test_piped_output_has_no_escape_sequences(procs: dict[str, Proc]) -> None:
    outcome = procs["piped_table"].result()
    assert outcome.code == 1, outcome.stderr
    assert "vanishing" in outcome.stdout and "Sigmoid" in outcome.stdout
    assert not ANSI.search(outcome.stdout)
    assert not ANSI.search(outcome.stderr)


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {}], ids=["NO_COLOR", "plain"])
def test_in_process_output_has_no_escape_sequences(models: Path, env: dict[str, str]) -> None:
    outcome = scan(models / "unused.py", env=env)
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


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_no_color_in_a_terminal_gives_plain_text(models: Path) -> None:
    code, text = _run_in_pty(
        [sys.executable, "-m", "gradscope", "scan", "unused.py", *FAST], models, clean_env(NO_COLOR="1")
    )
    assert code == 0
    assert "disconnected" in text
    assert not ANSI.search(text), sorted(set(re.findall(r"\x1b\[[0-9;?]*[A-Za-z]", text)))


# ------------------------------------------------------------------------------------------ 6. determinism


def test_same_seed_gives_identical_json(models: Path) -> None:
    runs = [scan(models / "deep.py", "--format", "json", "--seed", "3") for _ in range(2)]
    reports = [strict_json(run.stdout) for run in runs]
    for report in reports:
        report.pop("timing", None)
    assert reports[0] == reports[1]
    assert reports[0]["probe"]["seed"] == 3


# ------------------------------------------------------------------------------------------- 7. bad input


def test_missing_file_through_subprocess(procs: dict[str, Proc]) -> None:
    assert_one_line_error(procs["missing_file"].result(), "missing.py", "not found")


def test_debug_shows_a_traceback(procs: dict[str, Proc]) -> None:
    plain = procs["no_debug"].result()
    assert_one_line_error(plain, "--model-kwargs", "JSON")
    debug = procs["debug"].result()
    assert debug.code != 0
    assert "Traceback" in debug.stderr
    assert "ConfigError" in debug.stderr
    assert debug.stdout == ""


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(scan(tmp_path / "missing.py"), "missing.py", "not found")


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", "import torch\n\nx = (\ndef f(:\n    pass\n")
    line = assert_one_line_error(scan(path), "broken.py", "syntax")
    assert re.search(r"line [34]\b", line), line


def test_import_error_names_the_missing_module(tmp_path: Path) -> None:
    path = write(tmp_path, "needs_pkg.py", "import torch\nimport gradscope_no_such_module_xyz\n")
    assert_one_line_error(scan(path), "needs_pkg.py", "gradscope_no_such_module_xyz")


def test_no_candidate_model(tmp_path: Path) -> None:
    path = write(tmp_path, "plain.py", "X = 1\n\n\ndef helper():\n    return 2\n")
    assert_one_line_error(scan(path), "plain.py", "nn.Module")


def test_several_candidates_are_listed(tmp_path: Path) -> None:
    source = _net("return self.l(x)") + "\n\nclass Other(Net):\n    pass\n"
    path = write(tmp_path, "two.py", source)
    line = assert_one_line_error(scan(path), "Net", "Other")
    assert re.search(r"two\.py:(Net|Other)\b", line), line


def test_constructor_needing_arguments_suggests_model_kwargs(tmp_path: Path) -> None:
    path = write(
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
    assert_one_line_error(scan(path), "width", "--model-kwargs")
    assert scan(path, "--model-kwargs", '{"width": 4}').code == 0


def test_model_kwargs_reach_the_factory(models: Path) -> None:
    outcome = scan(models / "deep.py", "--model-kwargs", '{"depth": 3}', "--format", "json")
    assert outcome.code in (0, 1)
    layers = strict_json(outcome.stdout)["layers"]
    assert len([layer for layer in layers if layer["type"] == "Linear"]) == 3


@pytest.mark.parametrize("text", ["{bad", "[1, 2]"])
def test_invalid_model_kwargs(models: Path, text: str) -> None:
    assert_one_line_error(scan(models / "healthy.py", "--model-kwargs", text), "--model-kwargs")


def test_wrong_input_shape_names_the_layer(models: Path) -> None:
    line = assert_one_line_error(scan(models / "healthy.py", "--input-shape", "4,7"), "net.0")
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
    path = write(tmp_path, "bad_output.py", _net(body))
    assert_one_line_error(scan(path), *needles)


def test_no_trainable_parameters(tmp_path: Path) -> None:
    factory = "\n\ndef build_model():\n    net = Net()\n    net.requires_grad_(False)\n    return net\n"
    source = _net("return self.l(x)") + factory
    path = write(tmp_path, "frozen.py", source)
    assert_one_line_error(scan(path), "trainable")


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
def test_invalid_option_values(models: Path, args: list[str], needle: str) -> None:
    # `args` come after FAST, so they win over its --batches / --batch-size.
    assert_one_line_error(scan(models / "healthy.py", *args), needle)


def test_invalid_format_is_a_usage_error(models: Path) -> None:
    outcome = scan(models / "healthy.py", "--format", "xml")
    assert outcome.code == 2
    assert outcome.stdout == ""
    assert "xml" in outcome.stderr
    assert "Traceback" not in outcome.stderr


def test_unknown_config_key_is_named(models: Path) -> None:
    config = models / "bad.yaml"
    config.write_text("probe:\n  batches: 2\n  bogus_knob: 3\n", encoding="utf-8")
    assert_one_line_error(scan(models / "healthy.py", "--config", config), "bogus_knob", "bad.yaml")


def test_missing_config_file(models: Path) -> None:
    assert_one_line_error(scan(models / "healthy.py", "--config", models / "nope.yaml"), "nope.yaml")


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "in-section"])
def test_yaml_python_tag_is_refused_and_not_executed(models: Path, nested: bool) -> None:
    marker = models / "pwned.txt"
    tag = f'!!python/object/apply:os.system ["echo pwned > {marker}"]'
    config = models / "evil.yaml"
    config.write_text(f"probe: {tag}\n" if nested else f"{tag}\n", encoding="utf-8")
    assert_one_line_error(scan(models / "healthy.py", "--config", config), "evil.yaml")
    assert not marker.exists()


def test_model_file_calling_sys_exit(tmp_path: Path) -> None:
    path = write(tmp_path, "exits.py", "import sys\n\nsys.exit(3)\n")
    assert_one_line_error(scan(path), "exits.py", "exit")


def test_factory_that_raises_shows_its_message(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "raises.py",
        """
        def build_model():
            raise RuntimeError("weights file missing: ./w.pt")
    """,
    )
    assert_one_line_error(scan(path), "raises.py", "weights file missing: ./w.pt")


def test_debug_in_process_reraises(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "raises.py",
        """
        def build_model():
            raise RuntimeError("weights file missing")
    """,
    )
    result = runner.invoke(app, ["scan", str(path), *FAST, "--debug"])
    assert result.exit_code != 0
    assert result.exception is not None
    assert "weights file missing" in str(result.exception)


# ----------------------------------------------------------------------------------- 8. the file is kept


def test_scan_does_not_modify_the_model_file(models: Path) -> None:
    path = models / "healthy.py"
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    assert scan(path, "--format", "json").code == 0
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_scan_leaves_sys_path_and_modules_alone(models: Path) -> None:
    path_before = list(sys.path)
    modules_before = {name for name in sys.modules if name.startswith("_gradscope_model")}
    assert scan(models / "healthy.py").code == 0
    assert sys.path == path_before
    assert {name for name in sys.modules if name.startswith("_gradscope_model")} == modules_before
