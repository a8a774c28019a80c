"""What does ``gradscope.scan`` cost over a plain forward+backward? Time and peak memory, as one table.

Models (CPU-sized: ~50-300 ms per forward+backward on one thread; ``--quick`` shrinks them):
  mlp          20 × [Linear(512, 512) → Tanh] → Linear(512, 10); batch 256 × 512 (saturation statistics)
  cnn          ResNet-ish: conv stem → 3 stages × 2 BasicBlocks (32/64/128 channels, BatchNorm, ReLU)
               → pool → fc; batch 8 × 3 × 32 × 32 (dead-unit statistics)
  transformer  Embedding(1000, 256) + learned positions → 4 pre-norm TransformerEncoderLayers (d_model 256,
               4 heads, FFN 1024, GELU, dropout 0.1) → LayerNorm → Linear(256, 1000); batch 2 × 128 tokens

Both modes see the SAME batches (``Config().probe.batches`` of them, the CLI's default) and the same loss:
  plain   per batch i: every ``p.grad = None``; ``out = model(batch)``;
          ``probes.default_loss(probes.select_output(out), seed, i).backward()``;
          train mode, as scan's default
  scan    ``gradscope.scan(model, batches)``: the whole library call (hooks, the per-batch host sync,
          restoring the model, diagnosis, suggestions). Its per-batch time is the call's time over the
          batch count, so the fixed costs are spread over that many batches, as a user pays them.

Time: ``torch.set_num_threads(--threads)``, default 1 (one thread is the least disturbed by other work on a
small machine; ``--threads 2`` shows the ratio when the compute gets faster and the hooks' Python does not).
One warm-up run of each mode, then ``--rounds`` rounds; each round times both modes, plain first in even
rounds and scan first in odd ones. Reported: each mode's median per-batch time and the ratio of the medians
(the ratio of the minimums is printed below the table).

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated()`` minus ``memory_allocated()`` just before the run
(after ``reset_peak_memory_stats``). On CPU torch has no peak counter and ``tracemalloc`` does not see its
allocations, so each (model, mode) runs in a fresh subprocess that
  1. builds the model and batches and runs one warm-up of BOTH modes (lazy initialisation, imports and
     allocator state are then the same for both measurements);
  2. resets the kernel's high-water mark by writing "5" to ``/proc/self/clear_refs`` (Linux >= 4.0), reads
     ``VmRSS`` from ``/proc/self/status``, runs the mode once, and reads ``VmHWM``;
  3. reports ``VmHWM - VmRSS before`` (the peak resident memory the run added), median of ``--memory-rounds``.
The subprocess runs with glibc's ``MALLOC_MMAP_THRESHOLD_=4096`` (one page; a fixed value also turns off the
dynamic threshold): every buffer above a page is its own mapping, returned to the kernel when freed, so the
resident set follows the bytes in use rather than what glibc kept cached from the warm-up. Without it the
deltas scatter and understate (transformer: 3-8 MB from run to run, against 34 MB of tensors).
Where ``clear_refs`` cannot be written, the fallback is ``ru_maxrss`` (``getrusage``) after the run minus
``VmRSS`` before, with a warm-up of the measured mode only (the other mode's warm-up could set the mark).
"Peak MB" is thus what a forward+backward (or a scan) needs on top of the model and its batches, in pages,
non-tensor memory (the hooks' Python objects) included. As a cross-check (not with ``--quick``) the subprocess
also reports the peak of torch's own CPU allocations, rebuilt from ``torch.profiler(profile_memory=True)``
events; the two agree to within ~1 MB on the default models. The memory subprocesses run after all timing,
``--jobs`` (default 2) at a time: they measure bytes, not seconds.

  tanh60x64    60 × [Linear(64, 64) → Tanh] → Linear(64, 10), batch 64: 121 layers of 4096 outputs each
  relu50x256   50 × [Linear(256, 256) → ReLU] → Linear(256, 10), batch 64 (101 layers)
  relu200x256  the same, 200 deep (401 layers)
``--sweep`` times 64-wide tanh MLPs of depth 5 to 160 instead (time only): the cost per layer.

Time × is the ratio of the median per-batch times, with the smallest and largest ratio of one round (both modes
back to back) in brackets.

``--floor`` also times ``run_floor``: the same statistics from a minimal hand-written hook recorder (hooks keep
outputs and output gradients, stacked reductions after backward, two fused norms, one host copy per batch), with
nothing else a scan does. It is what any recorder built on Python hooks pays for these numbers in eager PyTorch;
the note under the table gives its ratio to plain and scan / floor. It also times ``run_gradients_floor``: only
the output-gradient and parameter-gradient norms, the gradients taken from autograd's C++ engine in one
``torch.autograd.grad`` call (no Python during backward): what any recorder of per-layer gradient RMS pays,
hooks or not, before it reads a single forward statistic.

Usage: python benchmarks/overhead.py [--quick] [--rounds N] [--threads T] [--models mlp,cnn,...] [--sweep]
       [--floor]
Targets (issue 13): time ≤ 1.10× on the large models, ≤ 1.5× on tanh60x64, ≤ 1.2× on relu50x256 and
relu200x256; memory ≤ 1.05×.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import gradscope
from gradscope import probes
from gradscope.config import Config
from gradscope.recorder import FORWARD_SAMPLE
from gradscope.torchutil import activation_name

TIME_TARGET = 1.10
MEMORY_TARGET = 1.05
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4096"}

# -- models ---------------------------------------------------------------------------------------------


def mlp(depth: int, width: int, activation: type[nn.Module] = nn.Tanh) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), activation()]
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        out: torch.Tensor = self.relu2(self.bn2(self.conv2(y)) + self.shortcut(x))
        return out


def cnn(width: int) -> nn.Module:
    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, 1, 1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(),
        BasicBlock(w, w, 1),
        BasicBlock(w, w, 1),
        BasicBlock(w, 2 * w, 2),
        BasicBlock(2 * w, 2 * w, 1),
        BasicBlock(2 * w, 4 * w, 2),
        BasicBlock(4 * w, 4 * w, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, 10),
    )


class Transformer(nn.Module):
    def __init__(self, vocab: int, d_model: int, layers: int, heads: int, seq_len: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 4 * d_model, dropout=0.1, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        logits: torch.Tensor = self.head(self.norm(self.encoder(x)))
        return logits


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    make_batch: Callable[[torch.Generator], torch.Tensor]
    batch: str  # for the table
    target: float = 1.10  # time × the issue asks for


def deep(name: str, depth: int, width: int, activation: type[nn.Module], target: float) -> Case:
    """A deep narrow MLP at batch 64: the per-layer cost of the hooks, not the arithmetic, decides its ratio."""
    return Case(
        name,
        lambda: mlp(depth, width, activation),
        lambda g: torch.randn(64, width, generator=g),
        f"64×{width}",
        target,
    )


def cases(quick: bool) -> dict[str, Case]:
    if quick:
        m_depth, m_width, m_b = 8, 128, 64
        c_width, c_b = 8, 4
        t_d, t_layers, t_seq, t_b = 64, 2, 32, 2
    else:
        m_depth, m_width, m_b = 20, 512, 256
        c_width, c_b = 32, 8
        t_d, t_layers, t_seq, t_b = 256, 4, 128, 2
    vocab = 1000
    return {
        "mlp": Case(
            "mlp",
            lambda: mlp(m_depth, m_width),
            lambda g: torch.randn(m_b, m_width, generator=g),
            f"{m_b}×{m_width}",
        ),
        "cnn": Case("cnn", lambda: cnn(c_width), lambda g: torch.randn(c_b, 3, 32, 32, generator=g), f"{c_b}×3×32×32"),
        "transformer": Case(
            "transformer",
            lambda: Transformer(vocab, t_d, t_layers, 4, t_seq),
            lambda g: torch.randint(0, vocab, (t_b, t_seq), generator=g),
            f"{t_b}×{t_seq} tok",
        ),
        # the deep narrow networks vanishing-gradient users scan most (issue 13's targets)
        "tanh60x64": deep("tanh60x64", 60 if not quick else 20, 64, nn.Tanh, 1.5),
        "relu50x256": deep("relu50x256", 50 if not quick else 10, 256, nn.ReLU, 1.2),
        "relu200x256": deep("relu200x256", 200 if not quick else 20, 256, nn.ReLU, 1.2),
    }


SWEEP_DEPTHS = (5, 10, 20, 40, 80, 160)


def sweep_cases() -> dict[str, Case]:
    """Tanh MLPs 64 wide at batch 64 of growing depth: how the ratio grows with the number of layers."""
    return {f"tanh{d}x64": deep(f"tanh{d}x64", d, 64, nn.Tanh, 1.5) for d in SWEEP_DEPTHS}


def setup(case: Case, device: torch.device) -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = case.build().to(device)
    generator = torch.Generator().manual_seed(1)
    batches = [case.make_batch(generator).to(device) for _ in range(Config().probe.batches)]
    return model, batches


# -- the two modes --------------------------------------------------------------------------------------


def run_plain(model: nn.Module, batches: list[torch.Tensor]) -> None:
    seed = Config().probe.seed
    model.train(Config().probe.mode == "train")
    params = list(model.parameters())
    for i, batch in enumerate(batches):
        for p in params:
            p.grad = None
        out = probes.call_model(model, batch)
        probes.default_loss(probes.select_output(out), seed, i).backward()
    for p in params:  # scan puts the caller's (absent) grads back: end in the same state
        p.grad = None


def run_scan(model: nn.Module, batches: list[torch.Tensor]) -> None:
    gradscope.scan(model, batches)


def run_floor(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """The least a recorder built on Python hooks pays for the same numbers, written for speed rather than
    generality (``--floor``): a forward hook per layer keeps its output, a pre-hook on the output's grad_fn keeps
    the gradient reaching it, and after backward, per batch, the outputs are reduced stacked per shape (sum of
    squares, between-sample spread, saturated or dead units; at most ``FORWARD_SAMPLE`` values each, as the
    recorder reads them), the output and parameter gradients in two fused norms, and everything is copied to the
    host once. No restoring of the model, no diagnosis, no bookkeeping across batches."""
    seed = Config().probe.seed
    model.train(Config().probe.mode == "train")
    params = [p for p in model.parameters() if p.requires_grad]
    layers = [m for m in model.modules() if m._parameters or activation_name(m) is not None]
    kept: list[tuple[str, torch.Tensor]] = []
    grads: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return
        kind = "sat" if isinstance(module, (nn.Tanh, nn.Sigmoid)) else "rect" if isinstance(module, nn.ReLU) else ""
        kept.append((kind, output.detach()))
        if output.grad_fn is not None:
            slot = output.output_nr
            output.grad_fn.register_prehook(lambda g: grads.append(g[slot]))

    handles = [m.register_forward_hook(keep) for m in layers]
    try:
        for i, batch in enumerate(batches):
            for p in params:
                p.grad = None
            kept.clear()
            grads.clear()
            out = probes.call_model(model, batch)
            probes.default_loss(probes.select_output(out), seed, i).backward()
            values: list[torch.Tensor] = []
            groups: dict[tuple[Any, ...], list[torch.Tensor]] = {}
            for kind, o in kept:
                rows = o.reshape(o.shape[0], -1)
                step = -(-rows.numel() // FORWARD_SAMPLE)
                if step > 1:
                    values.append(torch.linalg.vector_norm(o).reshape(1))
                    rows = rows[:, ::step]
                groups.setdefault((kind, rows.shape), []).append(rows)
            for (kind, _), group in groups.items():
                x = torch.stack(group)
                mean = x.mean(dim=1)
                var = (x - mean.unsqueeze(1)).square_().mean(dim=1)
                values += [(var + mean.square()).sum(dim=1), var.sqrt_().mean(dim=1)]
                if kind == "sat":
                    values.append(x.abs().gt_(0.97).flatten(1).sum(dim=1))
                elif kind == "rect":
                    values.append((mean > 0).sum(dim=1).float())
            values += [
                torch.stack(torch._foreach_norm(g))
                for g in (grads, [p.grad for p in params if p.grad is not None])
                if g
            ]
            torch.cat(values).cpu()
    finally:
        for handle in handles:
            handle.remove()
    for p in params:
        p.grad = None


def run_gradients_floor(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """The least any recorder of per-layer output-gradient RMS pays, hooks or not (``--floor``): a forward hook per
    layer keeps a reference to its output, and one ``torch.autograd.grad`` call returns the gradients of every
    layer output and every parameter from autograd's C++ engine, with no Python running during backward; then two
    fused norms and one host copy per batch. No forward statistics at all."""
    seed = Config().probe.seed
    model.train(Config().probe.mode == "train")
    params = [p for p in model.parameters() if p.requires_grad]
    layers = [m for m in model.modules() if m._parameters or activation_name(m) is not None]
    kept: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:
            kept.append(output)

    handles = [m.register_forward_hook(keep) for m in layers]
    try:
        for i, batch in enumerate(batches):
            kept.clear()
            out = probes.call_model(model, batch)
            loss = probes.default_loss(probes.select_output(out), seed, i)
            grads = torch.autograd.grad(loss, kept + params, allow_unused=True)
            outputs, weights = grads[: len(kept)], grads[len(kept) :]
            kept.clear()
            for p, g in zip(params, weights, strict=True):
                p.grad = g
            norms = [[g for g in part if g is not None] for part in (outputs, weights)]
            torch.cat([torch.stack(torch._foreach_norm(part)) for part in norms if part]).cpu()
    finally:
        for handle in handles:
            handle.remove()
    for p in params:
        p.grad = None


MODES: dict[str, Callable[[nn.Module, list[torch.Tensor]], None]] = {"plain": run_plain, "scan": run_scan}
# the floors are timed only (--floor), never memory modes
TIMED = {**MODES, "floor": run_floor, "gradients": run_gradients_floor}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- time -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Seconds per batch for one mode: wall clock (median, minimum) and this process's CPU time (median)."""

    median: float
    minimum: float
    cpu_median: float
    rounds: tuple[float, ...]  # wall clock of each round, in round order


def ratios(times: dict[str, Timing]) -> tuple[float, float, float]:
    """scan / plain: the ratio of the medians, and the smallest and largest ratio within one round (the two
    modes of a round ran back to back, so a round's ratio is the least disturbed by the machine's drift)."""
    per_round = [s / p for s, p in zip(times["scan"].rounds, times["plain"].rounds, strict=True)]
    return times["scan"].median / times["plain"].median, min(per_round), max(per_round)


def measure_time(case: Case, device: torch.device, rounds: int, modes: tuple[str, ...]) -> dict[str, Timing]:
    model, batches = setup(case, device)
    for name in modes:  # warm-up
        TIMED[name](model, batches)
    sync(device)
    wall: dict[str, list[float]] = {name: [] for name in modes}
    cpu: dict[str, list[float]] = {name: [] for name in modes}
    for r in range(rounds):
        order = modes if r % 2 == 0 else modes[::-1]
        for name in order:
            gc.collect()
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            TIMED[name](model, batches)
            sync(device)
            wall[name].append((time.perf_counter() - start) / len(batches))
            cpu[name].append((time.process_time() - start_cpu) / len(batches))
    return {
        name: Timing(statistics.median(wall[name]), min(wall[name]), statistics.median(cpu[name]), tuple(wall[name]))
        for name in modes
    }


# -- memory ---------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def memory_child(name: str, mode: str, quick: bool, rounds: int) -> dict[str, Any]:
    """Runs in a fresh process: peak resident bytes that one run of ``mode`` adds (median of ``rounds``)."""
    import resource

    device = torch.device("cpu")
    case = {**cases(quick), **sweep_cases()}[name]
    model, batches = setup(case, device)
    resettable = _reset_hwm()
    warm = MODES.values() if resettable else [MODES[mode]]
    for run in warm:
        run(model, batches)
    deltas = []
    for _ in range(rounds if resettable else 1):
        gc.collect()
        if resettable:
            _reset_hwm()
        before = _status_kib("VmRSS")
        MODES[mode](model, batches)
        if resettable:
            peak = _status_kib("VmHWM")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        deltas.append((peak - before) * 1024)
    return {
        "peak_bytes": statistics.median(deltas),
        "all": deltas,
        "method": "VmHWM" if resettable else "ru_maxrss",
        "profiler_bytes": None if quick else profiler_peak(MODES[mode], model, batches),
    }


def profiler_peak(
    run: Callable[[nn.Module, list[torch.Tensor]], None], model: nn.Module, batches: list[torch.Tensor]
) -> float:
    """Cross-check: the peak of torch's own CPU allocations, from ``torch.profiler(profile_memory=True)``.

    Each op's allocations (net of what it frees) count at its start; frees outside ops come as "[memory]"
    events. The running sum over time is the bytes torch holds; its maximum is the peak (no page or allocator
    effects).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run(model, batches)
    points = []
    for event in prof.events():
        if event.name == "[memory]":
            points.append((event.time_range.start, event.cpu_memory_usage))
        elif event.self_cpu_memory_usage:
            points.append((event.time_range.start, event.self_cpu_memory_usage))
    points.sort(key=lambda p: p[0])
    held = peak = 0
    for _, change in points:
        held += change
        peak = max(peak, held)
    return float(peak)


def measure_memory_cpu(name: str, mode: str, quick: bool, rounds: int, threads: int) -> dict[str, Any]:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--memory-child",
        name,
        mode,
        "--threads",
        str(threads),
        "--memory-rounds",
        str(rounds),
    ] + (["--quick"] if quick else [])
    env = {**os.environ, **MALLOC_ENV}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory subprocess for {name}/{mode} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_memory_cuda(case: Case, device: torch.device, mode: str) -> float:
    model, batches = setup(case, device)
    for run in MODES.values():
        run(model, batches)
    gc.collect()
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    MODES[mode](model, batches)
    sync(device)
    return float(torch.cuda.max_memory_allocated(device) - before)


# -- table ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models and few rounds (smoke test, ~30 s)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per model (default 9; quick 3)")
    parser.add_argument("--memory-rounds", type=int, default=None, help="memory runs per subprocess (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--jobs", type=int, default=2, help="memory subprocesses run at once (default 2)")
    parser.add_argument("--models", default=",".join(cases(False)), help="comma-separated subset")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help=f"time only: 64-wide tanh MLPs of depth {', '.join(map(str, SWEEP_DEPTHS))}",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time a minimal hook recorder of the same statistics (run_floor) and the gradient norms alone "
        "(run_gradients_floor)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    memory_rounds = args.memory_rounds or (1 if args.quick else 3)

    if args.memory_child:
        name, mode = args.memory_child
        print(json.dumps(memory_child(name, mode, args.quick, memory_rounds)))
        return

    rounds = args.rounds or (3 if args.quick else 9)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    all_cases = sweep_cases() if args.sweep else cases(args.quick)
    names = list(all_cases) if args.sweep else [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_cases]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(all_cases)}")

    started = time.perf_counter()
    times: dict[str, dict[str, Timing]] = {}
    for name in names:
        modes = ("plain", "scan", "floor", "gradients") if args.floor else ("plain", "scan")
        times[name] = measure_time(all_cases[name], device, rounds, modes)
        print(f"# {name}: timed ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    if args.sweep:
        print_sweep(names, all_cases, times)
        return
    memory: dict[tuple[str, str], dict[str, Any]] = {}
    if device.type == "cuda":
        method = "cuda.max_memory_allocated"
        for name in names:
            for mode in MODES:
                peak = measure_memory_cuda(all_cases[name], device, mode)
                memory[name, mode] = {"peak_bytes": peak, "all": [peak], "profiler_bytes": None}
    else:
        jobs = [(name, mode) for name in names for mode in MODES]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = pool.map(
                lambda job: measure_memory_cpu(job[0], job[1], args.quick, memory_rounds, args.threads), jobs
            )
            memory = dict(zip(jobs, results, strict=True))
        method = memory[jobs[0]]["method"]
    print(f"# memory measured ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    header = [
        "model",
        "params",
        "batch",
        "plain ms/batch",
        "scan ms/batch",
        "time × (min–max)",
        "target",
        "plain peak MB",
        "scan peak MB",
        "memory ×",
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    for name in names:
        case = all_cases[name]
        n_params = sum(p.numel() for p in case.build().parameters())
        plain_t, scan_t = times[name]["plain"], times[name]["scan"]
        plain_s, scan_s = plain_t.median, scan_t.median
        plain, scan = memory[name, "plain"], memory[name, "scan"]
        plain_mem, scan_mem = plain["peak_bytes"], scan["peak_bytes"]
        rows.append(
            [
                name,
                f"{n_params / 1e6:.2f}M",
                case.batch,
                f"{plain_s * 1e3:.1f}",
                f"{scan_s * 1e3:.1f}",
                "{:.2f} ({:.2f}–{:.2f})".format(*ratios(times[name])),
                f"≤ {case.target:.2f}",
                f"{plain_mem / 2**20:.1f}",
                f"{scan_mem / 2**20:.1f}",
                f"{scan_mem / plain_mem:.3f}" if plain_mem > 0 else "n/a",
            ]
        )
        note = (
            f"{name}: time × of the minimums {scan_t.minimum / plain_t.minimum:.3f} "
            f"({plain_t.minimum * 1e3:.1f} / {scan_t.minimum * 1e3:.1f} ms), of the median CPU times "
            f"{scan_t.cpu_median / plain_t.cpu_median:.3f} ({plain_t.cpu_median * 1e3:.1f} / "
            f"{scan_t.cpu_median * 1e3:.1f} ms); peak MB per run: plain {_mbs(plain['all'])}, "
            f"scan {_mbs(scan['all'])}"
        )
        if "floor" in times[name]:
            note += "; " + _floor_note(times[name])
        if plain["profiler_bytes"] is not None and scan["profiler_bytes"] is not None:
            note += (
                f"; torch allocations (profiler): plain {plain['profiler_bytes'] / 2**20:.1f}, "
                f"scan {scan['profiler_bytes'] / 2**20:.1f}"
            )
        notes.append(note)

    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:  # the model name left-aligned, numbers right-aligned
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("| " + " | ".join(cells) + " |")
    print()
    where = "" if device.type == "cuda" else f" in a fresh subprocess per model and mode, median of {memory_rounds}"
    print(
        f"device {device}, torch {torch.__version__}, threads {args.threads}, "
        f"{Config().probe.batches} batches "
        f"per scan, {rounds} timed rounds (medians); memory: {method}{where}; "
        f"targets: time as in the table, memory ≤ {MEMORY_TARGET:.2f}×"
    )
    for note in notes:
        print(f"  {note}")


def print_sweep(names: list[str], all_cases: dict[str, Case], times: dict[str, dict[str, Timing]]) -> None:
    floor = all("floor" in times[name] for name in names)
    print(
        "| model | layers | plain ms/batch | scan ms/batch | time × (min–max) |"
        + (" floor × | gradients-only floor × |" if floor else "")
    )
    print("|---|---|---|---|---|" + ("---|---|" if floor else ""))
    for name in names:
        layers = sum(1 for m in all_cases[name].build().modules() if not list(m.children()))
        plain, scan = times[name]["plain"].median, times[name]["scan"].median
        ratio, low, high = ratios(times[name])
        extra = (
            f" {times[name]['floor'].median / plain:.2f} | {times[name]['gradients'].median / plain:.2f} |"
            if floor
            else ""
        )
        print(
            f"| {name} | {layers} | {plain * 1e3:.2f} | {scan * 1e3:.2f} | {ratio:.2f} ({low:.2f}–{high:.2f}) |{extra}"
        )


def _floor_note(times: dict[str, Timing]) -> str:
    plain, scan, floor, grads = times["plain"], times["scan"], times["floor"], times["gradients"]
    return (
        f"floor (run_floor) {floor.median * 1e3:.1f} ms/batch = {floor.median / plain.median:.2f}× plain "
        f"(minimums {floor.minimum / plain.minimum:.2f}×); scan / floor {scan.median / floor.median:.2f}; "
        f"gradients only (run_gradients_floor) {grads.median / plain.median:.2f}× plain "
        f"(minimums {grads.minimum / plain.minimum:.2f}×)"
    )


def _mbs(values: list[float]) -> str:
    return "/".join(f"{v / 2**20:.1f}" for v in values)


if __name__ == "__main__":
    main()
