"""Plain helpers shared by the test files: running the CLI (in process or in a real subprocess), the one-line-error
contract, strict JSON, the report schema, writing and finding model files, rendering to text.

Fixtures live in ``conftest.py``; this module holds functions and constants only, imported as ``helpers``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # torch and rich stay unimported until a helper needs them
    import torch
    from rich.console import Console
    from torch import nn

    from gradscope.config import PolicyConfig
    from gradscope.results import Finding, LayerStats, Report, Severity, Status

MakeReport = Callable[..., "Report"]  # the type of conftest's make_report fixture
Golden = Callable[[str, str], None]  # the type of conftest's golden fixture: golden(name, text)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ASSETS = TESTS / "assets"
CONFIGS = ROOT / "configs"

GRADSCOPE = (sys.executable, "-m", "gradscope")
FAST = ("--batches", "2", "--batch-size", "8")  # every CLI scan in the tests: two batches of eight
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

# --------------------------------------------------------------------------------------------- model files


def asset(name: str) -> Path:
    """A target model under ``tests/assets/`` (it must exist: a typo fails here, not as a confusing CLI error)."""
    path = ASSETS / name
    assert path.is_file(), f"no asset tests/assets/{name}"
    return path


def copy_asset(name: str, directory: Path, as_name: str | None = None) -> Path:
    """A copy of an asset in ``directory``, for a test that writes next to the model file or changes it."""
    return Path(shutil.copyfile(asset(name), directory / (as_name or name)))


def write_source(directory: Path, name: str, source: str) -> Path:
    """Write ``source`` (dedented, leading blank lines dropped) to ``directory/name``."""
    path = directory / name
    path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return path


def net_source(body: str, *, extra: str = "", layer: str = "nn.Linear(8, 4)") -> str:
    """A one-layer model file (class ``Net``) whose ``forward(x)`` is ``body``; ``extra`` goes at module level."""
    forward = textwrap.indent(textwrap.dedent(body).strip(), " " * 8)
    return (
        "import torch\nfrom torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        f"        self.l = {layer}\n\n"
        "    def forward(self, x):\n"
        f"{forward}\n" + textwrap.dedent(extra)
    )


# ------------------------------------------------------------------------------------------------ the CLI


@dataclass(frozen=True)
class Outcome:
    """What one CLI run gave: exit code, stdout, stderr."""

    code: int
    stdout: str
    stderr: str


def invoke(*args: str | Path, env: Mapping[str, str] | None = None) -> Outcome:
    """``gradscope ARGS`` in this process through Typer's ``CliRunner`` (torch is imported once per session)."""
    from typer.testing import CliRunner

    from gradscope.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def scan_cli(target: Path | str, *args: str | Path, env: Mapping[str, str] | None = None) -> Outcome:
    """``gradscope scan TARGET --batches 2 --batch-size 8 ARGS`` in process (later options win over FAST)."""
    return invoke("scan", target, *FAST, *args, env=env)


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: nothing that forces or disables colour, sets the width or the GitHub
    workspace, and one torch thread (the machine is shared; these models gain nothing from threads)."""
    drop = {"NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "GITHUB_WORKSPACE"}
    env = {k: v for k, v in os.environ.items() if k not in drop} | {"OMP_NUM_THREADS": "1"}
    if env.get("PYTHONPATH"):  # absolute: a subprocess runs in another directory, and must import this gradscope
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    return env | extra


@dataclass
class Proc:
    """A CLI subprocess started in the background; ``result()`` waits for it (once)."""

    args: list[str]
    popen: subprocess.Popen[str]
    timeout: float = 180
    _result: Outcome | None = None

    def result(self) -> Outcome:
        if self._result is None:
            out, err = self.popen.communicate(timeout=self.timeout)
            self._result = Outcome(self.popen.returncode, out, err)
        return self._result

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.communicate()


def start(*args: str | Path, cwd: Path, env: Mapping[str, str] | None = None) -> Proc:
    """Start ``python -m gradscope ARGS`` in ``cwd`` (stdin closed, stdout and stderr piped)."""
    argv = [*GRADSCOPE, *map(str, args)]
    popen = subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env) if env is not None else cli_env(),
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return Proc(argv, popen)


def run_cli(*args: str | Path, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Outcome:
    """``python -m gradscope ARGS`` in a real subprocess, waited for."""
    proc = start(*args, cwd=cwd or ROOT, env=env)
    try:
        return proc.result()
    finally:
        proc.stop()


def run_without_torch(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter where importing torch raises; stderr ends with the torch modules loaded
    (``TORCH-MODULES: []`` when none)."""
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
        env=cli_env(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


class Finished(Protocol):
    """What a finished CLI run gives a test: ``Outcome`` here, the hostile tests' timed ``Run``."""

    code: int
    stdout: str
    stderr: str


def assert_one_line_error(outcome: Finished, *needles: str, stdout_empty: bool = True) -> str:
    """The bad-input contract: exit 2, nothing on stdout (unless ``stdout_empty`` is off: output the run had
    written before the failure), exactly one ``error: `` line on stderr, no traceback, no internal error, every
    needle in that line. Returns the line."""
    assert outcome.code == 2, (outcome.code, outcome.stdout[-2000:], outcome.stderr[-2000:])
    if stdout_empty:
        assert outcome.stdout == "", outcome.stdout
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    assert "internal error" not in outcome.stderr, outcome.stderr
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, outcome.stderr[-3000:]
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


# -------------------------------------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"non-standard JSON constant {name}")


def strict_json(text: str) -> Any:
    """``json.loads`` that fails on NaN/Infinity: every JSON gradscope writes must be standard JSON."""
    return json.loads(text, parse_constant=_reject_constant)


def check_report_schema(report: dict[str, Any]) -> None:
    """A ``gradscope.report/1`` document: the keys and value types the contract promises, layers in forward order,
    and ``healthy`` exactly when no finding is an error."""
    assert {"schema", "healthy", "model", "probe", "layers", "findings", "suggestions"} <= report.keys()
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


def without_timing(d: dict[str, Any]) -> dict[str, Any]:
    """A report or trial dict without its ``timing`` (the one part that differs between identical runs)."""
    return {k: v for k, v in d.items() if k != "timing"}


# ------------------------------------------------------------------------------------------ reports, models


def rules(report: Report) -> dict[str, Severity]:
    """Each finding's rule and severity."""
    return {f.rule: f.severity for f in report.findings}


def statuses(report: Report) -> dict[str, Status]:
    """Each layer's status by name."""
    return {layer.name: layer.status for layer in report.layers}


def flat_layer(
    index: int,
    name: str,
    grad: float | None,
    signal: float | None,
    status: Status | None = None,
    type_: str = "Linear",
    parameters: int = 100,
) -> LayerStats:
    """A hand-built layer whose every batch gave the same numbers (``Spread(v, v, v)``): what CI and policy tests
    compare, without a model."""
    from gradscope.results import LayerStats, Spread, Status

    def spread(v: float | None) -> Spread | None:
        return None if v is None else Spread(v, v, v)

    return LayerStats(
        index=index,
        name=name,
        type=type_,
        depth=name.count(".") + 1,
        output_shape=(8, 4),
        parameters=parameters,
        trainable=parameters > 0,
        grad_rms=spread(grad),
        signal_rms=spread(signal),
        activation_rms=spread(1.0),
        activation_std=spread(0.5),
        weight_rms=0.1 if parameters else None,
        status=Status.OK if status is None else status,
    )


def finding(rule: str, severity: Severity, *layers: str, **evidence: Any) -> Finding:
    """A hand-built finding whose message names the rule and the layers."""
    from gradscope.results import Finding

    return Finding(rule, severity, tuple(layers), f"{rule} on {', '.join(layers) or 'the model'}", evidence)


def make_policy(**sections: Any) -> PolicyConfig:
    """A validated ``policy`` section, as a config file with these keys would give it."""
    from gradscope.config import Config, merge

    return merge(Config(), {"policy": sections}, source="test").policy


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state dict, to compare with after a run that must not touch it."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def render_text(draw: Callable[[Console], None], width: int = 120) -> str:
    """What ``draw(console)`` prints on a plain ``width``-column console (no colour), through gradscope's own
    ``render_text`` (the CLI's path to a pipe or a file), which removes rich's trailing padding."""
    from gradscope.report.terminal import render_text as render

    return render(draw, width)


def strip_trailing(text: str) -> str:
    """``text`` without trailing blanks on its lines, ending in exactly one newline."""
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def write_log(path: Path, objects: list[dict[str, Any]]) -> Path:
    """A ``gradscope.watch/1`` log of these JSON objects, one per line."""
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    return path


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) into rows of raw pixel bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line) if channels == 3 else bytes(v for j, v in enumerate(line) if j % 4 != 3))
        prev = line
    return width, height, rows


def screenshot(url: str, directory: Path) -> tuple[int, int, list[bytes]]:
    """``url`` rendered by headless Chromium in a 1000×700 window: (width, height, rows of RGB bytes)."""
    shot = directory / "shot.png"
    proc = subprocess.run(
        [
            chromium() or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={directory / 'profile'}",
            "--hide-scrollbars",
            "--window-size=1000,700",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert shot.exists(), proc.stderr[-2000:]
    return png_pixels(shot.read_bytes())
