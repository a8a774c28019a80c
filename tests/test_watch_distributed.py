"""watch under torch.distributed: 2 gloo processes with DDP, and with FSDP2 (sharded gradients), must log what one
process logs on the global batch. Slow: it spawns the processes."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gradscope.watching import watch
from gradscope.watching.timeline import read_log

pytestmark = pytest.mark.slow

WORLD = 2
STEPS = 4
GLOBAL_BATCH = 16


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(GLOBAL_BATCH, 6, generator=g), torch.randint(0, 3, (GLOBAL_BATCH,), generator=g))
        for _ in range(STEPS)
    ]


def _train(model: nn.Module, watched: nn.Module, log: Path, mode: str, rank: int, world: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    share = GLOBAL_BATCH // world
    with watch(watched, every=1, log=log, mode=mode) as w:
        for x, y in _batches():
            x, y = x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]
            loss = nn.functional.cross_entropy(watched(x), y)
            loss.backward()
            w.step(loss)
            opt.step()
            opt.zero_grad()


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for mode in ("param", "full"):
            model = _model()
            ddp = nn.parallel.DistributedDataParallel(model)
            _train(model, ddp, Path(out) / f"ddp_{mode}_rank{rank}.jsonl", mode, rank, WORLD)
        from torch.distributed.fsdp import fully_shard  # FSDP2: sharded DTensor parameters and gradients

        for mode in ("param", "full"):
            model = _model()
            for layer in model:
                if isinstance(layer, nn.Linear):
                    fully_shard(layer)  # Linear(12, 3).bias: 3 elements over 2 ranks, an uneven shard
            fully_shard(model)
            _train(model, model, Path(out) / f"fsdp_{mode}_rank{rank}.jsonl", mode, rank, WORLD)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    torch.set_num_threads(1)
    for mode in ("param", "full"):
        model = _model()
        _train(model, model, out / f"single_{mode}.jsonl", mode, 0, 1)
    return out


def _close(a: float | None, b: float | None, rel: float = 1e-5) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
@pytest.mark.parametrize("mode", ["param", "full"])
def test_distributed_logs_equal_single_process_on_the_global_batch(logs: Path, mode: str, kind: str) -> None:
    single = read_log(logs / f"single_{mode}.jsonl")
    ddp = read_log(logs / f"{kind}_{mode}_rank0.jsonl")
    assert not (logs / f"{kind}_{mode}_rank1.jsonl").exists()  # only rank 0 writes
    assert ddp.meta["world_size"] == 2 and single.meta["world_size"] == 1
    assert [s.step for s in ddp.steps] == [s.step for s in single.steps] == list(range(STEPS))
    stats = ["grad_rms"] if mode == "param" else ["grad_rms", "signal_rms", "activation_rms"]
    for a, b in zip(single.steps, ddp.steps, strict=True):
        assert _close(a.loss, b.loss)
        assert a.layers.keys() == b.layers.keys()
        for name in a.layers:
            for stat in stats:
                assert _close(a.layers[name].get(stat), b.layers[name].get(stat)), (mode, a.step, name, stat)
            assert _close(a.weight_rms.get(name), b.weight_rms.get(name))


def test_ddp_log_lines_are_json(logs: Path) -> None:
    for line in (logs / "ddp_full_rank0.jsonl").read_text().splitlines():
        obj = json.loads(line)
        assert set(obj) >= {"step", "layers"}
