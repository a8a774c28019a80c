"""Mixed precision (issue 6): float16 and bfloat16 models and autocast.

Gradient underflow is its own status — below the smallest normal number of the gradient's dtype, or flushed to
exactly zero on the way into float16 — never reported as vanishing (a relative verdict) or as a zero-valued path.
Statistics are reduced in float32 (float64 for double models), so squares of half-precision values do not
overflow.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import rules, statuses
from torch import nn

from gradscope.results import Status
from gradscope.scanner import scan

HALF = [torch.float16, torch.bfloat16]


def mlp(dtype: torch.dtype, depth: int = 2, act: type[nn.Module] = nn.Tanh, width: int = 16) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Linear(width, width)]
        for _ in range(depth - 1):
            layers += [act(), nn.Linear(width, width)]
        return nn.Sequential(*layers).to(dtype)


def inputs(dtype: torch.dtype, n: int = 2, width: int = 16) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(8, width, generator=generator).to(dtype) for _ in range(n)]


def scaled_loss(scale: float):  # type: ignore[no-untyped-def]
    def loss_fn(output: torch.Tensor, _batch: object) -> torch.Tensor:
        return output.float().sum() * scale

    return loss_fn


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_healthy_half_models_are_healthy(dtype: torch.dtype) -> None:
    model = mlp(dtype, depth=3)
    report = scan(model, inputs(dtype))
    assert report.probe.dtype == str(dtype).removeprefix("torch.")
    assert set(statuses(report).values()) == {Status.OK}
    assert not report.findings
    json.dumps(report.to_dict(), allow_nan=False)


def test_float16_underflow_is_its_own_status_not_vanishing() -> None:
    # Every gradient ~1e-7: uniformly small (no layer is off the model's own reference), below float16's
    # smallest normal number (6.1e-5). Loss scaling is the fix, and the finding says so.
    report = scan(mlp(torch.float16, depth=3), inputs(torch.float16), loss_fn=scaled_loss(1e-7))
    found = statuses(report)
    assert set(found.values()) == {Status.UNDERFLOW}, found
    assert "vanishing_gradient" not in rules(report)
    underflow = next(f for f in report.findings if f.rule == "underflow")
    assert "GradScaler" in underflow.message and "float16" in underflow.message
    assert underflow.evidence["dtypes"] == ["float16"]


def test_bfloat16_has_float32_range_so_the_same_scale_is_fine() -> None:
    report = scan(mlp(torch.bfloat16, depth=3), inputs(torch.bfloat16), loss_fn=scaled_loss(1e-7))
    assert set(statuses(report).values()) == {Status.OK}
    assert not report.findings


def test_float16_gradient_flushed_to_zero_is_underflow_not_a_zero_path() -> None:
    # 1e-9 is below float16's smallest subnormal: the loss gradient becomes exactly 0 entering the model.
    report = scan(mlp(torch.float16, depth=2), inputs(torch.float16), loss_fn=scaled_loss(1e-9))
    assert set(statuses(report).values()) == {Status.UNDERFLOW}
    assert "zero_gradient" not in rules(report)
    assert "underflow" in rules(report)


def test_zero_init_head_in_float16_is_a_gate_not_underflow() -> None:
    # The head itself gets a gradient (its input is nonzero); only what is behind it is zero, by design: gated.
    model = mlp(torch.float16, depth=2)
    with torch.no_grad():
        model[2].weight.zero_()
    found = statuses(scan(model, inputs(torch.float16)))
    assert found["2"] is Status.OK
    assert found["0"] is Status.GATED


def test_deep_float16_model_underflows_where_float32_only_vanishes() -> None:
    tiny = torch.finfo(torch.float16).tiny
    half = scan(mlp(torch.float16, depth=10, act=nn.Sigmoid), inputs(torch.float16))
    full = scan(mlp(torch.float32, depth=10, act=nn.Sigmoid), inputs(torch.float32))
    for h, f in zip(half.layers, full.layers, strict=True):
        if h.grad_rms is None:
            continue
        if h.grad_rms.median < tiny:
            assert h.status is Status.UNDERFLOW, (h.name, h.grad_rms.median)
            assert f.status is Status.VANISHING, (f.name, f.grad_rms)
    assert any(layer.status is Status.UNDERFLOW for layer in half.layers)
    assert "underflow" in rules(half) and "underflow" not in rules(full)


def _rms64(t: torch.Tensor) -> float:
    return float(t.detach().double().square().mean().sqrt())


def test_statistics_of_large_float16_values_do_not_overflow() -> None:
    # Activations ~ 400 and gradients ~ 300: their squares (1.6e5, 9e4) are beyond float16's 65504.
    model = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 4)).half()
    with torch.no_grad():
        model[0].weight.fill_(25.0)
        model[0].bias.zero_()
    x = inputs(torch.float16, n=1)
    report = scan(model, x, loss_fn=scaled_loss(300.0))
    first = report.layers[0]
    assert first.status is Status.OK and "nonfinite" not in rules(report)

    out = model[0](x[0])
    assert math.isfinite(first.activation_rms.median) and math.isfinite(first.activation_std.median)
    assert first.activation_rms.median == pytest.approx(_rms64(out), rel=1e-3)
    centred = out.detach().double() - out.detach().double().mean(dim=0, keepdim=True)
    expected_std = float(centred.square().mean(dim=0).sqrt().mean())
    assert first.activation_std.median == pytest.approx(expected_std, rel=1e-3)

    model.zero_grad()
    scaled_loss(300.0)(model(x[0]), None).backward()
    grads = torch.cat([model[1].weight.grad.flatten(), model[1].bias.grad.flatten()])
    assert report.layers[1].grad_rms.median == pytest.approx(_rms64(grads), rel=1e-3)
    json.dumps(report.to_dict(), allow_nan=False)


def test_default_loss_of_a_large_float16_output_is_finite() -> None:
    # Outputs near float16's maximum: their sum overflows float16, the projection is done in float32.
    model = nn.Sequential(nn.Linear(16, 64)).half()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(60000.0)
    report = scan(model, inputs(torch.float16))
    assert "nonfinite" not in rules(report)
    assert report.layers[0].status is Status.OK


class Autocast(nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.a, self.act, self.b = nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=self.dtype):
            return self.b(self.act(self.a(x)))


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_autocast_models_scan_with_float32_parameters(dtype: torch.dtype) -> None:
    model = Autocast(dtype)
    try:
        with torch.autocast("cpu", dtype=dtype):
            model.a(torch.zeros(1, 16))
    except RuntimeError as exc:  # pragma: no cover - older CPU autocast without float16
        pytest.skip(f"CPU autocast to {dtype} unsupported: {exc}")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = scan(model, inputs(torch.float32))
    assert report.probe.dtype == "float32"
    assert set(statuses(report).values()) == {Status.OK}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None and p.dtype == torch.float32 for p in model.parameters())


def test_autocast_float16_underflow_is_reported_for_the_float16_signal() -> None:
    # Parameters (and their gradients) are float32; the outputs and the gradient flowing between layers are
    # float16 under autocast. A 1e-9 loss scale flushes that float16 signal to zero before the parameters see it.
    model = Autocast(torch.float16)
    try:
        report = scan(model, inputs(torch.float32), loss_fn=scaled_loss(1e-9))
    except Exception as exc:  # pragma: no cover - older CPU autocast without float16
        pytest.skip(f"CPU autocast to float16 unsupported: {exc}")
    assert set(statuses(report).values()) == {Status.UNDERFLOW}
    assert "underflow" in rules(report) and "zero_gradient" not in rules(report)


def test_float64_models_scan() -> None:
    # Reductions ask for float32 results; torch refuses to narrow float64 that way, which once crashed here.
    model = mlp(torch.float64, depth=3)
    report = scan(model, inputs(torch.float64))
    assert report.probe.dtype == "float64"
    assert set(statuses(report).values()) == {Status.OK}


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_model_left_exactly_as_found(dtype: torch.dtype) -> None:
    model = mlp(dtype, depth=3).eval()
    x = inputs(dtype)
    model(x[0]).float().sum().backward()
    before = [(p.detach().clone(), p.grad.clone(), p.dtype) for p in model.parameters()]
    rng = torch.get_rng_state()
    scan(model, x)
    assert not model.training
    for (data, grad, dt), p in zip(before, model.parameters(), strict=True):
        assert p.dtype == dt and torch.equal(p, data) and torch.equal(p.grad, grad)
    assert torch.equal(rng, torch.get_rng_state())
