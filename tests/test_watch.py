"""gradscope.watch: statistics recorded inside a training loop, the JSONL log, the timeline and `gradscope report`."""

from __future__ import annotations

import gc
import json
import math
import tracemalloc
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, invoke
from torch import nn

import gradscope
from gradscope.errors import ConfigError, GradscopeError, ProbeError
from gradscope.results import Report, Status
from gradscope.scanner import scan
from gradscope.watching import NonFiniteGradientError, Watch, watch
from gradscope.watching.timeline import (
    EVENTS,
    MAX_COLUMNS,
    build_report,
    first_events,
    parse_log,
    read_log,
    read_timeline,
)
from gradscope.watching.timeline import Run as WatchRun
from gradscope.watching.watch import MAX_FORWARDS


def mlp(depth: int = 2, act: type[nn.Module] = nn.Tanh, width: int = 16) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(8, width), act()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 4))


def batch(i: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(n, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def loss_fn(out: torch.Tensor, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(out, b[1])


def train(
    model: nn.Module, w: Watch | None, steps: int, lr: float = 0.1, start: int = 0, poison: dict[int, str] | None = None
) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for i in range(start, start + steps):
        b = batch(i)
        loss = loss_fn(model(b[0]), b)
        loss.backward()
        if poison and i in poison:
            dict(model.named_parameters())[poison[i]].grad[0] = math.nan  # type: ignore[index]
        if w is not None:
            w.step(loss)
        opt.step()
        opt.zero_grad()


# -- numbers -----------------------------------------------------------------------------------------------------
def test_full_mode_step_equals_scan_on_the_same_batch() -> None:
    model = mlp()
    x, y = batch(0)
    expected = scan(model, [x], loss_fn=lambda out, _b: nn.functional.cross_entropy(out, y))
    with watch(model, mode="full") as w:
        train(model, w, 1, lr=0.0)
    got = w.steps[0].layers
    for layer in expected.layers:
        for stat in ("grad_rms", "signal_rms", "activation_rms", "activation_std"):
            want = getattr(layer, stat)
            if want is None:
                assert stat not in got[layer.name]
            else:
                assert got[layer.name][stat] == pytest.approx(want.median, rel=1e-5), (layer.name, stat)


def test_param_mode_grad_rms_matches_direct_computation_and_full_mode() -> None:
    model = mlp()
    with watch(model, mode="param") as w:
        b = batch(0)
        loss_fn(model(b[0]), b).backward()
        w.step()
    direct = {
        name: math.sqrt(
            sum(float(p.grad.square().sum()) for p in m.parameters())  # type: ignore[union-attr]
            / sum(p.numel() for p in m.parameters())
        )
        for name, m in model.named_children()
        if isinstance(m, nn.Linear)
    }
    assert set(w.steps[0].layers) == set(direct)  # param mode: parametric layers only
    for name, value in direct.items():
        assert w.steps[0].layers[name]["grad_rms"] == pytest.approx(value, rel=1e-5)
    model.zero_grad()
    with watch(model, mode="full") as full:
        b = batch(0)
        loss_fn(model(b[0]), b).backward()
        full.step()
    for name in direct:
        assert full.steps[0].layers[name]["grad_rms"] == pytest.approx(w.steps[0].layers[name]["grad_rms"], rel=1e-6)


def test_embedding_counts_touched_rows_in_both_modes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(1000, 8), nn.Flatten(), nn.Linear(32, 2))
    rms = {}
    for mode in ("param", "full"):
        model.zero_grad()
        with watch(model, mode=mode) as w:
            model(torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])).sum().backward()
            w.step()
        rms[mode] = w.steps[0].layers["0"]["grad_rms"]
    g = model[0].weight.grad
    assert rms["param"] == pytest.approx(rms["full"], rel=1e-6)
    assert rms["param"] == pytest.approx(float(g[1:9].square().mean().sqrt()), rel=1e-5)  # type: ignore[index]


# -- when and how it records -------------------------------------------------------------------------------------
def test_every_n_records_every_nth_step_and_hooks_only_then(tmp_path: Path) -> None:
    model = mlp()
    modules = list(model.modules())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hooked = []
    with watch(model, every=3, mode="full", log=tmp_path / "run.jsonl") as w:
        for i in range(10):
            hooked.append(any(m._forward_hooks for m in modules))
            b = batch(i)
            loss_fn(model(b[0]), b).backward()
            w.step()
            opt.step()
            opt.zero_grad()
    assert hooked == [i % 3 == 0 for i in range(10)]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in modules)  # all removed on exit
    assert [s.step for s in read_log(tmp_path / "run.jsonl").steps] == [0, 3, 6, 9]
    with watch(model, every=1, mode="param"):
        assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in modules)


def test_optimizer_hook_records_without_step_calls() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, every=2, optimizer=opt) as w:
        for i in range(5):
            b = batch(i)
            loss_fn(model(b[0]), b).backward()
            opt.step()
            opt.zero_grad()
    assert w.steps_seen == 5 and [s.step for s in w.steps] == [0, 2, 4]
    assert not opt._optimizer_step_pre_hooks  # type: ignore[attr-defined]


def test_gradient_accumulation_in_full_mode() -> None:
    model = mlp()
    with watch(model, mode="full") as w:
        for i in range(2):  # two micro-batches, one optimizer step
            b = batch(i, 16)
            loss_fn(model(b[0]), b).backward()
        w.step()
    layers = w.steps[0].layers
    assert layers["0"]["activation_rms"] > 0 and layers["1"]["signal_rms"] > 0


# -- report ------------------------------------------------------------------------------------------------------
def test_report_is_a_report_and_the_cli_log_gives_the_same(tmp_path: Path) -> None:
    model = mlp(depth=8, act=nn.Sigmoid)  # vanishes: findings and suggestions to compare
    log = tmp_path / "run.jsonl"
    with watch(model, every=2, mode="full", log=log, window=4) as w:
        train(model, w, 12)
    report = w.report()
    assert isinstance(report, Report)
    assert report.probe.batches == 4
    assert "vanishing_gradient" in {f.rule for f in report.findings} or "forward_collapse" in {
        f.rule for f in report.findings
    }
    assert report.suggestions
    from_log = build_report(read_log(log), window=4)
    assert from_log.to_dict() == report.to_dict()
    # ... and the same rules fire as a scan of the model on such batches
    scanned = scan(model, [batch(i)[0] for i in range(4)])
    assert {f.rule for f in scanned.findings} == {f.rule for f in report.findings}


def test_report_before_any_step_is_a_clear_error() -> None:
    with watch(mlp()) as w, pytest.raises(ProbeError, match="w.step"):
        w.report()


# -- the log -----------------------------------------------------------------------------------------------------
def test_log_lines_follow_the_format_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    with watch(mlp(), every=1, log=log, mode="full") as w:
        train(w.module, w, 3)
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["step"] == 0 and first["meta"]["schema"] == "gradscope.watch/1"
    assert {"name", "grad_rms", "signal_rms", "activation_rms", "weight_rms"} <= set(first["layers"][0])
    assert all("meta" not in json.loads(line) for line in lines[1:])
    with log.open("a") as f:  # a crash in the middle of a write
        f.write(lines[1][: len(lines[1]) // 2])
    run = read_log(log)
    assert [s.step for s in run.steps] == [0, 1, 2] and run.skipped_lines == 1
    assert run.layers[0].facts.type == "Linear"


def test_nonfinite_is_logged_as_null_with_the_reason(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    model = mlp()
    with watch(model, log=log) as w:
        train(model, w, 4, poison={2: "2.weight"})
    objs = [json.loads(line) for line in log.read_text().splitlines()]
    bad = next(layer for layer in objs[2]["layers"] if layer["name"] == "2")
    assert bad["grad_rms"] is None and bad["nonfinite"] == ["grad_rms"]
    run = read_log(log)
    assert math.isnan(run.steps[2].layers["2"]["grad_rms"])
    assert first_events(run)["2"]["nonfinite"] == 2


# -- NaN guard ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("every", [1, 5])
def test_on_nonfinite_raise_stops_at_the_first_bad_step_and_names_the_layer(tmp_path: Path, every: int) -> None:
    model = mlp()
    log = tmp_path / "run.jsonl"
    with (
        pytest.raises(NonFiniteGradientError, match=r"step 3 in layer '2' \(Linear\)") as info,
        watch(model, every=every, on_nonfinite="raise", log=log) as w,
    ):
        train(model, w, 6, poison={3: "2.weight", 4: "0.weight"})
    assert info.value.step == 3 and info.value.layer == "2"
    assert isinstance(info.value, GradscopeError)
    assert read_log(log).steps[-1].step == 3  # logged before raising


# -- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"every": 0}, ConfigError, "every=0"),
        ({"every": 2.5}, ConfigError, "every=2.5"),
        ({"mode": "everything"}, ConfigError, "mode='everything'.*'param', 'full'"),
        ({"on_nonfinite": "panic"}, ConfigError, "on_nonfinite"),
        ({"log": "/nonexistent-dir/run.jsonl"}, ConfigError, "does not exist"),
        ({"window": 0}, ConfigError, "window"),
    ],
)
def test_bad_arguments_fail_at_watch_time(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        watch(mlp(), **kwargs)  # type: ignore[arg-type]


def test_models_without_parameters_fail_at_watch_time() -> None:
    with pytest.raises(ProbeError, match="no parameters"):
        watch(nn.Sequential(nn.ReLU()))
    frozen = mlp().requires_grad_(False)
    with pytest.raises(ProbeError, match="no trainable"):
        watch(frozen)
    with pytest.raises(ProbeError, match="nn.Module"):
        watch("model")  # type: ignore[arg-type]


def test_exported_lazily_as_the_function() -> None:
    import gradscope.watching as module

    assert gradscope.watch is module.watch  # the function itself, not a module posing as one
    assert isinstance(gradscope.watch(mlp()), Watch)


# -- memory and compile --------------------------------------------------------------------------------------------
@pytest.mark.slow  # 500 recorded steps
def test_memory_stays_flat_over_many_steps() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = batch(0)

    def run(w: Watch, n: int) -> None:
        for _ in range(n):
            loss_fn(model(x), (x, y)).backward()
            w.step(torch.tensor(0.0))
            opt.step()
            opt.zero_grad()

    with watch(model, every=1, mode="full", window=4) as w:
        run(w, 50)  # warm up caches
        tracemalloc.start()
        run(w, 50)
        # a full collection also empties CPython's free lists (up to 2000 tuples of each size are kept for reuse),
        # which would otherwise read as growth while they fill
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        run(w, 400)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    assert after - before < 64_000, f"grew by {after - before} bytes over 400 steps"
    assert len(w.steps) == 4
    assert all(not r.grad_rms and not r.signal_rms for r in w._recorder.layers)


@pytest.mark.slow  # torch.compile
def test_compiled_model_in_param_mode_has_no_graph_breaks() -> None:
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = mlp()
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(compiled, every=2) as w:
        for i in range(4):
            b = batch(i)
            loss = loss_fn(compiled(b[0]), b)
            loss.backward()
            w.step(loss)
            opt.step()
            opt.zero_grad()
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert [s.step for s in w.steps] == [0, 2]
    assert set(w.steps[0].layers) == {"0", "2", "4"}  # names of the user's module, not "_orig_mod.0"
    torch._dynamo.reset()


# -- CLI ---------------------------------------------------------------------------------------------------------
def test_cli_report_formats(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    model = mlp()
    with watch(model, log=log, mode="full") as w:
        train(model, w, 6, poison={4: "2.weight"})
    table = invoke("report", log, "--fail-on", "never")
    assert table.code == 0, table.stderr
    assert "signal_rms per layer" in table.stdout and "!" in table.stdout
    assert "first step at which a layer went bad" in table.stdout
    doc = invoke("report", log, "--format", "json", "--window", "1")
    data = json.loads(doc.stdout)
    assert data["schema"] == "gradscope.timeline/1" and data["steps"] == [0, 1, 2, 3, 4, 5]
    assert data["first"]["2"]["nonfinite"] == 4
    assert data["report"]["schema"] == "gradscope.report/1"
    assert doc.code == 1  # the NaN reached the weights through the optimizer: still non-finite
    md = invoke("report", log, "--format", "markdown", "--fail-on", "never")
    assert md.code == 0 and "| `2` |" in md.stdout
    out = tmp_path / "t.html"
    html = invoke("report", log, "--format", "html", "-o", out, "--fail-on", "never")
    assert html.code == 0 and out.read_text().lower().startswith("<!doctype html>")


def test_cli_report_bad_input(tmp_path: Path) -> None:
    assert_one_line_error(invoke("report", tmp_path / "nope.jsonl"), "cannot read")
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n")
    assert_one_line_error(invoke("report", junk), "no recorded step")


def test_parse_log_without_meta_still_reports() -> None:
    line = json.dumps({"step": 7, "layers": [{"name": "fc", "grad_rms": 0.1}]})
    run = parse_log([line])
    report = build_report(run)
    assert report.layers[0].name == "fc" and report.layers[0].status is Status.OK


# -- integrations (skipped where the library is not installed) ------------------------------------------------------
@pytest.mark.slow  # trains with a Lightning Trainer
def test_lightning_callback_records_each_optimizer_step(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from gradscope.integrations.lightning import GradscopeCallback

    class Module(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def training_step(self, b: tuple[torch.Tensor, torch.Tensor], _i: int) -> torch.Tensor:
            return loss_fn(self.net(b[0]), b)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader([(batch(i, 1)[0][0], batch(i, 1)[1][0]) for i in range(16)], batch_size=4)
    callback = GradscopeCallback(every=1, log=tmp_path / "run.jsonl")
    pl.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    ).fit(Module(), data)
    assert callback.watch is not None and callback.watch.steps_seen == 4
    assert [s.step for s in read_log(tmp_path / "run.jsonl").steps] == [0, 1, 2, 3]


@pytest.mark.slow  # trains with a transformers Trainer
def test_hf_trainer_callback_records_each_optimizer_step(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # Trainer needs it; the `integrations` extra installs both
    from gradscope.integrations.hf import GradscopeTrainerCallback

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": nn.functional.cross_entropy(self.net(x), labels)}

    rows = [{"x": batch(i, 1)[0][0], "labels": batch(i, 1)[1][0]} for i in range(16)]
    callback = GradscopeTrainerCallback(every=1, log=tmp_path / "run.jsonl")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
    )
    transformers.Trainer(model=Model(), args=args, train_dataset=rows, callbacks=[callback]).train()
    assert callback.watch is not None and callback.watch.steps_seen == 3


def test_without_a_with_block_the_first_step_opens_the_log(tmp_path: Path) -> None:
    model = mlp()
    w = watch(model, log=tmp_path / "run.jsonl")
    train(model, w, 2)
    w.close()
    train(model, w, 1, start=2)  # after close: in memory only, the log is not truncated
    assert [s.step for s in read_log(tmp_path / "run.jsonl").steps] == [0, 1]
    assert [s.step for s in w.steps] == [0, 1, 2]


@pytest.mark.slow  # torch.compile
def test_compiled_model_in_full_mode_records_the_same_numbers() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    stats = []
    for compiled in (False, True):
        model = mlp()
        target = torch.compile(model, backend="eager") if compiled else model
        with watch(target, mode="full") as w:
            b = batch(0)
            loss_fn(target(b[0]), b).backward()
            w.step()
        stats.append(w.steps[0].layers)
    torch._dynamo.reset()
    for name, values in stats[0].items():
        for stat, value in values.items():
            assert stats[1][name][stat] == pytest.approx(value, rel=1e-5), (name, stat)


def test_partly_frozen_model_reports_the_frozen_layer() -> None:
    model = mlp()
    model[0].requires_grad_(False)
    for mode in ("param", "full"):
        with watch(model, mode=mode) as w:
            train(model, w, 2)
        report = w.report()
        assert report.layer("0").status is Status.FROZEN
        assert report.layer("2").status is Status.OK


@pytest.mark.parametrize("mode", ["param", "full"])
def test_watch_leaves_user_hooks_flags_and_rng_as_training_alone_would(mode: str) -> None:
    """After ``watch`` the model and the global RNG are where the same training without it leaves them."""
    import random

    import numpy as np

    def run(watched: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor, object, object, list[object]]:
        torch.manual_seed(3)
        random.seed(3)
        np.random.seed(3)
        model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 4))
        model[0].bias.requires_grad_(False)
        seen: list[int] = []
        model[2].register_forward_hook(lambda _m, _i, _o: seen.append(1))
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        data = [torch.randn(8, 8) for _ in range(3)]
        context = watch(model, every=1, mode=mode) if watched else None
        if context is not None:
            context.__enter__()
        for x in data:
            optimizer.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            if context is not None:
                context.step(loss)
            optimizer.step()
        if context is not None:
            context.__exit__(None, None, None)
        hooks = [dict(m._forward_hooks) for m in model.modules()]
        flags = [p.requires_grad for p in model.parameters()]
        return (
            model.state_dict(),
            torch.get_rng_state(),
            random.getstate(),
            np.random.get_state()[1].tolist(),
            [len(h) for h in hooks] + flags + [len(seen)],
        )

    plain, watched = run(False), run(True)
    assert all(torch.equal(plain[0][k], watched[0][k]) for k in plain[0])
    assert torch.equal(plain[1], watched[1])
    assert plain[2] == watched[2] and plain[3] == watched[3]
    assert plain[4] == watched[4]  # the user's hook stays (and fired as often), requires_grad untouched


# -- the streaming reader --------------------------------------------------------------------------------------------
def _brute_force_events(run: WatchRun) -> dict[str, dict[str, int]]:
    """Every step diagnosed in full on its own: what the reader's cheap per-step test must agree with."""
    first: dict[str, dict[str, int]] = {}
    for step in run.steps:
        report = build_report(WatchRun(run.meta, run.layers, (step,)), window=1)
        for layer in report.layers:
            if layer.status.value in EVENTS:
                first.setdefault(layer.name, {}).setdefault(layer.status.value, step.step)
    return first


def _random_log(path: Path, steps: int, seed: int) -> Path:
    """A full-mode log of a real 6-Linear tanh MLP whose step values are drawn at random over 14 orders of
    magnitude (a few NaN): every combination of vanishing, exploding, forward growth and non-finite layers."""
    import random

    model = mlp(depth=5)
    with watch(model, mode="full", log=path) as w:
        train(model, w, 1)
    lines = path.read_text().splitlines()
    template = json.loads(lines[0])
    rng = random.Random(seed)
    with path.open("w") as f:
        for k in range(steps):
            obj = json.loads(json.dumps(template))
            if k:
                del obj["meta"]
            obj["step"] = k
            for layer in obj["layers"]:
                bad = []
                for stat in ("grad_rms", "signal_rms", "activation_rms"):
                    if layer.get(stat) is None:
                        continue
                    if rng.random() < 0.01:
                        layer[stat] = None
                        bad.append(stat)
                    else:
                        layer[stat] = 10 ** rng.uniform(-9, 5 if stat == "activation_rms" else 2)
                if bad:
                    layer["nonfinite"] = bad
            f.write(json.dumps(obj) + "\n")
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_events_equal_a_full_diagnosis_of_every_step(tmp_path: Path, seed: int) -> None:
    run = read_log(_random_log(tmp_path / "run.jsonl", 300, seed))
    expected = _brute_force_events(run)
    assert expected  # the random values do make events
    assert first_events(run) == expected
    assert read_timeline(tmp_path / "run.jsonl").first == expected


@pytest.mark.parametrize(
    ("act", "gain", "poison"),
    [(nn.Sigmoid, 1.0, None), (nn.ReLU, 8.0, None), (nn.ReLU, 1.0, 5)],
    ids=["vanishing", "growing", "nonfinite"],
)
def test_first_events_of_real_runs_equal_a_full_diagnosis(
    tmp_path: Path, act: type[nn.Module], gain: float, poison: int | None
) -> None:
    model = mlp(depth=6, act=act)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
    with watch(model, mode="full", log=tmp_path / "run.jsonl") as w:
        train(model, w, 12, lr=0.01, poison={poison: "2.weight"} if poison is not None else None)
    run = read_log(tmp_path / "run.jsonl")
    expected = _brute_force_events(run)
    assert expected
    assert read_timeline(tmp_path / "run.jsonl").first == expected


@pytest.mark.slow  # reads 20,000-step logs
def test_long_log_heatmap_is_downsampled_and_memory_is_flat(tmp_path: Path) -> None:
    """Columns hold consecutive steps, at most MAX_COLUMNS of them; reading 20x more steps allocates no more."""
    model = mlp()
    with watch(model, log=tmp_path / "run.jsonl") as w:
        train(model, w, 3)
    lines = (tmp_path / "run.jsonl").read_text().splitlines()

    def write(n: int) -> Path:
        path = tmp_path / f"run{n}.jsonl"
        with path.open("w") as f:
            f.write(lines[0] + "\n")
            for k in range(1, n):
                obj = json.loads(lines[1 + k % 2])
                obj["step"] = k
                f.write(json.dumps(obj) + "\n")
        return path

    peaks = []
    for n in (1_000, 20_000):
        path = write(n)
        read_timeline(path)  # warm-up: imports, caches
        tracemalloc.start()
        t = read_timeline(path)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert t.recorded == n and len(t.columns) <= MAX_COLUMNS
        assert [c.first for c in t.columns] == sorted(c.first for c in t.columns)
        assert sum(c.count for c in t.columns) == n and t.columns[-1].last == n - 1
        assert all(a.last + 1 == b.first for a, b in zip(t.columns, t.columns[1:], strict=False))
        assert [s.step for s in t.run.steps] == list(range(n - 8, n))  # the report's window: the last 8 steps
    assert peaks[1] < 1.5 * peaks[0] + 100_000, peaks
    grouped = read_timeline(write(600))
    single = read_timeline(write(200))
    assert len(single.columns) == 200 and all(c.count == 1 for c in single.columns)
    assert single.rows[0][1:3] == tuple(json.loads(lines[1 + k % 2])["layers"][0]["grad_rms"] for k in (1, 2))
    assert {c.count for c in grouped.columns} <= {2, 4}


def test_skipped_step_lines_are_left_out_and_counted(tmp_path: Path) -> None:
    model = mlp()
    log = tmp_path / "run.jsonl"
    with watch(model, log=log) as w:
        train(model, w, 4, poison={3: "2.weight"})
    with log.open("a") as f:  # as watch marks a step whose gradients the optimizer did not apply
        f.write(json.dumps({"skipped_step": 3, "reason": "test"}) + "\n")
    t = read_timeline(log)
    assert t.recorded == 3 and t.skipped.count == 1 and t.skipped.steps == (3,)
    assert t.first == {} and [s.step for s in t.run.steps] == [0, 1, 2]
    assert t.report.healthy and "1 skipped step(s) left out" in t.report.probe.loss
    run = read_log(log)
    assert [s.step for s in run.steps] == [0, 1, 2] and run.skipped.count == 1


# -- counting steps ----------------------------------------------------------------------------------------------
def _logged(log: Path) -> tuple[list[int], list[int]]:
    """(recorded steps, skipped steps) in the log's order."""
    recorded, skipped = [], []
    for line in log.read_text().splitlines():
        obj = json.loads(line)
        (skipped.append(obj["skipped_step"]) if "skipped_step" in obj else recorded.append(obj["step"]))
    return recorded, skipped


def _skipping_loop(
    model: nn.Module, opt: torch.optim.Optimizer, w: Watch | None, bad: set[int], steps: int = 6
) -> None:
    """A loop that skips the optimizer step when the loss is not finite (steps in ``bad`` have a NaN loss)."""
    for i in range(steps):
        b = batch(i)
        loss = loss_fn(model(b[0]), b) * (math.nan if i in bad else 1.0)
        loss.backward()
        if w is not None:
            w.step(loss)
        if torch.isfinite(loss):
            opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("explicit", [True, False], ids=["w.step", "no-w.step"])
def test_a_step_the_loop_skips_is_logged_as_skipped(tmp_path: Path, explicit: bool) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    log = tmp_path / "run.jsonl"
    with watch(model, log=log) as w:
        _skipping_loop(model, opt, w if explicit else None, bad={0, 3})
    recorded, skipped = _logged(log)
    assert skipped == [0, 3] and w.skipped == 2 and w.steps_seen == 6
    assert recorded == ([0, 1, 2, 3, 4, 5] if explicit else [1, 2, 4, 5])  # w.step() records it, then marks it
    t = read_timeline(log)
    assert t.skipped.count == 2 and t.first == {} and t.report.healthy
    assert [s.step for s in w.steps] == [1, 2, 4, 5] and w.report().healthy


def test_on_nonfinite_raise_lets_a_skipped_step_pass_and_stops_an_applied_one() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, on_nonfinite="raise") as w:
        _skipping_loop(model, opt, w, bad={2})  # skipped: no error
    assert w.skipped == 1
    with pytest.raises(NonFiniteGradientError, match="step 2") as info, watch(model, on_nonfinite="raise") as w:
        train(model, w, 5, poison={2: "0.weight"})
    assert info.value.step == 2
    # raised from the optimizer's step pre-hook: the NaN never reached the weights
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_w_step_after_optimizer_step_counts_each_step_once(tmp_path: Path) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, log=tmp_path / "run.jsonl") as w:
        for i in range(4):
            b = batch(i)
            loss = loss_fn(model(b[0]), b)
            loss.backward()
            opt.step()
            w.step(loss)  # after the step: the pre-hook counted step 0, this call is the same step
            opt.zero_grad()
    assert w.steps_seen == 4 and _logged(tmp_path / "run.jsonl") == ([0, 1, 2, 3], [])


def test_gradient_accumulation_and_closures_count_optimizer_steps() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, every=1) as w:
        for i in range(3):
            for j in range(4):  # four micro-batches per optimizer step
                b = batch(4 * i + j, 8)
                loss_fn(model(b[0]), b).backward()
            opt.step()
            opt.zero_grad()
    assert w.steps_seen == 3 and w.skipped == 0
    lbfgs = torch.optim.LBFGS(model.parameters(), max_iter=3)
    b = batch(0)

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        loss = loss_fn(model(b[0]), b)
        loss.backward()
        return loss

    with watch(model, every=1) as w:
        for _ in range(2):
            lbfgs.step(closure)  # several backwards inside one step: counted once, at the post-hook
    assert w.steps_seen == 2 and w.skipped == 0 and w.steps[0].layers["0"]["grad_rms"] > 0


def test_the_first_optimizer_to_step_the_model_counts_and_others_do_not() -> None:
    model, other = mlp(), mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    unrelated = torch.optim.SGD(other.parameters(), lr=0.1)
    second = torch.optim.SGD(model[0].parameters(), lr=0.1)
    with watch(model) as w:
        for i in range(3):
            b = batch(i)
            loss_fn(model(b[0]), b).backward()
            loss_fn(other(b[0]), b).backward()
            opt.step()
            second.step()
            unrelated.step()
            opt.zero_grad()
            second.zero_grad()
            unrelated.zero_grad()
    assert w.steps_seen == 3


def test_full_mode_without_w_step_records_the_forward(tmp_path: Path) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, mode="full", every=2, log=tmp_path / "run.jsonl") as w:
        train(model, None, 5)
        del opt
    assert [s.step for s in w.steps] == [0, 2, 4]
    assert all(s.layers["1"]["activation_rms"] > 0 and s.layers["1"]["signal_rms"] > 0 for s in w.steps)


def test_full_mode_memory_is_bounded_in_a_loop_that_never_steps() -> None:
    model = mlp()
    x = batch(0)[0]
    with watch(model, mode="full"):
        for _ in range(MAX_FORWARDS + 10):  # warm-up: the batch starts over after MAX_FORWARDS forwards
            model(x)
        gc.collect()
        tracemalloc.start()
        for _ in range(MAX_FORWARDS):
            model(x)
        gc.collect()
        early = tracemalloc.get_traced_memory()[0]
        for _ in range(2 * MAX_FORWARDS):
            model(x)
        gc.collect()
        late = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    assert late - early < 64_000, late - early


def test_replaced_parameter_and_added_layer_warn_once_each() -> None:
    model = mlp()
    with pytest.warns(UserWarning, match=r"'0\.weight' was added to the model after watch\(\) started") as caught:
        with watch(model) as w:
            train(model, w, 1)
            model[0].weight = nn.Parameter(model[0].weight.detach().clone())
            train(model, w, 3, start=1)
    assert sum("0.weight" in str(c.message) for c in caught) == 1
    with pytest.warns(UserWarning, match=r"'extra', 'head' were added"), watch(model) as w:
        model.add_module("extra", nn.Identity())
        model.head = nn.Linear(4, 4)
        train(model[:5], w, 1)


def test_report_of_steps_without_gradients_is_a_clear_error() -> None:
    model = mlp()
    with watch(model) as w:
        w.step()  # before any backward: nothing to measure
    with pytest.raises(ProbeError, match="measured no layer"):
        w.report()


def test_cli_report_says_what_was_skipped_and_what_is_empty(tmp_path: Path) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    log = tmp_path / "run.jsonl"
    with watch(model, log=log) as w:
        _skipping_loop(model, opt, w, bad={1})
    text = invoke("report", log)
    assert text.code == 0 and "1 step skipped (1)" in text.stdout
    md = invoke("report", log, "--format", "markdown")
    assert "1 step skipped (1)" in md.stdout
    doc = json.loads(invoke("report", log, "--format", "json").stdout)
    assert doc["skipped_steps"] == {"count": 1, "steps": [1]} and doc["recorded_steps"] == 5
    all_skipped = tmp_path / "skipped.jsonl"
    all_skipped.write_text(json.dumps({"skipped_step": 0, "reason": "x"}) + "\n")
    assert_one_line_error(invoke("report", all_skipped), "skipped", "nothing to report")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        ({"layers": "nope"}, "'layers' must be a list"),
        ({"layers": [{"name": 1}]}, "'name' must be a string"),
        ({"layers": [{"name": "0", "order": "x"}]}, "'order' must be an integer"),
        ({"window": "many"}, "'window' must be an integer"),
        ({"parameters": -1}, "'parameters' must be an integer"),
    ],
)
def test_cli_report_malformed_meta_is_one_line(tmp_path: Path, edit: dict[str, object], needle: str) -> None:
    model = mlp()
    log = tmp_path / "run.jsonl"
    with watch(model, log=log) as w:
        train(model, w, 2)
    lines = log.read_text().splitlines()
    first = json.loads(lines[0])
    first["meta"].update(edit)
    log.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert_one_line_error(invoke("report", log), "run.jsonl", needle)


def test_timeline_renderers_show_control_characters_in_layer_names_as_escapes() -> None:
    from gradscope.report.terminal import render_text
    from gradscope.report.timeline import render_timeline_json, render_timeline_markdown, render_timeline_terminal
    from gradscope.watching.timeline import Timeline

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("evil\x1b[2J\x07", nn.Linear(8, 16))
    model.add_module("act", nn.Tanh())
    model.add_module("head", nn.Linear(16, 4))
    with watch(model) as w:
        train(model, w, 3)
    t = Timeline.of(w.run())
    text = render_text(lambda console: render_timeline_terminal(t, console), 120)
    markdown = render_timeline_markdown(t)
    for rendered in (text, markdown):
        assert "\x1b" not in rendered and "\x07" not in rendered
        assert "evil" in rendered
    assert "evil\\u001b[2J\\u0007" in render_timeline_json(t)  # the JSON keeps the name exact (JSON-escaped)
