"""Which fix leads for a tanh/sigmoid MLP whose forward signal collapses, by depth: normalization, residual or ReLU?

``benchmarks/regimes.py`` trained every arm only on the configurations that train partly, plus one near-chance
representative per group (its shallowest depth, plain SGD), so it says little about collapsed stacks at depth 20-60.
This fills that in with its machinery (``build``, ``Runner``, ``train``, the same data, seeds, steps and arm
definitions; its docstring has them): MLPs, tanh and sigmoid, PyTorch's default init (the one that collapses) and
orthogonal (tanh also Xavier with gain 1, which does not collapse: the neighbouring regime), depth 10/20/30/60, SGD,
SGD with momentum and Adam, 3 seeds, arms none / norm / residual / gs-residual / relu (``gs-residual``: see
``_regimes``). Configurations fall in the tuning or test half as in regimes.py (SHA-256 of the id).

Every run is cached in ``benchmarks/collapse_depth_results.json`` (``--report`` reprints without training). The full
set (60 configurations, 900 runs) takes about 25 minutes of one core.

Usage: python benchmarks/collapse_depth.py [--report] [--rescan]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import torch

from gradscope.remedies.apply import Options, apply
from gradscope.vocab import Remedy

HERE = Path(__file__).resolve().parent
CACHE = HERE / "collapse_depth_results.json"
ARMS = ("none", "norm", "residual", "gs-residual", "relu")
DEPTHS = (10, 20, 30, 60)


def _regimes() -> Any:
    """regimes.py as a module, with one more arm: ``gs-residual``, the residual blocks gradscope itself suggests and
    applies in memory (``{"block": 2}``: x + f(x) around each pair of weighted layers with their activations),
    without clipping. regimes.py's own ``residual`` arm wraps every single (Linear, activation) pair."""
    spec = importlib.util.spec_from_file_location("gradscope_bench_regimes", HERE / "regimes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    own = module.prepare

    def prepare(arm: str, ctx: Any) -> Any:
        if arm != "gs-residual":
            return own(arm, ctx)
        suggestion = next((s for s in ctx.available.get("residual", ()) if s.remedy is Remedy.RESIDUAL), None)
        if suggestion is None:
            return "gradscope has no residual candidate here"
        patched = apply(ctx.base, [suggestion], Options(seed=ctx.seed))
        if patched.skipped:
            return f"gradscope skipped it: {patched.skipped[0][1]}"
        return module.Prepared(patched, patched.penalty)

    module.prepare = prepare  # Runner.measure looks it up in the module
    return module


def settings(r: Any) -> list[Any]:
    return [
        r.Setting("mlp", act, init, depth, opt)
        for act in ("tanh", "sigmoid")
        for init in ("default", "orthogonal", "xavier1")
        for depth in DEPTHS
        for opt in r.OPTIMIZERS
        if not (act == "sigmoid" and init == "xavier1")
    ]


def table(r: Any, cache: dict[str, Any]) -> str:
    lines = [
        "| config | half | scan: findings → first | untreated | norm | residual | gradscope's residual | relu | best |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    tally: dict[tuple[str, str], list[int]] = {}  # (depth band, half) → [residual wins, normalization wins]
    for s in settings(r):
        stats = {a: r.arm_stats(cache, s, a, r.STEPS, r.SEEDS) for a in ARMS}
        scan = cache["scans"].get(f"{s.id}|seed={r.SEEDS[0]}")
        if any(v is None for v in stats.values()) or scan is None:
            continue
        best = max(ARMS[1:], key=lambda a: stats[a].mean)
        lines.append(
            f"| {s.id} | {s.half} | {r.scan_text(scan)} | " + " | ".join(stats[a].text() for a in ARMS) + f" | {best} |"
        )
        if any(f["rule"] == "forward_collapse" for f in scan["findings"]):
            band = "61 weighted layers" if s.depth == 60 else "11-31 weighted layers"
            for arm in ("residual", "gs-residual"):
                wins = tally.setdefault((band, s.half, arm), [0, 0])
                wins[0 if stats[arm].mean > stats["norm"].mean else 1] += 1
    lines.append("")
    lines.append("Held-out accuracy, mean [min–max] over seeds 0-2, 300 steps (regimes.py's training).")
    lines.append("")
    lines.append("Forward collapse (the scan's finding), residual blocks against normalization, by depth and half:")
    lines.append("")
    for (band, half, arm), (res, norm) in sorted(tally.items()):
        lines.append(f"- {band}, {half} half: {arm} better in {res}, normalization in {norm}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--report", action="store_true", help="print the table from the cache; train nothing")
    parser.add_argument("--rescan", action="store_true", help="scan every configuration again with this gradscope")
    args = parser.parse_args()
    torch.set_num_threads(1)
    r = _regimes()
    cache = r.load_cache(CACHE)
    if args.rescan:  # the verdicts of the gradscope installed now; the training runs do not depend on it
        batches = r.probe_batches()
        for s in settings(r):
            for seed in r.SEEDS:
                base = r.build(s, seed)
                cache["scans"][f"{s.id}|seed={seed}"] = {
                    **r.scan(base, s, batches)[1],
                    "fingerprint": r.fingerprint(base),
                }
        r.save_cache(cache, CACHE)
    if not args.report:
        runner = r.Runner(r.load(), cache, r.STEPS, r.SEEDS, math.inf)
        todo = settings(r)
        for k, s in enumerate(todo, 1):
            runner.measure(s, ARMS)
            print(f"[{k}/{len(todo)}] {s.id} ({runner.trained} runs trained)", file=sys.stderr, flush=True)
            if k % 4 == 0:
                r.save_cache(cache, CACHE)
        r.save_cache(cache, CACHE)
    print(table(r, cache))


if __name__ == "__main__":
    main()
