"""Distributed training on CPU: two gloo processes end with identical weights and queues."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from oacl import dist as odist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from oacl.models.moco import MoCo
    from oacl.train.engine import TrainSettings, train
    from test_engine import VIEWS, Items

    info = odist.init_distributed("cpu")
    assert (info.rank, info.world_size) == (rank, world)
    # Helpers: gather in rank order; shuffle then unshuffle is the identity.
    x = torch.arange(6, dtype=torch.float32).view(3, 2) + 100 * rank
    gathered = odist.all_gather_cat(x)
    assert torch.equal(
        gathered, torch.cat([torch.arange(6, dtype=torch.float32).view(3, 2) + 100 * r for r in range(world)])
    )
    shuffled, inverse = odist.shuffle_across_ranks(x)
    assert torch.equal(odist.unshuffle_across_ranks(shuffled, inverse), x)

    torch.manual_seed(0)
    model = MoCo("resnet18", "standard", proj_hidden=32, proj_dim=16, queue_size=16, momentum=0.9)
    if rank == 1:  # a different start on rank 1: DDP must broadcast rank 0's weights
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    settings = TrainSettings(epochs=1, batch_size=8, base_lr=0.3, seed=3)
    result = train(model, Items(16), VIEWS, settings, device="cpu", progress=False)
    torch.save({k: v.clone() for k, v in result.model.state_dict().items()}, Path(out) / f"rank{rank}.pt")
    odist.cleanup()


def test_two_processes_end_identical(tmp_path: Path) -> None:
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn", join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # 2 steps x 2 ranks x 4 keys: every one of the 16 images' keys was gathered into the queue once.
    assert sorted(a["queue_index"].tolist()) == list(range(16))
    assert int(a["queue_ptr"]) == 0
    torch.testing.assert_close(a["queue"].norm(dim=1), torch.ones(16))


def test_single_process_helpers() -> None:
    x = torch.randn(4, 3)
    assert odist.all_gather_cat(x) is x
    y, inverse = odist.shuffle_across_ranks(x)
    assert y is x and torch.equal(inverse, torch.arange(4))
    assert odist.is_main() and odist.world_size() == 1 and odist.rank() == 0
    assert odist.broadcast_object({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError):
        odist.launch_torchrun(0, "x.py", [])
