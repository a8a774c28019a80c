"""``scan --fix``: remedies applied to a copy in memory, re-scanned over the same batches, with the code change."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures import models as M
from helpers import FAST, asset, run_cli
from torch import nn

from gradscope.config import Config
from gradscope.errors import ProbeError
from gradscope.pipeline import verify_fix
from gradscope.remedies.apply import apply, pick
from gradscope.results import Remedy, Suggestion, Where
from gradscope.scanner import scan

DEEP_SIGMOID = asset("deep_sigmoid_mlp.py")
SIGMOID_40 = ["--model-kwargs", '{"depth": 40, "width": 32}']


def deep_sigmoid(depth: int = 40) -> nn.Module:
    return M.stack(nn.Sigmoid, depth)


class Blocks(nn.Module):
    """Not a Sequential: insertion must go through the module path, with names unchanged."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.blocks = nn.ModuleList(nn.Linear(16, 16) for _ in range(30))
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = torch.sigmoid(block(x))
        return self.head(x)


def test_fix_raises_the_earliest_signal_by_orders_of_magnitude() -> None:
    model = deep_sigmoid()
    data = [torch.randn(16, 32) for _ in range(2)]
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    report = verify_fix(model, data, scan(model, data))
    assert report.fix is not None and report.fix.applied
    first_before = report.layers[0].signal_rms.median
    first_after = report.fix.report.layers[0].signal_rms.median
    assert first_after > 1e-3
    assert first_before == 0 or first_after / first_before > 1e3
    assert report.fix.report.healthy and not report.healthy
    # names are unchanged, so before and after pair up layer by layer
    assert {layer.name for layer in report.layers} <= {layer.name for layer in report.fix.report.layers}
    # the user's model is untouched: same tensors, no hooks
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before_state.items())
    assert all(not m._forward_hooks for m in model.modules())
    assert "nn.BatchNorm1d(32),  # ← gradscope" in report.fix.code


def test_fix_on_a_module_that_is_not_sequential() -> None:
    model = Blocks()
    data = [torch.randn(16, 16) for _ in range(2)]
    report = scan(model, data)
    fixed = verify_fix(model, data, report)
    assert fixed.fix is not None
    applied = {s.remedy for s in fixed.fix.applied}
    assert applied, [s.remedy for s in report.suggestions]
    if Remedy.NORMALIZATION in applied or Remedy.PSEUDO_NORM in applied:
        assert "model.blocks[0]" in fixed.fix.code or "self.blocks_0" in fixed.fix.code
    assert fixed.fix.report.summary.worst_ratio > report.summary.worst_ratio


def test_pseudo_norm_applied_after_named_modules_restores_the_signal() -> None:
    model = M.stack(nn.Tanh, 30, gain=0.7)
    data = [torch.randn(16, 32) for _ in range(2)]
    report = scan(model, data, config=Config().with_overrides({"diagnose.optimizer": "sgd"}))
    pseudo = next(s for s in report.suggestions if s.remedy is Remedy.PSEUDO_NORM)
    patched = apply(model, [pseudo])
    after = scan(patched.model, data)
    assert after.layers[0].signal_rms.median > 100 * report.layers[0].signal_rms.median


def test_pick_takes_one_lead_remedy_per_finding() -> None:
    model = deep_sigmoid(30)
    report = scan(model, [torch.randn(16, 32)])
    chosen = pick(report.suggestions)
    treated = [rule for s in chosen for rule in s.rules]
    assert len(treated) == len(set(treated))
    assert chosen[0] == next(s for s in report.suggestions if s.remedy in {Remedy.NORMALIZATION, Remedy.INIT})


def test_a_stale_suggestion_is_a_clear_error() -> None:
    stale = Suggestion(Remedy.PSEUDO_NORM, ("blocks.99",), Where.AFTER, {}, "stale")
    with pytest.raises(ProbeError, match="'blocks.99'.*rescan"):
        apply(Blocks(), [stale])


def test_healthy_model_has_nothing_to_fix() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    data = [torch.randn(8, 8)]
    report = verify_fix(model, data, scan(model, data))
    assert report.fix is not None and report.fix.applied == () and report.fix.code == ""


@pytest.mark.slow
def test_cli_fix_json_and_table() -> None:
    before = DEEP_SIGMOID.read_bytes()
    args = ["scan", DEEP_SIGMOID, *SIGMOID_40, "--fix", *FAST]
    proc = run_cli(*args, "--format", "json")
    assert proc.code == 1, proc.stderr  # the exit code judges the model as given
    doc = json.loads(proc.stdout)
    assert doc["fix"]["report"]["schema"] == "gradscope.report/1"
    assert doc["fix"]["report"]["healthy"] is True
    assert doc["fix"]["applied"][0]["remedy"] == "normalization"
    assert doc["layers"][0]["signal_rms"] in (None, 0.0) or doc["layers"][0]["signal_rms"] < 1e-10
    assert doc["fix"]["report"]["layers"][0]["signal_rms"] > 1e-3
    assert DEEP_SIGMOID.read_bytes() == before  # the fix is applied to a copy in memory, never to the file
    table = run_cli(*args)
    assert "Signal RMS" in table.stdout and "before" in table.stdout and "In your code" in table.stdout
    assert all(line == line.rstrip() and len(line) <= 120 for line in table.stdout.splitlines())  # piped: no padding
