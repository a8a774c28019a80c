"""The conventions a user meets outside the CLI's own options: the GitHub Action (``action.yml`` and its scripts),
the pre-commit hook definition and shell completion. The scripts run for real, in subprocesses, against the test
assets; the install script runs with a stand-in ``python`` on PATH that records what it was asked to install."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from helpers import ASSETS, FAST, ROOT, cli_env

HEALTHY = ASSETS / "healthy_mlp.py"
DEEP = ASSETS / "deep_sigmoid_mlp.py"
SCRIPTS = ROOT / "scripts"


def _action() -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / "action.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _bin_dir(tmp_path: Path) -> Path:
    """A directory whose ``gradscope`` runs this checkout's gradscope with this interpreter (a new user has the
    console script on PATH; the tests may run from a venv that is not activated)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "gradscope"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m gradscope "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _check(tmp_path: Path, target: Path, **env: str) -> subprocess.CompletedProcess[str]:
    inputs = {
        "TARGET": str(target),
        "ARGS": " ".join(FAST),
        "HTML": str(tmp_path / "out.html"),
        "JUNIT": str(tmp_path / "junit.xml"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "PATH": f"{_bin_dir(tmp_path)}{os.pathsep}{os.environ['PATH']}",
    }
    environment = cli_env(**(inputs | env))
    return subprocess.run(
        ["bash", str(SCRIPTS / "action_check.sh")],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def test_action_yml_is_a_composite_action_whose_steps_use_its_inputs() -> None:
    action = _action()
    inputs = action["inputs"]
    assert isinstance(inputs, dict) and inputs["target"]["required"] is True
    runs = action["runs"]
    assert isinstance(runs, dict) and runs["using"] == "composite"
    for step in runs["steps"]:
        script = step["run"].split('"$GITHUB_ACTION_PATH/')[1].rstrip('"')
        assert (ROOT / script).is_file(), script
        for value in step["env"].values():  # every ${{ inputs.X }} names a declared input
            name = value.removeprefix("${{ inputs.").removesuffix(" }}")
            assert name in inputs, name
        assert step["shell"] == "bash"


@pytest.mark.slow
def test_action_check_script_passes_a_healthy_model_and_writes_every_report(tmp_path: Path) -> None:
    proc = _check(tmp_path, HEALTHY)
    assert proc.returncode == 0, proc.stderr
    assert "gradscope check" in proc.stderr  # the command is echoed, for the job log
    ET.parse(tmp_path / "junit.xml")  # well-formed
    assert "<svg" in (tmp_path / "out.html").read_text()
    assert "|" in (tmp_path / "summary.md").read_text()  # the Markdown tables went to the job summary


@pytest.mark.slow
def test_action_check_script_fails_the_step_on_an_unhealthy_model(tmp_path: Path) -> None:
    proc = _check(tmp_path, DEEP, HTML="", JUNIT="")
    assert proc.returncode == 1, proc.stderr
    assert "::error" in proc.stdout  # GitHub annotations on stdout
    assert not (tmp_path / "out.html").exists() and not (tmp_path / "junit.xml").exists()


@pytest.mark.slow
def test_action_check_script_exits_2_on_a_missing_target(tmp_path: Path) -> None:
    proc = _check(tmp_path, tmp_path / "missing.py")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("torch_installed", [True, False])
def test_action_install_script_installs_a_cpu_torch_only_when_none_is_there(
    tmp_path: Path, torch_installed: bool
) -> None:
    calls = tmp_path / "calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (
        # `python -c "import torch"` succeeds or fails as the case says; anything else is recorded
        ("python", f'if [ "$1" = "-c" ]; then exit {0 if torch_installed else 1}; fi\necho "python $*" >> "{calls}"'),
        ("gradscope", f'echo "gradscope $*" >> "{calls}"'),
    ):
        shim = bin_dir / name
        shim.write_text(f"#!/bin/sh\n{body}\n")
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "INSTALL": "gradscope==0.2.0"}
    proc = subprocess.run(["bash", str(SCRIPTS / "action_install.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = calls.read_text().splitlines()
    torch_line = "python -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu"
    assert lines == ([] if torch_installed else [torch_line]) + [
        "python -m pip install --quiet gradscope==0.2.0",
        "gradscope --version",
    ]


@pytest.mark.slow
def test_pre_commit_hook_entry_runs_gradscope_check(tmp_path: Path) -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "gradscope-check" and hook["pass_filenames"] is False
    # pre-commit runs `entry` with the user's args appended (pass_filenames: false adds no file names)
    argv = [*shlex.split(hook["entry"]), str(DEEP), *FAST]
    env = cli_env(PATH=f"{_bin_dir(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    assert proc.returncode == 1, proc.stderr  # the deep sigmoid stack vanishes: the commit is refused
    argv = [*shlex.split(hook["entry"]), str(HEALTHY), *FAST]
    assert subprocess.run(argv, capture_output=True, env=env, cwd=tmp_path, timeout=180).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("words", "cword", "expected"), [("gradscope sc", "1", "scan"), ("gradscope scan --for", "2", "--format")]
)
def test_shell_completion_completes_commands_and_options(words: str, cword: str, expected: str) -> None:
    env = cli_env(_GRADSCOPE_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=cword)
    proc = subprocess.run(
        [sys.executable, "-c", "from gradscope.cli import main; main()"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [expected]


@pytest.mark.slow
def test_show_completion_prints_a_bash_script() -> None:
    # --show-completion takes no value: Typer detects the shell from the process tree, so run it from bash, as a
    # user does (run from a detached test runner, with no shell above it, it says "Shell  not supported.")
    command = f"{shlex.quote(sys.executable)} -m gradscope --show-completion; exit $?"  # bash stays the parent
    proc = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "_GRADSCOPE_COMPLETE=complete_bash" in proc.stdout and "complete " in proc.stdout
