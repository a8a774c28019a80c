"""Which PseudoNorm defaults train deep sigmoid-type MLPs? A measurement, printed as one table.

Data: scikit-learn's bundled digits (1797 8x8 images, inputs /16), stratified 80/20 split, seed 0.
Model: 64 → [Linear(64, 64) → act] × depth → Linear(64, 10); act ∈ {tanh, sigmoid}; depth ∈ {20, 30};
init ∈ {PyTorch default, Xavier-uniform with gain calculate_gain(act) and zero bias}.
Training: minibatches of 64, cross-entropy (mean over the batch), SGD lr 0.1 or Adam lr 1e-3, a fixed number of
steps; every variant of one setting starts from the same weights and sees the same batches (PseudoNorm has no
parameters), so the columns are paired comparisons. Reported: held-out accuracy after the last step.

Variants (PseudoNorm after the activation of every k-th hidden layer, never after the last one):
  none        untreated
  s1 k=K      per-sample RMS, scale 1
  b1 k=K      whole-batch RMS, scale 1
  ref k=K     per-sample RMS, scale = RMS of the gradient at the last hidden layer (the output side, which nothing
              attenuates), measured once on the first batch before training
  dyn k=K     per-sample RMS, scale = that same output-side RMS re-measured every step (lagged by one step)

Usage: python benchmarks/pseudonorm_choices.py [--steps 200] [--seeds 0] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

from gradscope.remedies.pseudonorm import PseudoNorm

WIDTH = 64
BATCH = 64
ACTS: dict[str, Callable[[], nn.Module]] = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@dataclass(frozen=True)
class Variant:
    name: str
    k: int = 0  # 0: no PseudoNorm
    per_sample: bool = True
    scale: str = "one"  # one | ref | dyn


def variants() -> list[Variant]:
    # k is swept for the two scale rules that matter most; per-batch and the per-step reference are measured at
    # k=2 only, to keep the whole run within a few minutes on two cores.
    return [
        Variant("none"),
        *(Variant(f"s1 k={k}", k) for k in (1, 2, 4)),
        Variant("b1 k=2", 2, per_sample=False),
        *(Variant(f"ref k={k}", k, scale="ref") for k in (1, 2, 4)),
        Variant("dyn k=2", 2, scale="dyn"),
    ]


class Tap(nn.Module):
    """Identity that records the RMS of the gradient flowing back through it (the output-side reference)."""

    def __init__(self) -> None:
        super().__init__()
        self.rms: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            x.register_hook(self._record)
        return x

    def _record(self, g: Tensor) -> None:
        self.rms = g.detach().pow(2).mean().sqrt()


def build(act: str, depth: int, init: str, variant: Variant, seed: int) -> tuple[nn.Sequential, list[PseudoNorm], Tap]:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    norms: list[PseudoNorm] = []
    for i in range(depth):
        lin = nn.Linear(64 if i == 0 else WIDTH, WIDTH)
        if init == "xavier":
            nn.init.xavier_uniform_(lin.weight, gain=nn.init.calculate_gain(act))
            nn.init.zeros_(lin.bias)
        layers += [lin, ACTS[act]()]
        if variant.k and (i + 1) % variant.k == 0 and i < depth - 1:
            pn = PseudoNorm(per_sample=variant.per_sample)
            norms.append(pn)
            layers.append(pn)
    tap = Tap()
    layers += [tap, nn.Linear(WIDTH, 10)]
    return nn.Sequential(*layers), norms, tap


def batches(n: int, steps: int, seed: int) -> Iterator[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - BATCH + 1, BATCH):
            if done == steps:
                return
            yield perm[start : start + BATCH]
            done += 1


def grad_profile(model: nn.Sequential, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Per-layer gradient attenuation (geometric mean over the hidden stack) and the last hidden layer's
    between-sample std (forward collapse), for the untreated model at init."""
    outs: list[Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: (o.retain_grad(), outs.append(o)) and None)
             for m in model if isinstance(m, (nn.Tanh, nn.Sigmoid))]
    try:
        nn.functional.cross_entropy(model(x), y).backward()
    finally:
        for h in hooks:
            h.remove()
    model.zero_grad()
    first = outs[0].grad.pow(2).mean().sqrt().item()  # type: ignore[union-attr]
    last = outs[-1].grad.pow(2).mean().sqrt().item()  # type: ignore[union-attr]
    per_layer = (first / last) ** (1 / (len(outs) - 1)) if last > 0 and first > 0 else 0.0
    return per_layer, outs[-1].detach().std(dim=0).mean().item()


def run(act: str, depth: int, init: str, opt: str, variant: Variant, data: tuple[Tensor, ...], steps: int,
        seed: int) -> float:
    xtr, ytr, xte, yte = data
    model, norms, tap = build(act, depth, init, variant, seed)
    if variant.scale in ("ref", "dyn"):
        idx = next(batches(len(xtr), 1, seed))
        nn.functional.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
        model.zero_grad()
        for pn in norms:
            pn.scale = float(tap.rms)  # type: ignore[arg-type]
    optim = (torch.optim.SGD(model.parameters(), lr=0.1) if opt == "sgd"
             else torch.optim.Adam(model.parameters(), lr=1e-3))
    for idx in batches(len(xtr), steps, seed):
        loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if variant.scale == "dyn" and tap.rms is not None:
            ref = float(tap.rms)
            if ref > 0 and ref == ref:
                for pn in norms:
                    pn.scale = ref
    with torch.no_grad():
        pred = model(xte).argmax(dim=1)
    return (pred == yte).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 64-wide layers gain nothing from two, and two threads ran 10-30x "
                             "slower whenever the other core was busy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--quick", action="store_true", help="one setting, for a smoke test")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Vanished gradients are denormal floats; CPU arithmetic on them is ~100x slower and would dominate the run.
    torch.set_flush_denormal(True)
    t0 = time.perf_counter()

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    itr, ite = train_test_split(range(len(y)), test_size=0.2, random_state=0, stratify=digits.target)
    data = (x[itr], y[itr], x[ite], y[ite])

    settings = list(itertools.product(("tanh", "sigmoid"), (20, 30), ("default", "xavier"), ("sgd", "adam")))
    if args.quick:
        settings = settings[:1]
    vs = variants()
    rows: list[list[str]] = []
    means = {v.name: 0.0 for v in vs}
    for act, depth, init, opt in settings:
        base, _, _ = build(act, depth, init, Variant("none"), args.seeds[0])
        att, spread = grad_profile(base, data[0][:BATCH], data[1][:BATCH])
        row = [f"{act} d{depth} {init} {opt}", f"{att:.2f}", f"{spread:.0e}"]
        for v in vs:
            acc = sum(run(act, depth, init, opt, v, data, args.steps, s) for s in args.seeds) / len(args.seeds)
            means[v.name] += acc / len(settings)
            row.append(f"{acc:.3f}")
        rows.append(row)
        print(" | ".join(row), flush=True)

    head = ["setting", "att/layer", "fwd std"] + [v.name for v in vs]
    rows.append(["mean", "", ""] + [f"{means[v.name]:.3f}" for v in vs])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print()
    print("held-out accuracy on digits (chance 0.10); att/layer = gradient RMS ratio per hidden layer at init, "
          "fwd std = between-sample std at the last hidden layer")
    for r in [head, *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print(f"\nsteps={args.steps} batch={BATCH} seeds={args.seeds} threads={args.threads} "
          f"runtime {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
