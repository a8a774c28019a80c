"""Standard architectures at their libraries' default init train as built: no error verdict, and the designs that
start with a closed gate (LayerScale, zero-init heads and residual norms, ReZero, adaLN-zero, LoRA) get an info
finding that names the gate (tests/fixtures/standard.py: torchvision/timm/Hugging Face look-alikes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from fixtures import standard as S

import gradscope
from gradscope.config import Config
from gradscope.vocab import Rule, Severity, Status

FIXTURES = {cls.__name__: cls for cls in S.ALL}

# The parameters each gated design closes at init (a prefix of the gate's name is enough).
GATES = {
    "ResNet18ZeroInit": "layer1.0.bn2.weight",
    "ResNet50ZeroInit": "layer1.0.bn3.weight",
    "ViT": "head.weight",
    "ConvNeXt": "layer_scale",
    "CaiT": "gamma",
    "BEiT": "head.weight",
    "DiT": "adaLN",
    "ReZeroTransformer": "resweight",
    "LoRAMLP": "lora_B",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _scan(name: str) -> gradscope.Report:
    if name.startswith("hf_"):
        model, inputs = S.build_hf_model(name[3:]), S.fixture_inputs(name[3:])
    else:
        model, inputs = FIXTURES[name](), S.fixture_inputs(name)
    return gradscope.scan(model, [inputs] * 4)


@pytest.mark.parametrize("name", list(FIXTURES))
def test_no_error_verdict_at_default_init(name: str) -> None:
    report = _scan(name)
    errors = [(f.rule, f.message) for f in report.findings if f.severity is Severity.ERROR]
    assert report.healthy, errors
    # never the advice to add what the model already has, or to re-initialise a deliberate design
    remedies = {s.remedy.value for s in report.suggestions}
    assert not remedies & {"residual", "init", "rescale", "normalization"}, remedies


@pytest.mark.parametrize("name", list(GATES))
def test_gated_designs_get_an_info_finding_naming_the_gate(name: str) -> None:
    report = _scan(name)
    gated = [f for f in report.findings if f.rule == Rule.GATED_AT_INIT]
    assert len(gated) == 1 and gated[0].severity is Severity.INFO
    assert any(GATES[name] in gate for gate in gated[0].evidence["gates"]), gated[0].evidence["gates"]
    assert all(report.layer(n).status is Status.GATED for n in gated[0].layers)
    assert "" not in gated[0].evidence["gates"]  # never the root module for a child's state


@pytest.mark.skipif(not S.HF_AVAILABLE, reason="transformers is not installed")
@pytest.mark.parametrize("name", [f"hf_{n}" for n in S.HF_MODELS])
def test_hugging_face_models_have_no_error_verdict(name: str) -> None:
    report = _scan(name)
    assert report.healthy, [(f.rule, f.message) for f in report.findings if f.severity is Severity.ERROR]
    assert "residual" not in {s.remedy.value for s in report.suggestions}


def test_a_pre_norm_transformer_with_scaled_residual_projections_has_nothing_to_say() -> None:
    """minGPT: the small residual projections sit in chains a norm layer cuts after a layer or two, so their size
    next to the head's is no forward growth; a zero bias or position table is no gate (it adds, it gates nothing)."""
    report = _scan("MinGPT")
    assert not [(f.rule, f.message) for f in report.findings if f.severity is not Severity.INFO]
    assert Rule.GATED_AT_INIT not in {f.rule for f in report.findings}


def test_a_zero_parameter_that_only_adds_or_joins_is_no_gate() -> None:
    """torchvision's ViT: the zero head is a gate; its zero class token, joined to the patches by ``cat``, holds
    nothing shut (read from the autograd graph), so it is neither named a gate nor redrawn for the re-probe."""
    report = _scan("ViT")
    gated = next(f for f in report.findings if f.rule == Rule.GATED_AT_INIT)
    assert set(gated.evidence["gates"]) == {"head.weight"}, gated.evidence["gates"]


def test_additive_parameters_are_told_from_the_graph() -> None:
    from gradscope.torchutil import AutogradGraph

    table, token, gain = (torch.nn.Parameter(torch.zeros(1, 3, 4)) for _ in range(3))
    weight = torch.nn.Parameter(torch.zeros(4, 4))
    x = torch.nn.Linear(4, 4)(torch.randn(2, 3, 4))  # data: computed from the input by a layer
    h = torch.cat([token.expand(2, -1, -1)[:, :1], x], dim=1)[:, 1:] + table
    out = (gain * h) @ (weight + weight.detach()).T  # a weight joined with a constant is still a weight
    assert AutogradGraph([out]).additive_parameters() == {id(table), id(token)}


def test_sgd_vanishing_in_a_normalized_residual_model_gets_gradient_scale_fixes_only() -> None:
    """Under SGD the attention-score projections of a transformer get gradients far below the rest (README,
    Limitations): an error, but more norm layers or a re-init for a shrinking signal are not its fix in a model that
    already normalizes and adds skip connections (Swin); the fixes left act on the gradient's scale."""
    model, inputs = FIXTURES["Swin"](), S.fixture_inputs("Swin")
    config = Config().with_overrides({"diagnose.optimizer": "sgd"})
    report = gradscope.scan(model, [inputs] * 4, config=config)
    assert Rule.VANISHING_GRADIENT in {f.rule for f in report.findings}
    remedies = {s.remedy.value for s in report.suggestions}
    assert "rescale" in remedies and not remedies & {"normalization", "init", "clip", "residual"}, remedies


def test_a_stem_conv_feeding_batchnorm_is_information_under_adam_and_a_warning_under_sgd() -> None:
    """ResNet's conv1 reads raw pixels over a large image: its weight gradient is far above the head's. It feeds
    BatchNorm (scale-invariant); under Adam, whose step does not follow the gradient's scale, that is information."""
    model, inputs = FIXTURES["ResNet18"](), S.fixture_inputs("ResNet18")
    severity = {}
    for optimizer in ("adam", "sgd"):
        config = Config().with_overrides({"diagnose.optimizer": optimizer})
        report = gradscope.scan(model, [inputs] * 4, config=config)
        severity[optimizer] = next(f.severity for f in report.findings if f.rule == Rule.EXPLODING_GRADIENT)
    assert severity == {"adam": Severity.INFO, "sgd": Severity.WARNING}


def test_a_broken_stack_is_no_gate() -> None:
    """Tiny weights everywhere (N(0, 1e-3), 30 tanh layers) are not a design: the scan stays an error."""
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for _ in range(30):
        fc = torch.nn.Linear(32, 32)
        torch.nn.init.normal_(fc.weight, std=1e-3)
        layers += [fc, torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(32, 10))
    report = gradscope.scan(model, [torch.randn(16, 32) for _ in range(4)])
    assert not report.healthy
    assert Rule.GATED_AT_INIT not in {f.rule for f in report.findings}
