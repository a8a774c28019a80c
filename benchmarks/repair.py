"""Repair rate: how many of the zoo's broken models does ``gradscope trial --remedy auto`` bring to a trained state?

For every zoo model (``benchmarks/zoo``) this runs what ``GRADSCOPE_ZOO_MODEL=<name> gradscope trial
benchmarks/zoo/target.py --remedy auto [--optimizer sgd]`` runs, with the trial's defaults (300 steps, 3 seeds, batch
64, adam lr 1e-3 / sgd lr 0.1): the model file is loaded and scanned, ``plan`` picks the candidates, ``run_trial``
trains the untreated model and each candidate once per seed (each seed re-builds the model: its own init). The steps
are those of ``gradscope.pipeline.trial_target`` (the CLI's call), spelled out here so that the scan behind the
candidates is kept and that arms already in the cache are not trained again: an arm's runs depend only on the model,
the seed and the remedy with its parameters (every run is seeded; the order of the arms changes nothing), so a
cached arm is the run the CLI would make. Run ``gradscope trial`` on the same target to see the same table.

Definitions (all held-out accuracy, mean over the 3 seeds, a diverged seed counting 0):

- **trained**: ≥ 0.90 on digits; on the sequence tasks ≥ 0.90 × the mean of the healthy reference (a GRU of the
  model's hidden size, trained by the same trial settings), measured here and printed.
- **broken** (counted): every untreated seed is below the bar. Models that pass on some seed are listed, not counted.
- **repaired**: the trial's best arm (best mean among arms that diverged on no seed, as the trial picks it) is a
  remedy and its mean reaches the bar.
- **first suggestion wins**: the first candidate arm (the scan's first suggestion that the trial can apply) is the
  trial's best arm. Also shown: whether the first suggestion alone reaches the bar.

The zoo is split into a tuning half and a test half by a hash of the model name (``half``); advice changes may be
justified only by the tuning half, the test half is the honest number.

    python benchmarks/repair.py                 # all models (cached arms are reused), then the tables
    python benchmarks/repair.py --quick         # a small subset, one per family
    python benchmarks/repair.py --report        # reprint from benchmarks/repair_results.json, no training
    python benchmarks/repair.py --models a,b --max-minutes 30 --jobs 2
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "repair_results.json"
TARGET = ROOT / "benchmarks" / "zoo" / "target.py"
SCHEMA = "gradscope.zoo-repair/1"
SEEDS = 3  # the trial's default
STEPS = 300  # the trial's default


def half(name: str) -> str:
    """'tune' or 'test', from a hash of the model name (stable across runs and machines)."""
    return "tune" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "test"


def model_key(name: str, optimizer: str) -> str:
    return f"{name}|seeds={SEEDS}|steps={STEPS}|opt={optimizer}"


def arm_key(name: str, suggestions: Sequence[Any]) -> str:
    """An arm by what it trains: the remedy name and each suggestion's remedy, layers, placement and parameters."""
    from gradscope.results import json_safe

    parts = [[s.remedy.option, list(s.layers), str(s.where), json_safe(dict(s.params))] for s in suggestions]
    return name + "|" + hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- one model (runs in a worker process) -----------------------------------------------------------------------


def _setup_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def evaluate(name: str, cached_arms: dict[str, Any]) -> dict[str, Any]:
    """Scan + plan + the arms the cache lacks, exactly as ``trial_target`` does; the model's record."""
    _setup_worker()
    os.environ["GRADSCOPE_ZOO_MODEL"] = name
    from benchmarks.zoo import BY_NAME
    from gradscope import pipeline
    from gradscope.config import Config
    from gradscope.trial import UNTREATED, dataset_from, parse_remedies, plan, run_trial, untrained
    from gradscope.vocab import Severity

    entry = BY_NAME[name]
    started = time.perf_counter()
    config = Config()
    spec = pipeline.TargetSpec(target=str(TARGET))
    optimizer = None if entry.optimizer == "adam" else entry.optimizer
    config = config.with_overrides({"diagnose.optimizer": optimizer or config.trial.optimizer})  # as trial_target
    # trial_target, step by step
    prepared = pipeline.prepare(spec, config, probe=False)
    data = dataset_from(prepared.hooks)
    prepared = pipeline.replace(prepared, batches=pipeline.build_probe(prepared.model, prepared.hooks, config, spec))
    example = prepared.batches[0]
    report = pipeline.scan_prepared(prepared, spec, config, lambda _: None)
    chosen = plan(prepared.model, report, parse_remedies("auto"), config)
    fresh: dict[str, Any] = {}

    def train(chosen: Any) -> dict[str, str]:
        """The arms of ``chosen`` that neither the cache nor this call has yet, trained as run_trial trains them."""
        keys = {arm: arm_key(arm, group) for arm, group in chosen.selected.items()}
        keys[UNTREATED] = UNTREATED
        known = {**cached_arms, **fresh}
        missing = {arm: group for arm, group in chosen.selected.items() if keys[arm] not in known}
        if missing or UNTREATED not in known:
            trial = run_trial(
                prepared.model,
                candidates=missing,
                data=data,
                config=config,
                optimizer=optimizer,
                seed=config.probe.seed,
                seeds=SEEDS,
                steps=STEPS,
                build=lambda seed: pipeline.build_model(spec, config, seed),
                example=example,
                target=spec.target,
                note=chosen.note,
            )
            for arm in trial.arms:
                fresh[keys[arm.remedy]] = {
                    "remedy": arm.remedy,
                    "accuracy": [r.test_accuracy for r in arm.runs],
                    "diverged": [r.diverged for r in arm.runs],
                    "skipped": sorted({why for r in arm.runs for _, why in r.skipped}),
                    "applied": [s.remedy.option for s in (arm.runs[0].applied if arm.runs else ())],
                    "seconds": round(sum(r.seconds for r in arm.runs), 1),
                }
        return keys

    keys = train(chosen)
    # trial_target: a model the scan called healthy that no arm trains gets every candidate (planning.untrained)
    known = {**cached_arms, **fresh}
    means = [
        math.fsum(a for a in known[keys[arm]]["accuracy"] if a is not None) / SEEDS
        for arm in [UNTREATED, *chosen.selected]
        if not any(known[keys[arm]]["diverged"])
    ]
    again = untrained(chosen, max(means, default=None), config)
    if again is not None:
        chosen = again
        keys = train(chosen)
    problems = [f.rule for f in report.findings if f.severity.rank >= Severity.WARNING.rank]
    return {
        "name": name,
        "family": entry.family,
        "task": entry.task.name,
        "optimizer": entry.optimizer,
        "what": entry.what,
        "rules": list(dict.fromkeys(str(r) for r in problems)),
        "suggestions": [s.remedy.option for s in report.suggestions],
        "arms": [UNTREATED, *chosen.selected],
        "arm_keys": [keys[UNTREATED], *(keys[a] for a in chosen.selected)],
        "note": chosen.note,
        "fresh_arms": fresh,
        "seconds": round(time.perf_counter() - started, 1),
    }


def reference(task_name: str, hidden: int) -> dict[str, Any]:
    """The healthy reference of a sequence task: a GRU of the zoo models' shape, trained as the trial trains."""
    _setup_worker()
    from benchmarks.zoo import models as m
    from benchmarks.zoo.tasks import Task
    from gradscope.config import Config
    from gradscope.torchutil import seeded
    from gradscope.trial import run_trial

    onehot = "onehot" in task_name
    config = Config()

    def build(seed: int) -> Any:
        return m.recurrent(hidden, cell="gru", onehot=onehot)

    with seeded(config.probe.seed):
        model = build(config.probe.seed)
    trial = run_trial(
        model, candidates={}, data=Task(task_name, None).data(), config=config, seeds=SEEDS, steps=STEPS, build=build
    )
    accs = [r.test_accuracy for r in trial.arms[0].runs]
    return {"task": task_name, "hidden": hidden, "accuracy": accs}


# -- the cache ---------------------------------------------------------------------------------------------------


def load_results() -> dict[str, Any]:
    if RESULTS.exists():
        data: dict[str, Any] = json.loads(RESULTS.read_text())
        if data.get("schema") == SCHEMA:
            return data
    return {"schema": SCHEMA, "references": {}, "arms": {}, "models": {}}


def save_results(results: dict[str, Any]) -> None:
    """Write ``results`` merged over what is on disk now (another run may have added models meanwhile)."""
    import fcntl

    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        disk = load_results()
        for section in ("references", "models"):
            disk[section].update(results[section])
        for key, arms in results["arms"].items():
            disk["arms"].setdefault(key, {}).update(arms)
        results.update(disk)
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(json.dumps(disk, indent=1, sort_keys=True) + "\n")
        tmp.replace(RESULTS)


def store(results: dict[str, Any], key: str, record: dict[str, Any]) -> None:
    arms = results["arms"].setdefault(key, {})
    arms.update(record.pop("fresh_arms"))
    results["models"][key] = record


# -- numbers -----------------------------------------------------------------------------------------------------


def _mean(accs: Sequence[float | None]) -> float:
    return math.fsum(a if a is not None else 0.0 for a in accs) / len(accs)


def bar_of(entry: Any, results: dict[str, Any]) -> float | None:
    if entry.task.bar is not None:
        return float(entry.task.bar)
    ref = results["references"].get(f"{entry.task.name}|h={entry.task.reference_hidden}")
    if ref is None:
        return None
    from benchmarks.zoo.tasks import REFERENCE_FRACTION

    return REFERENCE_FRACTION * _mean(ref["accuracy"])


from gradscope.config import TrialConfig  # noqa: E402


def summarize(record: dict[str, Any], arms: dict[str, Any], bar: float) -> dict[str, Any]:
    """Untreated stats, the trial's best arm (best mean among arms with no diverged seed; earlier wins a tie)."""
    rows = [arms[k] for k in record["arm_keys"]]
    untreated = rows[0]["accuracy"]
    u = [a if a is not None else 0.0 for a in untreated]
    best = None
    best_mean = -1.0
    for name, row in zip(record["arms"], rows, strict=True):
        if any(row["diverged"]):
            continue
        mean = _mean(row["accuracy"])
        if mean > best_mean:
            best, best_mean = name, mean
    first = record["arms"][1] if len(record["arms"]) > 1 else None
    first_mean = _mean(rows[1]["accuracy"]) if first else None
    broken = max(u) < bar
    repaired = best is not None and best != "none" and best_mean >= bar
    return {
        "untreated": (_mean(untreated), min(u), max(u)),
        "broken": broken,
        "best": best,
        "best_mean": best_mean,
        "first": first,
        "first_mean": first_mean,
        "repaired": repaired,
        "first_wins": first is not None and first == best,
        "first_repairs": first_mean is not None and first_mean >= bar and not any(rows[1]["diverged"]),
        # within the trial's own "helps" margin of the winner: the winner would not be said to beat it
        "first_close": first is not None
        and not any(rows[1]["diverged"])
        and best_mean - (first_mean or 0.0) < TrialConfig().helps_accuracy,
        "skipped": {n: r["skipped"] for n, r in zip(record["arms"], rows, strict=True) if r["skipped"]},
    }


def report(results: dict[str, Any], names: Sequence[str]) -> None:
    from benchmarks.zoo import BY_NAME

    refs = results["references"]
    if refs:
        print("## Sequence-task references (healthy GRU, same trial settings)\n")
        print("| task | hidden | held-out accuracy per seed | bar = 0.90 × mean |")
        print("|---|---|---|---|")
        for ref in refs.values():
            accs = ", ".join(f"{a:.3f}" for a in ref["accuracy"])
            print(f"| {ref['task']} | {ref['hidden']} | {accs} | {0.9 * _mean(ref['accuracy']):.3f} |")
        print()
    print("## Per model\n")
    print(
        "| model | half | family | opt | bar | untreated mean [min–max] | scan: findings → first suggestion "
        "| winning arm (mean) | first arm (mean) | repaired? |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    tally: dict[str, dict[str, int]] = {h: {"n": 0, "broken": 0, "repaired": 0, "first": 0, "first_ok": 0, "close": 0}
                                        for h in ("tune", "test", "all")}  # fmt: skip
    failures: list[str] = []
    for name in names:
        entry = BY_NAME[name]
        key = model_key(name, entry.optimizer)
        record = results["models"].get(key)
        bar = bar_of(entry, results)
        if record is None or bar is None:
            continue
        s = summarize(record, results["arms"][key], bar)
        h = half(name)
        mean, lo, hi = s["untreated"]
        findings = ", ".join(record["rules"]) or "healthy"
        first = s["first"] or "—"
        first_mean = f"{s['first_mean']:.3f}" if s["first_mean"] is not None else ""
        verdict = "yes" if s["repaired"] else ("**no**" if s["broken"] else "n/a (trains untreated)")
        print(
            f"| {name} | {h} | {entry.family} | {entry.optimizer} | {bar:.2f} | {mean:.3f} [{lo:.2f}–{hi:.2f}] "
            f"| {findings} → {first} | {s['best']} ({s['best_mean']:.3f}) | {first} ({first_mean}) | {verdict} |"
        )
        for hh in (h, "all"):
            t = tally[hh]
            t["n"] += 1
            if s["broken"]:
                t["broken"] += 1
                t["repaired"] += s["repaired"]
                t["first"] += s["first_wins"]
                t["first_ok"] += s["first_repairs"]
                t["close"] += s["first_close"]
        if s["broken"] and (not s["repaired"] or not s["first_wins"]):
            why = []
            if not s["repaired"]:
                why.append(f"not repaired (best {s['best']} {s['best_mean']:.3f} < {bar:.2f})")
            if not s["first_wins"]:
                why.append(f"first suggestion {first} ({first_mean}) lost to {s['best']} ({s['best_mean']:.3f})")
            if s["skipped"]:
                why.append(f"skipped: {s['skipped']}")
            failures.append(f"- {name} [{h}]: " + "; ".join(why))
    print("\n## Summary\n")
    print(
        "| half | models | broken untreated | repair rate | first suggestion = winner "
        "| first within 0.05 of winner | first suggestion repairs |"
    )
    print("|---|---|---|---|---|---|---|")
    for h in ("tune", "test", "all"):
        t = tally[h]
        b = max(t["broken"], 1)
        print(
            f"| {h} | {t['n']} | {t['broken']} | {t['repaired']}/{t['broken']} = {t['repaired'] / b:.0%} "
            f"| {t['first']}/{t['broken']} = {t['first'] / b:.0%} | {t['close']}/{t['broken']} = {t['close'] / b:.0%} "
            f"| {t['first_ok']}/{t['broken']} = "
            f"{t['first_ok'] / b:.0%} |"
        )
    if failures:
        print("\n## Not repaired, or the first suggestion lost\n")
        print("\n".join(failures))


# -- driver ------------------------------------------------------------------------------------------------------

QUICK = (
    "relu_mlp_d8_std001",
    "tanh_mlp_d30",
    "relu_mlp_d20_kaiming2",
    "tanh_mlp_d6_x5",
    "relu_mlp_d6_bias-3",
    "rnn_tanh_T30_h64",
    "shared_tanh_loop20",
)


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.zoo import BY_NAME, ZOO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="reprint from the cache, no training")
    parser.add_argument("--quick", action="store_true", help="a small subset (one model per family)")
    parser.add_argument("--models", help="comma-separated zoo names")
    parser.add_argument("--half", choices=("tune", "test"), help="only this half")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (1 thread each)")
    parser.add_argument("--max-minutes", type=float, default=None, help="submit no new model after this")
    parser.add_argument("--rescan", action="store_true", help="re-scan cached models (cached arms are reused)")
    args = parser.parse_args(argv)
    names = [e.name for e in ZOO]
    if args.quick:
        names = list(QUICK)
    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        for n in names:
            if n not in BY_NAME:
                parser.error(f"unknown zoo model {n!r}")
    if args.half:
        names = [n for n in names if half(n) == args.half]
    results = load_results()
    if not args.report:
        run(results, names, jobs=args.jobs, deadline=args.max_minutes, rescan=args.rescan)
    report(results, names)
    return 0


def run(results: dict[str, Any], names: Sequence[str], *, jobs: int, deadline: float | None, rescan: bool) -> None:
    from benchmarks.zoo import BY_NAME

    start = time.monotonic()
    refs_needed = {}
    for n in names:
        task = BY_NAME[n].task
        if task.bar is None:
            refs_needed[f"{task.name}|h={task.reference_hidden}"] = (task.name, task.reference_hidden)
    todo = [n for n in names if rescan or model_key(n, BY_NAME[n].optimizer) not in results["models"]]
    # Round-robin over the families, so that a deadline leaves every family partly measured.
    families: dict[str, list[str]] = {}
    for n in todo:
        families.setdefault(BY_NAME[n].family, []).append(n)
    todo = [n for group in itertools.zip_longest(*families.values()) for n in group if n is not None]
    refs = [k for k in refs_needed if k not in results["references"]]
    print(f"# {len(todo)} models and {len(refs)} references to run ({jobs} jobs)", file=sys.stderr, flush=True)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        pending: dict[Future[Any], tuple[str, str]] = {}
        queue: list[tuple[str, str]] = [("ref", k) for k in refs] + [("model", n) for n in todo]
        while queue or pending:
            while queue and len(pending) < jobs:
                if deadline is not None and time.monotonic() - start > deadline * 60:
                    print(f"# deadline: {len(queue)} left unrun", file=sys.stderr, flush=True)
                    queue.clear()
                    break
                kind, item = queue.pop(0)
                if kind == "ref":
                    fut = pool.submit(reference, *refs_needed[item])
                else:
                    key = model_key(item, BY_NAME[item].optimizer)
                    fut = pool.submit(evaluate, item, dict(results["arms"].get(key, {})))
                pending[fut] = (kind, item)
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                kind, item = pending.pop(fut)
                try:
                    value = fut.result()
                except Exception as exc:  # a model that fails to run is reported, not fatal
                    print(f"# {item}: failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                    continue
                if kind == "ref":
                    results["references"][item] = value
                else:
                    store(results, model_key(item, BY_NAME[item].optimizer), value)
                save_results(results)
                print(f"# done {item} ({value.get('seconds', '')} s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
