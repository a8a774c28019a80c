"""The remedy operators: PseudoNorm, the per-layer rescale reparameterization, and the weight penalty."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import Tensor, nn

from gradscope.errors import ConfigError, ProbeError
from gradscope.remedies import (
    PseudoNorm,
    Rescale,
    apply_rescale,
    pseudo_norm,
    remove_rescale,
    rescale_gain,
    rescale_layers,
    weight_penalty,
)
from gradscope.remedies.pseudonorm import DEFAULT_EPS, DEFAULT_PER_SAMPLE, reference_scale


def expected(g: Tensor, per_sample: bool, eps: float = DEFAULT_EPS, scale: float = 1.0) -> Tensor:
    g64 = g.double()
    if per_sample and g.dim() >= 2:
        rms = g64.pow(2).flatten(1).mean(dim=1).sqrt().view(-1, *([1] * (g.dim() - 1)))
    else:
        rms = g64.pow(2).mean().sqrt()
    return g64 / (rms + eps) * scale


def backward_through(pn: Callable[[Tensor], Tensor], x: Tensor, g: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    y = pn(x)
    y.backward(g)
    assert x.grad is not None
    return x.grad


# ---------------------------------------------------------------- PseudoNorm


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("scale", [1.0, 0.03])
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 2, 2), (1, 6), (4, 1)])
def test_pseudonorm_backward_matches_formula(per_sample: bool, scale: float, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    # Samples with very different gradient scales: a per-sample RMS must treat each on its own.
    g = torch.randn(shape) * torch.logspace(-6, 2, shape[0]).view(-1, *([1] * (len(shape) - 1)))
    got = backward_through(PseudoNorm(per_sample=per_sample, scale=scale), x, g)
    torch.testing.assert_close(got.double(), expected(g, per_sample, scale=scale), rtol=1e-5, atol=1e-12)


def test_pseudonorm_per_sample_restores_each_sample() -> None:
    g = torch.stack([torch.full((8,), 1e-7), torch.full((8,), 5.0)])
    got = backward_through(PseudoNorm(per_sample=True, scale=2.0), torch.zeros(2, 8), g)
    torch.testing.assert_close(got.pow(2).mean(dim=1).sqrt(), torch.tensor([2.0, 2.0]), rtol=1e-4, atol=0)


def test_pseudonorm_default_is_per_batch_and_keeps_the_direction() -> None:
    # The measured default: one RMS for the whole tensor, so samples keep their relative sizes.
    assert DEFAULT_PER_SAMPLE is False and PseudoNorm().per_sample is False
    g = torch.stack([torch.full((8,), 1e-3), torch.full((8,), 5e-3)])
    got = backward_through(PseudoNorm(), torch.zeros(2, 8), g)
    torch.testing.assert_close(got.double(), expected(g, per_sample=False))
    torch.testing.assert_close(got[1] / got[0], torch.full((8,), 5.0))


def test_pseudonorm_forward_is_identity_and_gradient_flows() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    x = torch.randn(6, 4)
    pn = PseudoNorm()
    y = pn(lin(x))
    assert torch.equal(y, lin(x))
    y.pow(2).sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def test_pseudonorm_has_no_parameters_or_buffers_and_a_repr() -> None:
    pn = PseudoNorm(per_sample=False, eps=1e-9, scale=0.5)
    assert list(pn.parameters()) == [] and list(pn.buffers()) == [] and pn.state_dict() == {}
    assert repr(pn) == "PseudoNorm(per_sample=False, eps=1e-09, scale=0.5)"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eps": 0.0},
        {"eps": -1.0},
        {"scale": 0.0},
        {"scale": float("inf")},
        {"scale": float("nan")},
        {"scale": "1"},
        {"per_sample": 1},
    ],
)
def test_pseudonorm_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PseudoNorm(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("per_sample", [True, False])
def test_pseudonorm_low_and_high_precision(dtype: torch.dtype, per_sample: bool) -> None:
    torch.manual_seed(0)
    # Small gradients: their squares underflow in fp16, so the reduction must run in float32.
    g32 = torch.randn(4, 16) * 1e-4
    g = g32.to(dtype)
    got = backward_through(PseudoNorm(per_sample=per_sample), torch.zeros(4, 16, dtype=dtype), g)
    assert got.dtype == dtype
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(got.double(), expected(g, per_sample), rtol=tol, atol=tol)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("shape", [(), (1,), (7,), (1, 1), (1, 3, 5)])
def test_pseudonorm_small_shapes(per_sample: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    g = torch.randn(shape) * 1e-3
    got = backward_through(PseudoNorm(per_sample=per_sample), torch.randn(shape), g)
    assert got.shape == torch.Size(shape)
    torch.testing.assert_close(got.double(), expected(g, per_sample), rtol=1e-5, atol=1e-12)
    if got.dim() < 2 or not per_sample:
        # Normalised as a whole (always for 0-D/1-D): the gradient keeps its direction, not just its sign.
        torch.testing.assert_close(got.pow(2).mean().sqrt(), torch.tensor(1.0), rtol=1e-4, atol=0)


def test_pseudonorm_zero_gradient_stays_zero_and_nan_is_not_hidden() -> None:
    g = torch.zeros(3, 5)
    g[1] = 1e-3  # one sample with a gradient, the others exactly zero
    got = backward_through(PseudoNorm(per_sample=True), torch.zeros(3, 5), g)
    assert torch.isfinite(got).all()
    assert torch.equal(got[0], torch.zeros(5)) and torch.equal(got[2], torch.zeros(5))
    for per_sample in (True, False):
        got = backward_through(PseudoNorm(per_sample=per_sample), torch.ones(2, 2), torch.zeros(2, 2))
        assert torch.equal(got, torch.zeros(2, 2))
    bad = torch.tensor([[float("nan"), 1.0]])
    assert torch.isnan(backward_through(PseudoNorm(), torch.zeros(1, 2), bad)).all()


def test_pseudonorm_functional_matches_module() -> None:
    g = torch.randn(3, 4)
    for per_sample in (True, False):
        a = backward_through(PseudoNorm(per_sample=per_sample, scale=0.1), torch.zeros(3, 4), g)
        b = backward_through(partial(pseudo_norm, per_sample=per_sample, scale=0.1), torch.zeros(3, 4), g)
        assert torch.equal(a, b)


def test_reference_scale_is_the_output_side_gradient_rms_and_leaves_grads_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    model[0].weight.grad = torch.ones_like(model[0].weight)

    def loss() -> Tensor:
        return nn.functional.cross_entropy(model(x), y)

    h = model[:4](x)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model[4](h), y), h)
    expect = g.pow(2).mean().sqrt().item()
    assert reference_scale(model, "3", loss) == pytest.approx(expect, rel=1e-6)
    assert reference_scale(model, model[3], loss) == pytest.approx(expect, rel=1e-6)
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))  # untouched
    assert model[2].weight.grad is None
    # A mean-reduced loss: the reference halves when the batch doubles (same samples twice).
    x2, y2 = torch.cat([x, x]), torch.cat([y, y])
    doubled = reference_scale(model, "3", lambda: nn.functional.cross_entropy(model(x2), y2))
    assert doubled == pytest.approx(expect / 2, rel=1e-5)
    with pytest.raises(ConfigError, match="no layer named 'nope'"):
        reference_scale(model, "nope", loss)
    with pytest.raises(ProbeError, match="did not run"):
        reference_scale(model, nn.Tanh(), loss)


def test_pseudonorm_under_autocast_bf16() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), PseudoNorm(), nn.Linear(8, 3))
    ref = copy.deepcopy(model)
    x = torch.randn(4, 8)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    out.float().pow(2).sum().backward()
    ref(x).pow(2).sum().backward()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None and torch.isfinite(p.grad).all()
        torch.testing.assert_close(p.grad, q.grad, rtol=5e-2, atol=5e-2)


def _compile_works() -> str | None:
    """None when torch.compile runs here at all (checked on a function without PseudoNorm), else why not."""
    try:
        torch._dynamo.reset()
        torch.compile(lambda t: t * 2, fullgraph=True, backend="aot_eager")(torch.ones(2))
    except Exception as exc:  # platform-dependent: a build without dynamo support, an unsupported Python
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.slow  # torch.compile: seconds
def test_pseudonorm_compiles_without_graph_breaks() -> None:
    why = _compile_works()
    if why is not None:
        pytest.skip(f"torch.compile cannot run on this machine: {why}")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 6),
        nn.Tanh(),
        PseudoNorm(per_sample=True),
        nn.Linear(6, 6),
        nn.Tanh(),
        PseudoNorm(scale=0.5),
        nn.Linear(6, 2),
    )
    ref = copy.deepcopy(model)
    x = torch.randn(5, 6)
    try:
        # fullgraph=True turns any graph break into an error; aot_eager traces the backward too (the custom
        # one included) without needing a C++ toolchain.
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        compiled(x).pow(2).sum().backward()
    finally:
        torch._dynamo.reset()
    ref(x).pow(2).sum().backward()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- Rescale


def _layers(dtype: torch.dtype = torch.float32) -> list[tuple[nn.Module, Tensor]]:
    torch.manual_seed(0)
    return [
        (nn.Linear(5, 4).to(dtype), torch.randn(3, 5, dtype=dtype)),
        (nn.Conv2d(2, 3, 3, padding=1).to(dtype), torch.randn(2, 2, 6, 6, dtype=dtype)),
    ]


@pytest.mark.parametrize("case", [0, 1], ids=["linear", "conv2d"])
def test_rescale_float32_forward_within_one_rounding(case: int) -> None:
    layer, x = _layers()[case]
    before = layer(x).detach()
    w = layer.weight.detach().clone()
    apply_rescale(layer, 0.3)
    torch.testing.assert_close(layer.weight.detach(), w, rtol=2**-23, atol=0)
    torch.testing.assert_close(layer(x).detach(), before, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", [0, 1], ids=["linear", "conv2d"])
@pytest.mark.parametrize("gain", [4.0, 0.3, 7.0])
def test_rescale_keeps_forward_and_scales_gradient_and_step(case: int, gain: float) -> None:
    # float64, so that the comparisons test the algebra rather than float32 rounding of the forward difference
    layer, x = _layers(torch.float64)[case]
    plain = copy.deepcopy(layer)
    before = layer(x).detach()
    param = layer.weight
    apply_rescale(layer, gain)
    assert rescale_gain(layer) == gain
    assert layer.parametrizations.weight.original is param  # type: ignore[union-attr]  # optimizers keep working
    after = layer(x)
    if gain == 4.0:  # a power of two: gain·(W/gain) is exact
        assert torch.equal(after, before)
    torch.testing.assert_close(after.detach(), before, rtol=1e-14, atol=1e-15)

    after.pow(2).sum().backward()
    plain(x).pow(2).sum().backward()
    raw = layer.parametrizations.weight.original  # type: ignore[union-attr]
    assert raw.grad is not None and plain.weight.grad is not None
    torch.testing.assert_close(raw.grad, gain * plain.weight.grad, rtol=1e-12, atol=1e-14)

    lr = 0.01
    w0 = layer.weight.detach().clone()
    torch.optim.SGD([raw], lr=lr).step()
    torch.optim.SGD([plain.weight], lr=lr).step()
    plain_step = plain.weight.detach() - w0
    torch.testing.assert_close(layer.weight.detach() - w0, gain**2 * plain_step, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("case", [0, 1], ids=["linear", "conv2d"])
def test_remove_rescale_restores_a_plain_parameter(case: int) -> None:
    layer, x = _layers()[case]
    param = layer.weight
    key_set = set(layer.state_dict())
    apply_rescale(layer, 3.0)
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(2.0)  # type: ignore[union-attr]  # "training" moved raw
    effective = layer.weight.detach().clone()
    out = layer(x).detach()
    remove_rescale(layer)
    assert type(layer.weight) is nn.Parameter and layer.weight is param
    assert not hasattr(layer, "parametrizations") and rescale_gain(layer) is None
    assert set(layer.state_dict()) == key_set
    assert torch.equal(layer.weight.detach(), effective)
    assert torch.equal(layer(x), out)


def test_apply_rescale_twice_replaces_the_gain() -> None:
    layer, x = _layers()[0]
    before = layer(x).detach()
    apply_rescale(layer, 2.0)
    apply_rescale(layer, 8.0)
    assert rescale_gain(layer) == 8.0 and len(layer.parametrizations.weight) == 1  # type: ignore[union-attr,arg-type]
    assert torch.equal(layer(x).detach(), before)


def test_rescale_bias_and_layers_by_name() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2))
    x = torch.randn(4, 3)
    before = model(x).detach()
    rescale_layers(model, {"0": 2.0, "2": 0.5})
    apply_rescale(model[0], 4.0, name="bias")
    assert rescale_gain(model[0]) == 2.0 and rescale_gain(model[0], "bias") == 4.0
    assert rescale_gain(model[1]) is None
    assert torch.equal(model(x).detach(), before)
    with pytest.raises(ConfigError, match="nope"):
        rescale_layers(model, {"nope": 2.0, "0": 3.0})
    assert rescale_gain(model[0]) == 2.0  # a bad name leaves every layer as it was


def test_rescale_layers_refuses_a_tied_weight() -> None:
    lin = nn.Linear(3, 3)
    head = nn.Linear(3, 3)
    head.weight = lin.weight
    model = nn.Sequential(lin, nn.Tanh(), head)
    with pytest.raises(ConfigError, match="tied"):
        rescale_layers(model, {"2": 2.0})
    assert rescale_gain(head) is None


@pytest.mark.parametrize("gain", [0.0, -1.0, float("nan"), float("inf"), True, "2"])
def test_rescale_rejects_bad_gain(gain: float) -> None:
    with pytest.raises(ConfigError):
        Rescale(gain)


def test_rescale_refuses_what_it_cannot_do() -> None:
    layer = nn.Linear(3, 3)
    with pytest.raises(ConfigError, match="no rescale"):
        remove_rescale(layer)
    with pytest.raises(ConfigError, match="not a parameter"):
        apply_rescale(nn.Tanh(), 2.0)
    nn.utils.parametrizations.orthogonal(layer)
    with pytest.raises(ConfigError, match="already parametrized"):
        apply_rescale(layer, 2.0)


# ---------------------------------------------------------------- weight_penalty


def test_weight_penalty_value_and_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Conv1d(1, 2, 3), nn.Linear(4, 2))
    lam = 0.01
    weights = [model[0].weight, model[2].weight, model[3].weight]
    value = weight_penalty(model, lam)
    torch.testing.assert_close(value, lam * torch.stack([w.pow(2).sum() for w in weights]).sum())
    value.backward()
    for w in weights:
        torch.testing.assert_close(w.grad, 2 * lam * w.detach())
    for p in (model[0].bias, model[1].weight, model[1].bias, model[3].bias):
        assert p.grad is None  # biases and the 1-D norm gain are not penalised


def test_weight_penalty_inputs_sharing_and_rescale() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(3, 3)
    tied = nn.Sequential(lin, nn.Tanh(), lin)
    expect = 0.5 * lin.weight.pow(2).sum()
    torch.testing.assert_close(weight_penalty(tied, 0.5), expect)  # a shared weight counts once
    torch.testing.assert_close(weight_penalty([lin, lin], 0.5), expect)
    torch.testing.assert_close(weight_penalty(lin.weight, 0.5), expect)
    # Tensors passed by hand are penalised whatever they are.
    torch.testing.assert_close(weight_penalty([lin.bias], 0.5), 0.5 * lin.bias.pow(2).sum())
    # A rescaled layer is penalised through its effective weight, so the value stays put when it is applied.
    apply_rescale(lin, 3.0)
    torch.testing.assert_close(weight_penalty(tied, 0.5), expect)
    weight_penalty(tied, 0.5).backward()
    raw = lin.parametrizations.weight.original  # type: ignore[union-attr]
    torch.testing.assert_close(raw.grad, 0.5 * 2 * 3.0 * lin.weight.detach())
    assert weight_penalty(nn.Tanh(), 1.0).item() == 0.0
    assert weight_penalty(nn.Linear(2, 2), 0.0).item() == 0.0
    half = nn.Linear(4, 4).half()
    assert weight_penalty(half, 1.0).dtype == torch.float32
    with pytest.raises(ConfigError):
        weight_penalty(lin, -1.0)
    with pytest.raises(ConfigError):
        weight_penalty(["weight"], 1.0)  # type: ignore[list-item]


# -- structural remedies in memory: skip connections, RNN → GRU ---------------------------------------------------
def test_residual_blocks_wrap_equal_shape_pairs_and_keep_names() -> None:
    from gradscope.remedies.apply import apply, residual_blocks
    from gradscope.results import Suggestion
    from gradscope.vocab import Remedy, Where

    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(4, 8), nn.Tanh()]
    for _ in range(5):
        layers += [nn.Linear(8, 8), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Linear(8, 3))
    weighted = [name for name, m in model.named_children() if isinstance(m, nn.Linear)]
    # (0..3) maps 4 → 8: no skip; (4..7) and (8..11) keep the shape; the head (12) is left alone
    assert residual_blocks(model, weighted, 2) == [("4", "7"), ("8", "11")]
    suggestion = Suggestion(Remedy.RESIDUAL, tuple(weighted), Where.MODEL, {"block": 2}, "test")
    assert (
        suggestion.in_memory and not Suggestion(Remedy.RESIDUAL, (), Where.MODEL, {"kind": "attention"}, "").in_memory
    )
    patched = apply(model, [suggestion])
    assert patched.applied == [suggestion] and not patched.skipped
    assert [n for n, _ in patched.model.named_modules()] == [n for n, _ in model.named_modules()]
    x = torch.randn(5, 4)
    h = model[:4](x)
    a = model[4:8](h) + h
    b = model[8:12](a) + a
    assert torch.allclose(patched(x), model[12](b), atol=1e-6)
    assert torch.equal(model(x), nn.Sequential(*model)(x))  # the original is untouched
    convs = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())
    assert residual_blocks(convs, ["0", "2"], 2) == [("0", "3")]
    strided = nn.Sequential(nn.Conv2d(3, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))
    assert residual_blocks(strided, ["0", "2"], 2) == []


def test_rnn_swapped_for_a_gru_with_the_same_interface() -> None:
    from gradscope.remedies.apply import apply
    from gradscope.remedies.code import code_change
    from gradscope.results import Suggestion
    from gradscope.vocab import Remedy, Where

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.RNN(6, 10, num_layers=2, batch_first=True, bidirectional=True)
            self.head = nn.Linear(20, 3)

        def forward(self, x: Tensor) -> Tensor:
            out, _ = self.rnn(x, torch.zeros(4, x.shape[0], 10))
            return self.head(out)

    model = Tagger()
    swap = Suggestion(Remedy.GATED_RECURRENT, ("rnn",), Where.REPLACE, {"module": "GRU"}, "test")
    patched = apply(model, [swap])
    gru = patched.model.rnn
    assert isinstance(gru, nn.GRU) and isinstance(model.rnn, nn.RNN)
    assert (gru.input_size, gru.hidden_size, gru.num_layers, gru.batch_first, gru.bidirectional) == (
        6,
        10,
        2,
        True,
        True,
    )
    assert patched(torch.randn(2, 7, 6)).shape == (2, 7, 3)
    assert "nn.GRU(6, 10, num_layers=2, batch_first=True, bidirectional=True)" in code_change(model, [swap])
    not_rnn = Suggestion(Remedy.GATED_RECURRENT, ("head",), Where.REPLACE, {"module": "GRU"}, "test")
    assert "not an nn.RNN" in apply(model, [not_rnn]).skipped[0][1]


def test_code_change_quotes_a_module_name_that_is_no_identifier() -> None:
    """``add_module`` takes any string: a name with a line break or a space is quoted in the code, so it can neither
    break a line of it nor add one (the renderers keep the code's own line breaks)."""
    from gradscope.remedies.code import code_change
    from gradscope.results import Suggestion
    from gradscope.vocab import Remedy, Where

    model = nn.Module()
    model.add_module("evil\nimport os", nn.Linear(4, 4))
    model.add_module("two words", nn.Linear(4, 4))
    norm = Suggestion(Remedy.NORMALIZATION, ("evil\nimport os", "two words"), Where.AFTER, {"norm": "LayerNorm"}, "t")
    code = code_change(model, [norm])
    assert "model.get_submodule('evil\\nimport os')" in code and "model.get_submodule('two words')" in code
    assert not any(line.startswith("import") for line in code.splitlines())
    assert all(re.fullmatch(r"\w+", attr) for attr in re.findall(r"self\.(\S+) =", code))


class _SharedLoop(nn.Module):
    """One Linear+Tanh block called 4 times: the scan names its calls 'block.0#1' … 'block.0#4'."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        for _ in range(4):
            x = self.block(x)
        out: Tensor = self.head(x)
        return out


def test_remedies_on_the_calls_of_a_shared_module_act_on_the_module_once() -> None:
    # benchmarks/repair.py, a block called in a loop: pseudo-norm's reference_scale and apply() named layers by call
    # ('block.1#20') and failed with "no layer named"; each call is the shared module, patched once.
    from gradscope.remedies.apply import apply, module_name
    from gradscope.results import Remedy, Suggestion, Where

    torch.manual_seed(0)
    model = _SharedLoop()
    x = torch.randn(5, 8)
    scale = reference_scale(model, "block.1#4", lambda: model(x).square().mean())
    assert scale > 0 and module_name("block.1#4") == "block.1" and module_name("head") == "head"
    calls = ("block.1#1", "block.1#3")
    pn = Suggestion(Remedy.PSEUDO_NORM, calls, Where.AFTER, {"scale": 1.0}, "test", ())
    norm = Suggestion(Remedy.NORMALIZATION, ("block.0#1", "block.0#2"), Where.AFTER, {"norm": "BatchNorm1d"}, "t", ())
    gains = {"block.0#1": 2.0, "block.0#4": 5.0}
    rescale = Suggestion(Remedy.RESCALE, tuple(gains), Where.REPLACE, {"gains": gains}, "test", ())
    patched = apply(model, [pn, norm, rescale])
    assert not patched.skipped and len(patched.applied) == 3
    assert sorted(patched.added) == ["batchnorm1d_after_block_0", "pseudonorm_after_block_1"]
    assert patched.model(x).shape == (5, 3)
