"""Stage ``contracam@<dataset>``: CAM export, localization metrics, ablations and pictures.

:func:`run_contracam_stage` is everything the stage does (the script only parses its
arguments), so tests can call it in-process. For ``dataset`` in {multi, single}:

1. the vanilla MoCo backbone (``pretrain@moco``'s ``backbone.pt``; the paper computes the
   CAMs of both methods with MoCo) is loaded and checked (:class:`CheckpointError` when it
   is missing, unreadable or from another method);
2. :func:`oacl.cam.run_contracam` runs on the data set's TRAINING split with the settings of
   ``contracam.<dataset>`` — what the retraining stages consume — and the result is written
   to ``<out>/cam/<dataset>.h5`` (schema ``oacl.cam/1``, DESIGN.md A) with the sha256 of the
   backbone file, then read back and checked against the data set's ids;
3. localization metrics against the ground truth of the same images (unsupervised, as in
   the paper's Table 1): mask mIoU of the refined mask, and mIoU (binarised at 0.5), PxAP and
   MaxBoxAccV2 of the soft CAM, each next to the four null baselines of
   :mod:`oacl.cam.nulls` (centred Gaussian with its best σ, all-ones, channel sum of the same
   backbone, ContraCAM on random weights), every one refined by the same CRF and cleaning;
   boxes per image, seconds → ``<out>/metrics/contracam-<dataset>.json`` (the mIoU, PxAP
   and MaxBoxAccV2 blocks) and ``<out>/eval/contracam-<dataset>/details.json`` (the rest;
   :mod:`oacl.io.results`);
4. ablations (``contracam.ablation``; paper Tables 1, 9, 10 analogues) on a fixed random
   subset: mask mIoU per number of iterations T, without negative-signal removal, per
   negative-batch size → ``<out>/metrics/contracam-<dataset>-ablation.json`` (CRF mIoU per T
   and without NSR) and ``<out>/eval/contracam-<dataset>/ablation.json`` (the rest);
5. pictures: ``<out>/plots/contracam-<dataset>/sheet.png`` and ``boxes_per_image.png``.

All percentages are percent (mIoU too: ``*_miou_pct``). Every file is written atomically.

Size: everything ``contracam@<set>`` does — CAM export, localization metrics with their baselines, ablations, pictures — in the order the stage runs it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from oacl.cam.contracam import CamModel, CamResult, contracam_prepared, prepare_cam_model, run_contracam
from oacl.cam.nulls import NULL_BASELINES, channel_sum_maps, gaussian_map, random_init_like
from oacl.cam.postprocess import PostprocessOptions, count_boxes, refine_batch
from oacl.config import ContraCAMAblationConfig, ContraCAMConfig, Params
from oacl.data.source import train_set
from oacl.errors import CheckpointError, DataError
from oacl.io.atomic import atomic_dir
from oacl.io.results import write_results
from oacl.localization import (
    exclusive_to_inclusive,
    fixed_map_box_acc,
    localization_baselines,
    mask_ious,
    max_box_acc_v2,
    pxap,
)
from oacl.perf import resolve_amp, resolve_device
from oacl.vocab import CAM_METHOD, IMAGENET_MEAN, IMAGENET_STD, SETS

__all__ = [
    "CamPaths",
    "GroundTruth",
    "NullMaps",
    "ablation_metrics",
    "dataset_config",
    "file_sha256",
    "ground_truth",
    "gaussian_sigmas",
    "localization_metrics",
    "null_maps",
    "open_cam_set",
    "postprocess_options",
    "run_contracam_stage",
    "soft_masks",
]

log = logging.getLogger(__name__)

SHEET_IMAGES = 16


@dataclass(frozen=True)
class CamPaths:
    """Where ``contracam@<dataset>`` writes (see the module docstring)."""

    store: Path
    metrics: Path
    ablation: Path
    plots_dir: Path

    @classmethod
    def under(cls, root: str | Path, dataset: str) -> CamPaths:
        """The standard layout under ``root`` (``artifacts`` in the pipeline)."""
        root = Path(root)
        return cls(
            store=root / "cam" / f"{dataset}.h5",
            metrics=root / "metrics" / f"contracam-{dataset}.json",
            ablation=root / "metrics" / f"contracam-{dataset}-ablation.json",
            plots_dir=root / "plots" / f"contracam-{dataset}",
        )


@dataclass(frozen=True)
class GroundTruth:
    """Ground truth of a data set, in dataset order.

    masks: (N, H, W) uint8 {0, 1} (rows without a mask are zero); has_mask: (N,) bool;
    boxes: N float32 arrays (k_i, 4) of pixel x0, y0, x1, y1, right / bottom exclusive.
    """

    masks: np.ndarray
    has_mask: np.ndarray
    boxes: list[np.ndarray]


# ----------------------------------------------------------------------------- inputs


def dataset_config(params: Params, dataset: str) -> ContraCAMConfig:
    """The ``contracam.<dataset>`` block."""
    if dataset not in SETS:
        raise ValueError(f"dataset must be one of {SETS}, got {dataset!r}")
    return getattr(params.contracam, dataset)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def open_cam_set(params: Params, dataset: str, image_size: int) -> Any:
    """The TRAINING split of ``dataset`` as ContraCAM reads it (:func:`oacl.data.source.train_set`).

    Embedded images are used as stored. Real images are resized (image, boxes, mask together) to
    ``image_size`` x ``image_size`` — the side the backbone was trained on — because ContraCAM
    batches need one size.
    """
    return train_set(params.data, dataset, side=image_size)


def _item_truth(item: Any) -> tuple[np.ndarray | None, np.ndarray, tuple[int, int]]:
    """(mask (H, W) uint8 or None, boxes (k, 4) float32 exclusive pixels, (H, W)) of an item dict."""
    h, w = (int(s) for s in item["image"].shape[-2:])
    mask = item["mask"]
    mask = None if mask is None else np.asarray(mask, dtype=np.uint8)
    return mask, np.asarray(item["boxes"], dtype=np.float32).reshape(-1, 4), (h, w)


def _stack_truth(truths: Sequence[tuple[np.ndarray | None, np.ndarray, tuple[int, int]]]) -> GroundTruth:
    if not truths:
        return GroundTruth(np.zeros((0, 0, 0), np.uint8), np.zeros(0, bool), [])
    masks = [np.zeros(size, np.uint8) if m is None else m for m, _, size in truths]
    return GroundTruth(np.stack(masks), np.asarray([m is not None for m, _, _ in truths]), [b for _, b, _ in truths])


def ground_truth(dataset: Any, indices: Sequence[int] | None = None) -> GroundTruth:
    """Masks and boxes of ``dataset`` (all items, or ``indices``), read from its item dicts."""
    rows = range(len(dataset)) if indices is None else [int(i) for i in indices]
    return _stack_truth([_item_truth(dataset[i]) for i in rows])


class _RecordingSet:
    """A dataset wrapper that keeps the ground truth of every item fetched through it.

    The CAM pass reads every image once; recording its masks and boxes on the way spares a
    second decoding pass over the data set (which matters for real images).
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.ids = dataset.ids
        self._truth: dict[int, tuple[np.ndarray | None, np.ndarray, tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        self._truth[int(index)] = _item_truth(item)
        return item

    def ground_truth(self) -> GroundTruth:
        """Ground truth of the whole data set, in dataset order (items never fetched are read now)."""
        return _stack_truth([self._truth.get(i) or _item_truth(self.dataset[i]) for i in range(len(self.dataset))])


def _images(dataset: Any, indices: Sequence[int]) -> np.ndarray:
    """(n, H, W, 3) uint8 images of ``dataset[indices]``."""
    return np.stack([np.asarray(dataset[int(i)]["image"]).transpose(1, 2, 0) for i in indices])


def postprocess_options(cfg: ContraCAMConfig) -> PostprocessOptions:
    """The post-processing settings of a ``contracam`` block."""
    return PostprocessOptions.from_config(cfg)


# ----------------------------------------------------------------------------- metrics


def _pct(x: float) -> float:
    return round(100.0 * float(x), 2)


def _miou_pct(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean IoU in percent; gt (n, H, W) {0, 1}, pred (n, H, W) in [0, 1]."""
    return _pct(mask_ious(gt, pred).mean())


@dataclass(frozen=True)
class NullMaps:
    """A null baseline's maps over a data set (:mod:`oacl.cam.nulls`), in dataset order.

    soft: (N, H, W) uint8 map x 255, or (H, W) for one map used for every image (then
    ``box_soft`` may hold another σ's map for MaxBoxAccV2: the image-blind Gaussian gets its
    best σ per metric); refined: (N, H, W) uint8 in {0, 1}, after ContraCAM's post-processing.
    """

    soft: np.ndarray
    refined: np.ndarray
    box_soft: np.ndarray | None = None


def _levels(acc: dict[Any, float]) -> dict[str, float]:
    return {
        "iou30": round(acc[30], 2),
        "iou50": round(acc[50], 2),
        "iou70": round(acc[70], 2),
        "mean": round(acc["mean"], 2),
    }


def _soft_rows(soft: np.ndarray, rows: Sequence[int] | np.ndarray) -> np.ndarray:
    """Rows of a soft map set as float in [0, 1]; a single (H, W) map stays one map."""
    if soft.ndim == 2:
        return soft.astype(np.float32) / 255.0
    return soft[rows].astype(np.float32) / 255.0


def localization_metrics(
    result: CamResult, gt: GroundTruth, nulls: Mapping[str, NullMaps] | None = None
) -> dict[str, Any]:
    """Localization metrics of a whole-set ContraCAM run and its null baselines (percent).

    Mask metrics use the images that have a GT mask; MaxBoxAccV2 the images with at least
    one GT box. Every map is scored twice: refined (ContraCAM's post-processing) and soft.
    Keys: ``images``; ``mask_miou_pct`` {``refined``, one per null}: refined masks;
    ``mask_miou_soft_pct`` {``soft_cam``, one per null}: soft maps binarised at 0.5;
    ``pxap_pct`` {``cam``, one per null}: soft maps; ``max_box_acc_v2_pct`` {``cam``, one per
    null: {iou30, iou50, iou70, mean}}: soft maps; ``boxes_per_image`` {cam, gt, no_box_pct}.
    """
    n = len(result.ids)
    if n != len(gt.boxes):
        raise ValueError(f"the CAM result has {n} images, the ground truth {len(gt.boxes)}")
    nulls = dict(nulls or {})
    out: dict[str, Any] = {"images": n}
    m = np.flatnonzero(gt.has_mask)
    if len(m):
        masks = gt.masks[m]
        out["mask_miou_pct"] = {"refined": _miou_pct(masks, result.masks_refined[m])}
        out["mask_miou_pct"].update({k: _miou_pct(masks, v.refined[m]) for k, v in nulls.items()})
        soft_cam = result.masks[m].astype(np.float32) / 255.0
        out["mask_miou_soft_pct"] = {"soft_cam": _miou_pct(masks, soft_cam)}
        out["pxap_pct"] = {"cam": round(pxap(masks, soft_cam), 2)}
        for k, v in nulls.items():
            soft = _soft_rows(v.soft, m)
            out["mask_miou_soft_pct"][k] = _miou_pct(masks, np.broadcast_to(soft, masks.shape))
            out["pxap_pct"][k] = round(pxap(masks, soft), 2)
    box_rows = [i for i, b in enumerate(gt.boxes) if len(b)]
    if box_rows:
        gt_boxes = [exclusive_to_inclusive(gt.boxes[i]) for i in box_rows]
        acc = {"cam": _levels(max_box_acc_v2(result.masks[box_rows].astype(np.float32) / 255.0, gt_boxes))}
        for k, v in nulls.items():
            soft = v.box_soft if v.box_soft is not None else v.soft
            if soft.ndim == 2:  # one map for every image: its boxes are computed once
                acc[k] = _levels(fixed_map_box_acc(soft.astype(np.float32) / 255.0, gt_boxes))
            else:
                acc[k] = _levels(max_box_acc_v2(_soft_rows(soft, box_rows), gt_boxes))
        out["max_box_acc_v2_pct"] = acc
    cam_counts = count_boxes(result.boxes)
    out["boxes_per_image"] = {
        "cam": round(float(cam_counts.mean()), 3) if n else 0.0,
        "gt": round(float(np.mean([len(b) for b in gt.boxes])), 3) if n else 0.0,
        "no_box_pct": _pct((cam_counts == 0).mean()) if n else 0.0,
    }
    return out


def gaussian_sigmas(gt: GroundTruth, size: tuple[int, int]) -> dict[str, float]:
    """The centred Gaussian's best σ on ``gt`` per metric: ``miou`` (soft map binarised at 0.5)
    and ``box`` (MaxBoxAccV2 mean); each falls back to the other, then to 0.3, without that truth."""
    m = gt.has_mask
    box_rows = [i for i, b in enumerate(gt.boxes) if len(b)]
    base = localization_baselines(
        gt.masks[m] if m.any() else None,
        [exclusive_to_inclusive(gt.boxes[i]) for i in box_rows] if box_rows else None,
        image_size=size,
    )["gaussian"]
    miou = base.get("mask_miou", {}).get("sigma")
    box = base.get("max_box_acc_v2", {}).get("sigma")
    return {"miou": float(miou or box or 0.3), "box": float(box or miou or 0.3)}


def null_maps(
    result: CamResult,
    gt: GroundTruth,
    dataset: Any,
    encoder: nn.Module,
    projector: nn.Module,
    cfg: ContraCAMConfig,
    *,
    arch: str,
    stem: str,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> tuple[dict[str, NullMaps], dict[str, Any]]:
    """The four null baselines of :mod:`oacl.cam.nulls` on ``dataset``, each refined exactly as ContraCAM's maps.

    ``random_weights`` is :func:`oacl.cam.run_contracam` with ``cfg`` (its own refinement
    included) on weights drawn with seed ``cfg.seed``. Returns the maps and
    ``{"gaussian_sigma": {miou, box}, "seconds": {baseline: s}}``.
    """
    opts = postprocess_options(cfg)
    size = tuple(int(s) for s in result.masks.shape[1:])
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    rgb, channel = channel_sum_maps(
        encoder,
        projector,
        dataset,
        expand_res=cfg.expand_res,
        amp=resolve_amp(cfg.amp, torch.device(device)),
        batch_size=cfg.batch_size,
        mean=mean,
        std=std,
        device=device,
    )
    out = {"channel_sum": NullMaps(channel, refine_batch(rgb, channel, opts, processes=cfg.workers)[0])}
    seconds["channel_sum"] = time.perf_counter() - t

    t = time.perf_counter()
    sigma = gaussian_sigmas(gt, size)
    for name, soft, box_soft in (
        ("gaussian", gaussian_map(*size, sigma["miou"]), gaussian_map(*size, sigma["box"])),
        ("ones", np.full(size, 255, np.uint8), None),
    ):
        refined = refine_batch(rgb, np.broadcast_to(soft, (len(rgb), *size)), opts, processes=cfg.workers)[0]
        out[name] = NullMaps(soft, refined, box_soft)
        seconds[name] = time.perf_counter() - t
        t = time.perf_counter()

    rand_enc, rand_proj = random_init_like(encoder, projector, arch=arch, stem=stem, seed=cfg.seed)
    rand = run_contracam(rand_enc, rand_proj, dataset, cfg, mean=mean, std=std, device=device)
    out["random_weights"] = NullMaps(rand.masks, rand.masks_refined)
    seconds["random_weights"] = time.perf_counter() - t
    details = {"gaussian_sigma": sigma, "seconds": {k: round(v, 2) for k, v in seconds.items()}}
    return {k: out[k] for k in NULL_BASELINES}, details


# ----------------------------------------------------------------------------- ablations


def _split(n: int, batch_size: int) -> list[np.ndarray]:
    """range(n) in ceil(n / batch_size) nearly equal consecutive batches."""
    if n == 0:
        return []
    return [a for a in np.array_split(np.arange(n), -(-n // batch_size)) if len(a)]


def soft_masks(
    model: CamModel,
    images: np.ndarray,
    *,
    iters: Sequence[int],
    batch_size: int,
    remove_negative_signal: bool = True,
    neg_batch: int = 0,
    stop_ratio: float = 0.0,
    seed: int = 0,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[int, np.ndarray]:
    """Soft ContraCAM masks of ``images`` for several numbers of iterations T in one pass.

    The T-iteration mask is the running max of the first T per-iteration CAMs of a longer
    run: iteration t sees only the masks, key and negatives of iterations < t, so one run
    with T = max(iters) and ``return_steps`` gives every smaller T exactly. Images are
    visited in a seeded random order in batches of about ``batch_size`` (random negative
    batches, as :func:`oacl.cam.run_contracam`); with the stopping rule a stopped image's
    later steps are zero, so the running max is still exact. images: (n, H, W, 3) uint8. Returns
    ``{T: (n, H, W) uint8 mask x 255}`` in the order of ``images``.
    """
    if len(iters) == 0 or min(iters) < 1:
        raise ValueError(f"iters must be a non-empty list of integers >= 1, got {list(iters)!r}")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (n, H, W, 3) uint8, got {images.shape} {images.dtype}")
    n, h, w, _ = images.shape
    t_max = max(iters)
    out = {t: np.zeros((n, h, w), np.uint8) for t in iters}
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen).numpy()
    dev = model.device
    mean_t = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    for idx in _split(n, batch_size):
        dest = order[idx]
        x = torch.from_numpy(images[dest]).to(dev).permute(0, 3, 1, 2).float() / 255.0  # (b, 3, H, W)
        x = (x - mean_t) / std_t
        _, steps = contracam_prepared(
            model,
            x,
            iters=t_max,
            remove_negative_signal=remove_negative_signal,
            neg_batch=neg_batch or None,
            generator=gen,
            return_steps=True,
            stop_ratio=stop_ratio,
        )
        running = torch.cummax(steps[:, :, 0], dim=0).values  # (T, b, H, W): united mask after t + 1 steps
        for t in iters:
            out[t][dest] = (running[t - 1] * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return out


def ablation_metrics(
    encoder: nn.Module,
    projector: nn.Module,
    dataset: Any,
    cfg: ContraCAMConfig,
    ablation: ContraCAMAblationConfig,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> dict[str, Any]:
    """Paper Tables 1, 9, 10 analogues on a fixed random subset (``ablation.images``, seeded by ``cfg.seed``).

    Each variant changes one setting of ``cfg``: the number of iterations T, negative-signal
    removal off, the negative-batch size (batches are then at least that large, so each size
    is realised; a size >= the batch is the whole batch, i.e. the base setting); ``iters_stop``
    repeats the T values with the stopping rule at ``ablation.stop_ratio`` (an extension beyond
    the paper; only when that differs from ``cfg.stop_ratio``). Every entry
    reports the mask mIoU (percent) of the refined mask (``cfg``'s post-processing) and of
    the soft CAM binarised at 0.5; ``base`` is ``cfg`` itself on the subset;
    ``baseline_miou_pct`` / ``baseline_soft_miou_pct`` the image-blind baselines there
    (centred Gaussian with its best σ, all-ones), refined by the same post-processing / soft. Returns ``{"images": 0}`` when the
    ablation is off (no subset or no variant) or the data set has no GT masks.
    """
    t0 = time.perf_counter()
    n_sub = min(ablation.images, len(dataset))
    if n_sub == 0 or not (ablation.iters or ablation.without_nsr or ablation.neg_batch):
        return {"images": 0}
    rng = np.random.default_rng(cfg.seed)
    subset = np.sort(rng.choice(len(dataset), size=n_sub, replace=False))
    gt = ground_truth(dataset, subset)
    if not gt.has_mask.all():
        log.warning("ablation skipped: %d of %d subset images have no GT mask", int((~gt.has_mask).sum()), n_sub)
        return {"images": 0}
    images = _images(dataset, subset)
    opts = postprocess_options(cfg)
    if next(encoder.parameters()).device != device:  # copies on the device; the caller's modules stay put
        encoder, projector = copy.deepcopy(encoder).to(device), copy.deepcopy(projector).to(device)
    model = prepare_cam_model(encoder, projector, expand_res=cfg.expand_res, amp=resolve_amp(cfg.amp, device))
    common = dict(mean=mean, std=std, seed=cfg.seed)

    def score(soft: np.ndarray) -> dict[str, float]:
        refined, _ = refine_batch(images, soft, opts, processes=cfg.workers)
        return {"refined_miou_pct": _miou_pct(gt.masks, refined), "soft_miou_pct": _miou_pct(gt.masks, soft / 255.0)}

    sweep = sorted(set(ablation.iters) | {cfg.iters})
    by_t = soft_masks(
        model,
        images,
        iters=sweep,
        batch_size=cfg.batch_size,
        remove_negative_signal=cfg.remove_negative_signal,
        neg_batch=cfg.neg_batch,
        stop_ratio=cfg.stop_ratio,
        **common,
    )
    base = score(by_t[cfg.iters])
    out: dict[str, Any] = {"images": n_sub, "base": base}
    if ablation.iters:
        out["iters"] = {str(t): base if t == cfg.iters else score(by_t[t]) for t in sorted(set(ablation.iters))}
    if ablation.iters and ablation.stop_ratio > 0 and ablation.stop_ratio != cfg.stop_ratio:
        by_t_stop = soft_masks(
            model,
            images,
            iters=sweep,
            batch_size=cfg.batch_size,
            remove_negative_signal=cfg.remove_negative_signal,
            neg_batch=cfg.neg_batch,
            stop_ratio=ablation.stop_ratio,
            **common,
        )
        out["iters_stop"] = {
            "stop_ratio": ablation.stop_ratio,
            **{str(t): score(by_t_stop[t]) for t in sorted(set(ablation.iters))},
        }
    if ablation.without_nsr:
        soft = soft_masks(
            model,
            images,
            iters=[cfg.iters],
            batch_size=cfg.batch_size,
            remove_negative_signal=False,
            neg_batch=cfg.neg_batch,
            stop_ratio=cfg.stop_ratio,
            **common,
        )[cfg.iters]
        out["without_nsr"] = score(soft)
    if ablation.neg_batch:
        out["neg_batch"] = {}
        for size in sorted(set(ablation.neg_batch)):
            soft = soft_masks(
                model,
                images,
                iters=[cfg.iters],
                batch_size=max(cfg.batch_size, size),
                remove_negative_signal=cfg.remove_negative_signal,
                neg_batch=size,
                stop_ratio=cfg.stop_ratio,
                **common,
            )[cfg.iters]
            out["neg_batch"][str(size)] = score(soft)
    # the image-blind baselines on the subset, soft and through the same post-processing
    sigma = float(localization_baselines(gt.masks)["gaussian"]["mask_miou"]["sigma"])
    size = gt.masks.shape[1:]
    out["baseline_miou_pct"], out["baseline_soft_miou_pct"] = {}, {}
    for name, soft in (("gaussian", gaussian_map(*size, sigma)), ("ones", np.full(size, 255, np.uint8))):
        r = score(np.ascontiguousarray(np.broadcast_to(soft, gt.masks.shape)))
        out["baseline_miou_pct"][name] = r["refined_miou_pct"]
        out["baseline_soft_miou_pct"][name] = r["soft_miou_pct"]
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


# ----------------------------------------------------------------------------- the stage


def run_contracam_stage(params: Params, dataset: str, model_path: str | Path, paths: CamPaths) -> dict[str, Any]:
    """Everything ``contracam@<dataset>`` does (see the module docstring); returns the metrics."""
    from oacl.cam.sheets import write_boxes_histogram, write_cam_sheet
    from oacl.io.camstore import CamStore, write_cam_store
    from oacl.io.checkpoint import load_encoder_projector, read_backbone
    from oacl.io.geometry import RESIZE_FULL

    cfg = dataset_config(params, dataset)
    device = resolve_device(cfg.device, f"contracam.{dataset}.device")
    t_start = time.perf_counter()
    if not Path(model_path).is_file():
        raise CheckpointError(
            f"backbone {model_path} does not exist: run the pretrain@{CAM_METHOD} stage first "
            f"(dvc repro pretrain@{CAM_METHOD}) or pass --model"
        )
    info = read_backbone(model_path, method=CAM_METHOD)
    encoder, projector = load_encoder_projector(model_path, method=CAM_METHOD)
    sha = file_sha256(model_path)
    mean = tuple(info.get("mean") or IMAGENET_MEAN)
    std = tuple(info.get("std") or IMAGENET_STD)
    trained_size = int(info.get("image_size") or 0)
    data = open_cam_set(params, dataset, trained_size)
    if len(data) == 0:
        raise DataError(f"the {dataset} training split is empty")
    torch.manual_seed(cfg.seed)
    log.info(
        "contracam@%s: %d images, backbone %s (%s/%s, sha256 %s...), T=%d, expand x%d, NSR %s, CRF %s, %s",
        dataset,
        len(data),
        model_path,
        info["arch"],
        info["stem"],
        sha[:12],
        cfg.iters,
        cfg.expand_res,
        cfg.remove_negative_signal,
        cfg.crf,
        device,
    )

    recorder = _RecordingSet(data)
    result = run_contracam(encoder, projector, recorder, cfg, mean=mean, std=std, device=device, progress=True)
    size = tuple(int(s) for s in result.masks.shape[1:])
    if trained_size and size != (trained_size, trained_size):
        log.warning("the backbone was trained on %d px images, the %s set has %s", trained_size, dataset, size)
    write_cam_store(
        paths.store,
        image_ids=result.ids,
        masks=result.masks,
        boxes=result.boxes,
        masks_refined=result.masks_refined if cfg.crf else None,
        checkpoint_sha256=sha,
        # what decides the masks; the CRF process count does not (identical for any), so the
        # store's bytes do not depend on it either
        params={"dataset": dataset, **{k: v for k, v in asdict(cfg).items() if k != "workers"}},
        image_size=size,
        iters=cfg.iters,
        expand_res=cfg.expand_res,
        crf=cfg.crf,
        mask_geometry=RESIZE_FULL,  # open_cam_set resizes each real image whole to size (embedded: as stored)
    )
    CamStore(paths.store, expected_ids=data.ids).close()  # what the retraining stages will check

    t_metrics = time.perf_counter()
    gt = recorder.ground_truth()
    nulls, null_details = null_maps(
        result,
        gt,
        data,
        encoder,
        projector,
        cfg,
        arch=info["arch"],
        stem=info["stem"],
        mean=mean,
        std=std,
        device=device,
    )
    metrics = localization_metrics(result, gt, nulls)
    metrics["gaussian_sigma"] = null_details["gaussian_sigma"]
    del nulls
    ablation = ablation_metrics(
        encoder, projector, data, cfg, params.contracam.ablation, mean=mean, std=std, device=device
    )
    t_plots = time.perf_counter()
    with atomic_dir(paths.plots_dir) as tmp:
        k = min(SHEET_IMAGES, len(data))
        rgb = _images(data, range(k))
        write_cam_sheet(
            tmp / "sheet.png",
            rgb,
            result.masks[:k],
            result.masks_refined[:k],
            result.boxes[:k],
            gt_boxes=gt.boxes[:k],
            title=f"ContraCAM on {dataset}/train (T={cfg.iters}, x{cfg.expand_res}, CRF {cfg.crf})",
        )
        write_boxes_histogram(
            tmp / "boxes_per_image.png",
            count_boxes(result.boxes),
            np.asarray([len(b) for b in gt.boxes]),
            title=f"Boxes per image, {dataset}/train",
        )
    t_end = time.perf_counter()
    metrics["seconds"] = {
        "cam": round(result.seconds_cam, 2),
        "postprocess": round(result.seconds_postprocess, 2),
        "null_baselines": null_details["seconds"],
        "total": round(t_end - t_start, 2),
    }
    write_results(paths.ablation, ablation)
    write_results(paths.metrics, metrics)
    log.info(
        "contracam@%s: mIoU refined %s%% (nulls %s), soft %s%%, MaxBoxAccV2 %s%%; metrics %.1f s, ablation %s s, "
        "plots %.1f s",
        dataset,
        metrics.get("mask_miou_pct", {}).get("refined"),
        {k: v for k, v in metrics.get("mask_miou_pct", {}).items() if k != "refined"},
        metrics.get("mask_miou_soft_pct", {}).get("soft_cam"),
        metrics.get("max_box_acc_v2_pct", {}).get("cam", {}).get("mean"),
        t_plots - t_metrics,
        ablation.get("seconds", 0),
        t_end - t_plots,
    )
    return metrics
