"""Predictive validity: does gradscope's verdict on an untrained model predict whether it trains?

Each configuration of a grid of small models is trained (the ground truth) and judged at init by three predictors;
"unhealthy" predicts "fails". Compared with two naive rules from the literature.

Grid (``grid()``, 99 configurations: 53 mlp, 22 cnn, 6 sharing, 12 recurrent, 6 transformer; every builder is
seeded, so a configuration id names one set of initial weights per seed):
  mlp          digits, 64 -> [Linear(64, 64) -> (norm) -> act] x depth -> Linear(64, 10), optionally residual
               (x + block(x)); activations tanh/sigmoid/relu/gelu/elu/silu; inits default (PyTorch's), xavier
               (the activation's gain), xavier1 (gain 1), xavier0.7 (gain 0.7: backward attenuation), kaiming
               (fan-in), kaiming1.5 (1.5x: growth), orthogonal (the activation's gain), large (N(0, 1): weight x
               sqrt(fan-in) = 8, saturates); depths 4-60; BatchNorm/LayerNorm. The configurations after the first
               76 were added where the regimes meet (collapse under Adam, backward attenuation, growth).
  cnn          digits as 1x8x8 images, [Conv2d(3x3, 8 channels) -> (BatchNorm2d) -> act] x depth -> Linear(512, 10),
               optionally residual; depths 4-20, the same kinds of variation.
  recurrent    the sequence task, Embedding(16, 32) -> nn.RNN (tanh) / nn.LSTM / nn.GRU (hidden 64) -> Linear on
               the last step; lengths 10, 20, 50, 150.
  transformer  the sequence task, token + learned position embeddings (d 32) -> 2 x TransformerEncoderLayer(1 head,
               ff 64, no dropout, pre-LN or post-LN) -> Linear on the last position; lengths 10, 50, 150 (one head:
               CPU attention time grows with the heads, and 4 heads made T = 150 cost 2 min a run).
  sharing      digits, one Linear(64, 64) + Tanh/Sigmoid block called n times in a loop, next to its unrolled twin
               (n copies with the same initial weights, so both compute the same function at init).

Tasks: digits = scikit-learn's bundled digits (1797 x 64, 10 classes, chance 0.10), features standardised with the
training split's mean and std. Sequence = "classify by the first token": 2000 sequences of 16-token vocabulary, the
token at position 0 is the class (0-7, chance 0.125), every later token is a uniform distractor (0-15), so the
model must carry position 0 to the last step. Both: a seeded 80/20 split, fixed for all runs.

Ground truth: every (configuration, optimizer) pair is a case, trained with Adam (lr 1e-3) and with SGD (momentum
0.9, lr 0.1 and lr 0.01: a model "trains with SGD" when either rate trains it, so a step size that is merely too
large for a deep stack is not counted as a gradient-flow failure), 300 steps, batches of 64, cross-entropy, for
seeds 0 and 1 (the seed draws the initial weights and the batch order). A run whose loss turns non-finite stops
there and is evaluated as it is.
Labelling rule: score = (held-out accuracy - chance) / (reference - chance), where reference is the best
seed-mean held-out accuracy any configuration of the same task reaches under either optimizer (what a healthy model
of that task reaches in this budget). A case "trains" when every seed scores >= 0.8, "fails" when every seed
scores <= 0.2 (near chance), and is "ambiguous" otherwise (partly trained, or seeds disagree): listed, not scored.

Predictors, on the seed-0 model before training, with the same 4 probe batches of 16 random inputs (standard
normal features / images; uniform tokens):
  gradscope    ``gradscope_unhealthy``: ``not gradscope.scan(model, batches).healthy`` (default config and loss).
  sagemaker    SageMaker Debugger's VanishingGradient / ExplodingTensor: unhealthy when any parameter tensor's mean
               |grad| < 1e-7 or any gradient is NaN/Inf, on any probe batch.
  autotrainer  AUTOTRAINER's gradient rule: with g_first / g_last the L2 gradient norms of the first and last
               weighted layer (a module owning a parameter of >= 2 dims, in forward execution order), median over
               the probe batches: vanishing when g_first / g_last < 1e-3 and g_first < 1e-4, exploding when
               g_first / g_last > 70.
  The two baselines use one plain forward/backward per batch, with cross-entropy against random labels (seeded).

Scoring: configurations (not cases) are split into a tuning and a test half by the parity of the first byte of
the SHA-256 of their id (deterministic, and stable when configurations are added). Positive = fails. Per
predictor and half: the confusion matrix, accuracy on clear cases and false alarms on models that train (FP);
then every miss.

Labels are cached in ``benchmarks/validity_labels.json`` (per-seed accuracies; the labels are recomputed from them
by the rule above, so changing the band needs no retraining). The cache records each configuration's parameter
count and a checksum of its seed-0 weights, and evaluation refuses a cache whose models no longer match.

Speed: one thread (two threads are slower when the other core is busy) and ``torch.set_flush_denormal(True)`` while
training only (vanished gradients are denormal floats, slow on CPU, and move no weight measurably); the predictors
see unflushed numbers. Labelling the full grid took 1634 s (27 min) of one core while the other core was busy (load
4-5 on 2 cores); the recurrent models at T = 150 and the transformers at T = 150 are a third of it. The SGD runs at
lr 0.01 and the 23 configurations added later took another 45 minutes (``--extend`` trains only what the cache
lacks). Evaluation from
the cache takes about 20 s. ``--quick``: a subset of 10 configurations, one seed, 100 steps, trained every time
and never cached (a smoke test of the whole pipeline, about a minute).

Usage: python benchmarks/validity.py [--relabel] [--quick] [--json PATH] [--labels PATH]
Progress goes to stderr; the Markdown tables and the misses to stdout.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

import gradscope
from gradscope.config import load_config

LABELS_PATH = Path(__file__).with_name("validity_labels.json")
SCHEMA = "gradscope.validity-labels/1"
STEPS, QUICK_STEPS = 300, 100
BATCH = 64
SEEDS, QUICK_SEEDS = (0, 1), (0,)
OPTIMIZERS = ("adam", "sgd")
# The runs behind each optimizer's label: per seed, the best of these (optimizer, learning rate) runs.
RUNS: dict[str, dict[str, tuple[str, float]]] = {
    "adam": {"adam": ("adam", 1e-3)},
    "sgd": {"sgd": ("sgd", 0.1), "sgd-0.01": ("sgd", 0.01)},
}
TRAINS_SCORE, FAILS_SCORE = 0.8, 0.2  # the labelling band, as fractions of the way from chance to the reference
PROBE_BATCHES, PROBE_BATCH = 4, 16
WIDTH, CHANNELS = 64, 8
VOCAB, SEQ_CLASSES, SEQ_SAMPLES, EMBED, HIDDEN = 16, 8, 2000, 32, 64
SAGEMAKER_THRESHOLD = 1e-7
AUTOTRAINER_RATIO_LOW, AUTOTRAINER_FIRST_LOW, AUTOTRAINER_RATIO_HIGH = 1e-3, 1e-4, 70.0

ACTS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}


# --------------------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    chance: float

    def probe_batches(self, input_shape: tuple[int, ...]) -> list[Tensor]:
        """4 batches of 16 random inputs: standard normal features (digits are standardised), or uniform tokens."""
        g = torch.Generator().manual_seed(0)
        shape = (PROBE_BATCH, *input_shape)
        if self.x_train.dtype == torch.long:
            return [torch.randint(0, VOCAB, shape, generator=g) for _ in range(PROBE_BATCHES)]
        return [torch.randn(shape, generator=g) for _ in range(PROBE_BATCHES)]


def split(n: int) -> tuple[Tensor, Tensor]:
    """A seeded 80/20 split of n samples: (train indices, held-out indices)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = round(0.2 * n)
    return order[n_test:], order[:n_test]


def digits_task() -> Task:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    train, test = split(len(x))
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))  # a few border pixels are always 0
    return Task("digits", x[train], y[train], x[test], y[test], chance=0.1)


def sequence_task(length: int) -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (SEQ_SAMPLES, length), generator=g)
    y = torch.randint(0, SEQ_CLASSES, (SEQ_SAMPLES,), generator=g)
    x[:, 0] = y
    train, test = split(SEQ_SAMPLES)
    return Task(f"first-token-T{length}", x[train], y[train], x[test], y[test], chance=1 / SEQ_CLASSES)


# --------------------------------------------------------------------------------------------------- models


def init_(model: nn.Module, scheme: str, act: str) -> None:
    """Re-initialise every Linear/Conv2d of ``model`` by ``scheme``; 'default' keeps PyTorch's init."""
    if scheme == "default":
        return
    gain = nn.init.calculate_gain(act) if act in ("tanh", "sigmoid", "relu") else 1.0  # type: ignore[arg-type]
    for m in model.modules():
        if not isinstance(m, nn.Linear | nn.Conv2d):
            continue
        if scheme == "xavier":
            nn.init.xavier_uniform_(m.weight, gain=gain)
        elif scheme == "xavier1":
            nn.init.xavier_uniform_(m.weight, gain=1.0)
        elif scheme == "xavier0.7":  # shrinks the signal ×0.7 a layer in both directions: backward attenuation
            nn.init.xavier_uniform_(m.weight, gain=0.7)
        elif scheme == "kaiming":
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif scheme == "kaiming1.5":  # 1.5× Kaiming: the signal grows a layer at a time (exploding)
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            m.weight.data.mul_(1.5)
        elif scheme == "orthogonal":
            nn.init.orthogonal_(m.weight, gain=gain)
        elif scheme == "large":
            nn.init.normal_(m.weight, 0.0, 1.0)
        else:
            raise ValueError(f"unknown init {scheme!r}")
        nn.init.zeros_(m.bias)


class Residual(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def mlp(act: str, init: str, depth: int, norm: str = "", residual: bool = False) -> nn.Module:
    blocks: list[nn.Module] = []
    for _ in range(depth):
        layers: list[nn.Module] = [nn.Linear(WIDTH, WIDTH)]
        if norm:
            layers.append(nn.BatchNorm1d(WIDTH) if norm == "bn" else nn.LayerNorm(WIDTH))
        layers.append(ACTS[act]())
        blocks.append(Residual(nn.Sequential(*layers)) if residual else nn.Sequential(*layers))
    model = nn.Sequential(*blocks, nn.Linear(WIDTH, 10))
    init_(model, init, act)
    return model


def cnn(act: str, init: str, depth: int, norm: str = "", residual: bool = False) -> nn.Module:
    blocks: list[nn.Module] = []
    for i in range(depth):
        layers: list[nn.Module] = [nn.Conv2d(1 if i == 0 else CHANNELS, CHANNELS, 3, padding=1)]
        if norm:
            layers.append(nn.BatchNorm2d(CHANNELS))
        layers.append(ACTS[act]())
        block = nn.Sequential(*layers)
        blocks.append(Residual(block) if residual and i > 0 else block)
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), *blocks, nn.Flatten(), nn.Linear(CHANNELS * 64, 10))
    init_(model, init, act)
    return model


class Recurrent(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, EMBED)
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind](EMBED, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, SEQ_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self.tokens(x))
        return self.head(out[:, -1])


class Transformer(nn.Module):
    def __init__(self, length: int, norm_first: bool) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, EMBED)
        self.positions = nn.Embedding(length, EMBED)
        self.layers = nn.Sequential(
            *(
                nn.TransformerEncoderLayer(EMBED, 1, 64, dropout=0.0, batch_first=True, norm_first=norm_first)
                for _ in range(2)
            )
        )
        # pre-LN leaves the residual stream unnormalised; the usual final norm goes before the head
        self.norm = nn.LayerNorm(EMBED) if norm_first else nn.Identity()
        self.head = nn.Linear(EMBED, SEQ_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        h = self.tokens(x) + self.positions(torch.arange(x.shape[1], device=x.device))
        return self.head(self.norm(self.layers(h))[:, -1])


class SharedLoop(nn.Module):
    """One block called ``n`` times: its weights get the sum of n gradients."""

    def __init__(self, block: nn.Module, n: int) -> None:
        super().__init__()
        self.block, self.n = block, n
        self.head = nn.Linear(WIDTH, 10)

    def forward(self, x: Tensor) -> Tensor:
        for _ in range(self.n):
            x = self.block(x)
        return self.head(x)


def sharing(act: str, init: str, n: int, unrolled: bool) -> nn.Module:
    block = nn.Sequential(nn.Linear(WIDTH, WIDTH), ACTS[act]())
    init_(block, init, act)
    shared = SharedLoop(block, n)
    if not unrolled:
        return shared
    return nn.Sequential(*(copy.deepcopy(block) for _ in range(n)), shared.head)


# --------------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Spec:
    id: str
    family: str
    task: str  # "digits" or "first-token-T{length}"
    input_shape: tuple[int, ...]  # one sample's
    make: Callable[[], nn.Module]
    quick: bool = False

    def build(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return self.make()


def grid() -> list[Spec]:
    specs: list[Spec] = []

    def digits_model(family: str, name: str, make: Callable[[], nn.Module], quick: bool = False) -> None:
        specs.append(Spec(f"{family}-{name}", family, "digits", (64,), make, quick))

    mlps: list[tuple[str, str, int, str, bool]] = [  # act, init, depth, norm, residual
        ("relu", "kaiming", 4, "", False),
        ("relu", "default", 4, "", False),
        ("relu", "default", 10, "", False),
        ("relu", "default", 20, "", False),
        ("relu", "kaiming", 20, "", False),
        ("relu", "kaiming", 60, "", False),
        ("relu", "orthogonal", 30, "", False),
        ("relu", "large", 6, "", False),
        ("relu", "default", 30, "bn", False),
        ("relu", "kaiming", 60, "ln", True),
        ("tanh", "default", 4, "", False),
        ("tanh", "default", 10, "", False),
        ("tanh", "default", 20, "", False),
        ("tanh", "default", 30, "", False),
        ("tanh", "xavier", 20, "", False),
        ("tanh", "xavier", 30, "", False),
        ("tanh", "xavier", 60, "", False),
        ("tanh", "xavier1", 20, "", False),
        ("tanh", "orthogonal", 30, "", False),
        ("tanh", "large", 4, "", False),
        ("tanh", "large", 10, "", False),
        ("tanh", "default", 30, "bn", False),
        ("tanh", "default", 30, "ln", False),
        ("tanh", "default", 30, "", True),
        ("sigmoid", "default", 4, "", False),
        ("sigmoid", "default", 10, "", False),
        ("sigmoid", "xavier", 10, "", False),
        ("sigmoid", "xavier1", 20, "", False),
        ("sigmoid", "large", 4, "", False),
        ("sigmoid", "default", 30, "bn", False),
        ("sigmoid", "default", 30, "", True),
        ("gelu", "default", 10, "", False),
        ("gelu", "kaiming", 20, "", False),
        ("elu", "kaiming", 20, "", False),
        ("silu", "default", 20, "", False),
        ("silu", "kaiming", 30, "ln", False),
        # added to map the regimes more finely (collapse under Adam, backward-only attenuation, growth)
        ("relu", "default", 8, "", False),
        ("relu", "default", 12, "", False),
        ("relu", "default", 15, "", False),
        ("gelu", "default", 6, "", False),
        ("gelu", "default", 15, "", False),
        ("elu", "default", 10, "", False),
        ("silu", "default", 10, "", False),
        ("tanh", "default", 8, "", False),
        ("sigmoid", "default", 6, "", False),
        ("tanh", "xavier0.7", 10, "", False),
        ("tanh", "xavier0.7", 20, "", False),
        ("tanh", "xavier0.7", 30, "", False),
        ("silu", "orthogonal", 20, "", False),
        ("tanh", "xavier", 40, "", False),
        ("tanh", "xavier", 50, "", False),
        ("relu", "kaiming1.5", 10, "", False),
        ("relu", "kaiming1.5", 20, "", False),
    ]
    quick_mlps = {("relu", "kaiming", 4), ("tanh", "default", 30), ("sigmoid", "default", 10)}
    for act, init, depth, norm, residual in mlps:
        name = f"{act}-{init}-d{depth}" + (f"-{norm}" if norm else "") + ("-res" if residual else "")
        make = (lambda a, i, d, n, r: lambda: mlp(a, i, d, n, r))(act, init, depth, norm, residual)
        digits_model("mlp", name, make, (act, init, depth) in quick_mlps and not norm and not residual)

    cnns: list[tuple[str, str, int, str, bool]] = [
        ("relu", "kaiming", 4, "", False),
        ("relu", "default", 4, "", False),
        ("relu", "default", 8, "", False),
        ("relu", "default", 12, "", False),
        ("relu", "default", 20, "", False),
        ("relu", "kaiming", 12, "", False),
        ("relu", "kaiming", 20, "", False),
        ("relu", "default", 20, "bn", False),
        ("relu", "default", 20, "", True),
        ("tanh", "default", 8, "", False),
        ("tanh", "xavier", 12, "", False),
        ("tanh", "large", 6, "", False),
        ("sigmoid", "default", 4, "", False),
        ("sigmoid", "default", 8, "", False),
        ("gelu", "kaiming", 12, "", False),
        ("silu", "orthogonal", 12, "", False),
        ("relu", "default", 10, "", False),
        ("relu", "default", 15, "", False),
        ("gelu", "default", 10, "", False),
        ("silu", "orthogonal", 8, "", False),
        ("silu", "orthogonal", 16, "", False),
        ("tanh", "xavier0.7", 12, "", False),
    ]
    quick_cnns = {("relu", "default", 8), ("sigmoid", "default", 8)}
    for act, init, depth, norm, residual in cnns:
        name = f"{act}-{init}-d{depth}" + (f"-{norm}" if norm else "") + ("-res" if residual else "")
        make = (lambda a, i, d, n, r: lambda: cnn(a, i, d, n, r))(act, init, depth, norm, residual)
        digits_model("cnn", name, make, (act, init, depth) in quick_cnns and not norm and not residual)

    for act, init, n in [("tanh", "default", 10), ("tanh", "xavier", 20), ("sigmoid", "default", 6)]:
        for unrolled in (False, True):
            make = (lambda a, i, k, u: lambda: sharing(a, i, k, u))(act, init, n, unrolled)
            name = f"{'unrolled' if unrolled else 'shared'}-{act}-{init}-n{n}"
            digits_model("sharing", name, make, (act, n) == ("tanh", 10))

    for kind in ("rnn", "lstm", "gru"):
        for length in (10, 20, 50, 150):
            make = (lambda k: lambda: Recurrent(k))(kind)
            quick = kind == "lstm" and length in (10, 50)
            specs.append(Spec(f"{kind}-T{length}", "recurrent", f"first-token-T{length}", (length,), make, quick))
    for norm_first in (True, False):
        for length in (10, 50, 150):
            make = (lambda t, nf: lambda: Transformer(t, nf))(length, norm_first)
            name = f"transformer-{'preln' if norm_first else 'postln'}-T{length}"
            quick = norm_first and length == 50
            specs.append(Spec(name, "transformer", f"first-token-T{length}", (length,), make, quick))
    return specs


def halves(specs: list[Spec]) -> dict[str, str]:
    """Config id -> 'tuning' or 'test' by the parity of its SHA-256's first byte: a configuration keeps its half
    when others are added to the grid (an alternation over sorted ids would reshuffle them)."""
    return {s.id: ("tuning", "test")[hashlib.sha256(s.id.encode()).digest()[0] % 2] for s in specs}


def fingerprint(model: nn.Module) -> dict[str, Any]:
    """Parameter count and sum of |weights| (6 digits): detects a builder that changed since labelling."""
    params = list(model.parameters())
    total = sum(float(p.detach().abs().double().sum()) for p in params)
    return {"parameters": sum(p.numel() for p in params), "abs_sum": float(f"{total:.6g}")}


# --------------------------------------------------------------------------------------------------- training


@contextmanager
def flush_denormal() -> Iterator[None]:
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train(spec: Spec, task: Task, run: str, seed: int, steps: int) -> dict[str, Any]:
    """Train the seed's model for ``steps`` minibatches; held-out and training accuracy at the end."""
    started = time.perf_counter()
    model = spec.build(seed)
    kind, lr = next(r[run] for r in RUNS.values() if run in r)
    if kind == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    n = len(task.x_train)
    order, pos, diverged = torch.randperm(n, generator=g), 0, False
    model.train()
    with flush_denormal():
        for _ in range(steps):
            if pos + BATCH > n:
                order, pos = torch.randperm(n, generator=g), 0
            idx = order[pos : pos + BATCH]
            pos += BATCH
            loss = F.cross_entropy(model(task.x_train[idx]), task.y_train[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        return {
            "seed": seed,
            "test_accuracy": round(accuracy(model, task.x_test, task.y_test), 4),
            "train_accuracy": round(accuracy(model, task.x_train, task.y_train), 4),
            "diverged": diverged,
            "seconds": round(time.perf_counter() - started, 2),
        }


def relabel(
    specs: list[Spec],
    tasks: dict[str, Task],
    seeds: tuple[int, ...],
    steps: int,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train every run of every configuration (reusing the runs ``previous`` already holds for it)."""
    started = time.perf_counter()
    configs: dict[str, Any] = {}
    names = [name for runs in RUNS.values() for name in runs]
    for k, spec in enumerate(specs, 1):
        old = (previous or {}).get("configs", {}).get(spec.id, {})
        have = old.get("runs", {}) if old and matches(old, spec) else {}
        runs = {
            name: have[name] if name in have else [train(spec, tasks[spec.task], name, seed, steps) for seed in seeds]
            for name in names
        }
        configs[spec.id] = {"family": spec.family, "task": spec.task, **fingerprint(spec.build(0)), "runs": runs}
        accs = "  ".join(f"{o} " + "/".join(f"{r['test_accuracy']:.3f}" for r in rs) for o, rs in runs.items())
        print(f"[{k}/{len(specs)}] {spec.id}: {accs}  ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    cache = {
        "schema": SCHEMA,
        "settings": {
            "steps": steps,
            "batch": BATCH,
            "seeds": list(seeds),
            "runs": {
                name: {"optimizer": kind, "lr": lr, **({"momentum": 0.9} if kind == "sgd" else {})}
                for runs in RUNS.values()
                for name, (kind, lr) in runs.items()
            },  # fmt: skip
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "seconds": round(time.perf_counter() - started, 1),
        "configs": configs,
    }
    add_labels(cache)
    return cache


# --------------------------------------------------------------------------------------------------- labels


def references(cache: dict[str, Any]) -> dict[str, float]:
    """Per task kind (digits / sequence): the best seed-mean held-out accuracy of any configuration and optimizer."""
    best: dict[str, float] = {}
    for entry in cache["configs"].values():
        kind = task_kind(entry["task"])
        for runs in entry["runs"].values():
            best[kind] = max(best.get(kind, 0.0), statistics.fmean(r["test_accuracy"] for r in runs))
    return best


def task_kind(task: str) -> str:
    return "digits" if task == "digits" else "sequence"


def chance(task: str) -> float:
    return 0.1 if task == "digits" else 1 / SEQ_CLASSES


def label(accuracies: list[float], chance_acc: float, reference: float) -> str:
    scores = [(a - chance_acc) / (reference - chance_acc) for a in accuracies]
    if all(s >= TRAINS_SCORE for s in scores):
        return "trains"
    if all(s <= FAILS_SCORE for s in scores):
        return "fails"
    return "ambiguous"


def best_accuracies(entry: dict[str, Any], optimizer: str) -> list[float]:
    """Per seed, the best held-out accuracy over the optimizer's runs (SGD: both learning rates)."""
    runs = [entry["runs"][name] for name in RUNS[optimizer] if name in entry["runs"]]
    return [max(run[i]["test_accuracy"] for run in runs) for i in range(len(runs[0]))]


def add_labels(cache: dict[str, Any]) -> None:
    """Write each case's label (by the rule in the module docstring) next to its runs."""
    refs = references(cache)
    cache["references"] = refs
    for entry in cache["configs"].values():
        ref = refs[task_kind(entry["task"])]
        entry["labels"] = {opt: label(best_accuracies(entry, opt), chance(entry["task"]), ref) for opt in OPTIMIZERS}


# --------------------------------------------------------------------------------------------------- predictors


def gradscope_unhealthy(
    model: nn.Module, batches: list[Tensor], optimizer: str, *, details: dict[str, Any] | None = None
) -> bool:
    """gradscope's verdict at init: ``not report.healthy``. ``details``, when given, receives ``report.to_dict()``.

    The only place this benchmark calls gradscope.
    """
    config = load_config().with_overrides({"diagnose.optimizer": optimizer})
    report = gradscope.scan(model, batches, config=config)
    if details is not None:
        details.update(report.to_dict())
    return not report.healthy


@dataclass
class Gradients:
    """Per probe batch: each parameter's mean |grad| and finiteness, the first/last weighted layer's grad norm."""

    mean_abs: list[dict[str, float]] = field(default_factory=list)
    finite: list[bool] = field(default_factory=list)
    first_norm: list[float] = field(default_factory=list)
    last_norm: list[float] = field(default_factory=list)
    time_ratio: list[float] = field(default_factory=list)  # |dL/d token embedding| at position 0 / at position T-1


def plain_gradients(model: nn.Module, batches: list[Tensor], classes: int) -> Gradients:
    """One forward/backward per batch with cross-entropy against random labels; the model is left as it was."""
    model = copy.deepcopy(model)  # a copy keeps BatchNorm statistics and .grad of the caller's model untouched
    model.train()
    order: list[nn.Module] = []

    def seen(module: nn.Module, _args: Any) -> None:
        if module not in order:
            order.append(module)

    weighted = [m for m in model.modules() if any(p.dim() >= 2 for p in m.parameters(recurse=False))]
    handles = [m.register_forward_pre_hook(seen) for m in weighted]
    embeddings: list[Tensor] = []

    def keep(_module: nn.Module, _args: Any, output: Tensor) -> None:
        output.retain_grad()
        embeddings.append(output)

    tokens = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)  # registered first
    if tokens is not None:
        handles.append(tokens.register_forward_hook(keep))
    g = torch.Generator().manual_seed(0)
    out = Gradients()
    try:
        for x in batches:
            model.zero_grad(set_to_none=True)
            embeddings.clear()
            logits = model(x)
            target = torch.randint(0, classes, (len(x),), generator=g)
            F.cross_entropy(logits, target).backward()
            grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
            out.mean_abs.append({n: float(gr.abs().mean()) for n, gr in grads.items()})
            out.finite.append(all(bool(torch.isfinite(gr).all()) for gr in grads.values()))
            out.first_norm.append(weight_grad_norm(order[0]))
            out.last_norm.append(weight_grad_norm(order[-1]))
            if embeddings and embeddings[0].grad is not None:
                per_step = embeddings[0].grad.norm(dim=(0, 2))
                out.time_ratio.append(float(per_step[0] / per_step[-1]))
    finally:
        for h in handles:
            h.remove()
    return out


def weight_grad_norm(module: nn.Module) -> float:
    grads = [p.grad for p in module.parameters(recurse=False) if p.dim() >= 2 and p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0


def sagemaker_unhealthy(grads: Gradients) -> bool:
    vanishing = any(v < SAGEMAKER_THRESHOLD for batch in grads.mean_abs for v in batch.values())
    return vanishing or not all(grads.finite)


def autotrainer_ratio(grads: Gradients) -> tuple[float, float]:
    """(g_first / g_last, g_first), each norm the median over the probe batches."""
    first, last = statistics.median(grads.first_norm), statistics.median(grads.last_norm)
    return (first / last if last > 0 else math.inf), first


def autotrainer_unhealthy(grads: Gradients) -> bool:
    ratio, first = autotrainer_ratio(grads)
    vanishing = ratio < AUTOTRAINER_RATIO_LOW and first < AUTOTRAINER_FIRST_LOW
    return vanishing or ratio > AUTOTRAINER_RATIO_HIGH or not math.isfinite(ratio)


# --------------------------------------------------------------------------------------------------- scoring

PREDICTORS = ("gradscope", "sagemaker", "autotrainer")


@dataclass
class Case:
    config: str
    family: str
    half: str
    optimizer: str
    label: str
    accuracies: list[float]
    predictions: dict[str, bool]  # predictor -> unhealthy
    evidence: dict[str, Any]


def error_findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"rule": f["rule"], "layers": f["layers"], "evidence": f["evidence"]}
        for f in report["findings"]
        if f["severity"] == "error"
    ]


def evaluate(specs: list[Spec], tasks: dict[str, Task], cache: dict[str, Any]) -> list[Case]:
    split_of = halves(specs)
    cases: list[Case] = []
    for k, spec in enumerate(specs, 1):
        entry = cache["configs"][spec.id]
        model = spec.build(0)
        batches = tasks[spec.task].probe_batches(spec.input_shape)
        grads = plain_gradients(model, batches, 10 if spec.task == "digits" else SEQ_CLASSES)
        ratio, first = autotrainer_ratio(grads)
        common = {
            "sagemaker_min_mean_abs_grad": min(v for batch in grads.mean_abs for v in batch.values()),
            "autotrainer_ratio": ratio,
            "autotrainer_first_norm": first,
        }
        if grads.time_ratio:
            common["time_step_grad_ratio"] = statistics.median(grads.time_ratio)
        for opt in OPTIMIZERS:
            report: dict[str, Any] = {}
            unhealthy = gradscope_unhealthy(model, batches, opt, details=report)
            evidence = {**common, "gradscope_summary": report["summary"], "gradscope_errors": error_findings(report)}
            evidence["gradscope_warnings"] = sorted(
                {f["rule"] for f in report["findings"] if f["severity"] == "warning"}
            )
            predictions = {
                "gradscope": unhealthy,
                "sagemaker": sagemaker_unhealthy(grads),
                "autotrainer": autotrainer_unhealthy(grads),
            }
            accs = best_accuracies(entry, opt)
            case = Case(spec.id, spec.family, split_of[spec.id], opt, entry["labels"][opt], accs, predictions, evidence)
            cases.append(case)
        print(f"[{k}/{len(specs)}] scanned {spec.id}", file=sys.stderr)
    return cases


@dataclass
class Confusion:
    tp: int = 0  # predicted unhealthy, fails
    fp: int = 0  # predicted unhealthy, trains: a false alarm
    tn: int = 0
    fn: int = 0  # called healthy, fails

    @property
    def clear(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.clear if self.clear else math.nan


def confusion(cases: list[Case], predictor: str) -> Confusion:
    c = Confusion()
    for case in cases:
        if case.label == "ambiguous":
            continue
        fails, unhealthy = case.label == "fails", case.predictions[predictor]
        c.tp += fails and unhealthy
        c.fp += unhealthy and not fails
        c.tn += not unhealthy and not fails
        c.fn += fails and not unhealthy
    return c


def markdown(cases: list[Case], cache: dict[str, Any]) -> str:
    lines = [
        "| predictor | half | clear cases | TP | FP (false alarms on models that train) | TN | FN | accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for predictor in PREDICTORS:
        for half in ("tuning", "test", "all"):
            c = confusion([x for x in cases if half in ("all", x.half)], predictor)
            lines.append(
                f"| {predictor} | {half} | {c.clear} | {c.tp} | {c.fp} | {c.tn} | {c.fn} | "
                f"{c.tp + c.tn}/{c.clear} = {c.accuracy:.2f} |"
            )
    families = sorted({x.family for x in cases})
    lines += ["", "| predictor | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    for predictor in PREDICTORS:
        cells = []
        for family in families:
            c = confusion([x for x in cases if x.family == family], predictor)
            cells.append(f"{c.tp + c.tn}/{c.clear}")
        lines.append(f"| {predictor} | " + " | ".join(cells) + " |")
    counts = {lab: sum(x.label == lab for x in cases) for lab in ("trains", "fails", "ambiguous")}
    refs = ", ".join(f"{k} {v:.3f}" for k, v in cache["references"].items())
    s = cache["settings"]
    lines += [
        "",
        f"{len({x.config for x in cases})} configurations x {len(OPTIMIZERS)} optimizers = {len(cases)} cases: "
        f"{counts['trains']} train, {counts['fails']} fail, {counts['ambiguous']} ambiguous (not scored). "
        f"Positive = fails. {s['steps']} steps, batch {s['batch']}, seeds {s['seeds']}; references {refs}; "
        f"labelling took {cache['seconds']:.0f} s on {s['threads']} thread(s).",
    ]
    return "\n".join(lines)


def misses(cases: list[Case]) -> str:
    lines = []
    for predictor in PREDICTORS:
        wrong = [x for x in cases if x.label != "ambiguous" and x.predictions[predictor] != (x.label == "fails")]
        lines.append(f"\nMisses of {predictor} ({len(wrong)}):")
        for x in wrong:
            accs = "/".join(f"{a:.3f}" for a in x.accuracies)
            said = "unhealthy" if x.predictions[predictor] else "healthy"
            line = f"  {x.half:6} {x.config} {x.optimizer}: {x.label} ({accs}), predicted {said}"
            if predictor == "gradscope":
                fired = [f"{f['rule']} {compact(f['evidence'])}" for f in x.evidence["gradscope_errors"]]
                line += "; errors: " + ("; ".join(fired) if fired else "none")
                if x.evidence["gradscope_warnings"]:
                    line += "; warnings: " + ", ".join(x.evidence["gradscope_warnings"])
            elif predictor == "sagemaker":
                line += f"; min mean|grad| {x.evidence['sagemaker_min_mean_abs_grad']:.2e}"
            else:
                line += (
                    f"; ratio {x.evidence['autotrainer_ratio']:.2e}, first {x.evidence['autotrainer_first_norm']:.2e}"
                )
            lines.append(line)
    ambiguous = [
        f"{x.config} {x.optimizer} ({'/'.join(f'{a:.3f}' for a in x.accuracies)})"
        for x in cases
        if x.label == "ambiguous"
    ]
    lines.append(f"\nAmbiguous, not scored ({len(ambiguous)}): " + ", ".join(ambiguous))
    return "\n".join(lines)


def time_steps(cases: list[Case]) -> str:
    """Sequence models: the token embedding's gradient at position 0 over that at position T-1, at init, and labels.

    Per-layer statistics cannot see vanishing in time; this number is what separates the recurrent models that train.
    """
    per_config: dict[str, dict[str, Case]] = {}
    for x in cases:
        if "time_step_grad_ratio" in x.evidence:
            per_config.setdefault(x.config, {})[x.optimizer] = x
    lines = ["", "| configuration | grad at position 0 / at T-1, at init | adam | sgd |", "|---|---|---|---|"]
    for config, per in per_config.items():
        ratio = per["adam"].evidence["time_step_grad_ratio"]
        lines.append(f"| {config} | {ratio:.1e} | {per['adam'].label} | {per['sgd'].label} |")
    return "\n".join(lines)


def compact(evidence: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in evidence.items()) + "}"


# --------------------------------------------------------------------------------------------------- main


def load_cache(path: Path, specs: list[Spec]) -> dict[str, Any]:
    cache = json.loads(path.read_text())
    if cache.get("schema") != SCHEMA:
        sys.exit(f"{path}: not a {SCHEMA} file; run with --relabel")
    missing = [s.id for s in specs if s.id not in cache["configs"]]
    changed = [s.id for s in specs if s.id in cache["configs"] and not matches(cache["configs"][s.id], s)]
    if missing or changed:
        sys.exit(f"{path}: missing {missing}, changed since labelling {changed}; run with --relabel")
    add_labels(cache)  # the rule may have changed since labelling; the accuracies have not
    return cache


def matches(entry: dict[str, Any], spec: Spec) -> bool:
    now = fingerprint(spec.build(0))
    return entry["parameters"] == now["parameters"] and math.isclose(entry["abs_sum"], now["abs_sum"], rel_tol=1e-5)


def finite(value: Any) -> Any:
    """``value`` with non-finite floats (a zero last-layer gradient gives an infinite ratio) as None: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--relabel", action="store_true", help="retrain every configuration and rewrite the labels")
    parser.add_argument(
        "--extend", action="store_true", help="train only the runs the labels cache lacks (a new learning rate)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 10 configurations, 1 seed, 100 steps")
    parser.add_argument("--json", type=Path, help="write the per-case results here")
    parser.add_argument("--labels", type=Path, default=LABELS_PATH, help="the labels cache")
    args = parser.parse_args()
    torch.set_num_threads(1)

    specs = grid()
    if args.quick:
        specs = [s for s in specs if s.quick]
    tasks = {
        name: digits_task() if name == "digits" else sequence_task(int(name.split("T")[-1]))
        for name in {s.task for s in specs}
    }
    if args.quick:
        cache = relabel(specs, tasks, QUICK_SEEDS, QUICK_STEPS)
    elif args.relabel or args.extend:
        previous = json.loads(args.labels.read_text()) if args.extend else None
        cache = relabel(specs, tasks, SEEDS, STEPS, previous)
        if previous is not None:
            cache["seconds"] = round(cache["seconds"] + previous.get("seconds", 0.0), 1)
        args.labels.write_text(json.dumps(cache, indent=1) + "\n")
    else:
        cache = load_cache(args.labels, specs)
    cases = evaluate(specs, tasks, cache)
    print(markdown(cases, cache))
    print(time_steps(cases))
    print(misses(cases))
    if args.json:
        result = {
            "labels": cache["settings"] | {"references": cache["references"], "seconds": cache["seconds"]},
            "summary": {
                p: {
                    h: vars(confusion([x for x in cases if h in ("all", x.half)], p)) for h in ("tuning", "test", "all")
                }
                for p in PREDICTORS
            },
            "cases": [vars(x) for x in cases],
        }
        args.json.write_text(json.dumps(finite(result), indent=1) + "\n")


if __name__ == "__main__":
    main()
