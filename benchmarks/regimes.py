"""Where do the seed papers' remedies win? Deep tanh/sigmoid MLPs and CNNs on real data, every remedy, several seeds.

Data: scikit-learn's bundled digits (1797 8x8 images, inputs /16, 10 classes, chance 0.10), one stratified 80/20 split
(``train_test_split(..., stratify=y, random_state=0)``: 1437 train / 360 held out), the same for every run. MLPs take
the flat 64-vector, CNNs the 1x8x8 image (an ``nn.Unflatten`` inside the model, so both take (B, 64) batches).

Models (``build``; hidden width 64, 8 channels):
  mlp  [Linear(64, 64) -> act] x depth -> Linear(64, 10); depth 10, 20, 30, 60.
  cnn  Unflatten -> [Conv2d(3x3, padding 1, 8 channels) -> act] x depth -> MaxPool2d(2) -> Flatten -> Linear(128, 10);
       depth 5, 10 (a CNN run costs 2-3x an MLP run of the same depth on one core).
  act  tanh, sigmoid.
  init of the hidden layers (the output layer keeps PyTorch's default, as in benchmarks/remedies.py): default
       (PyTorch's), xavier (xavier_uniform_ with ``nn.init.calculate_gain(act)``: 5/3 for tanh, 1 for sigmoid), xavier1
       (gain 1; tanh only: for sigmoid it is xavier), orthogonal (``orthogonal_`` with the same gain), large
       (N(0, 1): weight x sqrt(fan-in) = 8-8.5, the saturation regime). Zero biases except for default.
  A configuration is (family, act, init, depth, optimizer); seed s draws the initial weights (``torch.manual_seed(s)``)
  and the minibatch order. Seeds 0, 1, 2.

Training (``train``): 300 steps of 64 (about 13 epochs), cross-entropy, SGD lr 0.1 (``sgd``), SGD lr 0.01 with
momentum 0.9 (``sgdm``: the same effective step as plain SGD at 0.1), Adam lr 1e-3 (``adam``). Every arm of a seed
starts from that seed's untreated weights and sees the same minibatches. One thread, ``torch.set_flush_denormal(True)``
while training (vanished gradients are denormal floats, slow on CPU, and move no weight measurably). A run whose loss
turns non-finite stops there and is evaluated as it is. Reported: held-out accuracy at the end; mean and min-max over
the seeds.

Arms (``ARMS``; remedies are applied with ``gradscope.remedies.apply`` wherever gradscope can apply them in memory,
and taken from ``gradscope.advice.candidates`` on the scan of the seed's model, as ``gradscope trial`` takes them):
  none        untreated.
  pn-auto     PseudoNorm where gradscope's placement rule puts it (``placement.pseudo_norm_points``, min_ratio 0.1, on
              the scan), scale = ``reference_scale`` of the last hidden layer for the seed's first training batch (what
              ``trial`` does; benchmarks/pseudonorm_choices.py: a scale off by 4x already fails under SGD).
              "n/a" where the rule finds no insertion point.
  pn-k2/3/5   PseudoNorm after the activation of every k-th hidden block (never the last), the same reference scale.
  pn-k2-s1    every 2nd block at scale 1, the paper's "amplitudes larger than one"; Adam only (Adam does not mind
              the scale; under SGD it failed in every run of pseudonorm_choices.py and of --quick here).
  rescale     gradscope's per-layer gains W = g.W_raw (``remedies.rescale``): the scan's suggestion, else the same rule
              (``placement.rescale_gains`` against the scan's reference gradient); "n/a" when no layer is below
              ``diagnose.vanishing_warning`` of it.
  act-scale2  Ven & Lederer's rescaled activation g(z) = a.phi(z/a) with one a = 2 in every layer (the replication's
              value; the seed paper's text is not available here, see ``ScaledActivation``), weights drawn as usual.
  l2          the weight penalty lambda.sum ||W||^2 on every weighted layer (``rescale.weight_penalty`` through
              ``Patched.penalty``), lambda = ``suggest.regularize_lambda`` = 0.01 (the replication's best).
  norm        the normalization gradscope would insert (BatchNorm1d/2d after every hidden Linear/Conv), without the
              clipping the advice sometimes pairs with it.
  relu, elu   every activation replaced, all weighted layers re-initialised with Kaiming (gradscope's candidate).
  init        gradscope's init fix (Xavier with the activation's gain on every weighted layer); "n/a" where that is
              the init the model already has.
  residual    x + block(x) around every equal-shape (Linear/Conv, act) pair, same weights (not in memory in gradscope:
              built here).

Staged search (``plan``), every run cached in ``benchmarks/regimes_results.json`` keyed by its full configuration
(``run_key``: configuration, seed, arm, steps, batch, learning rate), so a rerun trains only what is missing and
``--report`` reprints every table without training:
  stage 1  the untreated grid: every configuration, 3 seeds (162 configurations).
  stage 2  every arm, 3 seeds, on (a) every configuration that trains only partly untreated (0.20 <= seed mean
           < 0.90: 38 of 162), (b) of the near-chance ones (seed mean < 0.20), one representative of each MLP
           (act, init) group: its shallowest near-chance depth, plain SGD (9; the CNN near-chance cases are the same
           collapse and saturation regimes at 2-3x the cost), and (c) a sample of healthy MLPs to check the remedies
           do no harm: depth <= 20 and the id's SHA-256 second byte 0 mod 4 (4). Stage 1 took 22 min of one core on
           a machine whose other core was busy; the full grid of arms would have taken over 3 hours.

Scan: every configuration's seed-0 model (and seeds 1-2, to see whether the verdict depends on the draw) is scanned
with ``gradscope.scan(model, batches, config=...)`` and ``diagnose.optimizer`` = sgd for sgd/sgdm, adam for adam, on
4 batches of 16 standard-normal inputs of shape (64,) (as benchmarks/validity.py: what ``gradscope scan`` feeds a
model that has no probe functions). Recorded: healthy or not, each warning/error finding (rule, severity, the
vanishing kind), the first suggestion's remedy and the first one ``trial`` can apply.

Halves: configurations are split into a tuning and a test half by the parity of the first byte of the SHA-256 of
their id (as benchmarks/validity.py). For each configuration where a seed remedy is the best arm, the summary says
whether it also wins on the neighbouring configurations of the other half (one step in depth, or another init or
optimizer, same family and activation).

Runtime: a run is 0.4-3 s on one core (MLP depth 10-60, CNN depth 5-10), a scan 0.2 s. The full search took the
minutes printed under the tables (one core; the other core of the machine was busy). ``--quick``: three
configurations, one seed, 150 steps, every arm, trained every time and never cached (about two minutes).

Usage: python benchmarks/regimes.py [--quick] [--report] [--rescan] [--stage 1|2] [--max-minutes M] [--json PATH]
Progress goes to stderr; the Markdown tables and the summary to stdout.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

import gradscope
from gradscope.advice import candidates
from gradscope.config import Config, load_config
from gradscope.recorder import model_facts
from gradscope.remedies.apply import Options, apply
from gradscope.remedies.placement import rescale_gains
from gradscope.remedies.pseudonorm import reference_scale
from gradscope.results import Report, Suggestion
from gradscope.vocab import IN_MEMORY, Remedy, Severity, Where

CACHE_PATH = Path(__file__).with_name("regimes_results.json")
SCHEMA = "gradscope.regimes/1"
STEPS, QUICK_STEPS = 300, 150
BATCH = 64
SEEDS, QUICK_SEEDS = (0, 1, 2), (0,)
WIDTH, CHANNELS, CLASSES = 64, 8, 10
PROBE_BATCHES, PROBE_BATCH = 4, 16
TRAINS = 0.90  # held-out accuracy of a model that trains (a healthy model of this grid reaches 0.93-0.97)
NEAR_CHANCE = 0.20  # a seed mean below this: near chance (0.10)
HEALTHY_SAMPLE = 4  # stage 2 trains the arms on healthy configurations whose id hash is 0 mod this
CHECK_EVERY = 25  # steps between host reads of the loss (divergence check)

ACTS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
INITS = ("default", "xavier", "xavier1", "orthogonal", "large")
DEPTHS: dict[str, tuple[int, ...]] = {"mlp": (10, 20, 30, 60), "cnn": (5, 10)}
# (optimizer class, learning rate, momentum)
OPTIMIZERS: dict[str, tuple[str, float, float]] = {
    "sgd": ("sgd", 0.1, 0.0),
    "sgdm": ("sgd", 0.01, 0.9),
    "adam": ("adam", 1e-3, 0.0),
}
PN_ARMS = ("pn-auto", "pn-k2", "pn-k3", "pn-k5", "pn-k2-s1")
ARMS = ("none", *PN_ARMS, "rescale", "act-scale2", "l2", "norm", "relu", "elu", "init", "residual")
SEED_REMEDIES: dict[str, tuple[str, ...]] = {
    "pseudo-norm": PN_ARMS,
    "per-layer rescale": ("rescale",),
    "activation rescaling a.phi(z/a)": ("act-scale2",),
    "L2 penalty": ("l2",),
}


# --------------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Setting:
    family: str
    act: str
    init: str
    depth: int
    opt: str

    @property
    def id(self) -> str:
        return f"{self.family}-{self.act}-{self.init}-d{self.depth}-{self.opt}"

    @property
    def half(self) -> str:
        return ("tuning", "test")[hashlib.sha256(self.id.encode()).digest()[0] % 2]

    @property
    def group(self) -> tuple[str, str, str, str]:
        return self.family, self.act, self.init, self.opt

    @property
    def scan_optimizer(self) -> str:
        return "adam" if self.opt == "adam" else "sgd"


def grid() -> list[Setting]:
    out = []
    for family, depths in DEPTHS.items():
        for act in ACTS:
            for init in INITS:
                if act == "sigmoid" and init == "xavier1":  # calculate_gain('sigmoid') = 1: the same as xavier
                    continue
                for depth in depths:
                    for opt in OPTIMIZERS:
                        out.append(Setting(family, act, init, depth, opt))
    return out


def quick_grid() -> list[Setting]:
    return [
        Setting("mlp", "tanh", "xavier", 30, "sgd"),  # the regime pseudonorm_choices found
        Setting("mlp", "tanh", "large", 10, "sgd"),  # large weights: the regularization case
        Setting("cnn", "tanh", "xavier", 10, "sgdm"),
    ]


# --------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Data:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load() -> Data:
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    train, test = train_test_split(list(range(len(y))), test_size=0.2, stratify=digits.target, random_state=0)
    tr, te = torch.tensor(sorted(train)), torch.tensor(sorted(test))
    return Data(x[tr], y[tr], x[te], y[te])


def batch_order(n: int, steps: int, seed: int) -> Tensor:
    """(steps, BATCH) training indices: seeded epochs of a permutation, the last partial batch of each dropped."""
    g = torch.Generator().manual_seed(10_000 + seed)
    per_epoch = n // BATCH
    rows: list[Tensor] = []
    while len(rows) < steps:
        perm = torch.randperm(n, generator=g)
        rows += [perm[i * BATCH : (i + 1) * BATCH] for i in range(per_epoch)]
    return torch.stack(rows[:steps])


def probe_batches() -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(PROBE_BATCH, WIDTH, generator=g) for _ in range(PROBE_BATCHES)]


# --------------------------------------------------------------------------------------------------- models


class ScaledActivation(nn.Module):
    """g(z) = a.phi(z/a), Ven & Lederer's rescaled sigmoid-type activation (one ``alpha`` per module).

    With a pre-activation z_k = W_k h_{k-1} + b_k and h_k = a_k.phi(z_k/a_k), the normalised h~_k = h_k/a_k follows
    h~_k = phi((a_{k-1}/a_k).W_k h~_{k-1} + b_k/a_k): per-layer a_k are the reparameterization
    W_k -> (a_{k-1}/a_k).W_k, and one a for every layer only divides the first layer's weights and every bias by a
    and multiplies the output layer by a. Unlike ``remedies.rescale`` the weights are drawn as usual, so the
    function at init changes with a.
    """

    def __init__(self, act: nn.Module, alpha: float) -> None:
        super().__init__()
        self.act, self.alpha = act, float(alpha)

    def forward(self, x: Tensor) -> Tensor:
        return self.alpha * self.act(x / self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"


class Residual(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def init_hidden(layer: nn.Module, scheme: str, act: str) -> None:
    if scheme == "default":
        return
    weight, bias = layer.weight, layer.bias
    assert isinstance(weight, Tensor) and isinstance(bias, Tensor)
    gain = nn.init.calculate_gain(act)  # type: ignore[arg-type]
    if scheme == "xavier":
        nn.init.xavier_uniform_(weight, gain=gain)
    elif scheme == "xavier1":
        nn.init.xavier_uniform_(weight, gain=1.0)
    elif scheme == "orthogonal":
        nn.init.orthogonal_(weight, gain=gain)
    elif scheme == "large":
        nn.init.normal_(weight, 0.0, 1.0)
    else:
        raise ValueError(f"unknown init {scheme!r}")
    nn.init.zeros_(bias)


def build(s: Setting, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Unflatten(1, (1, 8, 8))] if s.family == "cnn" else []
    for i in range(s.depth):
        if s.family == "mlp":
            layer: nn.Module = nn.Linear(WIDTH, WIDTH)
        else:
            layer = nn.Conv2d(1 if i == 0 else CHANNELS, CHANNELS, 3, padding=1)
        init_hidden(layer, s.init, s.act)
        layers += [layer, ACTS[s.act]()]
    if s.family == "cnn":
        layers += [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(CHANNELS * 16, CLASSES)]
    else:
        layers.append(nn.Linear(WIDTH, CLASSES))
    return nn.Sequential(*layers)


def act_names(model: nn.Sequential) -> list[str]:
    return [name for name, m in model.named_children() if isinstance(m, tuple(ACTS.values()))]


def hidden_names(model: nn.Sequential) -> list[str]:
    return [name for name, m in model.named_children() if isinstance(m, (nn.Linear, nn.Conv2d))][:-1]


def fingerprint(model: nn.Module) -> float:
    return float(f"{sum(float(p.detach().abs().double().sum()) for p in model.parameters()):.6g}")


# --------------------------------------------------------------------------------------------------- scan


def scan(model: nn.Module, s: Setting, batches: list[Tensor]) -> tuple[Report, dict[str, Any]]:
    config = load_config().with_overrides({"diagnose.optimizer": s.scan_optimizer})
    report = gradscope.scan(model, batches, config=config)
    findings = []
    for f in report.findings:
        if f.severity.rank < Severity.WARNING.rank:
            continue
        kind = f.evidence.get("kind")
        findings.append({"rule": str(f.rule), "severity": f.severity.value, **({"kind": kind} if kind else {})})
    first = report.suggestions[0].remedy.value if report.suggestions else None
    first_applicable = next((s.remedy.value for s in report.suggestions if s.remedy in IN_MEMORY), None)
    summary = {
        "healthy": report.healthy,
        "findings": findings,
        "suggestions": [s.remedy.value for s in report.suggestions],
        "first": first,
        "first_applicable": first_applicable,
        "pseudo_norm_points": next(
            (list(s.layers) for s in report.suggestions if s.remedy is Remedy.PSEUDO_NORM), None
        ),
    }
    return report, summary


def scan_text(info: dict[str, Any]) -> str:
    parts = []
    for f in info["findings"]:
        rule = f["rule"] + (f"({f['kind']})" if f.get("kind") else "")
        parts.append(("E " if f["severity"] == "error" else "W ") + rule)
    head = "healthy" if info["healthy"] else "unhealthy"
    return head + (": " + ", ".join(parts) if parts else "") + f"; 1st: {info['first'] or '—'}"


# --------------------------------------------------------------------------------------------------- arms


@dataclass
class Prepared:
    model: nn.Module
    penalty: Callable[[], Tensor | None] | None = None


@dataclass
class ArmContext:
    setting: Setting
    base: nn.Sequential  # the seed's untreated model
    report: Report
    config: Config
    available: dict[str, tuple[Suggestion, ...]]
    first_batch: tuple[Tensor, Tensor]
    seed: int
    _scale: float | None = field(default=None)

    def scale(self) -> float:
        """The RMS of the training loss's gradient at the last hidden activation, on the seed's first batch."""
        if self._scale is None:
            probe = copy.deepcopy(self.base).train()
            x, y = self.first_batch
            self._scale = reference_scale(probe, act_names(self.base)[-1], lambda: F.cross_entropy(probe(x), y))
        return self._scale


def _one(ctx: ArmContext, name: str, remedy: Remedy) -> Suggestion | None:
    return next((s for s in ctx.available.get(name, ()) if s.remedy is remedy), None)


def _patched(ctx: ArmContext, suggestions: Sequence[Suggestion], **pn: Any) -> Prepared:
    patched = apply(ctx.base, suggestions, Options(pseudo_norm_kwargs=pn, seed=ctx.seed))
    if patched.skipped:
        raise RuntimeError(f"gradscope skipped {patched.skipped}")
    return Prepared(patched, patched.penalty)


def _every_k(ctx: ArmContext, k: int) -> Suggestion:
    acts = act_names(ctx.base)
    after = tuple(name for i, name in enumerate(acts[:-1], 1) if i % k == 0)
    return Suggestion(Remedy.PSEUDO_NORM, after, Where.AFTER, {}, f"every {k}", ())


def prepare(arm: str, ctx: ArmContext) -> Prepared | str:
    """The model (and penalty) to train for ``arm``, or why the arm does not apply."""
    base = ctx.base
    if arm == "none":
        return Prepared(copy.deepcopy(base))
    if arm == "pn-auto":
        s = _one(ctx, "pseudo-norm", Remedy.PSEUDO_NORM)
        if s is None:
            return "n/a: the placement rule finds no point (the backward signal never falls below 0.1x)"
        return _patched(ctx, [s], scale=ctx.scale())
    if arm.startswith("pn-k"):
        k = int(arm.removeprefix("pn-k").split("-")[0])
        if arm.endswith("-s1") and ctx.setting.opt != "adam":
            return "n/a: scale 1 under SGD (pseudonorm_choices.py: 0.10 in every SGD run; --quick shows it too)"
        scale = 1.0 if arm.endswith("-s1") else ctx.scale()
        return _patched(ctx, [_every_k(ctx, k)], scale=scale)
    if arm == "rescale":
        s = _one(ctx, "rescale", Remedy.RESCALE)
        if s is None:
            reference = ctx.report.summary.reference_grad_rms
            gains = (
                rescale_gains(
                    ctx.report.layers,
                    reference,
                    ctx.config.diagnose.vanishing_warning,
                    ctx.config.suggest.rescale_max_gain,
                )
                if reference
                else {}
            )
            if not gains:
                return "n/a: no layer's gradient is below diagnose.vanishing_warning of the reference"
            s = Suggestion(Remedy.RESCALE, tuple(gains), Where.REPLACE, {"gains": gains}, "rule", ())
        return _patched(ctx, [s])
    if arm == "act-scale2":
        model = copy.deepcopy(base)
        for name in act_names(model):
            setattr(model, name, ScaledActivation(getattr(model, name), 2.0))
        return Prepared(model)
    if arm == "l2":
        s = _one(ctx, "regularize", Remedy.REGULARIZE)
        assert s is not None, "gradscope offers a regularize candidate for every model with weighted layers"
        return _patched(ctx, [s])
    if arm == "norm":
        s = _one(ctx, "normalization", Remedy.NORMALIZATION)
        assert s is not None, "gradscope offers normalization for every unnormalised stack"
        return _patched(ctx, [s])
    if arm in ("relu", "elu"):
        s = _one(ctx, "activation", Remedy.ACTIVATION)
        assert s is not None, "gradscope offers an activation swap for every tanh/sigmoid stack"
        activation = "ReLU" if arm == "relu" else "ELU"
        s = Suggestion(s.remedy, s.layers, s.where, {**s.params, "activation": activation}, s.reason, s.rules)
        return _patched(ctx, [s])
    if arm == "init":
        s = _one(ctx, "init", Remedy.INIT)
        if s is None:
            return "n/a: gradscope's init fix is the init the model already has"
        return _patched(ctx, [s])
    if arm == "residual":
        model = copy.deepcopy(base)
        children = list(model.named_children())
        new: list[nn.Module] = []
        i = 0
        while i < len(children):
            _, m = children[i]
            same = isinstance(m, nn.Linear) and m.in_features == m.out_features
            same = same or (isinstance(m, nn.Conv2d) and m.in_channels == m.out_channels)
            if same and i + 1 < len(children) and isinstance(children[i + 1][1], tuple(ACTS.values())):
                new.append(Residual(nn.Sequential(m, children[i + 1][1])))
                i += 2
            else:
                new.append(m)
                i += 1
        return Prepared(nn.Sequential(*new))
    raise ValueError(f"unknown arm {arm!r}")


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
        return float((model(x).argmax(1) == y).double().mean())


def train(prep: Prepared, data: Data, order: Tensor, opt: str) -> dict[str, Any]:
    started = time.perf_counter()
    kind, lr, momentum = OPTIMIZERS[opt]
    model = prep.model
    params = [p for p in model.parameters() if p.requires_grad]
    optim: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=lr) if kind == "adam" else torch.optim.SGD(params, lr=lr, momentum=momentum)
    )
    model.train()
    pending: list[Tensor] = []
    diverged, steps = False, int(order.shape[0])
    first_loss = last_loss = math.nan
    with flush_denormal():
        for step in range(steps):
            idx = order[step]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            pending.append(loss.detach())
            penalty = prep.penalty() if prep.penalty is not None else None
            total = loss if penalty is None else loss + penalty
            optim.zero_grad(set_to_none=True)
            total.backward()  # type: ignore[no-untyped-call]
            optim.step()
            if len(pending) >= CHECK_EVERY or step == steps - 1:
                values = torch.stack(pending).double().tolist()  # one host read per check
                pending.clear()
                if math.isnan(first_loss):
                    first_loss = values[0]
                last_loss = statistics.fmean(values)
                if not all(math.isfinite(v) for v in values):
                    diverged = True
                    break
        model.eval()
        test, train_acc = accuracy(model, data.x_test, data.y_test), accuracy(model, data.x_train, data.y_train)
    return {
        "test_accuracy": round(test, 4),
        "train_accuracy": round(train_acc, 4),
        "first_loss": float(f"{first_loss:.5g}"),
        "last_loss": float(f"{last_loss:.5g}") if math.isfinite(last_loss) else None,
        "diverged": diverged,
        "seconds": round(time.perf_counter() - started, 2),
    }


def run_key(s: Setting, seed: int, arm: str, steps: int) -> str:
    kind, lr, momentum = OPTIMIZERS[s.opt]
    return (
        f"{s.id}|seed={seed}|arm={arm}|steps={steps}|batch={BATCH}|{kind} lr={lr:g}"
        + (f" momentum={momentum:g}" if momentum else "")
        + f"|width={WIDTH} channels={CHANNELS}"
    )


# --------------------------------------------------------------------------------------------------- cache


def load_cache(path: Path) -> dict[str, Any]:
    if path.exists():
        cache: dict[str, Any] = json.loads(path.read_text())
        if cache.get("schema") != SCHEMA:
            raise SystemExit(f"{path}: schema {cache.get('schema')!r}, expected {SCHEMA}; move it away to retrain")
        return cache
    return {"schema": SCHEMA, "torch": torch.__version__, "runs": {}, "scans": {}, "seconds": 0.0}


def save_cache(cache: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=0, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------- measuring


class Runner:
    def __init__(self, data: Data, cache: dict[str, Any], steps: int, seeds: Sequence[int], deadline: float) -> None:
        self.data, self.cache, self.steps, self.seeds, self.deadline = data, cache, steps, tuple(seeds), deadline
        self.batches = probe_batches()
        self.trained = 0
        self.out_of_time = False

    def measure(self, s: Setting, arms: Sequence[str]) -> bool:
        """Train every missing (seed, arm) of ``s``; False when the time budget ran out first."""
        runs, scans = self.cache["runs"], self.cache["scans"]
        for seed in self.seeds:
            missing = [a for a in arms if run_key(s, seed, a, self.steps) not in runs]
            scan_key = f"{s.id}|seed={seed}"
            if not missing and scan_key in scans:
                continue
            if time.perf_counter() > self.deadline:
                self.out_of_time = True
                return False
            base = build(s, seed)
            report, info = scan(base, s, self.batches)
            old = scans.get(scan_key)
            if old is not None and old["fingerprint"] != fingerprint(base):
                raise SystemExit(f"{s.id} seed {seed}: the builder changed since it was cached; delete its runs")
            scans[scan_key] = {**info, "fingerprint": fingerprint(base)}
            if not missing:
                continue
            order = batch_order(len(self.data.y_train), self.steps, seed)
            config = load_config().with_overrides({"diagnose.optimizer": s.scan_optimizer})
            ctx = ArmContext(
                s,
                base,
                report,
                config,
                candidates(report.layers, model_facts(base), report.suggestions, config),
                (self.data.x_train[order[0]], self.data.y_train[order[0]]),
                seed,
            )
            for arm in missing:
                prepared = prepare(arm, ctx)
                if isinstance(prepared, str):
                    runs[run_key(s, seed, arm, self.steps)] = {"skipped": prepared}
                    continue
                result = train(prepared, self.data, order, s.opt)
                if arm.startswith("pn-") and not arm.endswith("-s1"):
                    result["scale"] = float(f"{ctx.scale():.4g}")
                if arm == "pn-auto":
                    result["after"] = next(
                        list(x.layers) for x in ctx.available["pseudo-norm"] if x.remedy is Remedy.PSEUDO_NORM
                    )
                runs[run_key(s, seed, arm, self.steps)] = result
                self.cache["seconds"] = round(self.cache.get("seconds", 0.0) + result["seconds"], 1)
                self.trained += 1
        return True


@dataclass
class ArmStats:
    accs: list[float]
    skipped: str | None = None
    diverged: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accs) if self.accs else math.nan

    def text(self) -> str:
        if self.skipped:
            return "n/a"
        if not self.accs:
            return "—"
        lo, hi = min(self.accs), max(self.accs)
        return f"{self.mean:.2f} [{lo:.2f}–{hi:.2f}]" + (f" ({self.diverged} div)" if self.diverged else "")


def arm_stats(cache: dict[str, Any], s: Setting, arm: str, steps: int, seeds: Sequence[int]) -> ArmStats | None:
    results = [cache["runs"].get(run_key(s, seed, arm, steps)) for seed in seeds]
    if any(r is None for r in results):
        return None
    skipped = next((r["skipped"] for r in results if r and "skipped" in r), None)
    if skipped:
        return ArmStats([], skipped)
    done = [r for r in results if r is not None]
    extra = {k: [r[k] for r in done if k in r] for k in ("scale", "after")}
    return ArmStats([r["test_accuracy"] for r in done], None, sum(r["diverged"] for r in done), extra)


def untreated(cache: dict[str, Any], s: Setting, steps: int, seeds: Sequence[int]) -> ArmStats | None:
    return arm_stats(cache, s, "none", steps, seeds)


def stage2(settings: Sequence[Setting], cache: dict[str, Any], steps: int, seeds: Sequence[int]) -> list[Setting]:
    """The configurations that get every arm, in the order they are trained (module docstring, 'Staged search')."""
    partly: list[Setting] = []
    chance: dict[tuple[str, str, str], Setting] = {}
    healthy: list[Setting] = []
    for s in settings:
        u = untreated(cache, s, steps, seeds)
        if u is None:
            continue
        if state(u) == "partly":
            partly.append(s)
        elif state(u) == "near chance" and s.family == "mlp" and s.opt == "sgd":
            key = (s.family, s.act, s.init)
            if key not in chance or s.depth < chance[key].depth:
                chance[key] = s
        elif state(u) == "trains" and s.family == "mlp" and s.depth <= 20:
            if hashlib.sha256(s.id.encode()).digest()[1] % HEALTHY_SAMPLE == 0:
                healthy.append(s)
    return partly + list(chance.values()) + healthy


# --------------------------------------------------------------------------------------------------- reporting


def state(u: ArmStats) -> str:
    """trains (seed mean >= 0.90), partly (0.20 <= mean < 0.90) or near chance (mean < 0.20)."""
    if u.mean >= TRAINS:
        return "trains"
    return "near chance" if u.mean < NEAR_CHANCE else "partly"


@dataclass
class Row:
    s: Setting
    stats: dict[str, ArmStats]
    scan: dict[str, Any]
    scans_agree: bool

    @property
    def untreated(self) -> ArmStats:
        return self.stats["none"]

    def ranked(self) -> list[tuple[str, ArmStats]]:
        return sorted(
            ((a, st) for a, st in self.stats.items() if a != "none" and st.accs),
            key=lambda kv: -kv[1].mean,
        )

    @property
    def best(self) -> tuple[str, ArmStats] | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def robust(self, arm: str) -> bool:
        """The arm's worst seed beats the untreated best seed."""
        st = self.stats.get(arm)
        return st is not None and bool(st.accs) and min(st.accs) > max(self.untreated.accs)

    def best_of(self, arms: Sequence[str]) -> tuple[str, ArmStats] | None:
        have = [(a, self.stats[a]) for a in arms if a in self.stats and self.stats[a].accs]
        return max(have, key=lambda kv: kv[1].mean) if have else None


def rows_for(settings: Sequence[Setting], cache: dict[str, Any], steps: int, seeds: Sequence[int]) -> list[Row]:
    rows = []
    for s in settings:
        stats = {a: st for a in ARMS if (st := arm_stats(cache, s, a, steps, seeds)) is not None}
        if "none" not in stats or len(stats) < 2:
            continue
        scans = [cache["scans"].get(f"{s.id}|seed={seed}") for seed in seeds]
        verdicts = {(sc["healthy"], tuple(f["rule"] for f in sc["findings"])) for sc in scans if sc}
        rows.append(Row(s, stats, scans[0] or {}, len(verdicts) <= 1))
    return rows


def grid_table(settings: Sequence[Setting], cache: dict[str, Any], steps: int, seeds: Sequence[int]) -> str:
    """Stage 1: untreated held-out accuracy, mean [min–max] over seeds, and the scan's verdict."""
    lines = [
        "| config | sgd | sgd+momentum | adam |",
        "|---|---|---|---|",
    ]
    seen: dict[tuple[str, str, str, int], dict[str, str]] = {}
    for s in settings:
        u = untreated(cache, s, steps, seeds)
        info = cache["scans"].get(f"{s.id}|seed={seeds[0]}")
        if u is None or info is None:
            continue
        cell = f"{u.text()} {'✓' if info['healthy'] else '✗'}" + ("w" if info["findings"] and info["healthy"] else "")
        seen.setdefault((s.family, s.act, s.init, s.depth), {})[s.opt] = cell
    for (family, act, init, depth), cells in seen.items():
        row = [f"{family} {act} {init} d{depth}", *(cells.get(o, "—") for o in OPTIMIZERS)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Untreated held-out accuracy, mean [min–max] over seeds; ✓ the scan (seed-0 model, the run's optimizer) calls "
        "it healthy, ✓w healthy with warnings, ✗ unhealthy."
    )
    return "\n".join(lines)


def regimes_table(rows: Sequence[Row]) -> str:
    head = ["config", "half", "scan (seed 0)", "untreated", "best arm", "best", *SEED_REMEDIES, "norm", "relu"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        best = r.best
        cells = [
            r.s.id,
            r.s.half,
            scan_text(r.scan) + ("" if r.scans_agree else " (seeds differ)"),
            f"{r.untreated.text()} {state(r.untreated)}",
            best[0] if best else "—",
            (best[1].text() + (" robust" if r.robust(best[0]) else "")) if best else "—",
        ]
        for arms in SEED_REMEDIES.values():
            b = r.best_of(arms)
            if b is None:
                cells.append("n/a")
            else:
                label = f"{b[0]} " if len(arms) > 1 else ""
                cells.append(label + b[1].text() + (" robust" if r.robust(b[0]) else ""))
        for arm in ("norm", "relu"):
            st = r.stats.get(arm)
            cells.append(st.text() if st else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Held-out accuracy mean [min–max] over seeds. 'robust': the arm's worst seed beats the untreated best seed. "
        "Seed-remedy columns show the best arm of that remedy (pseudo-norm: over pn-auto, pn-k2/3/5 at the reference "
        "scale and pn-k2 at scale 1)."
    )
    return "\n".join(lines)


def arms_table(rows: Sequence[Row]) -> str:
    head = ["config", *ARMS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        lines.append("| " + " | ".join([r.s.id, *(r.stats[a].text() if a in r.stats else "—" for a in ARMS)]) + " |")
    return "\n".join(lines)


def neighbours(s: Setting, others: Sequence[Row]) -> list[Row]:
    out = []
    depths = DEPTHS[s.family]
    for r in others:
        o = r.s
        if (o.family, o.act) != (s.family, s.act) or o.half == s.half:
            continue
        diff = [o.init != s.init, o.depth != s.depth, o.opt != s.opt]
        if sum(diff) != 1:
            continue
        if o.depth != s.depth and abs(depths.index(o.depth) - depths.index(s.depth)) != 1:
            continue
        out.append(r)
    return out


def summary(rows: Sequence[Row]) -> str:
    out = ["", "## Where each seed remedy wins", ""]
    for remedy, arms in SEED_REMEDIES.items():
        wins = [r for r in rows if r.best and r.best[0] in arms]
        helps = [
            r
            for r in rows
            if state(r.untreated) != "trains" and any(r.robust(a) for a in arms if a in r.stats) and r not in wins
        ]
        if not wins:
            out.append(f"- **{remedy}**: the best arm in none of the {len(rows)} configurations with arms.")
        else:
            out.append(f"- **{remedy}**: the best arm (by mean) in {len(wins)} of {len(rows)} configurations:")
        for r in wins:
            arm, st = r.best  # type: ignore[misc]
            extra = ""
            if st.extra.get("scale"):
                extra += f", scale {min(st.extra['scale']):.3g}–{max(st.extra['scale']):.3g}"
            if st.extra.get("after"):
                extra += f", after {len(st.extra['after'][0])} layer(s) ({', '.join(st.extra['after'][0][:6])}…)"
            second = next(((a, x) for a, x in r.ranked() if a not in arms), None)
            runner = f"; best other arm {second[0]} {second[1].text()}" if second else ""
            out.append(
                f"  - {r.s.id} ({r.s.half}): {arm} {st.text()} vs untreated {r.untreated.text()}; "
                f"worst seed beats untreated best: {'yes' if r.robust(arm) else 'no'}{extra}{runner}; "
                f"scan: {scan_text(r.scan)}"
            )
            near = neighbours(r.s, rows)
            if near:
                same = [n for n in near if n.best and n.best[0] in arms]
                beat = [n for n in near if any(n.robust(a) for a in arms if a in n.stats)]
                out.append(
                    f"    other half's neighbours: {remedy} best in {len(same)}/{len(near)}, beats untreated "
                    f"robustly in {len(beat)}/{len(near)} ("
                    + "; ".join(
                        f"{n.s.id}: best {n.best[0] if n.best else '—'}, {remedy} "
                        + (b[1].text() if (b := n.best_of(arms)) else "n/a")
                        + f" vs untreated {n.untreated.text()}"
                        for n in near
                    )
                    + ")"
                )
            else:
                out.append("    no neighbouring configuration of the other half has arms trained")
        if helps:
            out.append(
                f"  - not best, but worst seed beats the untreated best seed in {len(helps)} more failing "
                "configurations: "
                + "; ".join(
                    f"{r.s.id} {b[0]} {b[1].text()} (best {r.best[0] if r.best else '—'})"
                    for r in helps
                    if (b := r.best_of([a for a in arms if r.robust(a)]))
                )
            )
    partly_healthy = [r for r in rows if state(r.untreated) == "partly" and r.scan.get("healthy")]
    out += ["", "## Where the scan calls a model that trains only partly healthy", ""]
    if not partly_healthy:
        out.append("- none")
    for r in partly_healthy:
        best = r.best
        out.append(
            f"- {r.s.id}: untreated {r.untreated.text()}, scan {scan_text(r.scan)}; best arm "
            + (f"{best[0]} {best[1].text()}" if best else "—")
        )
    return "\n".join(out)


def untreated_partly_healthy(
    settings: Sequence[Setting], cache: dict[str, Any], steps: int, seeds: Sequence[int]
) -> str:
    lines = []
    for s in settings:
        u = untreated(cache, s, steps, seeds)
        info = cache["scans"].get(f"{s.id}|seed={seeds[0]}")
        if u is None or info is None or state(u) == "trains":
            continue
        if info["healthy"]:
            lines.append(f"- {s.id}: untreated {u.text()} ({state(u)}), scan {scan_text(info)}")
    return "\n".join(
        [
            "",
            "Untreated grid, failing or partly training but called healthy (exit 0) by the scan, with its warnings:",
            "",
            *lines,
        ]
    )


# --------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 configurations, 1 seed, 150 steps, not cached")
    parser.add_argument("--report", action="store_true", help="print the tables from the cache; train nothing")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=None, help="train only this stage")
    parser.add_argument("--max-minutes", type=float, default=math.inf, help="stop training after this long")
    parser.add_argument("--cache", type=Path, default=CACHE_PATH)
    parser.add_argument("--json", type=Path, default=None, help="also write every row's per-arm numbers here")
    parser.add_argument(
        "--rescan", action="store_true", help="scan every cached configuration again with this gradscope (no training)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    deadline = started + args.max_minutes * 60
    data = load()
    if args.quick:
        steps, seeds, settings = QUICK_STEPS, QUICK_SEEDS, quick_grid()
        cache: dict[str, Any] = {"schema": SCHEMA, "runs": {}, "scans": {}, "seconds": 0.0}
    else:
        steps, seeds, settings = STEPS, SEEDS, grid()
        cache = load_cache(args.cache)
    runner = Runner(data, cache, steps, seeds, deadline)
    if args.rescan:  # the verdicts of the gradscope installed now; the training runs do not depend on it
        for s in settings:
            for seed in seeds:
                key = f"{s.id}|seed={seed}"
                if key in cache["scans"]:
                    base = build(s, seed)
                    cache["scans"][key] = {**scan(base, s, runner.batches)[1], "fingerprint": fingerprint(base)}
        save_cache(cache, args.cache)

    def progress(stage: str, k: int, n: int, s: Setting) -> None:
        u = untreated(cache, s, steps, seeds)
        print(
            f"[{stage} {k}/{n}] {s.id}: untreated {u.text() if u else '—'} "
            f"({runner.trained} runs trained, {time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
            flush=True,
        )

    if not args.report:
        todo = [(s, ARMS if args.quick else ("none",)) for s in settings]
        if args.stage in (None, 1):
            for k, (s, arms) in enumerate(todo, 1):
                if not runner.measure(s, arms):
                    break
                progress("stage 1", k, len(todo), s)
                if not args.quick and k % 5 == 0:
                    save_cache(cache, args.cache)
        if args.stage in (None, 2) and not args.quick and not runner.out_of_time:
            chosen = stage2(settings, cache, steps, seeds)
            for k, s in enumerate(chosen, 1):
                if not runner.measure(s, ARMS):
                    break
                progress("stage 2", k, len(chosen), s)
                save_cache(cache, args.cache)
        if not args.quick:
            save_cache(cache, args.cache)
        if runner.out_of_time:
            print("stopped: --max-minutes reached; rerun to continue (the cache keeps every run)", file=sys.stderr)
    rows = rows_for(settings, cache, steps, seeds)
    print("## Untreated grid\n")
    print(grid_table(settings, cache, steps, seeds))
    print(untreated_partly_healthy(settings, cache, steps, seeds))
    print("\n## Regimes (configurations with every arm trained)\n")
    print(regimes_table(rows))
    print("\n## Every arm\n")
    print(arms_table(rows))
    print(summary(rows))
    total = cache.get("seconds", 0.0)
    print(
        f"\n{len(cache['runs'])} cached runs, {total / 60:.1f} min of training in all (one thread); this invocation "
        f"trained {runner.trained} runs in {time.perf_counter() - started:.0f} s. Steps {steps}, batch {BATCH}, "
        f"seeds {', '.join(map(str, seeds))}; SGD lr 0.1, SGD+momentum 0.9 lr 0.01, Adam lr 1e-3."
    )
    if args.json:
        dump = [
            {
                "config": r.s.id,
                "half": r.s.half,
                "scan": r.scan,
                "arms": {a: {"accuracies": st.accs, "skipped": st.skipped, **st.extra} for a, st in r.stats.items()},
            }
            for r in rows
        ]
        args.json.write_text(json.dumps(dump, indent=1) + "\n")


if __name__ == "__main__":
    main()
