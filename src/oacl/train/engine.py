"""The self-supervised training loop, shared by vanilla pretraining and debiased retraining.

:func:`train` runs any method of :mod:`oacl.models` (the ``SSLMethod`` interface) over
any dataset of item dicts (:mod:`oacl.data.datasets`), with views made by a
:class:`~oacl.augment.views.ViewPipeline` — the seam where OA-Crop and BG-Mixup plug in.

- SGD (momentum, weight decay), lr = base_lr × global batch / 256, optional linear
  warm-up, cosine decay per step. The effective lr is computed and reported, never
  written back into the settings.
- Single process, or under torchrun (DDP; DistributedSampler; rank 0 logs and saves).
  After every epoch BatchNorm running statistics are averaged over ranks and the other
  buffers (MoCo's queue) taken from rank 0, so every rank holds the same model.
- bf16 autocast (CPU and GPU), channels-last, ``nn.Module.compile`` as switches.
- Resume: after every epoch the full state goes to ``checkpoint_path`` (atomic); a later
  call with the same ``resume_key`` continues after the last completed epoch. Each epoch
  reseeds every RNG from (seed, epoch, rank), and each item's views come from an RNG seeded
  by (seed, epoch, index), so on the CPU a resumed run ends with the same weights as an
  uninterrupted one, whatever the number of DataLoader workers.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from oacl import dist as odist
from oacl.augment.views import ViewPipeline
from oacl.errors import CheckpointError
from oacl.io.checkpoint import TRAIN_FORMAT, load_checkpoint, save_checkpoint
from oacl.perf import autocast_context, worker_init
from oacl.progress import progress as progress_bar
from oacl.schedules import effective_lr, lr_at

__all__ = [
    "TrainSettings",
    "EpochRecord",
    "TrainResult",
    "IndexedViews",
    "epoch_seed",
    "item_seed",
    "train",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """What :func:`train` needs besides the model, data and views.

    batch_size is the *global* batch (all ranks together); it must divide evenly by
    the world size. warmup_epochs: linear warm-up before the cosine decay.
    """

    epochs: int
    batch_size: int
    base_lr: float
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    warmup_epochs: int = 0
    seed: int = 0
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    workers: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1),
            ("batch_size", self.batch_size >= 2),
            ("base_lr", self.base_lr > 0),
            ("weight_decay", self.weight_decay >= 0),
            ("sgd_momentum", 0 <= self.sgd_momentum < 1),
            ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs),
            ("workers", self.workers >= 0),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"TrainSettings.{name} is out of range: {getattr(self, name)!r}")


@dataclass
class EpochRecord:
    """Per-epoch log line; ``monitor`` holds the monitor's values (e.g. kNN top-1 %) when it ran."""

    epoch: int  # 1-based: number of completed epochs
    loss: float
    lr: float  # at the epoch's last step
    images_per_s: float
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)
    monitor: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What a (possibly resumed) run returns; ``model`` is the unwrapped method on its device."""

    model: nn.Module
    history: list[EpochRecord]
    step_losses: list[float]
    step_lrs: list[float]
    effective_lr: float
    global_batch: int
    steps_per_epoch: int
    train_seconds: float  # time in training steps over all runs (resumed runs add up)
    images_per_s: float  # over the training steps of all epochs
    resumed_from_epoch: int  # 0: started fresh

    @property
    def final_loss(self) -> float:
        return self.history[-1].loss if self.history else float("nan")


class IndexedViews(Dataset):
    """``dataset[i]`` → ``(i, per_item(dataset[i]))``: the views plus the dataset index (self-key masking).

    With a ``seed``, ``per_item`` draws from a torch RNG seeded by (seed, :attr:`epoch`, i), so an
    item's views depend neither on the number of DataLoader workers nor on which process makes
    them (set :attr:`epoch` before iterating; workers get a fresh copy every epoch). Without one
    it draws from the global RNG of whatever process runs it.
    """

    def __init__(self, dataset: Dataset, per_item: Callable[[Any], Any], seed: int | None = None) -> None:
        self.dataset = dataset
        self.per_item = per_item
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Any]:
        item = self.dataset[index]
        if self.seed is None:
            return index, self.per_item(item)
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed would also seed every CUDA device, which on a
            # machine without an initialised CUDA context queues the call with a formatted stack
            # trace per item — a sixth of a MoCo step on 2 cores (docs/benchmarks.md, "Per-item seeding").
            torch.default_generator.manual_seed(item_seed(self.seed, self.epoch, index))
            return index, self.per_item(item)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed every RNG gets at the start of ``epoch`` on ``rank`` (independent of resumption)."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63 - 1)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the per-item augmentation of dataset item ``index`` in ``epoch``."""
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729 + 1) % (2**63 - 1)


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _make_loader(
    data: IndexedViews, settings: TrainSettings, info: odist.DistInfo
) -> tuple[DataLoader, DistributedSampler]:
    per_rank = settings.batch_size // info.world_size
    sampler = DistributedSampler(
        data, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=settings.seed, drop_last=True
    )
    loader = DataLoader(
        data,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=settings.workers,
        collate_fn=default_collate,
        drop_last=True,
        worker_init_fn=worker_init if settings.workers > 0 else None,
        persistent_workers=False,
        pin_memory=info.device.type == "cuda",
    )
    return loader, sampler


def _reseed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))


def _mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    if odist.world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    t /= odist.world_size()
    return dict(zip(keys, t.tolist()))


@torch.no_grad()
def _sync_buffers(model: nn.Module) -> None:
    """Make every rank's buffers equal: BatchNorm running statistics are averaged over ranks
    (each rank saw its own batches), every other buffer (the queue, ...) comes from rank 0."""
    n = odist.world_size()
    if n == 1:
        return
    for name, buf in model.named_buffers():
        if buf.is_floating_point() and name.rsplit(".", 1)[-1] in ("running_mean", "running_var"):
            torch.distributed.all_reduce(buf)
            buf /= n
        else:
            torch.distributed.broadcast(buf, src=0)


def _resume_state(path: Path | None, resume_key: str, model: nn.Module) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        state = load_checkpoint(path, method=getattr(model, "name", None), arch=getattr(model, "arch", None))
    except CheckpointError as err:
        log.warning("not resuming: %s", err)
        return None
    if state.get("resume_key") != resume_key:
        log.warning("not resuming from %s: it was made with other settings or data", path)
        return None
    return state


def train(
    model: nn.Module,
    dataset: Dataset,
    views: ViewPipeline,
    settings: TrainSettings,
    *,
    device: torch.device | str | None = None,
    checkpoint_path: str | Path | None = None,
    resume_key: str = "",
    checkpoint_extra: dict[str, Any] | None = None,
    monitor: Callable[[nn.Module, int], dict[str, float]] | None = None,
    on_epoch_end: Callable[[EpochRecord, TrainResult], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` (an ``SSLMethod``) with SGD and a cosine schedule; resume if possible.

    Args:
        model: MoCo / BYOL module (on the CPU; moved to ``device``). Under torchrun
            (``torch.distributed`` initialised) it is wrapped in DDP; the result's
            ``model`` is the unwrapped module.
        dataset: items as in :mod:`oacl.data.datasets` (whatever ``views.per_item`` takes).
        views: ``per_item`` runs in the loader, ``per_batch`` on the device, giving the two
            normalized (B, 3, H, W) batches (and optionally a dict of 0-d tensors, e.g. the
            realised mix rate, averaged per epoch into the record's ``stats`` like the loss's).
        settings: :class:`TrainSettings`.
        device: None picks ``cuda:<local_rank>`` if available, else the CPU.
        checkpoint_path: where the state goes after each epoch (rank 0) and where a resume
            reads it; None disables both.
        resume_key: a string identifying the settings and data; a checkpoint with another
            key is ignored (training starts fresh).
        checkpoint_extra: extra primitive entries stored in every checkpoint (e.g. params).
        monitor: ``monitor(model, epoch) -> {name: value}`` (empty when it skips an epoch),
            called on rank 0 after each epoch (``epoch`` 1-based); lands in the epoch record.
        on_epoch_end: called on every rank after the epoch's checkpoint is written.
        progress: show progress on rank 0 (:func:`oacl.progress.progress`: a bar on a terminal, log lines in a file).
    """
    info = odist.init_distributed(None if device is None else str(device))
    dev = info.device
    if settings.batch_size % info.world_size:
        raise ValueError(f"batch_size {settings.batch_size} does not split over {info.world_size} processes")
    data = IndexedViews(dataset, views.per_item, seed=settings.seed)
    steps_per_epoch = len(data) // settings.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"dataset of {len(data)} items is smaller than one batch of {settings.batch_size}")
    total_steps = steps_per_epoch * settings.epochs
    warmup_steps = steps_per_epoch * settings.warmup_epochs
    peak_lr = effective_lr(settings.base_lr, settings.batch_size)
    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None

    model = model.to(dev)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.optimizer_groups(), lr=peak_lr, momentum=settings.sgd_momentum, weight_decay=settings.weight_decay
    )
    history: list[EpochRecord] = []
    step_losses: list[float] = []
    step_lrs: list[float] = []
    train_seconds = 0.0
    start_epoch = 0
    state = _resume_state(ckpt_path, resume_key, model)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        history = [EpochRecord(**r) for r in state.get("history", [])]
        step_losses = list(state.get("step_losses", []))
        step_lrs = list(state.get("step_lrs", []))
        train_seconds = float(state.get("train_seconds", 0.0))
        log.info("resuming from %s after epoch %d of %d", ckpt_path, start_epoch, settings.epochs)
    if settings.compile:
        for sub in (model.encoder, model.projector):
            sub.compile()
    net: nn.Module = model
    if info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    loader, sampler = _make_loader(data, settings, info)
    result = TrainResult(
        model=model,
        history=history,
        step_losses=step_losses,
        step_lrs=step_lrs,
        effective_lr=peak_lr,
        global_batch=settings.batch_size,
        steps_per_epoch=steps_per_epoch,
        train_seconds=train_seconds,
        images_per_s=float("nan"),
        resumed_from_epoch=start_epoch,
    )
    bar = None
    if progress and info.is_main:
        bar = progress_bar(
            total_steps, initial=start_epoch * steps_per_epoch, unit="step", desc=getattr(model, "name", "train")
        )

    for epoch in range(start_epoch, settings.epochs):
        _reseed(epoch_seed(settings.seed, epoch, info.rank))
        sampler.set_epoch(epoch)
        data.epoch = epoch
        net.train()
        sums: dict[str, list[Tensor]] = {}
        t_epoch = time.perf_counter()
        lr = peak_lr
        for i, (index, batch_views) in enumerate(_batches(loader, steps_per_epoch)):
            step = epoch * steps_per_epoch + i
            lr = lr_at(step, total_steps, peak_lr, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            step_lrs.append(lr)
            batch_views = _to_device(batch_views, dev)
            index = index.to(dev)
            x1, x2, *view_stats = views.per_batch(batch_views)
            if settings.channels_last:
                x1 = x1.contiguous(memory_format=torch.channels_last)
                x2 = x2.contiguous(memory_format=torch.channels_last)
            with autocast_context(dev, settings.amp):
                out = net(x1, x2, index)
            loss = out["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.update_target((step + 1) / total_steps)
            # Kept as tensors: no device sync per step (read once per epoch, or for the bar).
            for key, value in {**out, **(view_stats[0] if view_stats else {})}.items():
                sums.setdefault(key, []).append(value.detach())
            if bar is not None:
                if i % 10 == 0 or i == steps_per_epoch - 1:
                    elapsed = time.perf_counter() - t_epoch
                    bar.set_postfix(
                        loss=f"{float(loss.detach()):.3f}", img_s=f"{(i + 1) * settings.batch_size / elapsed:.0f}"
                    )
                bar.update(1)
        seconds = time.perf_counter() - t_epoch
        train_seconds += seconds
        per_step = {k: torch.stack(v).float().cpu() for k, v in sums.items()}
        if not torch.isfinite(per_step["loss"]).all():
            raise FloatingPointError(f"the loss became {per_step['loss'].tolist()[-1]} in epoch {epoch + 1}")
        step_losses.extend(per_step["loss"].tolist())
        means = _mean_over_ranks({k: float(v.mean()) for k, v in per_step.items()}, dev)
        _sync_buffers(model)
        record = EpochRecord(
            epoch=epoch + 1,
            loss=means.pop("loss"),
            lr=lr,
            images_per_s=steps_per_epoch * settings.batch_size / seconds,
            seconds=seconds,
            stats=means,
        )
        if monitor is not None and info.is_main:
            record.monitor = dict(monitor(model, epoch + 1))
        history.append(record)
        result.train_seconds = train_seconds
        if ckpt_path is not None and info.is_main:
            save_checkpoint(
                ckpt_path,
                {
                    "format": TRAIN_FORMAT,
                    "method": getattr(model, "name", type(model).__name__),
                    "arch": getattr(model, "arch", ""),
                    "stem": getattr(model, "stem", ""),
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": [asdict(r) for r in history],
                    "step_losses": step_losses,
                    "step_lrs": step_lrs,
                    "train_seconds": train_seconds,
                    "resume_key": resume_key,
                    "settings": asdict(settings),
                    **(checkpoint_extra or {}),
                },
            )
        odist.barrier()
        log.info(
            "epoch %d/%d  loss %.4f  lr %.4g  %.0f img/s%s",
            epoch + 1,
            settings.epochs,
            record.loss,
            lr,
            record.images_per_s,
            "".join(f"  {k} {v:.2f}" for k, v in record.monitor.items()),
        )
        if on_epoch_end is not None:
            on_epoch_end(record, result)
    if bar is not None:
        bar.close()
    images = steps_per_epoch * settings.batch_size * settings.epochs
    result.images_per_s = images / train_seconds if train_seconds > 0 else float("nan")
    return result


def _batches(loader: DataLoader, steps: int) -> Iterator[Any]:
    """At most ``steps`` batches of ``loader`` (every rank runs the same number of steps)."""
    for i, batch in enumerate(loader):
        if i >= steps:
            break
        yield batch
