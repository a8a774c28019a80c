"""Which PseudoNorm defaults help deep sigmoid-type MLPs train? A measurement, printed as one table.

Data: scikit-learn's bundled digits (1797 8x8 images, inputs /16), stratified 80/20 split, seed 0.
Model: 64 → [Linear(64, 64) → act] × depth → Linear(64, 10); act ∈ {tanh, sigmoid}; depth ∈ {20, 30};
init ∈ {PyTorch default, Xavier-uniform with gain calculate_gain(act) and zero bias}.
Training: minibatches of 64, cross-entropy (mean over the batch), SGD lr 0.1 or Adam lr 1e-3, --steps steps.
Within one setting and seed every variant starts from the same weights and sees the same batches (PseudoNorm has
no parameters), so the columns are paired comparisons. Reported: held-out accuracy after the last step, the
mean over --seeds.

Variants (PseudoNorm after the activation of every k-th hidden layer, never after the last one); the first
letter is the RMS axis (s: per sample, b: whole batch), the rest the scale the gradient is restored to:
  none       untreated
  s1, b1     scale 1 (the paper's "amplitudes larger than one")
  sref, bref scale = RMS of the gradient at the last hidden layer (the output side, which nothing attenuates),
             measured once on one batch before training
  sdyn       scale = that output-side RMS re-measured at every step (used from the next step)

Speed: all variants × seeds of one setting are trained together as one stacked model (batched matmuls over a
leading model axis); SGD and Adam act elementwise, so this is the same arithmetic as training each alone, which
``--check`` verifies against plain ``nn.Sequential`` models with :class:`PseudoNorm` modules (the stack itself
applies the real PseudoNorm to its reshaped activations). ``--sensitivity`` prints instead how far the scale may
be off the reference (tanh settings only). Runtime: about 220 s of CPU; 4.7 min wall when the machine's two
cores were shared with other jobs (load ~3), 7 min under load ~8.

Usage: python benchmarks/pseudonorm_choices.py [--steps 300] [--seeds 0 1] [--threads 1] [--check | --sensitivity]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

from gradscope.remedies.pseudonorm import PseudoNorm

WIDTH = 64
BATCH = 64
ACTS: dict[str, Callable[[], nn.Module]] = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
Data = tuple[Tensor, Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class Variant:
    name: str
    k: int = 0  # 0: no PseudoNorm
    per_sample: bool = True
    scale: str = "const"  # const: scale = factor; ref, dyn: scale = factor × the output-side RMS
    factor: float = 1.0

    def normalizes(self, layer: int, depth: int) -> bool:
        return self.k > 0 and (layer + 1) % self.k == 0 and layer < depth - 1


VARIANTS = [
    Variant("none"),
    Variant("s1 k=2", 2),
    Variant("b1 k=2", 2, per_sample=False),
    Variant("sref k=2", 2, scale="ref"),
    *(Variant(f"bref k={k}", k, per_sample=False, scale="ref") for k in (1, 2, 4)),
    Variant("sdyn k=2", 2, scale="dyn"),
]


def plain_mlp(act: str, depth: int, init: str, seed: int, variant: Variant | None = None) -> nn.Sequential:
    """The reference model: the weights every stacked copy starts from, and what --check compares against."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(WIDTH, WIDTH)
        if init == "xavier":
            nn.init.xavier_uniform_(lin.weight, gain=nn.init.calculate_gain(act))  # type: ignore[arg-type]
            nn.init.zeros_(lin.bias)
        layers += [lin, ACTS[act]()]
        if variant is not None and variant.normalizes(i, depth):
            layers.append(PseudoNorm(per_sample=variant.per_sample))
    layers.append(nn.Linear(WIDTH, 10))
    return nn.Sequential(*layers)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by a per-model factor (the ``scale`` of PseudoNorm)."""

    @staticmethod
    def forward(x: Tensor, factor: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.factor = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


class StackedMLP(nn.Module):
    """M copies of the MLP on a leading model axis; copy m uses ``models[m] = (variant, seed)``."""

    def __init__(self, act: str, depth: int, init: str, models: list[tuple[Variant, int]]) -> None:
        super().__init__()
        self.depth, self.act = depth, ACTS[act]()
        plains = {seed: plain_mlp(act, depth, init, seed) for seed in {s for _, s in models}}
        linears = [[m for m in plains[s] if isinstance(m, nn.Linear)] for _, s in models]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([lins[i].weight.detach().t() for lins in linears])) for i in range(depth + 1)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([lins[i].bias.detach()[None] for lins in linears])) for i in range(depth + 1)
        )
        self.scale = torch.ones(len(models), 1, 1)  # per copy, set by train_stacked
        # For each hidden layer: which copies normalise there, per sample and per batch.
        self.sample_idx: list[Tensor] = []
        self.batch_idx: list[Tensor] = []
        for i in range(depth):
            sel = [(j, v.per_sample) for j, (v, _) in enumerate(models) if v.normalizes(i, depth)]
            self.sample_idx.append(torch.tensor([j for j, ps in sel if ps], dtype=torch.long))
            self.batch_idx.append(torch.tensor([j for j, ps in sel if not ps], dtype=torch.long))
        self.per_sample_pn = PseudoNorm(per_sample=True)
        self.tap_rms: Tensor | None = None  # per-model RMS of the gradient at the last hidden layer

    def _normalize(self, h: Tensor, i: int) -> Tensor:
        m, b, d = h.shape
        for idx, per_sample in ((self.sample_idx[i], True), (self.batch_idx[i], False)):
            if idx.numel() == 0:
                continue
            # Scale first in the forward order so that it acts last in the backward pass, after the RMS division.
            sub = _ScaleGrad.apply(h[idx], self.scale[idx])  # type: ignore[no-untyped-call]
            if per_sample:  # rows of (models·batch, features): the per-sample RMS of each copy's samples
                sub = self.per_sample_pn(sub.reshape(-1, d)).view_as(sub)
            else:  # one row per copy: its whole-batch RMS
                sub = self.per_sample_pn(sub.reshape(len(idx), -1)).view_as(sub)
            h = h.index_put((idx,), sub)
        return h

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for i in range(self.depth):
            h = self.act(torch.baddbmm(self.biases[i], h, self.weights[i]))
            h = self._normalize(h, i)
        if h.requires_grad:
            h.register_hook(self._record)
        return torch.baddbmm(self.biases[-1], h, self.weights[-1])

    def _record(self, g: Tensor) -> None:
        self.tap_rms = g.detach().pow(2).mean(dim=(1, 2)).sqrt()


def minibatches(n: int, steps: int, seed: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out: list[Tensor] = []
    while len(out) < steps:
        perm = torch.randperm(n, generator=gen)
        out += [perm[s : s + BATCH] for s in range(0, n - BATCH + 1, BATCH)]
    return out[:steps]


def make_opt(params: Any, opt: str) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1) if opt == "sgd" else torch.optim.Adam(params, lr=1e-3)


def train_stacked(
    act: str, depth: int, init: str, opt: str, models: list[tuple[Variant, int]], data: Data, steps: int
) -> tuple[StackedMLP, Tensor]:
    """The trained stack and the held-out accuracy of every copy after ``steps`` steps."""
    xtr, ytr, xte, yte = data
    model = StackedMLP(act, depth, init, models)
    order = {s: minibatches(len(xtr), steps + 1, s) for s in {s for _, s in models}}
    seeds = [s for _, s in models]

    def loss_at(step: int) -> Tensor:
        idx = torch.stack([order[s][step] for s in seeds])  # (M, B)
        out = model(xtr[idx])
        # Sum over copies of each copy's mean loss: every copy gets exactly its own gradient.
        return F.cross_entropy(out.reshape(-1, 10), ytr[idx].reshape(-1), reduction="sum") / BATCH

    refs = torch.tensor([v.scale != "const" for v, _ in models])
    factor = torch.tensor([v.factor for v, _ in models])
    loss_at(steps).backward()  # calibration batch, not used for training
    assert model.tap_rms is not None
    model.scale = (factor * torch.where(refs, model.tap_rms, 1.0)).view(-1, 1, 1)
    model.zero_grad(set_to_none=True)
    dyn = torch.tensor([v.scale == "dyn" for v, _ in models]).view(-1, 1, 1)
    factor = factor.view(-1, 1, 1)
    optim = make_opt(model.parameters(), opt)
    for step in range(steps):
        optim.zero_grad(set_to_none=True)
        loss_at(step).backward()
        optim.step()
        assert model.tap_rms is not None
        fresh = model.tap_rms.view(-1, 1, 1)
        model.scale = torch.where(dyn & torch.isfinite(fresh) & (fresh > 0), factor * fresh, model.scale)
    with torch.no_grad():
        pred = model(xte.expand(len(models), -1, -1)).argmax(dim=2)
    return model, (pred == yte).float().mean(dim=1)


def train_plain(
    act: str, depth: int, init: str, opt: str, variant: Variant, seed: int, data: Data, steps: int
) -> nn.Sequential:
    """One copy trained the ordinary way, with PseudoNorm modules (for --check)."""
    xtr, ytr, _, _ = data
    model = plain_mlp(act, depth, init, seed, variant)
    order = minibatches(len(xtr), steps + 1, seed)
    norms = [m for m in model if isinstance(m, PseudoNorm)]
    grads: list[Tensor] = []
    last_hidden = len(model) - 2
    model[last_hidden].register_forward_hook(lambda _m, _i, o: o.register_hook(grads.append) and None)

    def loss_at(step: int) -> Tensor:
        return F.cross_entropy(model(xtr[order[step]]), ytr[order[step]])

    loss_at(steps).backward()
    for pn in norms:
        pn.scale = variant.factor * (grads[-1].pow(2).mean().sqrt().item() if variant.scale != "const" else 1.0)
    model.zero_grad(set_to_none=True)
    optim = make_opt(model.parameters(), opt)
    for step in range(steps):
        optim.zero_grad(set_to_none=True)
        loss_at(step).backward()
        optim.step()
        if variant.scale == "dyn":
            for pn in norms:
                pn.scale = variant.factor * grads[-1].pow(2).mean().sqrt().item()
    return model


def check(data: Data) -> None:
    """The stacked copies must follow the plain PseudoNorm models step for step. In float64: the scale-1 SGD
    runs are chaotic enough to turn float32 rounding differences into visible ones within a few steps."""
    torch.set_default_dtype(torch.float64)
    data = (data[0].double(), data[1], data[2].double(), data[3])
    steps, models = 5, [(v, s) for v in VARIANTS for s in (0, 1)]
    for act, opt in (("tanh", "sgd"), ("sigmoid", "adam")):
        stacked, _ = train_stacked(act, 8, "xavier", opt, models, data, steps)
        worst = 0.0
        for j, (v, s) in enumerate(models):
            plain = train_plain(act, 8, "xavier", opt, v, s, data, steps)
            for i, lin in enumerate(m for m in plain if isinstance(m, nn.Linear)):
                ref = lin.weight.detach().t()
                diff = (stacked.weights[i][j].detach() - ref).abs().max() / ref.abs().max()
                worst = max(worst, diff.item())
        print(
            f"check {act}/{opt}: largest relative weight difference, stacked vs plain, after {steps} steps: {worst:.1e}"
        )
        assert worst < 1e-6, "stacked training diverged from plain PseudoNorm training"
    torch.set_default_dtype(torch.float32)


def grad_profile(act: str, depth: int, init: str, data: Data) -> tuple[float, float]:
    """Geometric-mean gradient attenuation per hidden layer, and the last hidden layer's between-sample std
    (forward collapse), for the untreated model at init."""
    model = plain_mlp(act, depth, init, 0)
    outs: list[Tensor] = []

    def keep(_m: nn.Module, _i: Any, out: Tensor) -> None:
        out.retain_grad()
        outs.append(out)

    for m in model:
        if isinstance(m, (nn.Tanh, nn.Sigmoid)):
            m.register_forward_hook(keep)
    F.cross_entropy(model(data[0][:BATCH]), data[1][:BATCH]).backward()
    first, last = (o.grad.pow(2).mean().sqrt().item() for o in (outs[0], outs[-1]))  # type: ignore[union-attr]
    att = (first / last) ** (1 / (len(outs) - 1)) if first > 0 and last > 0 else 0.0
    return att, outs[-1].detach().std(dim=0).mean().item()


def load() -> Data:
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    itr, ite = train_test_split(range(len(y)), test_size=0.2, random_state=0, stratify=digits.target)
    return x[itr], y[itr], x[ite], y[ite]


SENSITIVITY = [
    Variant("none"),
    *(Variant(f"bref×{f:g}", 2, per_sample=False, scale="ref", factor=f) for f in (0.1, 1.0, 4.0, 10.0, 100.0)),
    *(Variant(f"b{c:g}", 2, per_sample=False, factor=c) for c in (1e-3, 1e-2)),
]


def measure(
    settings: list[tuple[str, int, str, str]],
    variants: list[Variant],
    seeds: list[int],
    steps: int,
    data: Data,
    t0: float,
) -> None:
    models = [(v, s) for v in variants for s in seeds]
    head = ["setting", "att", "fwd std"] + [v.name for v in variants]
    rows: list[list[str]] = []
    table = torch.zeros(len(settings), len(variants))
    for r, (act, depth, init, opt) in enumerate(settings):
        att, spread = grad_profile(act, depth, init, data)
        _, acc = train_stacked(act, depth, init, opt, models, data, steps)
        table[r] = acc.view(len(variants), len(seeds)).mean(dim=1)
        rows.append(
            [f"{act} d{depth} {init} {opt}", f"{att:.2f}", f"{spread:.0e}"] + [f"{a:.2f}" for a in table[r].tolist()]
        )
        print(f"{rows[-1][0]}: done at {time.perf_counter() - t0:.0f} s", flush=True)

    def summary(label: str, mask: list[bool]) -> list[str]:
        return [label, "", ""] + [f"{a:.3f}" for a in table[torch.tensor(mask)].mean(dim=0).tolist()]

    rows.append(summary("mean SGD", [s[3] == "sgd" for s in settings]))
    rows.append(summary("mean Adam", [s[3] == "adam" for s in settings]))
    rows.append(summary("mean all", [True] * len(settings)))
    wins = (table >= table[:, :1] + 0.02).sum(dim=0) - (table <= table[:, :1] - 0.02).sum(dim=0)
    rows.append(["net wins vs none", "", ""] + [f"{int(w):+d}" for w in wins.tolist()])
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    print()
    print(
        f"held-out accuracy on digits after {steps} steps, mean of seeds {seeds} (chance 0.10). att = gradient "
        f"RMS ratio per hidden layer at init (geometric mean); fwd std = between-sample std of the last hidden "
        f"layer at init; net wins = settings >= 0.02 above untreated minus settings >= 0.02 below."
    )
    for row in [head, *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 64-wide layers gain nothing from a second one, and two threads "
        "ran 10-30x slower whenever the other core was busy",
    )
    parser.add_argument("--check", action="store_true", help="verify stacked training against plain models")
    parser.add_argument(
        "--sensitivity",
        action="store_true",
        help="instead: how far the scale may be off the reference (tanh settings, k=2, per-batch)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Vanished gradients are denormal floats; CPU arithmetic on them is slow and would dominate the run.
    torch.set_flush_denormal(True)
    t0 = time.perf_counter()
    data = load()
    if args.check:
        check(data)
        return
    acts = ("tanh",) if args.sensitivity else ("tanh", "sigmoid")
    settings = list(itertools.product(acts, (20, 30), ("default", "xavier"), ("sgd", "adam")))
    measure(settings, SENSITIVITY if args.sensitivity else VARIANTS, args.seeds, args.steps, data, t0)
    print(f"\nbatch={BATCH} threads={args.threads} runtime {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
