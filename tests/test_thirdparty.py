"""Real third-party model files, as a user meets them: one command, at most one flag, no helper file.

The models are look-alikes in ``tests/assets/thirdparty/`` — written for these tests, with the *interfaces* of
karpathy/nanoGPT's ``model.py`` and of pytorch/examples' ``word_language_model`` and ``dcgan`` (see each file's
docstring for what it reproduces). Each scan runs in a real subprocess, from the assets directory, with at most one of
``--model-kwargs`` / ``--input-shape`` (plus ``--format json``, which only changes the output) and must:

* exit 0 or 1 — a verdict on the model — never 2 (bad input);
* print exactly one strict JSON report on stdout;
* say in ``probe.inputs`` which inputs it used: ``[{"shape": [...], "dtype": "..."}]``, one entry per input tensor
  in the order forward() gets them (a ``(h, c)`` state gives two), and in ``probe.assumed`` what it took for granted;
* report as ``probe.batch_size`` the dimension that indexes samples, which for a sequence-first model is dimension 1.

The last two tests check the assets themselves (plain torch, no gradscope): they run with the inputs their originals
take, and import nothing beyond torch and the standard library.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import ASSETS as ALL_ASSETS
from helpers import Outcome, check_report_schema, run_cli, strict_json

ASSETS = ALL_ASSETS / "thirdparty"
DEFAULT_BATCH = 16  # gradscope's default --batch-size

NANOGPT = {"config": {"n_layer": 3, "n_head": 2, "n_embd": 32, "block_size": 64, "vocab_size": 256}}
RNN_LM = {"rnn_type": "LSTM", "ntoken": 100, "ninp": 16, "nhid": 16, "nlayers": 2}
TRANSFORMER = {"ntoken": 100, "ninp": 16, "nhead": 2, "nhid": 32, "nlayers": 2}
DCGAN = {"ngpu": 1}


# ----------------------------------------------------------------------------------------------- running a scan


@dataclass(frozen=True)
class Run:
    """One finished ``gradscope scan`` process and how long it took."""

    outcome: Outcome
    seconds: float

    def error(self) -> str:
        """The ``error:`` line gradscope printed (model warnings may come before it), else the last stderr line."""
        lines = [line for line in self.outcome.stderr.splitlines() if line.strip()]
        return next((line for line in lines if line.startswith("error:")), lines[-1] if lines else "")


def scan_json(target: str | Path, *flags: str, cwd: Path = ASSETS) -> Run:
    """``gradscope scan TARGET FLAGS --format json`` in a subprocess started in ``cwd``."""
    started = time.monotonic()
    outcome = run_cli("scan", target, *flags, "--format", "json", cwd=cwd)
    return Run(outcome, time.monotonic() - started)


def kwargs(value: dict[str, Any]) -> list[str]:
    """``--model-kwargs`` with ``value`` as JSON."""
    return ["--model-kwargs", json.dumps(value)]


def report_of(run: Run) -> dict[str, Any]:
    """The report of a scan that reached a verdict: exit 0 or 1 (not 2) and one strict JSON report on stdout."""
    assert run.outcome.code in (0, 1), f"exit {run.outcome.code}, expected a verdict (0 or 1): {run.error()}"
    report = strict_json(run.outcome.stdout)
    check_report_schema(report)
    return dict(report)


def probe_inputs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """``probe.inputs``: one ``{"shape": [...], "dtype": "..."}`` per input tensor."""
    inputs = report["probe"].get("inputs")
    assert inputs, f"the report does not say which inputs it used (no probe.inputs): probe = {report['probe']}"
    return list(inputs)


def layer(report: dict[str, Any], name: str) -> dict[str, Any]:
    """The report's row for the module named ``name``."""
    rows: dict[str, dict[str, Any]] = {row["name"]: row for row in report["layers"]}
    assert name in rows, f"no layer {name!r} in the report; layers: {', '.join(rows)}"
    return rows[name]


# ---------------------------------------------------------------------------------------------------- nanoGPT


def _without_annotations(tmp_path: Path) -> Path:
    """A copy of nanogpt_like.py whose constructors take an unannotated ``config``, as the real nanoGPT's do."""
    source = (ASSETS / "nanogpt_like.py").read_text(encoding="utf-8")
    assert "config: GPTConfig" in source
    path = tmp_path / "nanogpt_like.py"
    path.write_text(source.replace("config: GPTConfig", "config"), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("annotated", [True, False], ids=["config-annotated", "config-unannotated"])
def test_nanogpt_config_dict_builds_the_dataclass(annotated: bool, tmp_path: Path) -> None:
    """``--model-kwargs '{"config": {...}}'`` builds ``GPTConfig(**dict)`` for ``GPT(config)``.

    Before: exit 2, "GPT() raised AttributeError: 'dict' object has no attribute 'vocab_size'"."""
    where = ASSETS if annotated else _without_annotations(tmp_path).parent
    report = report_of(scan_json("nanogpt_like.py:GPT", *kwargs(NANOGPT), cwd=where))
    assert report["model"]["class"] == "GPT"
    layer(report, "transformer.h.2.mlp.up")  # n_layer=3 came through: blocks 0, 1, 2
    tokens = probe_inputs(report)[0]
    assert tokens["dtype"] == "int64"
    assert tokens["shape"][0] == report["probe"]["batch_size"] == DEFAULT_BATCH
    assert tokens["shape"][1] <= NANOGPT["config"]["block_size"]


@pytest.mark.slow
def test_misspelt_config_fields_are_named_with_the_field_meant(tmp_path: Path) -> None:
    """Before: plural or run-together field names (``n_layers``, ``nlayer``) fell through to GPT() with a dict and
    "AttributeError: 'dict' object has no attribute 'vocab_size'"."""
    where = _without_annotations(tmp_path).parent
    run = scan_json("nanogpt_like.py:GPT", *kwargs({"config": {"n_layers": 2, "nhead": 2, "n_embd": 32}}), cwd=where)
    assert run.outcome.code == 2
    assert "built as GPTConfig" in run.outcome.stderr
    assert "n_layers (did you mean n_layer?)" in run.outcome.stderr
    assert "nhead (did you mean n_head?)" in run.outcome.stderr


@pytest.mark.slow
def test_nanogpt_discovery_picks_the_top_level_model() -> None:
    """Without ``:GPT``, discovery picks ``GPT``, the class that uses the file's other classes and is used by none.

    Before: exit 2, "several model classes could be built (CausalSelfAttention, MLP, Block, GPT); pick one with
    nanogpt_like.py:CausalSelfAttention"."""
    report = report_of(scan_json("nanogpt_like.py", *kwargs(NANOGPT)))
    assert report["model"]["class"] == "GPT"


@pytest.mark.slow
def test_nanogpt_without_flags_proposes_gpt_first() -> None:
    """With no flag at all, either GPT is scanned (its config has defaults for every field) or the error proposes it.

    Before: exit 2, "no model found by discovery (candidates: LayerNorm (class, needs ndim, bias), …); pick one with
    nanogpt_like.py:LayerNorm"."""
    run = scan_json("nanogpt_like.py")
    if run.outcome.code == 2:
        assert "nanogpt_like.py:GPT" in run.error(), run.error()
        assert "pick one with nanogpt_like.py:LayerNorm" not in run.error()
    else:
        assert report_of(run)["model"]["class"] == "GPT"


# ------------------------------------------------------------------------------------- word_language_model


@pytest.mark.slow
def test_rnn_lm_sequence_first_with_required_hidden() -> None:
    """``forward(input, hidden)`` on ``(T, B)`` token ids: the probe supplies ``hidden`` (``None`` or
    ``init_hidden(B)``) and reports B, dimension 1, as the batch size.

    Before: exit 2, "RNNModel.forward() missing 1 required positional argument: 'hidden'". (Inference alone would also
    draw batch-first ``(16, 32)`` ids for this sequence-first model; with a helper's ``example_inputs()`` the header
    reads "4 batches × 35", the sequence length.)"""
    report = report_of(scan_json("rnn_lm_like.py", *kwargs(RNN_LM)))
    assert report["model"]["class"] == "RNNModel"
    tokens = probe_inputs(report)[0]
    assert tokens["dtype"] == "int64"
    assert len(tokens["shape"]) == 2
    assert tokens["shape"][1] == report["probe"]["batch_size"] == DEFAULT_BATCH
    steps = tokens["shape"][0]
    assert layer(report, "encoder")["output_shape"] == [steps, DEFAULT_BATCH, RNN_LM["ninp"]]
    assert layer(report, "rnn")["status"] != "disconnected"
    assert any("hidden" in note for note in report["probe"]["assumed"]), report["probe"]


@pytest.mark.slow
def test_transformer_subclass_gets_one_token_input() -> None:
    """A subclass of ``nn.Transformer`` whose ``forward(src, has_mask=True)`` takes one ``(T, B)`` token tensor: the
    probe passes token ids as ``src`` only — not ``nn.Transformer``'s float ``(src, tgt)`` pair.

    Before: exit 2, "forward failed in layer '(root)' (TransformerModel) on probe batch 0: Boolean value of Tensor with
    more than one value is ambiguous"."""
    report = report_of(scan_json("transformer_subclass_like.py", *kwargs(TRANSFORMER)))
    assert report["model"]["class"] == "TransformerModel"
    inputs = probe_inputs(report)
    assert len(inputs) == 1, inputs
    assert inputs[0]["dtype"] == "int64"
    steps, batch = inputs[0]["shape"]
    assert batch == report["probe"]["batch_size"] == DEFAULT_BATCH
    assert layer(report, "input_emb")["output_shape"] == [steps, DEFAULT_BATCH, TRANSFORMER["ninp"]]


# ------------------------------------------------------------------------------------------------------ dcgan


@pytest.mark.slow
def test_dcgan_generator_probed_with_a_latent() -> None:
    """A generator whose first layer is ``ConvTranspose2d(100, …, 4, 1, 0)`` is probed with a ``(B, 100, 1, 1)``
    latent, so it produces 64×64 images and the scan takes seconds.

    Before: probed with ``(16, 100, 32, 32)``; the output is ``(16, 3, 560, 560)`` and the scan runs for minutes."""
    run = scan_json("dcgan_like.py:Generator", *kwargs(DCGAN))
    report = report_of(run)
    assert probe_inputs(report) == [{"shape": [DEFAULT_BATCH, 100, 1, 1], "dtype": "float32"}]
    assert layer(report, "main.0")["output_shape"] == [DEFAULT_BATCH, 512, 4, 4]
    assert report["layers"][-1]["output_shape"] == [DEFAULT_BATCH, 3, 64, 64]
    assert any("1×1 latent" in note for note in report["probe"]["assumed"]), report["probe"]
    assert run.seconds < 30, f"the scan took {run.seconds:.0f} s"


# ------------------------------------------------------------------------------------------ the assets themselves


def _load(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"thirdparty_{name}", ASSETS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class body runs
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_assets_run_with_their_originals_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    """Each look-alike works the way its original is called in training code (plain torch, no gradscope)."""
    torch.manual_seed(0)
    gpt = _load("nanogpt_like")
    model = gpt.GPT(gpt.GPTConfig(**NANOGPT["config"]))
    idx = torch.randint(0, 256, (2, 8))
    assert model(idx)[0].shape == (2, 1, 256) and model(idx)[1] is None
    logits, loss = model(idx, idx)
    loss.backward()
    assert logits.shape == (2, 8, 256)
    assert "parameters" in capsys.readouterr().out  # the constructor prints, as nanoGPT's does

    rnn = _load("rnn_lm_like")
    lm = rnn.RNNModel(**RNN_LM)
    tokens = torch.randint(0, 100, (7, 3))  # (T, B)
    log_probs, (h, _) = lm(tokens, lm.init_hidden(3))
    assert log_probs.shape == (7 * 3, 100) and h.shape == (2, 3, 16)
    lm(tokens, None)[0].sum().backward()  # nn.LSTM starts from zeros when hidden is None
    with pytest.raises(TypeError, match="hidden"):
        lm(tokens)

    tf = _load("transformer_subclass_like")
    transformer = tf.TransformerModel(**TRANSFORMER)
    assert isinstance(transformer, torch.nn.Transformer)
    transformer(tokens).sum().backward()
    assert transformer(tokens, has_mask=False).shape == (7, 3, 100)
    with pytest.raises(RuntimeError, match="ambiguous"):
        transformer(tokens, tokens)

    gan = _load("dcgan_like")
    generator, discriminator = gan.Generator(1), gan.Discriminator(1)
    images = generator(torch.randn(2, gan.nz, 1, 1))
    assert images.shape == (2, 3, 64, 64)
    discriminator(images).sum().backward()
    with pytest.raises(RuntimeError):
        discriminator(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("path", sorted(ASSETS.glob("*.py")), ids=lambda p: p.name)
def test_assets_import_only_torch_and_the_standard_library(path: Path) -> None:
    """A look-alike is self-contained: ``torch`` and standard-library imports only, no helper files."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top == "torch" or top in stdlib, f"{path.name} imports {name}"
