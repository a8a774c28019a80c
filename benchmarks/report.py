"""How does ``gradscope report`` scale with the length of a watch log? Time and peak memory for 1k/10k/70k steps.

Logs: a real ``gradscope.watch`` run (every=1, param mode, SGD) of ``--record`` training steps of a model, whose
step lines are then repeated with increasing step numbers up to each length (so every line is a real step line of
that model). Models: ``mlp`` (Linear 8→8, Tanh, Linear 8→4: the log of the hostile-input test) and ``deep`` (a
12-layer sigmoid MLP whose gradients vanish: every step has a vanishing layer, the case where steps must be
judged, not just read).

For each log: ``gradscope report LOG --format json`` as a subprocess (stdout discarded): wall seconds (about
2.5 s of it is starting Python and importing torch, whatever the log) and the process's peak RSS (``wait4``;
most of it is the interpreter, torch and numpy); then, in this process, ``read_timeline`` timed (the reading
alone: µs per step) and once more under ``tracemalloc``: the peak Python allocation of reading the log (what
would grow if the reader kept steps).

Usage: python benchmarks/report.py [--steps 1000,10000,70000] [--models mlp,deep] [--record 30] [--keep DIR]
Targets (issue): time linear in the steps (a 70,000-step log in seconds), memory flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch
from torch import nn

import gradscope
from gradscope.watching import read_timeline


def model_of(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    layers: list[nn.Module] = [nn.Linear(8, 32), nn.Sigmoid()]
    for _ in range(10):
        layers += [nn.Linear(32, 32), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(32, 4))


def recorded_lines(name: str, steps: int, directory: Path) -> list[str]:
    """``steps`` lines of a real watch run of model ``name`` (the first carries meta)."""
    model = model_of(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    log = directory / f"{name}_recorded.jsonl"
    with gradscope.watch(model, every=1, log=log) as w:
        for _ in range(steps):
            loss = model(torch.randn(16, 8, generator=g)).pow(2).mean()
            loss.backward()
            w.step(loss)
            opt.step()
            opt.zero_grad()
    return log.read_text(encoding="utf-8").splitlines()


def long_log(path: Path, lines: list[str], steps: int) -> Path:
    objects = [json.loads(line) for line in lines]
    with path.open("w", encoding="utf-8") as f:
        f.write(lines[0] + "\n")
        for step in range(1, steps):
            obj = {k: v for k, v in objects[step % len(objects)].items() if k != "meta"}
            obj["step"] = step
            f.write(json.dumps(obj, separators=(",", ":")) + "\n")
    return path


def cli_run(log: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit code) of ``gradscope report LOG --format json``."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradscope", "report", str(log), "--format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"gradscope report {log} exited {proc.returncode}: {err[-500:]}")
    return seconds, usage.ru_maxrss / 1024, proc.returncode


def read_seconds(log: Path) -> float:
    started = time.perf_counter()
    read_timeline(log)
    return time.perf_counter() - started


def python_peak(log: Path, warm_up: Path) -> float:
    """Peak Python allocation (MB) of reading the log in this process (after reading ``warm_up``: imports and
    caches are not the log's)."""
    read_timeline(warm_up)
    tracemalloc.start()
    try:
        read_timeline(log)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="1000,10000,70000")
    parser.add_argument("--models", default="mlp,deep")
    parser.add_argument("--record", type=int, default=30, help="real training steps whose lines are repeated")
    parser.add_argument("--keep", type=Path, default=None, help="write the logs here (default: a temporary dir)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.steps.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        print(
            "| model (layers logged) | steps | log MB | `gradscope report` s | peak RSS MB | reading s | µs/step "
            "| Python peak MB |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name in args.models.split(","):
            lines = recorded_lines(name, args.record, directory)
            logged = len(json.loads(lines[0])["layers"])
            for steps in sizes:
                log = long_log(directory / f"{name}_{steps}.jsonl", lines, steps)
                seconds, rss, _ = cli_run(log)
                peak = python_peak(log, warm_up=directory / f"{name}_{sizes[0]}.jsonl")
                reading = read_seconds(log)
                size = log.stat().st_size / 2**20
                print(
                    f"| {name} ({logged}) | {steps:,} | {size:.1f} | {seconds:.2f} | {rss:.0f} | {reading:.2f} | "
                    f"{reading / steps * 1e6:.0f} | {peak:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
