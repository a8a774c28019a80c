"""Hostile inputs: reproductions of the defects found in review, one test per case.

Each test feeds gradscope something a real user (or a malicious pull request) can hand it — a model that updates
its own weights in forward, a YAML alias bomb, a layer name carrying a workflow command —
and asserts the documented contract (README: exit codes 0/1/2, one line on stderr, ``--format json`` is one JSON
document, the model leaves a scan exactly as it came in). Each docstring says what a user sees today.

Only public interfaces are used: the CLI as a real subprocess, ``gradscope.scan``, ``gradscope.watch``,
``gradscope.errors`` and ``gradscope.config.load_config``. The model, config and helper files live in
``tests/assets/hostile/``; watch logs are generated from a real ``gradscope.watch`` run (``recorded_lines``
in conftest.py). The watch and report cases are in ``test_watch_hostile.py``. CLI runs that are fed a
resource bomb get a capped address space and a timeout, so a regression fails the test instead of the machine.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, write_log
from torch import nn

import gradscope
from gradscope.config import load_config
from gradscope.errors import ConfigError, GradscopeError

torch.set_num_threads(1)

ASSETS = Path(__file__).parent / "assets" / "hostile"
SRC = Path(gradscope.__file__).resolve().parents[1]  # the gradscope under test, for the subprocesses
FAST = ("--batches", "2", "--batch-size", "4")
# An input error is answered in seconds: ~1 s before torch is imported, ~3 s after (6-8 s on a busy shared 2-core
# machine). The hanging cases never answer; the test's timeout (HANG_S) ends them.
QUICK_S = 12.0
HANG_S = 20.0
MEMORY_CAP = 3 * 2**30  # address space of runs fed a resource bomb (a normal scan peaks at ~0.7 GB)
GRAD_MODE_WORDS = ("grad mode", "no_grad", "inference_mode", "set_grad_enabled", "autograd")


# ------------------------------------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.update(NO_COLOR="1", COLUMNS="120", OMP_NUM_THREADS="1")
    env.update(extra or {})
    return env


def _cap_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def cli(
    *args: object,
    cwd: Path,
    timeout: float = 120,
    stdout: IO[Any] | None = None,
    cap_memory: bool = False,
    env: dict[str, str] | None = None,
) -> Run:
    """Run ``python -m gradscope ARGS`` in ``cwd``; a run that outlives ``timeout`` is killed and fails the test."""
    argv = [str(a) for a in args]
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gradscope", *argv],
            cwd=cwd,
            env=_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            preexec_fn=_cap_memory if cap_memory else None,
        )
    except subprocess.TimeoutExpired as exc:
        shown = " ".join(argv)[:200]
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"`gradscope {shown}` was still running after {timeout:.0f} s (killed); stderr: {err[-500:]!r}")
    return Run(done.returncode, done.stdout or "", done.stderr, time.monotonic() - started)


def error_line(run: Run, *needles: str) -> str:
    """The README's bad-input contract (``helpers.assert_one_line_error``); a run may have printed before failing."""
    return assert_one_line_error(run, *needles, stdout_empty=False)


def assert_report_or_error(run: Run) -> dict[str, Any] | None:
    """Exit 0/1 with a report on stdout (returned), or exit 2 with one clear line (None); never a crash."""
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "internal error" not in run.stderr, run.stderr
    if run.code == 2:
        error_line(run)
        return None
    assert run.code in (0, 1), (run.code, run.stderr[-2000:])
    report = json.loads(run.stdout)
    assert report["schema"] == "gradscope.report/1"
    return report


def _mlp(seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))


def _batches(n: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 8, generator=g) for _ in range(n)]


def _without_timing(report: gradscope.Report) -> dict[str, Any]:
    data = report.to_dict()
    data.pop("timing", None)
    return data


@pytest.fixture
def host_rng() -> Iterator[None]:
    """The test seeds ``random`` and NumPy: give the rest of the session its state back."""
    state, np_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(state)
    np.random.set_state(np_state)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real baseline of assets/hostile/tiny.py (2 batches of 4), as ``gradscope baseline`` writes it."""
    directory = tmp_path_factory.mktemp("baseline")
    run = cli("baseline", ASSETS / "tiny.py", "-o", "base.json", *FAST, cwd=directory)
    assert run.code == 0, run.stderr
    data: dict[str, Any] = json.loads((directory / "base.json").read_text(encoding="utf-8"))
    return data


def edited(data: dict[str, Any], path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    copy = json.loads(json.dumps(data))
    edit(copy)
    path.write_text(json.dumps(copy), encoding="utf-8")
    return path


# ------------------------------------------------------------------- 1. scan leaves the user's model as it was


class MomentumEncoder(nn.Module):
    """MoCo: the key encoder follows the query encoder by an in-place momentum update inside forward."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(16, 4)
        self.k.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for pk, pq in zip(self.k.parameters(), self.q.parameters(), strict=True):
                pk.data.mul_(0.9).add_(pq.data, alpha=0.1)
        return self.head(torch.cat([torch.tanh(self.q(x)), self.k(x)], dim=-1))


class OptimizerInBackward(nn.Module):
    """Optimizer in backward: each parameter's post-accumulate-grad hook takes an SGD step and drops the grad."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)
        for p in self.parameters():
            p.register_post_accumulate_grad_hook(self._sgd)

    @staticmethod
    def _sgd(p: torch.Tensor) -> None:
        with torch.no_grad():
            p.add_(p.grad, alpha=-0.1)
        p.grad = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class CountsCalls(nn.Module):
    """A registered buffer *reassigned* in forward (a new tensor object, not an in-place update)."""

    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(8, 4)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls = self.calls + 1
        return self.l(x)


class GrowsInForward(nn.Module):
    """Extra: forward appends blocks to its ModuleList (progressive growing)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(8, 8)])
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.blocks) < 4:
            self.blocks.append(nn.Linear(8, 8))
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.head(x)


class BufferChangesDtype(nn.Module):
    """Extra: forward replaces a float32 buffer by a float64 one."""

    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(8, 4)
        self.register_buffer("seen", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.l(x)
        self.seen = self.seen.double() + y.detach().double().mean(0)
        return y


class ReregistersParameter(nn.Module):
    """Extra: forward re-registers a parameter (a projection written as ``self.p = nn.Parameter(...)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(8, 4)
        self.scale = nn.Parameter(torch.full((4,), 3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scale = nn.Parameter(self.scale.detach().clamp(0.0, 2.0))
        return self.l(x) * self.scale


def _snapshot(model: nn.Module) -> dict[str, Any]:
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = {}
    for name, p in model.named_parameters():
        grad = p.grad
        tensors[f"parameter {name}"] = (p, p.detach().clone(), grad, None if grad is None else grad.clone())
    for name, b in model.named_buffers():
        tensors[f"buffer {name}"] = (b, b.detach().clone(), None, None)
    return {"modules": [n for n, _ in model.named_modules()], "tensors": tensors}


def _named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"parameter {n}": p for n, p in model.named_parameters()} | {
        f"buffer {n}": b for n, b in model.named_buffers()
    }


def _assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    assert [n for n, _ in model.named_modules()] == before["modules"], "the module tree changed"
    now = _named_tensors(model)
    assert set(now) == set(before["tensors"]), "parameters or buffers were added or removed"
    for name, (obj, value, grad, grad_value) in before["tensors"].items():
        current = now[name]
        assert current is obj, f"{name} is a different object after the scan"
        assert current.dtype == value.dtype and torch.equal(current.detach(), value), f"{name} changed value"
        if isinstance(obj, nn.Parameter):
            assert current.grad is grad, f"{name}.grad is a different object after the scan"
            if grad is not None:
                assert torch.equal(current.grad, grad_value), f"{name}.grad changed value"


MUTATING_MODELS: dict[str, Callable[[], nn.Module]] = {
    "momentum-encoder": MomentumEncoder,
    "optimizer-in-backward": OptimizerInBackward,
    "buffer-reassigned": CountsCalls,
    "modulelist-grows": GrowsInForward,
    "buffer-dtype-changes": BufferChangesDtype,
    "parameter-reregistered": ReregistersParameter,
}


@pytest.mark.parametrize("kind", list(MUTATING_MODELS))
def test_scan_leaves_a_self_modifying_model_as_it_was(kind: str) -> None:
    """Today every case fails: the momentum update moves k.weight/k.bias, the hook's SGD steps move every weight,
    ``calls`` comes back as a new tensor holding 2, the ModuleList keeps 3 new blocks, ``seen`` comes back
    float64, and ``scale`` is a new Parameter object. The README promises parameters, buffers and ``.grad``
    exactly as they were."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MUTATING_MODELS[kind]()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.25)  # a stale gradient the user has not zeroed yet
    before = _snapshot(model)
    gradscope.scan(model, _batches())
    _assert_unchanged(model, before)


def test_optimizer_in_backward_layers_are_not_disconnected() -> None:
    """Today both Linear layers are reported ``disconnected``: the post-accumulate hook clears ``.grad`` before the
    scan reads it, although gradients do reach every layer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = OptimizerInBackward()
    report = gradscope.scan(model, _batches())
    statuses = {layer["name"]: layer["status"] for layer in report.to_dict()["layers"] if layer["parameters"]}
    assert set(statuses.values()) != {"disconnected"}, statuses


# ---------------------------------------------------------------------------- 2. Python and NumPy RNG in forward


class DrawsHostRandom(nn.Module):
    """Forward draws from Python's ``random`` and NumPy's global RNG (augmentation, stochastic depth)."""

    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = random.gauss(0.0, 1.0) + float(np.random.standard_normal())
        return self.l(x * (1.0 + 0.1 * noise))


def _host_rng_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return DrawsHostRandom()


@pytest.mark.usefixtures("host_rng")
def test_scan_restores_python_and_numpy_rng_state() -> None:
    """Today both states have advanced after the scan (the README lists the global RNG state among what a scan
    leaves as it was; torch's is restored, ``random``'s and NumPy's are not)."""
    random.seed(1234)
    np.random.seed(1234)
    state, np_state = random.getstate(), np.random.get_state()
    gradscope.scan(_host_rng_model(), _batches())
    assert random.getstate() == state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]


@pytest.mark.usefixtures("host_rng")
def test_scan_seeds_python_and_numpy_rng() -> None:
    """Today two scans of the same model and batches give different JSON when the caller's ``random``/NumPy state
    differs: only torch's RNG is seeded from the scan's seed, so the report depends on whatever ran before."""
    model = _host_rng_model()
    random.seed(1)
    np.random.seed(1)
    first = _without_timing(gradscope.scan(model, _batches()))
    random.seed(2)
    np.random.seed(2)
    second = _without_timing(gradscope.scan(model, _batches()))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


# ------------------------------------------------------------------------------- 3. AMP: a GradScaler-skipped step


# -------------------------------------------------------------------- 4. unbounded resources from tiny inputs


@pytest.mark.parametrize("bomb", ["alias_bomb_int.yaml", "alias_bomb_list.yaml"])
def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path, bomb: str) -> None:
    """Today a ~580-byte config whose invalid value is an alias of 9**9 elements makes gradscope build the value's
    repr for its error message: no answer after 30 s, memory climbing (killed by the test's timeout)."""
    run = cli(
        "scan", ASSETS / "tiny.py", "--config", ASSETS / bomb, *FAST, cwd=tmp_path, timeout=HANG_S, cap_memory=True
    )
    line = error_line(run, bomb)
    assert len(line) < 300, line
    assert run.seconds < QUICK_S, run.seconds


def test_huge_batches_option_is_refused_quickly(tmp_path: Path) -> None:
    """Today ``--batches 100000000`` starts building 10**8 probe batches: no answer after 30 s (killed)."""
    run = cli(
        "scan",
        ASSETS / "tiny.py",
        "--batches",
        "100000000",
        "--batch-size",
        "4",
        cwd=tmp_path,
        timeout=HANG_S,
        cap_memory=True,
    )
    line = error_line(run, "--batches", "100000000")
    assert re.search(r"\d", line.replace("100000000", "")), f"the line names no limit: {line!r}"
    assert run.seconds < QUICK_S, run.seconds


def test_huge_batch_size_is_a_clean_error(tmp_path: Path) -> None:
    """Extra. Today ``--batch-size 1000000000`` exits 2 with ``internal error: RuntimeError: [enforce fail at
    alloc_cpu.cpp:127] ... you tried to allocate 32000000000 bytes`` (with the address space capped, as here; on a
    large machine it allocates first)."""
    run = cli(
        "scan",
        ASSETS / "tiny.py",
        "--batches",
        "1",
        "--batch-size",
        "1000000000",
        cwd=tmp_path,
        timeout=60,
        cap_memory=True,
    )
    line = error_line(run)
    assert "--batch-size" in line or "1000000000" in line, line


def test_baseline_with_huge_probe_batches_is_refused_quickly(tmp_path: Path, baseline: dict[str, Any]) -> None:
    """Today a hand-edited baseline with ``probe.batches: 100000000`` makes ``gradscope check --baseline`` probe
    10**8 batches: no answer after 30 s (killed)."""
    base = edited(baseline, tmp_path / "base.json", lambda d: d["probe"].update(batches=100_000_000))
    run = cli("check", ASSETS / "tiny.py", "--baseline", base, cwd=tmp_path, timeout=HANG_S, cap_memory=True)
    line = error_line(run, "base.json", "100000000")
    assert "--batches" not in line, f"blames an option the user never typed: {line!r}"
    assert run.seconds < QUICK_S, run.seconds


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("where", ["option", "config"])
def test_deeply_nested_model_kwargs_are_a_clean_error(tmp_path: Path, where: str) -> None:
    """Today ``--model-kwargs`` nested 3000 levels deep exits 2 with ``internal error: RecursionError: maximum
    recursion depth exceeded while decoding a JSON object``; the same nesting in a YAML config's ``model.kwargs``
    gives ``internal error: RecursionError: maximum recursion depth exceeded while calling a Python object``."""
    if where == "option":
        args: tuple[object, ...] = ("--model-kwargs", _nested(3000))
    else:
        config = tmp_path / "deep.yaml"
        config.write_text("model:\n  kwargs:\n    a: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", encoding="utf-8")
        args = ("--config", config)
    run = cli("scan", ASSETS / "tiny.py", *args, *FAST, cwd=tmp_path, timeout=60)
    line = error_line(run)
    assert "RecursionError" not in line and len(line) < 300, line


# ------------------------------------------------------------------------ 5. gradscope report scales linearly


# ------------------------------------------------------------------------------------- 6. silent watch failures


# ------------------------------------------------------------------------------ 7. workflow-command injection


@pytest.mark.parametrize("command", [("check", "--github"), ("scan",)], ids=["check-github", "scan"])
def test_layer_names_cannot_inject_workflow_commands(tmp_path: Path, command: tuple[str, ...]) -> None:
    """Today a layer named ``"a\\n::error title=x::pwned"`` puts the line ``::error title=x::pwned`` at the start of
    a stdout line twice (the report table and the check's list of layers): on a GitHub runner that is an
    annotation (or any other workflow command) chosen by whoever wrote the model. A name with ``\\x1b[2J`` reaches
    stdout raw (7 escape bytes) and clears a terminal."""
    run = cli(command[0], ASSETS / "injection.py", *command[1:], *FAST, cwd=tmp_path)
    if run.code == 2:  # refusing such a name is an answer too
        error_line(run)
    assert run.code in (0, 1, 2), run.stderr[-2000:]
    for line in run.stdout.splitlines():
        if line.startswith("::"):
            properties = line[2:].split("::", 1)[0]
            assert "title=gradscope" in properties, f"a workflow command gradscope did not write: {line!r}"
    assert "\x1b" not in run.stdout, "a terminal escape sequence from a layer name reached stdout raw"


# --------------------------------------------------------------------------------------------- 8. output hygiene


def test_writes_to_fd1_keep_json_stdout_one_document(tmp_path: Path) -> None:
    """Today a model file that writes to file descriptor 1 (``os.system``, ``os.write(1, ...)``,
    ``print(file=sys.__stdout__)``) at import and in forward puts those lines before the report:
    ``json.loads(stdout)`` fails with ``Expecting value: line 1 column 1``."""
    run = cli("scan", ASSETS / "noisy_stdout.py", *FAST, "--format", "json", cwd=tmp_path)
    assert run.code == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["schema"] == "gradscope.report/1", run.stdout[:300]


@pytest.fixture
def moving_cwd(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The user's directory, and the environment that makes assets/hostile/chdir_at_import.py chdir elsewhere."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    return work, {"HOSTILE_CHDIR": str(elsewhere)}


def test_chdir_at_import_does_not_move_the_output(moving_cwd: tuple[Path, dict[str, str]]) -> None:
    """Today ``--output out.json`` lands in the directory the model file changed to, while stderr says ``report
    written to out.json``: the user's directory has no report."""
    work, env = moving_cwd
    run = cli(
        "scan", ASSETS / "chdir_at_import.py", *FAST, "--format", "json", "--output", "out.json", cwd=work, env=env
    )
    assert run.code == 0, run.stderr[-2000:]
    assert not (Path(env["HOSTILE_CHDIR"]) / "out.json").exists(), "written where the model file chdir-ed to"
    assert json.loads((work / "out.json").read_text(encoding="utf-8"))["schema"] == "gradscope.report/1"
    assert "out.json" in run.stderr and env["HOSTILE_CHDIR"] not in run.stderr, run.stderr


def test_chdir_at_import_does_not_move_the_weights(moving_cwd: tuple[Path, dict[str, str]]) -> None:
    """Today ``--weights ckpt.pt`` (in the user's directory) exits 2 with ``--weights ckpt.pt: file not found``:
    it is looked up in the directory the model file changed to."""
    work, env = moving_cwd
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    torch.save({k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}, work / "ckpt.pt")
    run = cli(
        "scan", ASSETS / "chdir_at_import.py", *FAST, "--format", "json", "--weights", "ckpt.pt", cwd=work, env=env
    )
    assert run.code in (0, 1), run.stderr[-2000:]
    layers = {layer["name"]: layer for layer in json.loads(run.stdout)["layers"]}
    assert layers["0"]["weight_rms"] == pytest.approx(0.5), "the checkpoint's weights were not loaded"


# ------------------------------------------------------------------------------------------- 9. autograd off


def _assert_names_grad_mode(message: str) -> None:
    assert "does not depend on any trainable parameter" not in message, message
    assert "forward()" not in message, f"blames the model's forward: {message!r}"
    assert any(word in message for word in GRAD_MODE_WORDS), f"does not name grad mode: {message!r}"


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_scan_with_autograd_disabled_works_or_names_grad_mode(context: str) -> None:
    """Today ``gradscope.scan`` inside ``torch.no_grad()`` or ``torch.inference_mode()`` raises ProbeError ``the
    model output does not depend on any trainable parameter ...; check that ... forward() does not use
    torch.no_grad()``: it blames the model for the caller's context."""
    model, batches = _mlp(), _batches()
    expected = _without_timing(gradscope.scan(model, batches))
    manager = torch.no_grad() if context == "no_grad" else torch.inference_mode()
    try:
        with manager:
            report = gradscope.scan(model, batches)
    except GradscopeError as exc:
        _assert_names_grad_mode(str(exc))
        return
    assert _without_timing(report) == expected


def test_model_file_that_disables_grad_at_import(tmp_path: Path) -> None:
    """Today a model file with ``torch.set_grad_enabled(False)`` at module level exits 2 with ``the model output
    does not depend on any trainable parameter ...; check that ... forward() does not use torch.no_grad()``."""
    run = cli("scan", ASSETS / "grad_disabled_at_import.py", *FAST, "--format", "json", cwd=tmp_path)
    report = assert_report_or_error(run)
    if report is None:
        _assert_names_grad_mode(run.stderr)
        return
    linear = [layer for layer in report["layers"] if layer["type"] == "Linear"]
    assert linear and all(layer["grad_rms"] is not None for layer in linear), linear
    assert all(layer["status"] != "disconnected" for layer in linear), linear


# ------------------------------------------------------------------------------------ 10. "internal error" exits


ODD_MODELS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # id: (asset, extra options, what a user sees today)
    "zero-width-linear": ("zero_width.py", (), "internal error: ZeroDivisionError: float division by zero"),
    "torchscript-module": (
        "scripted.py",
        (),
        "internal error: RuntimeError: register_forward_hook is not supported on ScriptModules",
    ),
    "lazy-linear": ("lazy.py", (), "internal error: ValueError: Attempted to use an uninitialized parameter"),
    "fix-pruned": (
        "pruned.py",
        ("--fix",),
        "internal error: RuntimeError: Only Tensors created explicitly by the "
        "user (graph leaves) support the deepcopy protocol",
    ),
    "fix-old-weight-norm": (
        "old_weight_norm.py",
        ("--fix",),
        "internal error: RuntimeError: Only Tensors created explicitly by the user ... deepcopy protocol",
    ),
    "fix-holds-lock": ("holds_lock.py", ("--fix",), "internal error: TypeError: cannot pickle '_thread.lock'"),
}


@pytest.mark.parametrize("case", list(ODD_MODELS))
def test_odd_models_give_a_report_or_one_clear_line(tmp_path: Path, case: str) -> None:
    """Today each exits 2 with ``internal error: ...`` (see ODD_MODELS): a crash of gradscope's, not an answer.
    Accepted: exit 0/1 with a report (with ``--fix``: one that has its ``fix`` section), or exit 2 with one line."""
    asset, extra, _today = ODD_MODELS[case]
    run = cli("scan", ASSETS / asset, *FAST, *extra, "--format", "json", cwd=tmp_path)
    report = assert_report_or_error(run)
    if report is not None and "--fix" in extra:
        assert "fix" in report, sorted(report)


def test_lazy_module_through_the_library_raises_a_gradscope_error() -> None:
    """Today ``gradscope.scan`` on a model with an uninitialised ``nn.LazyLinear`` raises a raw ``ValueError:
    Attempted to use an uninitialized parameter in <method 'requires_grad_' ...>`` — the README says scan raises
    only GradscopeError subclasses."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(GradscopeError) as info:
        gradscope.scan(model, _batches())
    assert "\n" not in str(info.value)


MALFORMED_META: dict[str, Callable[[dict[str, Any]], None]] = {
    "layer-name-and-order": lambda meta: meta.update(layers=[{"name": 1, "order": "x"}]),  # today: ValueError
    "layers-not-a-list": lambda meta: meta.update(layers="nope"),  # extra; today: AttributeError 'str' ... 'get'
    "window-not-a-number": lambda meta: meta.update(window="many"),  # extra; today: ValueError int('many')
}


FULL_STDOUT: dict[str, tuple[str, ...]] = {
    "report-json": ("report", "{log}", "--format", "json"),
    "check": ("check", str(ASSETS / "tiny.py"), *FAST),
}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("case", list(FULL_STDOUT))
def test_stdout_on_a_full_disk_is_one_line(tmp_path: Path, recorded_lines: list[str], case: str) -> None:
    """Today ``gradscope report LOG --format json > /dev/full`` and ``gradscope check ... > /dev/full`` exit 2 with
    ``internal error: OSError: [Errno 28] No space left on device`` (scan's own path already says "cannot
    write")."""
    log = write_log(tmp_path / "run.jsonl", [json.loads(line) for line in recorded_lines])
    args = [a.replace("{log}", str(log)) for a in FULL_STDOUT[case]]
    with open("/dev/full", "w") as full:
        run = cli(*args, cwd=tmp_path, stdout=full)
    error_line(run, "cannot write")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_on_a_full_disk_do_not_crash(tmp_path: Path, flag: str) -> None:
    """Today ``gradscope --version > /dev/full`` (and, extra, ``--help``) exits 1 with a 40-line traceback ending
    in ``OSError: [Errno 28] No space left on device``."""
    with open("/dev/full", "w") as full:
        run = cli(flag, cwd=tmp_path, stdout=full)
    assert "Traceback" not in run.stderr, run.stderr[-1500:]
    assert len(run.stderr.strip().splitlines()) <= 1, run.stderr
    assert run.code in (0, 2), run.code


# ----------------------------------------------------------------------------------------------------- 11. minor


@pytest.mark.parametrize("command", ["scan", "trial"])
def test_unwritable_output_fails_before_the_work(tmp_path: Path, command: str) -> None:
    """Today ``-o missing/dir/out.json`` is found unwritable only after the work: ``scan`` of a model whose 120
    probe batches take 30+ s, or ``trial`` of 1,000 steps (minutes), is still running when the test's timeout
    kills it; the answer would be ``cannot write ...: No such file or directory``."""
    target = tmp_path / "missing" / "dir" / "out.json"
    work = ("--batches", "120", "--batch-size", "4") if command == "scan" else ("--steps", "1000", "--remedy", "none")
    run = cli(command, ASSETS / "sleepy.py", *work, "--output", target, cwd=tmp_path, timeout=HANG_S)
    error_line(run, "out.json")
    assert run.seconds < QUICK_S, f"answered after {run.seconds:.1f} s"


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        del data["layers"][0][key]

    return edit


def _negative(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["layers"][0][key] = -1.0

    return edit


@pytest.mark.parametrize("key", ["grad_rms", "signal_rms"])
@pytest.mark.parametrize("how", ["missing", "negative"])
def test_baseline_with_bad_layer_numbers_is_rejected(
    tmp_path: Path, baseline: dict[str, Any], key: str, how: str
) -> None:
    """Today a baseline whose first layer lacks ``grad_rms``/``signal_rms`` or has ``-1.0`` there is accepted:
    ``gradscope check`` exits 1 with a "regression" against a number no scan can produce."""
    edit = _drop(key) if how == "missing" else _negative(key)
    base = edited(baseline, tmp_path / "base.json", edit)
    run = cli("check", ASSETS / "tiny.py", "--baseline", base, cwd=tmp_path)
    error_line(run, key, "base.json")


BAD_PROBE: dict[str, tuple[str, int]] = {
    "batch-size-zero": ("batch_size", 0),  # today: "error: --batch-size 0 must be at least 1"
    "batches-negative": ("batches", -3),  # extra; today: "error: --batches -3 must be at least 1"
    "seed-beyond-64-bits": ("seed", 2**70),  # extra; today: "error: --seed 1180591620717411303424 must fit ..."
}


@pytest.mark.parametrize("case", list(BAD_PROBE))
def test_bad_probe_value_in_a_baseline_blames_the_baseline(tmp_path: Path, baseline: dict[str, Any], case: str) -> None:
    """Today a baseline with ``"batch_size": 0`` makes ``gradscope check`` answer ``error: --batch-size 0 must be at
    least 1``: an option the user never typed, and no word about the baseline file."""
    key, value = BAD_PROBE[case]
    base = edited(baseline, tmp_path / "base.json", lambda d: d["probe"].update({key: value}))
    run = cli("check", ASSETS / "tiny.py", "--baseline", base, cwd=tmp_path)
    line = error_line(run, "base.json", key)
    assert "--" + key.replace("_", "-") not in line, f"blames an option the user never typed: {line!r}"


def test_nan_threshold_names_its_own_key() -> None:
    """Today ``diagnose: {vanishing_warning: .nan}`` is reported as ``diagnose.vanishing_error=0.001 needs 0 <
    vanishing_error <= vanishing_warning < 1``: the key named is one the user did not write."""
    with pytest.raises(ConfigError, match=r"diagnose\.vanishing_warning"):
        load_config(ASSETS / "nan_threshold.yaml")


@pytest.mark.parametrize("asset", ["versioned_state.py", "refuses_state.py"])
def test_weights_load_failure_keeps_its_reason(tmp_path: Path, asset: str) -> None:
    """Today ``load_state_dict``'s RuntimeError is cut to its first line, ``--weights ckpt.pt: cannot load into the
    model: Error(s) in loading state_dict for Sequential:`` — the reason, on the next line, is lost. A load pre-hook
    raising ValueError (extra) gives ``internal error: ValueError: checkpoint was saved with an incompatible
    tokenizer``."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    reason = {
        "versioned_state.py": "checkpoint format v1 is not supported",
        "refuses_state.py": "incompatible tokenizer",
    }[asset]
    run = cli("scan", ASSETS / asset, *FAST, "--weights", "ckpt.pt", cwd=tmp_path)
    error_line(run, "ckpt.pt", reason)


def test_trial_error_stays_one_line_when_torch_warns(tmp_path: Path) -> None:
    """Today stderr has three lines: torch's ``UserWarning: Implicit dimension choice for softmax has been
    deprecated`` and its source line, then ``error: dataset() has float targets of shape (51, 3) ...``."""
    run = cli("trial", ASSETS / "softmax_warning_trial.py", "--steps", "5", "--remedy", "none", cwd=tmp_path)
    error_line(run, "dataset()")


def test_model_kwargs_from_a_config_are_not_blamed_on_the_option(tmp_path: Path) -> None:
    """Extra. Today ``model.kwargs: {depth: 3}`` in a config file for a factory without ``depth`` answers ``... does
    not take argument(s) depth given in --model-kwargs``: the user typed no --model-kwargs."""
    run = cli("scan", ASSETS / "needs_depth.py", "--config", ASSETS / "kwargs_in_config.yaml", *FAST, cwd=tmp_path)
    line = error_line(run, "depth")
    assert "given in --model-kwargs" not in line, line
    assert "kwargs_in_config.yaml" in line or "model.kwargs" in line, line


def test_a_module_whose_train_method_trains_is_probed_and_trialled_without_calling_it() -> None:
    """The forward-forward example's layers define ``train(x_pos, x_neg)``: putting the model in training mode goes
    around that method (``model.train()`` would fail, in torch too), and the flags come back as they were."""
    from test_probes import ForwardForwardLayer

    torch.manual_seed(0)
    model = nn.Sequential(ForwardForwardLayer(12, 8), ForwardForwardLayer(8, 8), nn.Linear(8, 3))
    for m in model.modules():
        m.training = False  # model.eval() would call the layers' train()
    report = gradscope.scan(model, [torch.randn(16, 12)])
    assert report.layer("0").grad_rms is not None
    assert not any(m.training for m in model.modules())
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(48, 12, generator=g), torch.randint(0, 3, (48,), generator=g))
    trial = gradscope.run_trial(model, candidates={}, data=data, steps=3, seeds=1, batch_size=8)
    assert trial.arms and not any(m.training for m in model.modules())


def test_set_training_calls_only_train_methods_that_take_mode() -> None:
    """A ``train(self, data)`` routine is not called with ``data=False``; where one module's ``train`` is a routine,
    the other modules' ``train(mode)`` overrides still run (a backbone that keeps its BatchNorm frozen)."""
    from gradscope.torchutil import set_training

    calls: list[Any] = []

    class Routine(nn.Linear):
        def train(self, data: Any) -> None:  # type: ignore[override]
            calls.append(data)

    class FrozenBN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.bn = nn.BatchNorm1d(4)

        def train(self, mode: bool = True) -> FrozenBN:
            super().train(mode)
            self.bn.eval()
            return self

    model = nn.Sequential(FrozenBN(), Routine(4, 2))
    set_training(model, True)
    assert calls == [] and model.training and model[1].training
    assert model[0].training and not model[0].bn.training
    set_training(model, False)
    assert calls == [] and not any(m.training for m in model.modules())
