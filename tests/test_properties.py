"""Property-based tests (issue 6): random architectures scan without a crash and are left exactly as found; the
config loader and the option parsers never fail with anything but a ``ConfigError``.

Architectures are drawn as a list of blocks — plain layers, residual blocks, two-branch blocks (sum or concat), a
module applied twice (shared weights), BatchNorm/LayerNorm, Dropout (draws from the global RNG) — with random
widths and activations, some parameters frozen, some modules in eval mode, stale ``.grad`` tensors and a user
hook already registered. After ``scan``, ``scan`` + ``verify_fix`` (``--fix``), a scan that fails midway, or a
short ``run_trial``, every parameter, buffer, grad, ``requires_grad`` flag, training flag, hook and the global
RNG states of torch, ``random`` and NumPy must be bit-for-bit what they were.

Example counts are modest (``max_examples`` below) so the file runs in well under a minute on 2 cores; the three
properties that scan, train or run the CLI many times (about a second each) are marked ``slow``. The CLI fuzz scans
``tests/assets/tiny_relu_mlp.py``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import asset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules import module as module_globals
from typer.testing import CliRunner

from gradscope.cli import app
from gradscope.cli.common import parse_kwargs as _parse_kwargs
from gradscope.cli.common import parse_shape as _parse_shape
from gradscope.config import Config, load_config, merge
from gradscope.errors import ConfigError, GradscopeError, ProbeError
from gradscope.pipeline import verify_fix
from gradscope.results import Status
from gradscope.scanner import scan

ARCH_EXAMPLES = 40
FAILURE_EXAMPLES = 25
TRIAL_EXAMPLES = 10
CONFIG_EXAMPLES = 40
CLI_EXAMPLES = 25

COMMON = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], derandomize=True
)

# --------------------------------------------------------------------------------------- random architectures

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "none": nn.Identity,
}
KINDS = ("linear", "residual", "branch_sum", "branch_cat", "shared", "batchnorm", "layernorm", "dropout")


class Plain(nn.Module):
    def __init__(self, width_in: int, width: int, act: str) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(width_in, width), ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class Residual(nn.Module):
    def __init__(self, width: int, act: str) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(width, width), ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.fc(x))


class Branch(nn.Module):
    def __init__(self, width_in: int, width: int, act: str, concat: bool) -> None:
        super().__init__()
        self.left, self.right = (
            nn.Linear(width_in, width),
            nn.Sequential(nn.Linear(width_in, width), ACTIVATIONS[act]()),
        )
        self.concat = concat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.left(x), self.right(x)
        return torch.cat([a, b], dim=-1) if self.concat else a + b


class Shared(nn.Module):
    """One Linear used twice in a forward pass: tied weights, two hook calls per batch."""

    def __init__(self, width: int, act: str) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(width, width), ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.fc(x)))


class Net(nn.Module):
    def __init__(self, width_in: int, blocks: list[tuple[str, int, str]], out: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = width_in
        for kind, w, act in blocks:
            if kind == "linear":
                layers.append(Plain(width, w, act))
                width = w
            elif kind == "residual":
                layers.append(Residual(width, act))
            elif kind in ("branch_sum", "branch_cat"):
                layers.append(Branch(width, w, act, concat=kind == "branch_cat"))
                width = 2 * w if kind == "branch_cat" else w
            elif kind == "shared":
                layers.append(Shared(width, act))
            elif kind == "batchnorm":
                layers.append(nn.BatchNorm1d(width))
            elif kind == "layernorm":
                layers.append(nn.LayerNorm(width))
            else:
                layers.append(nn.Dropout(0.25))
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


block = st.tuples(st.sampled_from(KINDS), st.integers(1, 12), st.sampled_from(sorted(ACTIVATIONS)))


@st.composite
def architectures(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "width_in": draw(st.integers(1, 10)),
        "blocks": draw(st.lists(block, min_size=0, max_size=7)),
        "out": draw(st.integers(1, 6)),
        "init_seed": draw(st.integers(0, 2**16)),
        "batch": draw(st.integers(2, 6)),
        "frozen": draw(st.lists(st.booleans(), min_size=0, max_size=30)),
        "eval": draw(st.lists(st.booleans(), min_size=0, max_size=30)),
        "stale_grads": draw(st.booleans()),
        "user_hook": draw(st.booleans()),
        "rng": draw(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))),
    }


def build(spec: dict[str, Any]) -> tuple[nn.Module, list[torch.Tensor]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["init_seed"])
        model = Net(spec["width_in"], spec["blocks"], spec["out"])
    params = list(model.parameters())
    for p, frozen in zip(params[:-2], spec["frozen"], strict=False):  # the head stays trainable: something to scan
        p.requires_grad_(not frozen)
    for m, off in zip(model.modules(), spec["eval"], strict=False):
        m.training = not off
    generator = torch.Generator().manual_seed(spec["init_seed"])
    if spec["stale_grads"]:
        for p in params[::2]:
            p.grad = torch.randn(p.shape, generator=generator)
    if spec["user_hook"]:
        model.head.register_forward_hook(_user_hook)
        model.register_forward_pre_hook(_user_pre_hook)
    batches = [torch.randn(spec["batch"], spec["width_in"], generator=generator) for _ in range(2)]
    return model, batches


def _user_hook(_m: nn.Module, _i: Any, _o: Any) -> None:
    return None


def _user_pre_hook(_m: nn.Module, _i: Any) -> None:
    return None


def seed_everything(seeds: tuple[int, int, int]) -> None:
    torch.manual_seed(seeds[0])
    random.seed(seeds[1])
    np.random.seed(seeds[2])


HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
    "_forward_hooks_with_kwargs",
)
GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "modules": [
            (name, type(m), m.training, {h: dict(getattr(m, h, {})) for h in HOOK_DICTS})
            for name, m in model.named_modules()
        ],
        "params": [
            (name, id(p), p.detach().clone(), p.requires_grad, p.dtype, None if p.grad is None else p.grad.clone())
            for name, p in model.named_parameters()
        ],
        "buffers": [(name, id(b), b.clone()) for name, b in model.named_buffers()],
        "global_hooks": {h: dict(getattr(module_globals, h)) for h in GLOBAL_HOOKS},
        "torch_rng": torch.get_rng_state(),
        "random_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
    }


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["modules"] == after["modules"]
    assert before["global_hooks"] == after["global_hooks"]
    assert len(before["params"]) == len(after["params"])
    for (n, i, data, rg, dt, grad), (n2, i2, data2, rg2, dt2, grad2) in zip(
        before["params"], after["params"], strict=True
    ):
        assert (n, i, rg, dt) == (n2, i2, rg2, dt2), n
        assert torch.equal(data, data2), n
        assert (grad is None) == (grad2 is None), n
        assert grad is None or torch.equal(grad, grad2), n
    for (n, i, b), (n2, i2, b2) in zip(before["buffers"], after["buffers"], strict=True):
        assert (n, i) == (n2, i2) and torch.equal(b, b2), n
    assert torch.equal(before["torch_rng"], after["torch_rng"])
    assert before["random_rng"] == after["random_rng"]
    np_before, np_after = before["numpy_rng"], after["numpy_rng"]
    assert np_before[0] == np_after[0] and np.array_equal(np_before[1], np_after[1])
    assert np_before[2:] == np_after[2:]


@pytest.mark.slow
@settings(COMMON, max_examples=ARCH_EXAMPLES)
@given(spec=architectures(), fix=st.booleans(), mode=st.sampled_from(["train", "eval"]))
def test_random_architectures_scan_and_are_left_exactly_as_found(spec: dict[str, Any], fix: bool, mode: str) -> None:
    model, batches = build(spec)
    seed_everything(spec["rng"])
    before = snapshot(model)
    config = load_config(None, {"probe.mode": mode})
    report = scan(model, batches, config=config)
    if fix:
        report = verify_fix(model, batches, report, config=config)
        assert report.fix is not None
    assert_same(before, snapshot(model))
    assert report.layers, "a model with a trainable head has at least one layer"
    assert {layer.status for layer in report.layers} <= set(Status)
    json.dumps(report.to_dict(), allow_nan=False)  # non-finite numbers are written as null


@settings(COMMON, max_examples=FAILURE_EXAMPLES)
@given(spec=architectures(), where=st.integers(0, 2))
def test_a_scan_that_fails_midway_leaves_the_model_as_found(spec: dict[str, Any], where: int) -> None:
    model, batches = build(spec)
    bad = torch.zeros(spec["batch"], spec["width_in"] + 1)  # one feature too many: forward fails
    batches.insert(min(where, len(batches)), bad)
    seed_everything(spec["rng"])
    before = snapshot(model)
    with pytest.raises(ProbeError, match="forward failed"):
        scan(model, batches)
    assert_same(before, snapshot(model))


@pytest.mark.slow
@settings(COMMON, max_examples=TRIAL_EXAMPLES)
@given(spec=architectures())
def test_trial_leaves_the_model_and_rng_as_found(spec: dict[str, Any]) -> None:
    from gradscope.trial import run_trial

    model, _ = build(spec)
    generator = torch.Generator().manual_seed(spec["init_seed"])
    data = (
        torch.randn(40, spec["width_in"], generator=generator),
        torch.randint(0, spec["out"], (40,), generator=generator),
    )
    seed_everything(spec["rng"])
    before = snapshot(model)
    result = run_trial(
        model, data=data, candidates={}, steps=3, optimizer="sgd", lr=None, seed=0, seeds=1, batch_size=8
    )
    assert result.arms
    assert_same(before, snapshot(model))


# ------------------------------------------------------------------------------------------- config fuzzing

SECTIONS = {
    "model": ["kwargs"],
    "probe": ["batches", "batch_size", "seed", "device", "mode", "seq_len", "image_size"],
    "diagnose": [
        "reference_layers",
        "vanishing_warning",
        "vanishing_error",
        "exploding_warning",
        "exploding_error",
        "collapse_ratio",
        "saturation_derivative",
        "saturated_units",
        "dead_units",
        "underflow_margin",
        "large_weight_gain",
    ],
    "suggest": ["pseudo_norm_min_ratio", "rescale_max_gain", "regularize_lambda"],
    "policy": ["fail_on", "fail_statuses", "severity", "layers", "baseline_factor"],
}
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["error", "warning", "ignore", "off", "cpu", "cuda", "eval", "*", "1e-3"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
any_key = st.one_of(st.sampled_from(sorted({k for keys in SECTIONS.values() for k in keys})), st.text(max_size=8))
section_body = st.one_of(values, st.dictionaries(any_key, values, max_size=4))
config_data = st.one_of(
    values, st.dictionaries(st.one_of(st.sampled_from(sorted(SECTIONS)), st.text(max_size=8)), section_body, max_size=4)
)


@settings(COMMON, max_examples=CONFIG_EXAMPLES)
@given(data=config_data)
def test_config_merge_accepts_or_names_the_problem(data: Any) -> None:
    try:
        config = merge(Config(), data, source="fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).strip() and "\n" not in str(exc)
        return
    assert isinstance(config, Config)
    assert config.probe.batches >= 1 and config.probe.batch_size >= 1


yaml_fragments = st.sampled_from(
    [
        "probe:\n",
        "  batches: ",
        "  seed: ",
        "diagnose:\n",
        "  vanishing_error: ",
        "model:\n  kwargs:\n    depth: ",
        "!!python/object/apply:os.getpid []",
        "!!python/name:os.system",
        "&a [*a]",
        "{",
        "[",
        "- ",
        "\t",
        ": ",
        "\n",
        "3",
        "-1",
        "0",
        "1e-3",
        ".inf",
        "yes",
        "null",
        "~",
        "'x'",
        '"\\u0000"',
        "%YAML 1.1\n---\n",
        "...\n",
    ]
)
yaml_text = st.one_of(st.lists(yaml_fragments, max_size=10).map("".join), st.text(max_size=40))


@settings(COMMON, max_examples=CONFIG_EXAMPLES)
@given(text=yaml_text)
def test_config_files_load_or_fail_with_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert "fuzz.yaml" in str(exc)
        return
    assert isinstance(config, Config)


@settings(COMMON, max_examples=CONFIG_EXAMPLES)
@given(
    text=st.one_of(
        st.text(max_size=16), st.lists(st.integers(-3, 40), max_size=5).map(lambda xs: ",".join(map(str, xs)))
    )
)
def test_input_shape_parsing(text: str) -> None:
    try:
        shape = _parse_shape(text)
    except ConfigError as exc:
        assert "--input-shape" in str(exc)
        return
    assert shape and all(isinstance(d, int) and d > 0 for d in shape)


@settings(COMMON, max_examples=CONFIG_EXAMPLES)
@given(text=st.one_of(st.text(max_size=16), values.map(json.dumps)))
def test_model_kwargs_parsing(text: str) -> None:
    try:
        kwargs = _parse_kwargs(text)
    except ConfigError as exc:
        assert "--model-kwargs" in str(exc)
        return
    assert isinstance(kwargs, dict)


MODEL_FILE = asset("tiny_relu_mlp.py")  # Linear(8, 8) → ReLU → Linear(8, 4): 8 inputs

runner = CliRunner()


option_values = {
    "--batches": st.integers(-5, 3).map(str) | st.text(max_size=4),
    "--batch-size": st.integers(-5, 9).map(str),
    "--seed": (st.integers(-(2**70), 2**70) | st.sampled_from([2**63, -(2**63) - 1, 2**64, 2**63 - 1])).map(str),
    "--input-dtype": st.sampled_from(["float32", "float16", "bfloat16", "float64", "int64", "int8", "", "FLOAT32"]),
    "--input-shape": st.one_of(
        st.sampled_from(["4,8", "2,8", "3x8", "8", "0,8", "4,9", ",", "a,b"]), st.text(max_size=5)
    ),
    "--device": st.sampled_from(["cpu", "auto", "gpu", "cuda:x", "CPU", ""]),
    "--model-kwargs": st.sampled_from(["{}", "null", '{"depth": 2}', "[", "1"]),
    "--fail-on": st.sampled_from(["error", "warning", "never", "info", ""]),
    "--format": st.sampled_from(["table", "json", "markdown", "xml"]),
}


@pytest.mark.slow
@settings(COMMON, max_examples=CLI_EXAMPLES)
@given(
    options=st.dictionaries(st.sampled_from(sorted(option_values)), st.just(None), max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: option_values[k] for k in keys})
    )
)
def test_cli_options_never_crash(options: dict[str, str]) -> None:
    args = ["scan", str(MODEL_FILE), "--batches", "1", "--batch-size", "4"]
    for name, value in options.items():
        args += [f"{name}={value}"]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        args,
        repr(result.exception),
    )
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr, (args, result.stderr)


def test_library_scan_raises_only_gradscope_errors_on_a_broken_forward() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)[:, 7]  # IndexError inside forward

    with pytest.raises(GradscopeError):
        scan(Broken(), [torch.zeros(2, 3)])
