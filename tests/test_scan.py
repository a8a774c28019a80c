"""The library call: verdicts on the fixture zoo, correctness of every number, and leaving the model as it was."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from fixtures import models as M
from helpers import render_text, rules
from torch import nn

from gradscope import probes
from gradscope.config import Config
from gradscope.errors import ProbeError
from gradscope.loading import ModelFileHooks
from gradscope.recorder import Recorder
from gradscope.results import Severity, Status
from gradscope.scanner import scan

UNHEALTHY = {Status.VANISHING, Status.EXPLODING, Status.NONFINITE}


def batches_for(model: nn.Module, name: str, n: int = 2, batch_size: int = 8) -> list[object]:
    make = getattr(M, "INPUTS", {}).get(name)
    if make is not None:
        return [make(batch_size) for _ in range(n)]
    return probes.build_batches(model, ModelFileHooks(), n=n, batch_size=batch_size, seed=0, device=torch.device("cpu"))


def scan_fixture(cls: type[nn.Module], **kwargs: object):  # type: ignore[no-untyped-def]
    model = cls()
    return model, scan(model, batches_for(model, cls.__name__), **kwargs)  # type: ignore[arg-type]


# -- verdicts ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [c for c in M.ALL if c.EXPECT == "healthy"], ids=lambda c: c.__name__)
def test_healthy_models_raise_no_alarm(cls: type[nn.Module]) -> None:
    _, report = scan_fixture(cls)
    assert report.healthy, [f.message for f in report.findings]
    assert not [layer.name for layer in report.layers if layer.status in UNHEALTHY]
    assert all(f.severity is not Severity.ERROR for f in report.findings)


@pytest.mark.parametrize("cls", [c for c in M.ALL if c.EXPECT == "vanishing"], ids=lambda c: c.__name__)
def test_vanishing_models_are_caught(cls: type[nn.Module]) -> None:
    _, report = scan_fixture(cls)
    assert not report.healthy
    assert rules(report).get("vanishing_gradient") is Severity.ERROR
    first = next(layer for layer in report.layers if layer.trainable)
    assert first.status in {Status.VANISHING, Status.UNDERFLOW}
    assert report.summary.decay_per_layer is not None and report.summary.decay_per_layer > 0.1
    assert report.suggestions, "a vanishing model gets advice"


@pytest.mark.parametrize("cls", [c for c in M.ALL if c.EXPECT == "exploding"], ids=lambda c: c.__name__)
def test_exploding_models_are_caught(cls: type[nn.Module]) -> None:
    _, report = scan_fixture(cls)
    found = rules(report)
    assert Severity.ERROR in (found.get("exploding_gradient"), found.get("forward_explosion"))
    assert any(layer.status is Status.EXPLODING for layer in report.layers)
    assert {s.remedy.value for s in report.suggestions} >= {"init", "clip"}


def test_nan_model_names_the_module_that_produced_it() -> None:
    model, report = scan_fixture(M.NaNModel)
    finding = next(f for f in report.findings if f.rule == "nonfinite")
    assert finding.severity is Severity.ERROR
    producer = next(name for name, m in model.named_modules() if isinstance(m, M.NaNProducer))
    assert finding.evidence["first_layer"] == producer
    assert finding.evidence["pass"] == "forward"
    assert report.suggestions[0].remedy.value == "inspect"
    # layers before the producer are finite and say so
    assert report.layers[0].status is not Status.NONFINITE


def test_large_weights_saturate_and_get_regularization() -> None:
    """A warning while the gradient still flows past the saturated units (benchmarks/validity.py: large-weight
    depth-4 stacks train); the weight penalty is still the advice."""
    _, report = scan_fixture(M.LargeWeightTanhMLP)
    assert rules(report).get("saturation") is Severity.WARNING
    assert any(layer.status is Status.SATURATED for layer in report.layers)
    reg = next(s for s in report.suggestions if s.remedy.value == "regularize")
    assert reg.params["lambda"] == Config().suggest.regularize_lambda
    assert all(p.endswith(".weight") for p in reg.params["parameters"])


def test_forward_collapse_is_told_apart_and_leads_with_forward_fixes() -> None:
    _, report = scan_fixture(M.DeepSigmoidMLP)
    assert "forward_collapse" in rules(report)
    remedies = [s.remedy.value for s in report.suggestions]
    assert remedies[0] in {"normalization", "init"}
    assert "pseudo_norm" not in remedies and "rescale" not in remedies
    assert "backward-only" in report.suggestions[0].reason


def test_backward_only_attenuation_gets_pseudo_norm_and_rescale() -> None:
    # Bias-free tanh with a small Xavier gain: every layer scales the signal by ~0.7 in both directions, so the
    # between-sample spread survives (relative to its size) while the gradient loses 4+ orders of magnitude.
    model = M.stack(nn.Tanh, 40, gain=0.7)
    sgd = Config().with_overrides({"diagnose.optimizer": "sgd"})
    report = scan(model, [torch.randn(16, 32) for _ in range(2)], config=sgd)
    assert "forward_collapse" not in rules(report)
    vanishing = next(f for f in report.findings if f.rule == "vanishing_gradient")
    assert vanishing.evidence["kind"] == "backward_only" and vanishing.severity is Severity.ERROR
    pseudo = next(s for s in report.suggestions if s.remedy.value == "pseudo_norm")
    names = dict(model.named_modules())
    assert pseudo.layers and all(name in names for name in pseudo.layers)
    assert pseudo.params["predicted_min_ratio"] >= Config().suggest.pseudo_norm_min_ratio
    # A tanh stack contracts through the nonlinearity itself: an error under Adam too
    assert rules(scan(model, [torch.randn(16, 32) for _ in range(2)]))["vanishing_gradient"] is Severity.ERROR
    rescale = next(s for s in report.suggestions if s.remedy.value == "rescale")
    assert all(1 < g <= Config().suggest.rescale_max_gain for g in rescale.params["gains"].values())


def test_adam_rescales_a_rectifier_like_stack_so_its_attenuation_is_a_warning() -> None:
    """SiLU with a small gain: the gradient shrinks ×~0.5 a layer while the spread survives. Adam's per-parameter
    steps make that a warning (no change asked for); SGD's proportional steps make it an error."""
    model = M.stack(nn.SiLU, 12, gain=0.7)
    data = [torch.randn(16, 32) for _ in range(2)]
    adam = scan(model, data)
    assert rules(adam) == {"vanishing_gradient": Severity.WARNING} and not adam.suggestions
    sgd = scan(model, data, config=Config().with_overrides({"diagnose.optimizer": "sgd"}))
    assert rules(sgd)["vanishing_gradient"] is Severity.ERROR and sgd.probe.optimizer == "sgd"


def test_a_tied_head_with_its_own_bias_says_what_it_shares() -> None:
    """word_language_model's tied decoder: the weight is the embedding's, the bias its own. It is counted with its
    bias only, and says which layer holds the rest, so a large bias gradient reads as what it is."""

    class TiedLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(50, 16)
            self.rnn = nn.GRU(16, 16, batch_first=True)
            self.decoder = nn.Linear(16, 50)
            self.decoder.weight = self.embed.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.decoder(self.rnn(self.embed(ids))[0])

    torch.manual_seed(0)
    report = scan(TiedLM(), [torch.randint(0, 50, (4, 6)) for _ in range(2)])
    decoder = report.layer("decoder")
    assert decoder.shares_parameters_with == "embed" and decoder.parameters == 50
    assert report.layer("embed").shares_parameters_with is None


def test_a_gate_whose_branch_one_batch_drops_is_still_a_gate() -> None:
    """ConvNeXt at batch 4: stochastic depth can drop a block's branch for the whole last probe batch, leaving its
    LayerScale gate without a gradient in that batch only. The gate is told from its largest gradient over the
    batches, not the last batch's, so the layers behind it are gated, not an error."""

    class DropLastBatch(nn.Module):
        """x + γ·f(x) with γ = 1e-6 (LayerScale); the branch is dropped on every fourth call, as stochastic depth
        with all samples dropped."""

        def __init__(self) -> None:
            super().__init__()
            self.f = nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 16))
            self.gamma = nn.Parameter(torch.full((16,), 1e-6))
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return x if self.calls % 4 == 0 else x + self.gamma * self.f(x)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), DropLastBatch(), nn.Linear(16, 3))
    report = scan(model, [torch.randn(8, 8) for _ in range(4)])
    assert "error" not in {f.severity.value for f in report.findings}, report.findings
    assert rules(report).get("gated_at_init") is Severity.INFO
    assert report.layer("1.f.0").status is Status.GATED


def test_tied_frozen_unused_are_reported_as_what_they_are() -> None:
    model, report = scan_fixture(M.TiedFrozenUnused)
    statuses = {layer.name: layer.status for layer in report.layers}
    assert Status.FROZEN in statuses.values()
    assert Status.DISCONNECTED in statuses.values()
    assert Status.VANISHING not in statuses.values()
    assert rules(report)["frozen"] is Severity.INFO
    assert rules(report)["disconnected"] is Severity.WARNING
    tied = [layer for layer in report.layers if layer.shares_parameters_with]
    assert tied and tied[0].grad_rms is None and tied[0].parameters == 0
    # every parameter counted exactly once
    assert sum(layer.parameters for layer in report.layers) == sum(p.numel() for p in model.parameters())


def test_zero_init_head_is_a_gate_not_vanishing() -> None:
    """The zero head blocks every gradient upstream at init, by design: the layers behind it are 'gated', the
    finding is info and names the head's weight (its own gradient is healthy)."""
    _, report = scan_fixture(M.ZeroInitHead)
    assert report.healthy
    gated = [layer for layer in report.layers if layer.status is Status.GATED]
    assert {"fc1", "fc2"} <= {layer.name for layer in gated}
    assert rules(report) == {"gated_at_init": Severity.INFO}
    finding = next(f for f in report.findings if f.rule == "gated_at_init")
    assert list(finding.evidence["gates"]) == ["head.weight"] and finding.evidence["gates"]["head.weight"] == 0.0


def test_empty_and_all_frozen_models_are_errors() -> None:
    with pytest.raises(ProbeError, match="no parameters"):
        scan(M.EmptyModule(), [torch.randn(4, 8)])
    with pytest.raises(ProbeError, match="no trainable parameters"):
        scan_fixture(M.AllFrozen)


# -- the numbers -------------------------------------------------------------------------------------------------
def test_numbers_match_a_manual_computation() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(12, 20), nn.Tanh(), nn.Linear(20, 5))
    x = torch.randn(8, 12)
    report = scan(model, [x])

    outs: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: object, o: torch.Tensor) -> None:
        o.retain_grad()
        outs.append(o)

    handles = [m.register_forward_hook(keep) for m in model]
    out = model(x)
    probes.default_loss(out, 0, 0).backward()
    for h in handles:
        h.remove()

    def rms(t: torch.Tensor) -> float:
        return float(t.detach().pow(2).mean().sqrt())

    first, act, last = report.layers
    assert [layer.name for layer in report.layers] == ["0", "1", "2"]
    w, b = model[0].weight, model[0].bias
    expected_grad = math.sqrt((w.grad.pow(2).sum() + b.grad.pow(2).sum()) / (w.numel() + b.numel()))
    assert first.grad_rms.median == pytest.approx(expected_grad, rel=1e-5)
    assert first.signal_rms.median == pytest.approx(rms(outs[0].grad), rel=1e-5)
    assert act.signal_rms.median == pytest.approx(rms(outs[1].grad), rel=1e-5)
    assert first.activation_rms.median == pytest.approx(rms(outs[0]), rel=1e-5)
    assert first.activation_std.median == pytest.approx(float(outs[0].detach().std(0, correction=0).mean()), rel=1e-5)
    expected_w = math.sqrt((w.detach().pow(2).sum() + b.detach().pow(2).sum()) / (w.numel() + b.numel()))
    assert first.weight_rms == pytest.approx(expected_w, rel=1e-5)
    assert last.output_shape == (8, 5)
    assert act.grad_rms is None and act.parameters == 0
    sat = float((outs[1].abs() > math.sqrt(1 - 0.05)).float().mean())
    assert act.saturated_fraction == pytest.approx(sat)


def test_embedding_grad_counts_only_rows_the_batch_touched() -> None:
    model = nn.Sequential(nn.Embedding(10_000, 8), nn.Flatten(), nn.Linear(8 * 4, 3))
    tokens = torch.tensor([[1, 2, 3, 4], [1, 5, 6, 7]])
    report = scan(model, [tokens])
    model(tokens)
    out = model(tokens)
    probes.default_loss(out, 0, 0).backward()
    g = model[0].weight.grad
    touched = g[g.abs().sum(1) > 0]
    assert touched.shape[0] == 7
    assert report.layers[0].grad_rms.median == pytest.approx(float(touched.pow(2).mean().sqrt()), rel=1e-5)


def test_median_and_range_over_batches() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    batches = [torch.randn(8, 4) * scale for scale in (1.0, 10.0, 100.0)]
    layer = scan(model, batches).layers[1]
    assert layer.grad_rms.min < layer.grad_rms.median < layer.grad_rms.max


def test_verdicts_are_scale_free() -> None:
    model = M.DeepTanhMLP()
    data = batches_for(model, "DeepTanhMLP")

    def loss(scale: float):  # type: ignore[no-untyped-def]
        return lambda out, _batch: probes.default_loss(out, 0, 0) * scale

    small, large = (scan(model, data, loss_fn=loss(s)) for s in (1e-3, 1e3))
    assert [layer.status for layer in small.layers] == [layer.status for layer in large.layers]
    assert small.summary.worst_ratio == pytest.approx(large.summary.worst_ratio, rel=1e-3)


def test_forward_execution_order_not_definition_order() -> None:
    class Backwards(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.last = nn.Linear(8, 2)
            self.middle = nn.Linear(8, 8)
            self.first = nn.Linear(4, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.last(torch.relu(self.middle(self.first(x))))

    report = scan(Backwards(), [torch.randn(4, 4)])
    assert [layer.name for layer in report.layers] == ["first", "middle", "last"]
    assert [layer.index for layer in report.layers] == [0, 1, 2]


def test_multihead_attention_owns_parameters_and_has_children() -> None:
    _, report = scan_fixture(M.MHABlock)
    names = [layer.name for layer in report.layers]
    attn = next(n for n in names if n.endswith("attn"))
    out_proj = f"{attn}.out_proj"
    assert out_proj in names and names.index(out_proj) == names.index(attn) + 1
    assert report.layer(out_proj).grad_rms is not None  # its weight is used functionally, never via forward()


def test_inplace_relu_residual_dict_output() -> None:
    _, report = scan_fixture(M.InplaceResidualDict)
    relus = [layer for layer in report.layers if layer.type == "ReLU"]
    assert relus and all(layer.signal_rms is not None for layer in relus)


def test_deterministic_for_a_seed() -> None:
    model = M.PreLNTransformerLM()
    data = batches_for(model, "PreLNTransformerLM")
    a, b = (scan(model, data).to_dict() for _ in range(2))
    a.pop("timing")
    b.pop("timing")
    assert a == b


# -- leaving the model as it was ---------------------------------------------------------------------------------
def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {n: p.grad for n, p in model.named_parameters()},
        "grad_values": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {
            n: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
            for n, m in model.named_modules()
        },
        "rng": (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()),
    }


def _assert_same(before: dict, after: dict) -> None:  # type: ignore[type-arg]
    for name, value in before["params"].items():
        assert torch.equal(value, after["params"][name]), name
    for name, grad in before["grads"].items():
        assert after["grads"][name] is grad, name
        if grad is not None:
            assert torch.equal(before["grad_values"][name], after["grad_values"][name]), name
    for name, value in before["buffers"].items():
        assert torch.equal(value, after["buffers"][name]), name
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    assert torch.equal(before["rng"][0], after["rng"][0])
    assert before["rng"][1] == after["rng"][1]
    assert (before["rng"][2] == after["rng"][2]).all()


@pytest.mark.parametrize("cls", [M.ResNetBN, M.TiedFrozenUnused, M.PreLNTransformerLM], ids=lambda c: c.__name__)
def test_model_left_exactly_as_found(cls: type[nn.Module]) -> None:
    model = cls()
    model.eval()  # a mode the scan changes (it probes in train mode)
    data = batches_for(model, cls.__name__)
    out = probes.select_output(probes.call_model(model, data[0]))
    out.float().sum().backward()  # the user has gradients of their own
    before = _snapshot(model)
    scan(model, data)
    _assert_same(before, _snapshot(model))


def test_model_left_as_found_when_forward_fails_midway() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    data = [torch.randn(8, 4), torch.randn(8, 4), torch.randn(8, 5)]
    before = _snapshot(model)
    with pytest.raises(ProbeError, match=r"layer '0' \(Linear\)"):
        scan(model, data)
    _assert_same(before, _snapshot(model))


# -- hooks keep numbers, one host read per batch -----------------------------------------------------------------
@pytest.mark.parametrize(("name", "per_scan"), [("HealthyReluMLP", 1), ("DeepTanhMLP", 2)])
def test_one_host_read_per_batch_and_no_item(monkeypatch: pytest.MonkeyPatch, name: str, per_scan: int) -> None:
    """One read per batch; once per scan the weights; and once more when findings call for the gate check
    (every parameter's size and gradient in one read). No gate is found in a tanh stack: no second probe."""
    model = getattr(M, name)()
    data = batches_for(model, name, n=3)
    counts = {"cpu": 0, "item": 0}
    real_cpu, real_item = torch.Tensor.cpu, torch.Tensor.item

    def cpu(self: torch.Tensor, *a: object, **k: object) -> torch.Tensor:
        counts["cpu"] += 1
        return real_cpu(self, *a, **k)

    def item(self: torch.Tensor) -> object:
        counts["item"] += 1
        return real_item(self)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    monkeypatch.setattr(torch.Tensor, "item", item)
    scan(model, data)
    assert counts == {"cpu": len(data) + per_scan, "item": 0}


def test_recorder_keeps_numbers_not_tensors() -> None:
    model = M.HealthyReluMLP()
    data = batches_for(model, "HealthyReluMLP", n=3)
    with Recorder(model) as recorder:
        for batch in data:
            recorder.start_batch(8)
            probes.default_loss(model(batch), 0, 0).backward()
            recorder.end_batch()
        assert not recorder._values and not recorder._entries
        for layer in recorder.layers:
            for values in (layer.grad_rms, layer.signal_rms, layer.activation_rms, layer.activation_std):
                assert all(type(v) is float for v in values)
                assert len(values) in (0, len(data))
    assert all(not m._forward_hooks for m in model.modules())


# -- golden: the rendered report of real scans -------------------------------------------------------------------
@pytest.mark.parametrize("cls", [M.DeepSigmoidMLP, M.TiedFrozenUnused, M.NaNModel], ids=lambda c: c.__name__)
def test_rendered_report_of_a_real_scan(cls: type[nn.Module], golden) -> None:  # type: ignore[no-untyped-def]
    from gradscope.report import render_markdown, render_terminal

    _, report = scan_fixture(cls)
    for width in (80, 120):
        golden(f"scan_{cls.__name__}_{width}.txt", render_text(lambda console: render_terminal(report, console), width))
    golden(f"scan_{cls.__name__}.md", render_markdown(report))


def test_no_init_suggestion_that_redraws_the_current_init() -> None:
    from gradscope.advice import candidates
    from gradscope.recorder import model_facts

    model = M.stack(nn.Sigmoid, 20, gain=1.0)
    report = scan(model, [torch.randn(16, 32) for _ in range(2)])
    assert "forward_collapse" in rules(report)
    remedies = [s.remedy.value for s in report.suggestions]
    assert remedies[:2] == ["normalization", "clip"] and "init" not in remedies  # Xavier gain 1 is already there
    options = candidates(report.layers, model_facts(model), report.suggestions, Config())
    assert "init" not in options and [s.remedy.value for s in options["normalization"]] == ["normalization", "clip"]


# -- the stacked statistics equal a direct per-layer computation --------------------------------------------------
def test_recorded_numbers_equal_a_direct_computation() -> None:
    """Small outputs are reduced stacked with others of their shape, a large one (over ``SMALL`` elements) is
    sampled, an output changed in place by a later ReLU is measured as the layer returned it: every number must
    be what a plain per-layer computation gives."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 300), nn.ReLU(),
        nn.Linear(300, 32), nn.ReLU(inplace=True), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4),
    )  # fmt: skip
    batches = [torch.randn(64, 16) * 3 for _ in range(3)]
    d = 0.05
    outputs: dict[str, list[torch.Tensor]] = {}
    signals: dict[str, list[torch.Tensor]] = {}
    grads: dict[str, list[float]] = {}

    def keep(name: str):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            outputs.setdefault(name, []).append(out.detach().clone())
            out.register_hook(lambda g: signals.setdefault(name, []).append(g.clone()))  # type: ignore[no-untyped-call]

        return hook

    for name, module in model.named_children():
        module.register_forward_hook(keep(name))
    with Recorder(model, saturation_derivative=d) as recorder:
        for i, batch in enumerate(batches):
            model.zero_grad(set_to_none=True)
            recorder.start_batch(64)
            probes.default_loss(model(batch), 0, i).backward()
            recorder.end_batch()
            for name, module in model.named_children():
                params = list(module.parameters())
                if params:
                    total = sum(float(p.grad.square().sum()) for p in params)  # type: ignore[union-attr]
                    grads.setdefault(name, []).append(math.sqrt(total / sum(p.numel() for p in params)))
        records = {r.name: r for r in recorder.ordered()}
    for name, module in model.named_children():
        r = records[name]
        for k, y in enumerate(outputs[name]):
            assert r.activation_rms[k] == pytest.approx(float(y.square().mean().sqrt()), rel=1e-5), name
            assert r.signal_rms[k] == pytest.approx(float(signals[name][k].square().mean().sqrt()), rel=1e-5), name
            if y.numel() > 16_384:  # a large output's spread and counts are read on a fixed-stride sample
                continue
            std = float(y.std(dim=0, correction=0).mean())
            assert r.activation_std[k] == pytest.approx(std, rel=1e-4, abs=1e-7), name
            if isinstance(module, nn.Tanh):
                expected = float((y.abs() > math.sqrt(1 - d)).float().mean())
                assert r.saturated_fraction[k] == pytest.approx(expected), name
            if isinstance(module, nn.Sigmoid):
                expected = float(((y - 0.5).abs() > 0.5 * math.sqrt(1 - d)).float().mean())
                assert r.saturated_fraction[k] == pytest.approx(expected), name
            if isinstance(module, nn.ReLU):
                expected = float((y.amax(dim=0) <= 0).float().mean())
                assert r.dead_fraction[k] == pytest.approx(expected), name
        if name in grads:
            assert r.grad_rms == pytest.approx(grads[name], rel=1e-5), name
    # the Linear before the in-place ReLU: its own output (pre-activation, negative values kept)
    assert min(float(y.min()) for y in outputs["6"]) < 0
