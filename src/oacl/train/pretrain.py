"""Vanilla pretraining (stages ``pretrain@moco`` and ``pretrain@byol``): params → data → engine → files.

:func:`run_pretrain` is everything the stage does, so that the stage script stays thin and
tests can call it in-process. Outputs (rank 0 only, all written atomically):

- ``<models>/pretrain-<method>/checkpoint.pt`` — the full training state (model incl.
  queue, optimizer, epoch, history, params);
- ``<models>/pretrain-<method>/backbone.pt`` — encoder + projector with clean keys
  (:func:`oacl.io.load_backbone`, :func:`oacl.io.load_encoder_projector`);
- ``<live>/pretrain-<method>/`` — dvclive curves (loss, lr, monitor) per epoch;
- ``<plots>/pretrain-<method>/loss.png`` — the loss curve, rendered offline;
- ``<metrics>/pretrain-<method>.json``.

The per-epoch resume checkpoint lives in ``<cache>/pretrain-<method>/last.pt``, outside
the stage's outputs, so DVC does not delete it when a killed stage is rerun; it is removed
once the outputs are written.

Debiased retraining (:mod:`oacl.train.retrain`) is the same run with one change, its
augmentation: it passes a :class:`TrainVariant` (training-set wrapper + view pipeline, extra
outputs) and its own :class:`PretrainPaths`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from oacl import dist as odist
from oacl.augment.views import AugmentSettings, ViewPipeline, two_view_pipeline
from oacl.config import ByolConfig, ConfigError, MocoConfig, Params, PretrainConfig
from oacl.data.datasets import EmbeddedSet
from oacl.data.source import knn_files, stored_side, train_set
from oacl.io.atomic import atomic_path, write_json
from oacl.io.checkpoint import export_backbone
from oacl.models.backbones import layer4_stride
from oacl.models.byol import BYOL
from oacl.models.moco import MoCo
from oacl.perf import resolve_amp, resolve_device
from oacl.train.engine import EpochRecord, TrainResult, TrainSettings, train
from oacl.train.monitor import KnnMonitor, KnnProbe
from oacl.train.report import write_loss_plot
from oacl.vocab import SETS

__all__ = [
    "PretrainPaths",
    "TrainVariant",
    "train_set_names",
    "METHOD_BUILDERS",
    "method_config",
    "build_method",
    "train_settings",
    "open_train_set",
    "check_queue",
    "check_view_size",
    "run_pretrain",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainPaths:
    """Where one method's pretraining writes (see the module docstring)."""

    model_dir: Path
    cache_dir: Path
    live_dir: Path
    plots_dir: Path
    metrics: Path

    @classmethod
    def under(cls, root: str | Path, method: str) -> PretrainPaths:
        """The standard layout under ``root`` (``artifacts`` in the pipeline)."""
        root = Path(root)
        name = f"pretrain-{method}"
        return cls(
            model_dir=root / "models" / name,
            cache_dir=root / "cache" / name,
            live_dir=root / "live" / name,
            plots_dir=root / "plots" / name,
            metrics=root / "metrics" / f"{name}.json",
        )


@dataclass(frozen=True)
class TrainVariant:
    """What a retraining changes relative to its vanilla twin: the augmentation (and its names).

    name: the run's name in logs and plot titles (``retrain-moco-bgmix``).
    record: JSON-able settings of the variant; stored under ``"retrain"`` in the checkpoints'
        ``params`` and part of the resume key.
    prepare: ``prepare(data, size) -> (dataset, views)`` — given the vanilla training set and
        the view side (px), the dataset to train on (e.g. items with their CAM data attached)
        and its :class:`~oacl.augment.views.ViewPipeline`. Called in every process before
        training, so it is where bad inputs (a missing CAM file) stop the run.
    finish: ``finish(result, dataset, views) -> metrics`` — rank 0, after the model files are
        written: extra outputs (picture sheets); the dict is merged into the metrics JSON.
    """

    name: str
    record: Mapping[str, Any]
    prepare: Callable[[Dataset, int], tuple[Dataset, ViewPipeline]]
    finish: Callable[[TrainResult, Dataset, ViewPipeline], Mapping[str, Any]] | None = None


def _build_moco(cfg: PretrainConfig) -> nn.Module:
    m = cfg.moco
    return MoCo(
        cfg.arch,
        cfg.stem,
        proj_hidden=m.proj_hidden or None,
        proj_dim=m.proj_dim,
        queue_size=m.queue_size,
        temperature=m.temperature,
        momentum=m.momentum,
        momentum_final=m.momentum_final or None,
    )


def _build_byol(cfg: PretrainConfig) -> nn.Module:
    b = cfg.byol
    return BYOL(
        cfg.arch,
        cfg.stem,
        proj_hidden=b.proj_hidden,
        proj_dim=b.proj_dim,
        pred_hidden=b.pred_hidden,
        tau_base=b.tau_base,
        pred_lr_mult=b.pred_lr_mult,
    )


METHOD_BUILDERS: dict[str, Callable[[PretrainConfig], nn.Module]] = {"moco": _build_moco, "byol": _build_byol}


def method_config(method: str, cfg: PretrainConfig) -> MocoConfig | ByolConfig:
    """The method's own section (``pretrain.moco`` or ``pretrain.byol``)."""
    if method not in METHOD_BUILDERS:
        raise ValueError(f"unknown method {method!r}; known: {sorted(METHOD_BUILDERS)}")
    return getattr(cfg, method)


def build_method(method: str, cfg: PretrainConfig) -> nn.Module:
    """A fresh MoCo / BYOL module from the params (seeded by the caller)."""
    method_config(method, cfg)
    return METHOD_BUILDERS[method](cfg)


def train_settings(method: str, cfg: PretrainConfig) -> TrainSettings:
    """:class:`TrainSettings` of ``method`` from the params."""
    m = method_config(method, cfg)
    return TrainSettings(
        epochs=m.epochs,
        batch_size=cfg.batch_size,
        base_lr=m.base_lr,
        weight_decay=m.weight_decay,
        sgd_momentum=cfg.sgd_momentum,
        warmup_epochs=m.warmup_epochs,
        seed=cfg.seed,
        amp=resolve_amp(cfg.amp, resolve_device(cfg.device, "pretrain.device")),
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        workers=cfg.workers,
    )


def view_settings(cfg: PretrainConfig, size: int) -> AugmentSettings:
    """The two-view recipe of ``pretrain.*`` at view side ``size`` (the vanilla models and their debiased twins)."""
    return AugmentSettings(size=size, crop_scale=cfg.crop_scale, blur_p=cfg.blur_p)


def train_set_names(cfg: PretrainConfig) -> list[str]:
    """The parts of the training set, in :func:`open_train_set`'s order: ``multi`` and / or ``single``."""
    return list(SETS) if cfg.dataset == "both" else [cfg.dataset]


def open_train_set(params: Params) -> tuple[Dataset, int]:
    """The training set chosen by ``pretrain.dataset`` and the side of its views (px).

    Each part is :func:`oacl.data.source.train_set`, both parts concatenated for ``both``.
    Embedded images have one side, the default view side; real images need
    ``pretrain.image_size``.
    """
    cfg = params.pretrain
    parts = train_set_names(cfg)
    size = cfg.image_size or stored_side(params.data, parts[0])
    if size == 0:
        raise ConfigError("params: 'pretrain.image_size' must be set (> 0) when data.source is 'real'")
    sets = [train_set(params.data, p) for p in parts]
    data = sets[0] if len(sets) == 1 else ConcatDataset(sets)
    return data, size


def check_queue(cfg: PretrainConfig, n_train: int) -> None:
    """MoCo's queue must hold at most half the training set, else an image meets its own stale keys."""
    if cfg.moco.queue_size > n_train // 2:
        raise ConfigError(
            f"params: 'pretrain.moco.queue_size' = {cfg.moco.queue_size} is more than half of the "
            f"{n_train} training images (pretrain.dataset = {cfg.dataset!r}); use at most {n_train // 2}"
        )


def check_view_size(cfg: PretrainConfig, size: int) -> None:
    """The views (``size`` px) must be at least the stem's downsampling to layer4 (32, 16 or 8), else layer4 has no whole cell."""
    stride = layer4_stride(cfg.stem)
    if size < stride:
        what = (
            f"'pretrain.image_size' = {size}"
            if cfg.image_size
            else f"the data's image side ({size} px; 'pretrain.image_size' = 0)"
        )
        raise ConfigError(
            f"params: {what} is too small for 'pretrain.stem' = {cfg.stem!r}, which downsamples {stride}x to layer4: "
            f"use views of at least {stride} px, or a stem that downsamples less (s1: 16x, cifar: 8x)"
        )


def _fingerprint(data: Dataset) -> dict[str, Any]:
    """Cheap identity of the training data (sizes and timestamps of set files, ids)."""
    parts = data.datasets if isinstance(data, ConcatDataset) else [data]
    out = []
    for d in parts:
        entry: dict[str, Any] = {
            "n": len(d),
            "ids": hashlib.sha256("\n".join(getattr(d, "ids", [])).encode()).hexdigest(),
        }
        path = getattr(getattr(d, "set", None), "path", None)
        if path is not None:
            st = os.stat(path)
            entry.update(path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns)
        out.append(entry)
    return {"sets": out}


def _monitor(params: Params, settings: TrainSettings) -> KnnMonitor | None:
    cfg = params.pretrain
    if cfg.knn_every == 0:
        return None
    probes = []
    for part in train_set_names(cfg):
        files = knn_files(params.data, part)
        if files is None:  # real data: no labelled bank / query sets
            return None
        name, bank, query = files
        if not bank.exists() or not query.exists():
            log.warning("kNN monitor %r skipped: %s or %s is missing", name, bank, query)
            continue
        probes.append(KnnProbe.from_datasets(name, EmbeddedSet(bank), EmbeddedSet(query), seed=cfg.seed))
    if not probes:
        return None
    aug = AugmentSettings(size=1)
    return KnnMonitor(
        probes,
        mean=aug.mean,
        std=aug.std,
        every=cfg.knn_every,
        last_epoch=settings.epochs,
        k=cfg.knn_k,
        amp=settings.amp,
        channels_last=cfg.channels_last,
    )


def _live_logger(live_dir: Path, history: list[EpochRecord]) -> Any:
    """A dvclive ``Live`` (rank 0) with ``history`` replayed, so a resumed run has whole curves."""
    from dvclive import Live

    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, resume=False)
    for r in history:
        _log_epoch(live, r)
    return live


def _log_epoch(live: Any, r: EpochRecord) -> None:
    live.log_metric("train/loss", r.loss)
    live.log_metric("train/lr", r.lr)
    live.log_metric("train/images_per_s", r.images_per_s)
    for k, v in r.stats.items():
        if k != "loss":
            live.log_metric(f"train/{k}", v)
    for k, v in r.monitor.items():
        live.log_metric(k, v)
    live.next_step()


def run_pretrain(
    params: Params,
    method: str,
    paths: PretrainPaths,
    *,
    on_epoch_end: Callable[[EpochRecord, TrainResult], None] | None = None,
    variant: TrainVariant | None = None,
) -> dict[str, Any] | None:
    """Pretrain ``method`` ("moco" / "byol") as ``params.pretrain`` says; write the outputs.

    Call it in every process (under torchrun each rank calls it; only rank 0 writes).
    Returns the metrics dict on rank 0, None elsewhere. ``on_epoch_end`` is passed to the
    engine (tests use it to interrupt a run). ``variant``: a debiased retraining (same data,
    settings and seed; its own augmentation), None for the vanilla model.
    """
    cfg = params.pretrain
    mcfg = method_config(method, cfg)
    t0 = time.perf_counter()
    device = None if cfg.device == "auto" else cfg.device
    info = odist.init_distributed(device)
    data, size = open_train_set(params)
    check_view_size(cfg, size)
    if method == "moco":
        check_queue(cfg, len(data))
    settings = train_settings(method, cfg)
    if cfg.batch_size % info.world_size:
        raise ConfigError(
            f"params: 'pretrain.batch_size' = {cfg.batch_size} does not split over {info.world_size} processes"
        )
    if len(data) < cfg.batch_size:
        raise ConfigError(
            f"params: 'pretrain.batch_size' = {cfg.batch_size} is larger than the {len(data)} training images"
        )
    train_data: Dataset = data
    if variant is None:
        views = two_view_pipeline(view_settings(cfg, size))
    else:
        train_data, views = variant.prepare(data, size)
    name = variant.name if variant is not None else f"pretrain {method}"
    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_method(method, cfg)
    params_record = {"method": method, "pretrain": _common(cfg), method: asdict(mcfg), "image_size": size}
    if variant is not None:
        params_record["retrain"] = dict(variant.record)
    resume_key = hashlib.sha256(
        json.dumps({**params_record, "world": info.world_size, "data": _fingerprint(data)}, sort_keys=True).encode()
    ).hexdigest()
    monitor = _monitor(params, settings) if info.is_main else None

    live = None
    callback = on_epoch_end
    if info.is_main:
        paths.live_dir.parent.mkdir(parents=True, exist_ok=True)

        def callback(record: EpochRecord, result: TrainResult) -> None:
            nonlocal live
            if live is None:
                live = _live_logger(paths.live_dir, result.history[:-1])
            _log_epoch(live, record)
            if on_epoch_end is not None:
                on_epoch_end(record, result)

    last = paths.cache_dir / "last.pt"
    log.info(
        "%s: %s/%s on %s (%d images, %d px), global batch %d, %d epochs, %d process(es), threads %d",
        name,
        cfg.arch,
        cfg.stem,
        cfg.dataset,
        len(data),
        size,
        cfg.batch_size,
        settings.epochs,
        info.world_size,
        torch.get_num_threads(),
    )
    result = train(
        model,
        train_data,
        views,
        settings,
        device=info.device,
        checkpoint_path=last,
        resume_key=resume_key,
        checkpoint_extra={"params": params_record},
        monitor=monitor,
        on_epoch_end=callback,
        progress=info.is_main,
    )
    if not info.is_main:
        odist.barrier()
        return None
    if live is None:  # every epoch came from the checkpoint: rebuild the curves
        live = _live_logger(paths.live_dir, result.history)
    live.end()
    aug = AugmentSettings(size=size)
    with atomic_path(paths.model_dir / "checkpoint.pt") as tmp:
        tmp.write_bytes(last.read_bytes())
    export_backbone(
        paths.model_dir / "backbone.pt", result.model, image_size=size, mean=aug.mean, std=aug.std, params=params_record
    )
    write_loss_plot(paths.plots_dir / "loss.png", result, title=f"{name} ({cfg.arch}, {cfg.dataset})")
    extra = (
        dict(variant.finish(result, train_data, views)) if variant is not None and variant.finish is not None else {}
    )
    final_monitor = next((r.monitor for r in reversed(result.history) if r.monitor), {})
    metrics = {
        "method": method,
        "arch": cfg.arch,
        "stem": cfg.stem,
        "dataset": cfg.dataset,
        "train_images": len(data),
        "image_size": size,
        "epochs": len(result.history),
        "steps": result.steps_per_epoch * len(result.history),
        "final_loss": round(result.final_loss, 5),
        "first_epoch_loss": round(result.history[0].loss, 5),
        "images_per_s": round(result.images_per_s, 1),
        "effective_lr": result.effective_lr,
        "global_batch": result.global_batch,
        "processes": info.world_size,
        "threads": torch.get_num_threads(),
        "amp": settings.amp,
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
        "train_seconds": round(result.train_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "resumed_from_epoch": result.resumed_from_epoch,
        **{k: round(v, 2) for k, v in final_monitor.items()},
        **{f"final_{k}": round(v, 4) for k, v in result.history[-1].stats.items()},
        **extra,
    }
    write_json(paths.metrics, metrics)
    last.unlink(missing_ok=True)
    odist.barrier()
    return metrics


def _common(cfg: PretrainConfig) -> dict[str, Any]:
    """The shared part of ``pretrain`` (without the per-method sections), as plain values."""
    d = asdict(cfg)
    d.pop("moco")
    d.pop("byol")
    return d
