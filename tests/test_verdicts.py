"""Verdicts a user can trust: a looped block is diagnosed like its unrolled twin, gradients that vanish through time
are seen, and the same target with the same seed gives the same report whatever the thread count."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import gradscope
from gradscope.config import Config
from gradscope.pipeline import TargetSpec, check_target, scan_target
from gradscope.vocab import Rule, Severity, Status

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


# -- a block called in a loop is measured per call -----------------------------------------------------------------


class Looped(nn.Module):
    """One Linear + activation block called ``n`` times in a loop (weights shared across depth)."""

    def __init__(self, act: type[nn.Module], n: int, unrolled: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(32, 64)
        self.head = nn.Linear(64, 10)
        block = nn.Sequential(nn.Linear(64, 64), act())
        self.blocks = nn.ModuleList([block] * n if not unrolled else [_copy(block) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        out: torch.Tensor = self.head(x)
        return out


def _copy(block: nn.Module) -> nn.Module:
    twin = nn.Sequential(nn.Linear(64, 64), type(block[1])())
    twin.load_state_dict(block.state_dict())
    return twin


def _errors(report: gradscope.Report) -> set[str]:
    return {f.rule for f in report.findings if f.severity is Severity.ERROR}


@pytest.mark.parametrize(("act", "n"), [(nn.Sigmoid, 40), (nn.Tanh, 20)])
def test_a_looped_block_is_diagnosed_like_its_unrolled_twin(act: type[nn.Module], n: int) -> None:
    data = [torch.randn(16, 32) for _ in range(4)]
    looped = gradscope.scan(Looped(act, n), data)
    unrolled = gradscope.scan(Looped(act, n, unrolled=True), data)
    assert _errors(looped) == _errors(unrolled) and Rule.FORWARD_COLLAPSE in _errors(looped)
    names = [layer.name for layer in looped.layers]
    assert "blocks.0.0#1" in names and f"blocks.0.0#{n}" in names  # one row per call, in forward order
    assert len(looped.layers) == len(unrolled.layers)
    # the backward-only advice a looped tanh block used to get is gone: the forward fixes lead, as for the twin
    assert [s.remedy for s in looped.suggestions][:1] == [s.remedy for s in unrolled.suggestions][:1]


def test_each_calls_gradient_is_what_its_unrolled_copy_gets() -> None:
    """Each call's weight gradient is computed from its own input and output gradient: the same numbers as the
    unrolled twin's layers, which compute the same function from the same weights."""
    data = [torch.randn(16, 32) for _ in range(2)]
    looped = gradscope.scan(Looped(nn.Tanh, 3), data)
    unrolled = gradscope.scan(Looped(nn.Tanh, 3, unrolled=True), data)
    for k in range(3):
        call, copy = looped.layer(f"blocks.0.0#{k + 1}"), unrolled.layer(f"blocks.{k}.0")
        assert call.grad_rms is not None and copy.grad_rms is not None
        assert call.grad_rms.median == pytest.approx(copy.grad_rms.median, rel=1e-4)
        assert call.signal_rms is not None and copy.signal_rms is not None
        assert call.signal_rms.median == pytest.approx(copy.signal_rms.median, rel=1e-4)
    assert looped.layer("blocks.0.0#2").shares_parameters_with == "blocks.0.0#1"


# -- through time --------------------------------------------------------------------------------------------------


class Classifier(nn.Module):
    """Tokens → embedding → a sequence layer → a linear head on the last step."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(16, 32)
        self.kind = kind
        if kind == "transformer":
            self.body: nn.Module = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=True)
        else:
            self.body = getattr(nn, kind)(32, 32, batch_first=True)
        self.head = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.emb(x))
        h = h[0] if isinstance(h, tuple) else h
        out: torch.Tensor = self.head(h[:, -1])
        return out


def _tokens(length: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 16, (16, length), generator=g) for _ in range(4)]


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_layers_over_50_steps_vanish_through_time(kind: str) -> None:
    report = gradscope.scan(Classifier(kind), _tokens(50))
    finding = next(f for f in report.findings if f.rule == Rule.VANISHING_THROUGH_TIME)
    assert finding.severity is Severity.ERROR and finding.layers == ("emb",)
    assert report.positions is not None and len(report.positions.grad_rms) == 50
    assert report.positions.weak_end == "start" and report.positions.ratio is not None
    data = report.to_dict()["positions"]
    assert data["layer"] == "emb" and data["axis"] == 1 and len(data["grad_rms"]) == 50
    remedies = [s.remedy.value for s in report.suggestions]
    assert ("gated_recurrent" in remedies) is (kind == "RNN") and "init" in remedies


@pytest.mark.parametrize(("kind", "length"), [("transformer", 50), ("LSTM", 10), ("GRU", 10)])
def test_attention_and_short_sequences_reach_every_position(kind: str, length: int) -> None:
    report = gradscope.scan(Classifier(kind), _tokens(length))
    assert Rule.VANISHING_THROUGH_TIME not in _errors(report)
    assert report.positions is not None and report.positions.ratio is not None


def test_models_without_a_sequence_have_no_profile() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    assert gradscope.scan(model, [torch.randn(16, 8)]).positions is None


# -- reproducible by construction ------------------------------------------------------------------------------------


def _without_timing(report: gradscope.Report) -> str:
    data: dict[str, Any] = report.to_dict()
    data.pop("timing")
    return json.dumps(data, sort_keys=True)


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_same_target_same_seed_same_json_whatever_the_threads(example: Path) -> None:
    """The model is built under the scan's seed and the scan pins the thread count (probe.threads): two scans,
    one with torch set to 1 thread and one to 2, give identical JSON. The user's RNG states are left alone."""
    spec = TargetSpec(str(example))
    states = torch.get_rng_state()
    first = _without_timing(scan_target(spec, Config()))
    torch.set_num_threads(2)
    try:
        second = _without_timing(scan_target(spec, Config()))
    finally:
        torch.set_num_threads(1)
    assert first == second
    assert torch.equal(torch.get_rng_state(), states)


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_check_against_its_own_fresh_baseline_always_passes(example: Path) -> None:
    spec = TargetSpec(str(example))
    baseline = scan_target(spec, Config())
    for _ in range(10):
        result = check_target(spec, Config(), baseline=baseline)
        assert not result.comparison.regressions and not result.comparison.new_findings  # type: ignore[union-attr]


# -- regimes the per-layer RMS rules cannot see (benchmarks/regimes.py) ----------------------------------------------


def _stack(act: type[nn.Module], depth: int, init: str, *, norm: bool = False) -> nn.Sequential:
    """64 → [Linear(64) (→ BatchNorm) → act] × depth → Linear(10), drawn from seed 0."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        linear = nn.Linear(64, 64)
        if init == "xavier":
            nn.init.xavier_uniform_(linear.weight, gain=nn.init.calculate_gain(act.__name__.lower()))
            nn.init.zeros_(linear.bias)
        elif init == "large":
            nn.init.normal_(linear.weight, 0.0, 1.0)  # weight RMS × √fan-in = 8: units pinned at the flat ends
        layers += [linear, *([nn.BatchNorm1d(64)] if norm else []), act()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def _scan(model: nn.Module) -> gradscope.Report:
    return gradscope.scan(model, [torch.randn(16, 64) for _ in range(4)])


def _finding(report: gradscope.Report, rule: Rule) -> Any:
    return next((f for f in report.findings if f.rule == rule), None)


def test_a_deep_tanh_stack_with_even_gradients_gets_a_warning_and_residual_blocks_first() -> None:
    report = _scan(_stack(nn.Tanh, 30, "xavier"))
    deep = _finding(report, Rule.DEEP_SATURATING_STACK)
    assert deep is not None and deep.severity is Severity.WARNING and deep.evidence["depth"] == 30
    assert not _errors(report)  # a warning: the exit code of a default `scan` does not change
    remedies = [s.remedy.value for s in report.suggestions]
    assert remedies[0] == "residual"
    assert remedies.index("normalization") < remedies.index("pseudo_norm")
    pn = next(s for s in report.suggestions if s.remedy.value == "pseudo_norm")
    assert len(pn.layers) == 9 and pn.params["scale"] > 0  # after every 3rd of 30 activations, never the last


@pytest.mark.parametrize(("depth", "norm"), [(20, False), (30, True)])
def test_shallower_or_normalized_tanh_stacks_get_no_depth_warning(depth: int, norm: bool) -> None:
    report = _scan(_stack(nn.Tanh, depth, "xavier", norm=norm))
    assert _finding(report, Rule.DEEP_SATURATING_STACK) is None


def test_a_shrinking_tanh_stack_is_a_forward_collapse_warning() -> None:
    report = _scan(_stack(nn.Tanh, 10, "default"))  # PyTorch's default init: spread ~0.03 at depth 10
    collapse = _finding(report, Rule.FORWARD_COLLAPSE)
    assert collapse is not None and collapse.severity is Severity.WARNING
    assert "shrinking" in collapse.message and 0.01 <= collapse.evidence["spread_ratio"] < 0.35
    assert report.suggestions[0].remedy.value == "normalization"


def test_a_shrinking_relu_stack_is_not_flagged() -> None:
    report = _scan(_stack(nn.ReLU, 10, "default"))  # rectifier stacks: Adam regrows the scale (validity grid)
    assert report.summary.forward_spread_ratio is not None and report.summary.forward_spread_ratio < 0.35
    assert not any("shrinking" in f.message for f in report.findings)


def test_large_weight_saturation_gets_normalization_before_the_penalty_and_sigmoid_no_init() -> None:
    report = _scan(_stack(nn.Sigmoid, 10, "large"))
    assert _finding(report, Rule.SATURATION) is not None
    remedies = [s.remedy.value for s in report.suggestions]
    assert remedies.index("normalization") < remedies.index("regularize")
    assert "init" not in remedies  # Xavier is the sigmoid collapse regime itself


@pytest.mark.parametrize(
    ("model", "first"),
    [
        (lambda: _stack(nn.Sigmoid, 6, "xavier"), "activation"),  # 7 weighted layers: the swap leads
        (lambda: _stack(nn.Sigmoid, 12, "xavier"), "normalization"),  # 13: a deep unnormalized ReLU stack would not
        (lambda: Looped(nn.Sigmoid, 6), "normalization"),  # a weight-shared loop with ReLU: an iterated ReLU map
    ],
    ids=["shallow", "deep", "shared-loop"],
)
def test_a_collapsed_sigmoid_stack_gets_the_relu_swap_first_only_when_shallow_and_unshared(
    model: Any, first: str
) -> None:
    net = model()
    width = net[0].in_features if isinstance(net, nn.Sequential) else net.inp.in_features
    report = gradscope.scan(net, [torch.randn(16, width) for _ in range(4)])
    assert _finding(report, Rule.FORWARD_COLLAPSE) is not None
    remedies = [s.remedy.value for s in report.suggestions]
    assert remedies[0] == first
    if first == "activation":
        swap = report.suggestions[0]
        assert swap.params == {"activation": "ReLU", "init": "kaiming_normal_"} and len(swap.layers) == 6
        assert "normalization" in remedies  # still offered, second


class ActorCritic(nn.Module):
    """forward() returns (policy logits, value): the value head feeds only the second output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(8, 16)
        self.policy = nn.Linear(16, 4)
        self.value = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.body(x))
        return self.policy(h), self.value(h)


def test_a_head_that_feeds_only_an_output_the_default_loss_ignores_is_explained() -> None:
    batches = [torch.randn(8, 8) for _ in range(2)]
    gone = _finding(gradscope.scan(ActorCritic(), batches), Rule.DISCONNECTED)
    assert gone is not None and gone.layers == ("value",)
    assert "returns 2 tensors" in gone.message and "loss_fn" in gone.message
    assert gone.evidence["ignored_outputs"] == 1

    def both(output: tuple[torch.Tensor, torch.Tensor], _batch: object) -> torch.Tensor:
        return output[0].square().mean() + output[1].square().mean()

    assert _finding(gradscope.scan(ActorCritic(), batches, loss_fn=both), Rule.DISCONNECTED) is None


def test_a_truly_unused_layer_gets_no_note_about_outputs() -> None:
    model = nn.Module()
    model.net = _stack(nn.ReLU, 2, "default")
    model.unused = nn.Linear(3, 3)
    model.forward = model.net.forward  # type: ignore[method-assign]
    gone = _finding(_scan(model), Rule.DISCONNECTED)
    assert gone is not None and "returns" not in gone.message and "ignored_outputs" not in gone.evidence


class RowReader(nn.Module):
    """An LSTM over the rows of an image, read at its last step (pytorch/examples' mnist_rnn): it trains."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = nn.LSTM(28, 32, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        head: torch.Tensor = self.head(out[:, -1])
        return head


def test_unread_outputs_of_a_first_recurrent_layer_are_not_vanishing_through_time() -> None:
    report = gradscope.scan(RowReader(), [torch.randn(8, 28, 28) for _ in range(2)])
    assert report.positions is not None and report.positions.ratio == 0.0  # only the last step's output is read
    assert _finding(report, Rule.VANISHING_THROUGH_TIME) is None


def test_a_norm_layer_that_never_runs_does_not_cut_the_forward_growth() -> None:
    """Forward growth is measured along chains that norm layers cut, but only norms that ran cut them: each block
    here defines a LayerNorm it does not call, and the norm-free ReLU stack's growth is still found."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(32, 32)
            nn.init.normal_(self.fc.weight, std=2.0 / 32**0.5)
            self.norm = nn.LayerNorm(32)  # defined, never called

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x))

    torch.manual_seed(0)
    model = nn.Sequential(*[Block() for _ in range(10)], nn.Linear(32, 4))
    report = gradscope.scan(model, [torch.randn(16, 32) for _ in range(2)])
    assert "forward_explosion" in {f.rule.value for f in report.findings}


def test_a_weight_built_from_two_parameters_is_still_judged_by_its_gradient() -> None:
    """``x @ (base + delta).T`` joins two parameters with each other, not with data: they are weights, not additive
    (a token or position table), so their vanishing gradient is still found."""

    class SumLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = nn.Parameter(nn.Linear(32, 32).weight.detach().clone())
            self.delta = nn.Parameter(torch.zeros(32, 32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ (self.base + self.delta).T

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(16):
        layers += [SumLinear() if i < 4 else nn.Linear(32, 32), nn.Sigmoid()]
    report = gradscope.scan(nn.Sequential(*layers, nn.Linear(32, 2)), [torch.randn(8, 32) for _ in range(2)])
    assert report.layer("0").status is Status.VANISHING
