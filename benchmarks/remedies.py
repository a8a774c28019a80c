"""Does the remedy gradscope picks make a deep sigmoid-type MLP train? Held-out accuracy on real data, one table.

Data: scikit-learn's bundled digits (1797 8x8 images, inputs /16, 10 classes; chance ≈ 0.10). ``run_trial`` makes
its own seeded 80/20 split (1438 train / 359 held out) and feeds every run the same minibatches.
Model: 64 → [Linear(64, 64) → act] × depth → Linear(64, 10) as an ``nn.Sequential``, act ∈ {Tanh, Sigmoid},
depth ∈ {20, 30, 60}; init "default" = PyTorch's Linear init, "xavier" = ``xavier_uniform_`` with
``nn.init.calculate_gain(act)`` and zero biases on the hidden layers (the output layer keeps the default, as in
``benchmarks/pseudonorm_choices.py``). Built after ``torch.manual_seed(0)``.

Per configuration (act, init, depth, optimizer):
  scan     ``gradscope.scan(model, batches)`` with 4 batches × 16 digits inputs (the probe defaults' shape) and the
           default config. Its findings (rule, severity; the vanishing kind) go in the "scan" column.
  picked   the first suggestion of ``report.suggestions`` whose remedy is in ``remedies.apply.IN_MEMORY`` — the
           remedy the advice puts first — as the one-entry candidates dict ``{name: advice.candidates(...)[name]}``.
  auto     the candidates ``gradscope trial --remedy auto`` trains (``trial.plan``'s rule, applied to the same
           digits-probed report): every candidate when the scan has a warning or error finding, ``clip`` only
           when the scan suggested it; nothing when the scan finds no problem. The best run (highest held-out
           accuracy, ``trial.verdict``) and its accuracy are reported.
  relu+bn  a reference, not a gradscope remedy: the same depth as [Linear → BatchNorm1d → ReLU] × depth → Linear,
           ``kaiming_normal_`` (fan_in, relu) and zero biases, trained by the same loop (the ``none`` run of
           ``run_trial`` with no candidates).
All runs: ``run_trial(model, data=(X, y), steps=--steps, optimizer=sgd|adam, lr=None (SGD 0.1, Adam 1e-3),
seed=0, batch_size=64)``.

One trial per configuration trains ``none`` + the auto candidates; the picked remedy is always among them
(``candidates`` lists the scan's own suggestions first), and since every run of a trial starts from the same
weights, sees the same batches and forks the RNG per run, the picked run inside the auto trial is bit-identical
to a separate ``run_trial`` with the one-entry dict. ``--check`` verifies this on one configuration (it also runs
at the start of ``--quick``). Only when the picked remedy is not in the auto set (e.g. a scan with warnings only
that suggests clip) is it trained in a trial of its own.

Verdict column: untreated ≥ 0.90 → "trains untreated"; untreated < CHANCE_BAND (0.20) → "near chance untreated →
fixed ≥0.90" when the picked run reaches 0.90, else "not fixed: <why>"; in between → "partly trains untreated".

Speed: one thread (``--threads``; two threads ran up to 10× slower whenever the other core was busy), and
``torch.set_flush_denormal(True)``: vanished gradients are denormal floats, and CPU arithmetic on them is slow
(they are below 1.2e-38 and change no weight measurably). ``--quick``: depths 20 and 30, tanh and sigmoid, default
init, both optimizers, 150 steps (about a minute). The full grid (24 configurations, 300 steps) took 303 s of one
core (load ~3 on 2 cores; about 8 min with ``--what-if``); ``--depth60-inits default`` drops its slowest part.
``--what-if`` also trains combinations of the tool's own suggestions (normalization+clip, normalization+init+clip,
tanh: init with gain 1 + clip) wherever the picked remedy misses 0.90, to show which rule change would work; it is
not the tool's choice.

Usage: python benchmarks/remedies.py [--quick] [--steps 300] [--threads 1] [--check] [--what-if] [--json PATH]
Progress goes to stderr; the markdown table (and the per-pattern summary) to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn

import gradscope
from gradscope.advice import candidates as all_candidates
from gradscope.config import Config
from gradscope.recorder import model_facts
from gradscope.results import Remedy, Report, Severity, Suggestion, Where
from gradscope.trial import Run, TrialReport, run_trial
from gradscope.vocab import IN_MEMORY

WIDTH = 64
CLASSES = 10
BATCH = 64
PROBE_BATCHES, PROBE_BATCH = 4, 16
TRAINS = 0.90  # the goal: a picked remedy must reach this held-out accuracy
CHANCE_BAND = 0.20  # below this the untreated model is "near chance" (chance = 0.10)
ACTS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def load() -> tuple[Tensor, Tensor]:
    digits = load_digits()
    return (torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target, dtype=torch.long))


def mlp(act: str, depth: int, init: str, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(WIDTH, WIDTH)
        if init == "xavier":
            nn.init.xavier_uniform_(lin.weight, gain=nn.init.calculate_gain(act))  # type: ignore[arg-type]
            nn.init.zeros_(lin.bias)
        layers += [lin, ACTS[act]()]
    layers.append(nn.Linear(WIDTH, CLASSES))  # the output layer keeps the default init, as in pseudonorm_choices.py
    return nn.Sequential(*layers)


def relu_bn(depth: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(WIDTH, WIDTH)
        nn.init.kaiming_normal_(lin.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.BatchNorm1d(WIDTH), nn.ReLU()]
    out = nn.Linear(WIDTH, CLASSES)
    nn.init.kaiming_normal_(out.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(out.bias)
    layers.append(out)
    return nn.Sequential(*layers)


def probe_batches(x: Tensor) -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(x.shape[0], generator=g)[: PROBE_BATCHES * PROBE_BATCH]
    return [x[idx[i * PROBE_BATCH : (i + 1) * PROBE_BATCH]] for i in range(PROBE_BATCHES)]


def _name(s: Suggestion) -> str:
    return s.remedy.value.replace("_", "-")


def pick(report: Report) -> str | None:
    """The remedy the advice puts first among those a trial can apply in memory."""
    return next((_name(s) for s in report.suggestions if s.remedy in IN_MEMORY), None)


def auto_set(report: Report, available: dict[str, tuple[Suggestion, ...]]) -> dict[str, tuple[Suggestion, ...]]:
    """``trial.plan``'s ``auto`` rule on this report."""
    if not any(f.severity.rank >= Severity.WARNING.rank for f in report.findings):
        return {}
    suggested = {s.remedy for s in report.suggestions}
    return {n: s for n, s in available.items() if n != "clip" or Remedy.CLIP in suggested}


def scan_text(report: Report) -> str:
    """'healthy' or the warning/error rules, e.g. 'ERR forward_collapse, ERR vanishing(after_collapse)'."""
    parts = []
    for f in report.findings:
        if f.severity.rank < Severity.WARNING.rank:
            continue
        rule = f.rule
        if rule == "vanishing_gradient":
            kind = str(f.evidence.get("kind", ""))
            rule = (
                "vanishing("
                + {"after_forward_collapse": "after collapse", "backward_only": "backward only"}.get(kind, kind)
                + ")"
            )
        parts.append(("E " if f.severity is Severity.ERROR else "W ") + rule)
    verdict = "healthy" if report.healthy else "unhealthy"
    return verdict + (": " + ", ".join(parts) if parts else "")


def pattern(report: Report) -> str:
    """The evidence pattern the advice branches on (advice.suggest): which first branch fires."""
    rules = {f.rule: f for f in report.findings if f.severity.rank >= Severity.WARNING.rank}
    if "nonfinite" in rules:
        return "nonfinite"
    if "forward_collapse" in rules:
        return "forward_collapse"
    if "vanishing_gradient" in rules:
        return "vanishing/backward_only"
    if "forward_explosion" in rules or "exploding_gradient" in rules:
        return "exploding"
    if "saturation" in rules:
        return "saturation"
    return "none" if not rules else "other: " + ", ".join(rules)


@dataclass
class Row:
    act: str
    init: str
    depth: int
    opt: str
    scan: str = ""
    pattern: str = ""
    suggestions: list[str] = field(default_factory=list)
    untreated: float | None = None
    picked: str | None = None
    picked_acc: float | None = None
    picked_diverged: bool = False
    auto: dict[str, float | None] = field(default_factory=dict)  # every auto run's accuracy (None: diverged)
    best: str | None = None
    best_acc: float | None = None
    relu_bn: float | None = None
    relu_bn_scan: str = ""
    what_if: dict[str, float | None] = field(default_factory=dict)  # --what-if runs (None: diverged)
    seconds: float = 0.0

    def verdict(self) -> str:
        u = self.untreated or 0.0
        p = self.picked_acc or 0.0
        if u >= TRAINS:
            return "trains untreated"
        state = "near chance untreated" if u < CHANCE_BAND else f"partly trains untreated ({u:.2f})"
        if p >= TRAINS:
            return state + " → fixed ≥0.90"
        if self.picked is None:
            why = "scan finds no problem, nothing picked"
        elif self.picked_diverged:
            why = f"{self.picked} diverged"
        else:
            why = f"{self.picked} reaches {p:.2f}"
        if self.best is not None and self.best != self.picked and (self.best_acc or 0.0) >= TRAINS:
            why += f"; {self.best} would ({self.best_acc:.2f})"
        elif self.best is not None and (self.best_acc or 0.0) < TRAINS:
            why += "; no auto candidate reaches 0.90"
        return "not fixed: " + ("" if u < CHANCE_BAND else state + "; ") + why


def _runs(report: TrialReport) -> list[Run]:
    """Each arm's one run (this benchmark trains one seed per arm), the untreated model first."""
    return [arm.runs[0] for arm in report.arms]


def _acc(trial: TrialReport, name: str) -> tuple[float | None, bool]:
    run = next(r for r in _runs(trial) if r.remedy == name)
    return run.test_accuracy, run.diverged


def trial(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    cands: dict[str, tuple[Suggestion, ...]],
    steps: int,
    opt: str,
    label: str,
) -> TrialReport:
    last = [time.perf_counter(), -1]

    def progress(name: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if (done == total or now - last[0] > 20) and done != last[1]:
            last[0], last[1] = now, done
            print(f"    {label}: {name} {done}/{total}", file=sys.stderr, flush=True)

    return run_trial(
        model,
        data=data,
        candidates=cands,
        steps=steps,
        optimizer=opt,
        lr=None,
        seed=0,
        seeds=1,  # one seed per arm, as the table reports it (benchmarks/repair.py runs the trial's default 3)
        batch_size=BATCH,
        progress=progress,
    )


def what_if_candidates(available: dict[str, tuple[Suggestion, ...]], act: str) -> dict[str, tuple[Suggestion, ...]]:
    """Not gradscope's choice: combinations of its own suggestions, to see which rule change would work.
    Built only from the tool's candidates plus a global-norm clip at 1.0 (``Remedy.CLIP``, as the advice writes it)
    and, for tanh, the tool's init with gain 1 instead of calculate_gain('tanh') = 5/3."""
    clip = available.get("clip", (Suggestion(Remedy.CLIP, (), Where.MODEL, {"max_norm": 1.0}, "what-if", ()),))
    out: dict[str, tuple[Suggestion, ...]] = {}
    norm, init = available.get("normalization"), available.get("init")
    if norm:
        out["normalization+clip"] = norm + clip
    if norm and init:
        out["normalization+init+clip"] = norm + init + clip
    if init and act == "tanh":
        gain1 = tuple(replace(s, params={**s.params, "gain": 1.0}) for s in init)
        out["init(gain 1)+clip"] = gain1 + clip
    return out


def measure(
    act: str,
    init: str,
    depth: int,
    opt: str,
    steps: int,
    data: tuple[Tensor, Tensor],
    batches: list[Tensor],
    bn_cache: dict[tuple[int, str], tuple[float | None, str]],
    what_if: bool = False,
) -> Row:
    started = time.perf_counter()
    row = Row(act, init, depth, opt)
    model = mlp(act, depth, init)
    report = gradscope.scan(model, batches)
    row.scan, row.pattern = scan_text(report), pattern(report)
    row.suggestions = [_name(s) for s in report.suggestions]
    available = all_candidates(report.layers, model_facts(model), report.suggestions, Config())
    row.picked = pick(report)
    chosen = auto_set(report, available)
    label = f"{act} {init} d{depth} {opt}"
    result = trial(model, data, chosen, steps, opt, label)
    row.untreated = _runs(result)[0].test_accuracy
    row.auto = {r.remedy: (None if r.diverged else r.test_accuracy) for r in _runs(result)[1:]}
    row.best = result.best
    row.best_acc = row.auto.get(result.best) if result.best else None
    if row.picked is not None:
        if row.picked in chosen:
            row.picked_acc, row.picked_diverged = _acc(result, row.picked)
        else:
            own = trial(model, data, {row.picked: available[row.picked]}, steps, opt, label + " picked")
            row.picked_acc, row.picked_diverged = _acc(own, row.picked)
    if (depth, opt) not in bn_cache:
        reference = relu_bn(depth)
        bn_scan = scan_text(gradscope.scan(reference, batches))
        bn_acc = _runs(trial(reference, data, {}, steps, opt, f"relu+bn d{depth} {opt}"))[0].test_accuracy
        bn_cache[(depth, opt)] = (bn_acc, bn_scan)
    row.relu_bn, row.relu_bn_scan = bn_cache[(depth, opt)]
    if what_if and (row.untreated or 0.0) < TRAINS and (row.picked_acc or 0.0) < TRAINS:
        extra = what_if_candidates(available, act)
        result = trial(model, data, extra, steps, opt, label + " what-if")
        row.what_if = {r.remedy: (None if r.diverged else r.test_accuracy) for r in _runs(result)[1:]}
    row.seconds = time.perf_counter() - started
    return row


def check(data: tuple[Tensor, Tensor], batches: list[Tensor], steps: int) -> None:
    """The picked run inside the auto trial equals a separate one-entry trial (what the brief asks for)."""
    model = mlp("sigmoid", 20, "default")
    report = gradscope.scan(model, batches)
    available = all_candidates(report.layers, model_facts(model), report.suggestions, Config())
    name = pick(report)
    assert name is not None, "check: the scan picked nothing"
    chosen = auto_set(report, available)
    both = [trial(model, data, cands, steps, "sgd", "check") for cands in (chosen, {name: available[name]})]
    a, b = (_acc(t, name) for t in both)
    curves = [next(r for r in _runs(t) if r.remedy == name).curve for t in both]
    assert a == b and curves[0] == curves[1], f"check failed: {name} in auto {a} vs alone {b}"
    print(
        f"check: {name} inside auto = alone ({a[0]}); untreated {_runs(both[0])[0].test_accuracy} = "
        f"{_runs(both[1])[0].test_accuracy}",
        file=sys.stderr,
        flush=True,
    )


def fmt(v: float | None) -> str:
    return "diverged" if v is None else f"{v:.3f}"


def table(rows: list[Row], steps: int, note: str) -> str:
    head = [
        "act",
        "init",
        "depth",
        "opt",
        "scan (W/E rules)",
        "untreated",
        "picked",
        "picked acc",
        "best of auto",
        "ReLU+BN",
        "verdict",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        best = "—" if r.best is None else f"{r.best} {fmt(r.best_acc)}"
        picked_acc = "—" if r.picked is None else ("diverged" if r.picked_diverged else fmt(r.picked_acc))
        cells = [
            r.act,
            r.init,
            str(r.depth),
            r.opt,
            r.scan,
            fmt(r.untreated),
            r.picked or "— (none)",
            picked_acc,
            best,
            fmt(r.relu_bn),
            r.verdict(),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Held-out accuracy on digits (359 samples, chance 0.10) after {steps} steps, batch 64, seed 0; "
        f"SGD lr 0.1, Adam lr 1e-3. {note}"
    )
    return "\n".join(lines)


def by_pattern(rows: list[Row]) -> str:
    """For each evidence pattern: how often the picked remedy reaches 0.90 where the model needs fixing, and
    which auto candidates do (count of configurations where each reaches 0.90)."""
    out = [
        "",
        "| pattern | configs needing a fix | picked (times) | picked ≥0.90 | candidates reaching ≥0.90 (count) |",
        "|---|---|---|---|---|",
    ]
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.pattern, []).append(r)
    for pat, rs in groups.items():
        need = [r for r in rs if (r.untreated or 0.0) < TRAINS]
        picks: dict[str, int] = {}
        for r in need:
            picks[r.picked or "none"] = picks.get(r.picked or "none", 0) + 1
        ok = sum(1 for r in need if (r.picked_acc or 0.0) >= TRAINS)
        wins: dict[str, int] = {}
        for r in need:
            for name, acc in r.auto.items():
                if acc is not None and acc >= TRAINS:
                    wins[name] = wins.get(name, 0) + 1
        out.append(
            f"| {pat} | {len(need)} of {len(rs)} | "
            + ", ".join(f"{k} ({v})" for k, v in picks.items())
            + f" | {ok} | "
            + (", ".join(f"{k} ({v})" for k, v in sorted(wins.items(), key=lambda kv: -kv[1])) or "—")
            + " |"
        )
    return "\n".join(out)


def what_if_table(rows: list[Row]) -> str:
    names = list(dict.fromkeys(k for r in rows for k in r.what_if))
    head = ["act", "init", "depth", "opt", "pattern", "picked", *names]
    lines = [
        "",
        "What-if (--what-if; not the tool's choice): configurations where the picked remedy misses 0.90",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in rows:
        if not r.what_if:
            continue
        picked = "—" if r.picked is None else f"{r.picked} {fmt(r.picked_acc)}"
        cells = [
            r.act,
            r.init,
            str(r.depth),
            r.opt,
            r.pattern,
            picked,
            *(fmt(r.what_if[k]) if k in r.what_if else "—" for k in names),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset in about a minute")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (300; --quick 150)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--depth60-inits",
        nargs="+",
        default=["default", "xavier"],
        choices=["default", "xavier"],
        help="inits to run at depth 60 (the full grid's slowest part)",
    )
    parser.add_argument("--check", action="store_true", help="only verify picked-in-auto == picked alone")
    parser.add_argument("--json", default=None, help="also write every row (all auto accuracies) here")
    parser.add_argument(
        "--what-if",
        action="store_true",
        help="also train combinations of the tool's suggestions (normalization+clip, "
        "normalization+init+clip, tanh: init gain 1+clip) where the picked remedy misses 0.90",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    steps = args.steps or (150 if args.quick else 300)
    t0 = time.perf_counter()
    x, y = load()
    batches = probe_batches(x)
    if args.check or args.quick:
        check((x, y), batches, 30 if args.quick else steps)
        if args.check:
            return
    if args.quick:
        grid = [(a, "default", d, o) for a in ACTS for d in (20, 30) for o in ("sgd", "adam")]
        note = "--quick: default init, depths 20 and 30 only."
    else:
        grid = [
            (a, i, d, o)
            for a, i, d, o in itertools.product(ACTS, ("default", "xavier"), (20, 30, 60), ("sgd", "adam"))
            if d != 60 or i in args.depth60_inits
        ]
        skipped = sorted({"default", "xavier"} - set(args.depth60_inits))
        note = f"Depth 60 run for init {', '.join(args.depth60_inits)} only." if skipped else ""
    rows: list[Row] = []
    bn: dict[tuple[int, str], tuple[float | None, str]] = {}
    for n, (act, init, depth, opt) in enumerate(grid, 1):
        row = measure(act, init, depth, opt, steps, (x, y), batches, bn, what_if=args.what_if)
        rows.append(row)
        print(
            f"[{n}/{len(grid)}] {act} {init} d{depth} {opt}: {row.scan}; untreated {fmt(row.untreated)}, "
            f"picked {row.picked} {fmt(row.picked_acc)}, best {row.best} {fmt(row.best_acc)}, relu+bn "
            f"{fmt(row.relu_bn)} ({row.seconds:.0f} s; {time.perf_counter() - t0:.0f} s total)",
            file=sys.stderr,
            flush=True,
        )
    elapsed = time.perf_counter() - t0
    print(table(rows, steps, note + f" Runtime {elapsed:.0f} s on {args.threads} thread(s)."))
    print(by_pattern(rows))
    print()
    print(
        "ReLU+BN reference, scan verdict: "
        + "; ".join(f"d{d} {o}: {scan}" for (d, o), (_, scan) in sorted(bn.items()) if o == "sgd")
    )
    if args.what_if:
        print(what_if_table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"steps": steps, "seconds": round(elapsed, 1), "rows": [asdict(r) for r in rows]}, fh, indent=1)


if __name__ == "__main__":
    main()
