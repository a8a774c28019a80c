"""What does ``gradscope.watch`` cost a training loop? Slowdown of monitored over unmonitored training, as a table.

Models: the three of ``benchmarks/overhead.py`` (mlp: Linear+Tanh stack, cnn: ResNet-ish with BatchNorm, transformer:
pre-norm encoder with Embedding), at its ``--quick`` sizes by default (a training step of a few ms to tens of ms
on one thread) or at its full sizes with ``--full-size``.

A training step: ``loss = cross-entropy-like default loss of model(batch)``; ``loss.backward()``; ``w.step(loss)``;
``Adam.step()``; ``zero_grad(set_to_none=True)``. "plain" is the same loop without watch.

Configurations: plain, then watch(mode=param|full, every=1|100). Each round runs every configuration for
``--steps`` steps (default 100, so every=100 records once per block, as in a long run) in a rotated order; the
time per step is the block's time / steps. Reported: the median per-step time over ``--rounds`` rounds and its
ratio to plain's median. One thread (``torch.set_num_threads(1)``); warm-up: one block of each configuration.

Peers: wandb.watch is not installable here (no network); its published overhead is printed for comparison.

Usage: python benchmarks/watch.py [--rounds N] [--steps S] [--models mlp,cnn,transformer] [--full-size]
       [--modes param,full] [--threads T]
Targets (issues): param-only ≤ 1.05× at every=1, ≤ 1.01× at every=100; full ≤ 1.10× at every=1 (issue 13).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradscope import probes
from gradscope.watching import watch

TARGETS = {("param", 1): 1.05, ("param", 100): 1.01, ("full", 1): 1.10}
CONFIGS: list[tuple[str, int] | None] = [None, ("param", 1), ("param", 100), ("full", 1), ("full", 100)]


def _overhead_module() -> Any:
    path = Path(__file__).with_name("overhead.py")
    spec = importlib.util.spec_from_file_location("gradscope_bench_overhead", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _loss(out: Any, i: int) -> torch.Tensor:
    return probes.default_loss(probes.select_output(out), 0, i % 8)


def block(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batches: list[torch.Tensor],
    steps: int,
    config: tuple[str, int] | None,
) -> tuple[float, float, float]:
    """(seconds per step, seconds per step spent inside ``w.step()``, this process's CPU seconds per step)."""
    ctx: contextlib.AbstractContextManager[Any]
    ctx = contextlib.nullcontext() if config is None else watch(model, mode=config[0], every=config[1])
    inside = 0.0
    started, cpu = time.perf_counter(), time.process_time()
    with ctx as w:
        for i in range(steps):
            loss = _loss(model(batches[i % len(batches)]), i)
            loss.backward()
            if w is not None:
                t0 = time.perf_counter()
                w.step(loss)
                inside += time.perf_counter() - t0
            opt.step()
            opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / steps, inside / steps, (time.process_time() - cpu) / steps


def measure(
    name: str, case: Any, rounds: int, steps: int, configs: list[tuple[str, int] | None]
) -> dict[str, list[float]]:
    torch.manual_seed(0)
    model = case.build()
    generator = torch.Generator().manual_seed(1)
    batches = [case.make_batch(generator) for _ in range(8)]
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times: dict[str, list[float]] = {_label(c): [] for c in configs}
    inside: dict[str, list[float]] = {_label(c): [] for c in configs}
    cpu: dict[str, list[float]] = {_label(c): [] for c in configs}
    for config in configs:  # warm-up
        block(model, opt, batches, min(steps, 20), config)
    for r in range(rounds):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for config in order:
            total, in_step, cpu_time = block(model, opt, batches, steps, config)
            times[_label(config)].append(total)
            inside[_label(config)].append(in_step)
            cpu[_label(config)].append(cpu_time)
        print(f"  {name}: round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return {
        **times,
        **{f"{k} (in w.step)": v for k, v in inside.items() if k != "plain"},
        **{f"{k} (cpu)": v for k, v in cpu.items()},
    }


def _label(config: tuple[str, int] | None) -> str:
    return "plain" if config is None else f"{config[0]}/every={config[1]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--models", default="mlp,cnn,transformer")
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", default="param,full", help="watch modes to time (plain is always timed)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overhead = _overhead_module()
    cases = overhead.cases(quick=not args.full_size)
    rows = []
    for name in args.models.split(","):
        case = cases[name]
        modes = set(args.modes.split(","))
        configs = [c for c in CONFIGS if c is None or c[0] in modes]
        times = measure(name, case, args.rounds, args.steps, configs)
        plain = statistics.median(times["plain"])
        plain_cpu = statistics.median(times["plain (cpu)"])
        for label, values in times.items():
            if label.endswith(")"):
                continue
            med = statistics.median(values)
            direct = statistics.median(times.get(f"{label} (in w.step)", [0.0]))
            cpu_ratio = statistics.median(times[f"{label} (cpu)"]) / plain_cpu
            least = min(values) / min(times["plain"])
            rows.append((name, case.batch, label, med * 1e3, med / plain, least, cpu_ratio, 1 + direct / plain))
    print(
        f"\ngradscope.watch overhead: torch {torch.__version__}, {args.threads} thread(s), "
        f"{args.rounds} rounds × {args.steps} steps, Adam, median ms/step"
    )
    print(
        "slowdown = median step time / plain's (the target applies to it); min = fastest round / plain's fastest;\n"
        "cpu = median CPU time of this process per step / plain's (what a busy shared machine's other work does\n"
        "not add); in-call = 1 + (time inside w.step()) / plain's step time (in full mode the hooks' cost is\n"
        "outside w.step())"
    )
    print(
        f"{'model':<12} {'batch':<12} {'config':<18} {'ms/step':>9} {'slowdown':>9} {'min':>7} {'cpu':>7} "
        f"{'in-call':>9}  target"
    )
    for name, batch, label, ms, ratio, least, cpu_ratio, direct in rows:
        target = ""
        if label != "plain":
            mode, every = label.split("/every=")
            limit = TARGETS.get((mode, int(every)))
            if limit is not None:
                target = f"≤ {limit:.2f}× {'ok' if ratio <= limit else 'MISSED'}"
        call = "" if label == "plain" else f"{direct:.4f}×"
        print(
            f"{name:<12} {batch:<12} {label:<18} {ms:>9.2f} {ratio:>8.3f}× {least:>6.3f}× {cpu_ratio:>6.3f}× "
            f"{call:>9}  {target}"
        )
    try:
        import wandb  # noqa: F401

        print("peer wandb.watch: installed but not timed in this version")
    except ImportError:
        print("peer wandb.watch(log='all'): not installed here (published: 2.18 → 5.72 s/iteration, 2.6×)")


if __name__ == "__main__":
    main()
