"""Distributed helpers for ``torchrun`` (gloo on CPU, nccl on GPU) and plain single-process runs.

Everything here degrades to the single-process case when ``torch.distributed`` is not
initialised: :func:`all_gather_cat` returns its input, :func:`is_main` is True, and so on.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup",
    "under_torchrun",
    "world_size",
    "rank",
    "is_main",
    "barrier",
    "all_gather_cat",
    "shuffle_across_ranks",
    "unshuffle_across_ranks",
    "broadcast_object",
    "launch_torchrun",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    """True when the process was started by torchrun (``RANK``/``WORLD_SIZE`` in the environment)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str | None = None) -> DistInfo:
    """Initialise ``torch.distributed`` from torchrun's environment, or describe a single process.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (set by torchrun). The backend is nccl when
    the device is CUDA and gloo otherwise. ``device`` None picks ``cuda:<local_rank>`` when
    CUDA is available, else the CPU. Idempotent: an already initialised group is reused.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device is None:
        dev = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if under_torchrun() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev)
    return DistInfo(0, 1, 0, dev)


def cleanup() -> None:
    """Destroy the process group if one is initialised."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that logs and saves."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@torch.no_grad()
def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenate ``t`` (B, ...) from every rank along dim 0, in rank order: (world·B, ...).

    No gradient flows through the result. Every rank must pass the same shape.
    """
    n = world_size()
    if n == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(n)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def shuffle_across_ranks(x: Tensor) -> tuple[Tensor, Tensor]:
    """Shuffling BatchNorm (MoCo): give each rank a random slice of the global batch.

    x: (B, ...) this rank's batch. Returns (this rank's share of the shuffled global batch
    (B, ...), the inverse permutation (world·B,) for :func:`unshuffle_across_ranks`). The
    permutation is drawn on rank 0 and broadcast. Single process: ``(x, arange(B))``.
    """
    n = world_size()
    b = x.shape[0]
    if n == 1:
        return x, torch.arange(b, device=x.device)
    gathered = all_gather_cat(x)  # (n·B, ...)
    perm = torch.randperm(n * b, device=x.device)
    dist.broadcast(perm, src=0)
    inverse = torch.argsort(perm)
    mine = perm.view(n, b)[rank()]
    return gathered[mine], inverse


@torch.no_grad()
def unshuffle_across_ranks(x: Tensor, inverse: Tensor) -> Tensor:
    """Undo :func:`shuffle_across_ranks`: x (B, ...) shuffled share → this rank's rows (B, ...)."""
    n = world_size()
    if n == 1:
        return x
    b = x.shape[0]
    gathered = all_gather_cat(x)  # (n·B, ...)
    return gathered[inverse.view(n, b)[rank()]]


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from rank ``src`` to every rank (identity in a single process)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def launch_torchrun(nproc: int, script: str | Path, argv: Sequence[str]) -> int:
    """Run ``script argv`` under ``python -m torch.distributed.run`` with ``nproc`` local processes.

    Blocks until all processes end; returns torchrun's exit status (non-zero if any rank
    failed). Uses ``--standalone`` (single node, free rendezvous port).
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc!r}")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(script),
        *argv,
    ]
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    return subprocess.call(cmd)
