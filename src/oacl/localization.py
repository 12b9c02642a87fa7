"""Localization metrics: mask mIoU (paper Table 1) and MaxBoxAccV2 (Choe et al., CVPR 2020).

``max_box_acc_v2`` follows wsolevaluation's ``BoxEvaluator`` with
``multi_contour_eval=True`` and ``cam_curve_interval=0.01``, fact by fact:

* the CAM is quantised as ``uint8(cam * 255)`` (truncation); at each CAM
  threshold t in 0.00, 0.01, ..., 0.99 the pixels ``> int(t * max)`` are
  foreground (``cv2.threshold(..., THRESH_BINARY)``);
* every contour of that map (``cv2.findContours`` with ``RETR_TREE``, so holes
  count too) gives a box ``x, y, x + w, y + h`` (``cv2.boundingRect``) whose
  right/bottom are clipped to ``W - 1`` / ``H - 1``; a map without contours
  gives the box ``[0, 0, 0, 0]``;
* boxes are inclusive pixel boxes: IoU areas are ``(x1 - x0 + 1) * (y1 - y0 + 1)``;
* an image is correct at (t, IoU level) if ANY estimated box overlaps ANY
  ground-truth box with IoU >= level / 100;
* accuracy(t, level) = 100 x correct / N; MaxBoxAccV2 at a level is the best t,
  and ``mean`` averages the levels 30, 50, 70.

``pxap`` is the pixel average precision of the same paper (wsolevaluation's
``MaskEvaluator``, again fact by fact): every pixel of every image is one
detection with the CAM value as its score; scores are histogrammed into the
bins ``[0, 0.01), ..., [0.99, 1.0), [1.0, 2.0), [2.0, 3.0]`` separately for
ground-truth foreground and background pixels; walking the bins from the top,
the cumulative counts give precision and recall at each threshold, and
PxAP = Σ precision_i x (recall_i − recall_{i−1}) over the thresholds below the
top bin. A constant map scores the foreground fraction of the pixels.

Baselines that ignore the image — a centered Gaussian (best sigma over a grid,
chosen on the evaluated data itself, i.e. an optimistic baseline) and the
all-ones map — are provided so that every localization number can be
reported next to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

__all__ = [
    "CAM_THRESHOLDS",
    "DEFAULT_SIGMAS",
    "IOU_LEVELS",
    "box_acc_curve",
    "boxes_at_thresholds",
    "centered_gaussian",
    "exclusive_to_inclusive",
    "fixed_map_box_acc",
    "gaussian_baseline",
    "inclusive_box_iou",
    "localization_baselines",
    "mask_ious",
    "mask_miou",
    "max_box_acc_v2",
    "ones_baseline",
    "pxap",
]

CAM_THRESHOLDS = np.arange(0, 1, 0.01)  # wsolevaluation's list for cam_curve_interval=0.01
IOU_LEVELS = (30, 50, 70)
DEFAULT_SIGMAS = (0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# ----------------------------------------------------------------------------- masks


def _binarize(masks: Any, name: str) -> np.ndarray:
    arr = _to_numpy(masks)
    if arr.dtype == bool:
        return arr
    arr = arr.astype(np.float64)
    if arr.size and (not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(
            f"{name} must lie in [0, 1] (a 0/255 mask must be divided by 255), got range [{arr.min()}, {arr.max()}]"
        )
    return arr > 0.5


def mask_ious(gt: Any, pred: Any) -> np.ndarray:
    """Per-image IoU of masks binarised at 0.5; an empty-vs-empty pair scores 1.

    gt, pred: (N, H, W) in [0, 1] (bool, {0, 1} or soft). Returns (N,) float64.
    """
    g = _binarize(gt, "gt")
    p = _binarize(pred, "pred")
    if g.shape != p.shape or g.ndim != 3:
        raise ValueError(f"gt and pred must both be (N, H, W), got {g.shape} and {p.shape}")
    inter = (g & p).reshape(len(g), -1).sum(1).astype(np.float64)
    union = (g | p).reshape(len(g), -1).sum(1).astype(np.float64)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def mask_miou(gt: Any, pred: Any) -> float:
    """Mean over images of the mask IoU (paper Table 1 protocol).

    gt, pred: (N, H, W) in [0, 1], binarised at 0.5 (``> 0.5``); an image whose
    masks are both empty counts as IoU 1. Returns a fraction in [0, 1].
    """
    ious = mask_ious(gt, pred)
    if len(ious) == 0:
        raise ValueError("mask_miou needs at least one image")
    return float(ious.mean())


# ----------------------------------------------------------------------------- boxes


def exclusive_to_inclusive(boxes: Any) -> np.ndarray:
    """Pixel boxes x0, y0, x1, y1 with exclusive right/bottom (the data set's) to inclusive ones."""
    b = _to_numpy(boxes).astype(np.float64).reshape(-1, 4).copy()
    b[:, 2:] -= 1
    return b


def inclusive_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of inclusive pixel boxes (areas count ``x1 - x0 + 1``), (n, 4) x (m, 4) -> (n, m).

    A pair with a non-positive union scores 0 (as wsolevaluation).
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None, :, :]
    iw = np.maximum(0.0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0.0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _check_cam(cam: np.ndarray) -> None:
    if cam.ndim != 2:
        raise ValueError(f"each CAM must be (H, W), got shape {cam.shape}")
    if not np.isfinite(cam).all() or cam.min() < 0.0 or cam.max() > 1.0:
        raise ValueError(f"CAMs must lie in [0, 1] without NaN, got range [{cam.min()}, {cam.max()}]")


def boxes_at_thresholds(cam: np.ndarray, thresholds: Sequence[float] = CAM_THRESHOLDS) -> list[np.ndarray]:
    """Estimated boxes of one CAM at each threshold (wsolevaluation, multi-contour).

    cam: (H, W) in [0, 1]. Returns one (k_t, 4) int64 array of inclusive
    x0, y0, x1, y1 boxes per threshold (``[[0, 0, 0, 0]]`` when the thresholded
    map has no contour).
    """
    cam = np.asarray(cam, dtype=np.float64)
    _check_cam(cam)
    h, w = cam.shape
    img = (cam * 255).astype(np.uint8)
    peak = float(img.max())
    out = []
    for t in thresholds:
        _, binary = cv2.threshold(img, int(t * peak), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            out.append(np.zeros((1, 4), np.int64))
            continue
        boxes = []
        for c in contours:
            x, y, bw, bh = cv2.boundingRect(c)
            boxes.append((x, y, min(x + bw, w - 1), min(y + bh, h - 1)))
        out.append(np.asarray(boxes, np.int64))
    return out


def _correct(est: list[np.ndarray], gt: np.ndarray, levels: Sequence[int]) -> np.ndarray:
    """(n_thresholds, n_levels) bool: does any estimated box reach each IoU level."""
    counts = [len(b) for b in est]
    ious = inclusive_box_iou(np.concatenate(est, axis=0), gt).max(axis=1)  # best GT per estimated box
    best = np.maximum.reduceat(ious, np.cumsum([0] + counts[:-1]))  # best box per threshold
    return best[:, None] >= np.asarray(levels, np.float64)[None, :] / 100.0


def _check_gt(gt: Any, i: int) -> np.ndarray:
    g = _to_numpy(gt).astype(np.float64).reshape(-1, 4)
    if len(g) == 0:
        raise ValueError(f"image {i} has no ground-truth box; MaxBoxAccV2 needs at least one per image")
    return g


def box_acc_curve(
    cams: Any,
    gt_boxes: Sequence[Any],
    *,
    thresholds: Sequence[float] = CAM_THRESHOLDS,
    levels: Sequence[int] = IOU_LEVELS,
) -> np.ndarray:
    """Box accuracy (%) at every CAM threshold and IoU level, (n_thresholds, n_levels).

    cams: (N, H, W) in [0, 1]; gt_boxes: N arrays (k_i, 4) of inclusive pixel boxes.
    """
    maps = _to_numpy(cams)
    if maps.ndim != 3 or len(maps) != len(gt_boxes):
        raise ValueError(f"cams must be (N, H, W) with one box array per image, got {maps.shape} and {len(gt_boxes)}")
    if len(maps) == 0:
        raise ValueError("max_box_acc_v2 needs at least one image")
    correct = np.zeros((len(thresholds), len(levels)), np.int64)
    for i, (cam, gt) in enumerate(zip(maps, gt_boxes)):
        correct += _correct(boxes_at_thresholds(cam, thresholds), _check_gt(gt, i), levels)
    return correct * 100.0 / len(maps)


def max_box_acc_v2(cams: Any, gt_boxes: Sequence[Any]) -> dict[Any, float]:
    """MaxBoxAccV2 (wsolevaluation's definition; see the module docstring).

    cams: (N, H, W) in [0, 1]; gt_boxes: N arrays (k_i, 4) of inclusive pixel
    x0, y0, x1, y1 (use :func:`exclusive_to_inclusive` on the data set's boxes).
    Returns ``{30: acc, 50: acc, 70: acc, "mean": acc}`` in percent.
    """
    best = box_acc_curve(cams, gt_boxes).max(axis=0)
    out: dict[Any, float] = {level: float(v) for level, v in zip(IOU_LEVELS, best)}
    out["mean"] = float(best.mean())
    return out


def pxap(gt_masks: Any, cams: Any, *, chunk: int = 256) -> float:
    """Pixel average precision (%) of soft maps against binary masks (see the module docstring).

    gt_masks: (N, H, W) in [0, 1] (binarised at 0.5); cams: (N, H, W) in [0, 1], or (H, W)
    for one map used for every image. Needs at least one foreground pixel.
    """
    g = _binarize(gt_masks, "gt_masks")
    maps = _to_numpy(cams)
    if maps.ndim == 2:
        maps = np.broadcast_to(maps, g.shape)
    if maps.shape != g.shape or g.ndim != 3:
        raise ValueError(f"gt_masks and cams must both be (N, H, W), got {g.shape} and {maps.shape}")
    edges = np.append(CAM_THRESHOLDS, [1.0, 2.0, 3.0])
    fg = np.zeros(len(edges) - 1, np.int64)
    bg = np.zeros(len(edges) - 1, np.int64)
    for start in range(0, len(g), chunk):
        m = np.asarray(maps[start : start + chunk], dtype=np.float64)
        if m.size and (not np.isfinite(m).all() or m.min() < 0.0 or m.max() > 1.0):
            raise ValueError(f"cams must lie in [0, 1] without NaN, got range [{m.min()}, {m.max()}]")
        gg = g[start : start + chunk]
        fg += np.histogram(m[gg], bins=edges)[0]
        bg += np.histogram(m[~gg], bins=edges)[0]
    if fg.sum() == 0:
        raise ValueError("pxap needs at least one ground-truth foreground pixel")
    tp, fp = np.cumsum(fg[::-1]), np.cumsum(bg[::-1])  # detections at or above each threshold, top first
    detected = tp + fp
    precision = np.divide(tp, detected, out=np.zeros(len(tp)), where=detected > 0)
    recall = tp / fg.sum()
    return float(100.0 * np.sum(precision[1:] * np.diff(recall)))


def fixed_map_box_acc(cam: np.ndarray, gt_boxes: Sequence[Any]) -> dict[Any, float]:
    """MaxBoxAccV2 of one map used for every image (its boxes are computed once)."""
    est = boxes_at_thresholds(cam)
    correct = np.zeros((len(CAM_THRESHOLDS), len(IOU_LEVELS)), np.int64)
    for i, gt in enumerate(gt_boxes):
        correct += _correct(est, _check_gt(gt, i), IOU_LEVELS)
    best = (correct * 100.0 / len(gt_boxes)).max(axis=0)
    out: dict[Any, float] = {level: float(v) for level, v in zip(IOU_LEVELS, best)}
    out["mean"] = float(best.mean())
    return out


# ----------------------------------------------------------------------------- baselines


def centered_gaussian(height: int, width: int, sigma: float) -> np.ndarray:
    """A Gaussian bump at the image centre, min-max normalized to [0, 1], (H, W) float64.

    sigma is a fraction of the image side (sigma x W along x, sigma x H along y).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {(height, width)}")
    y = (np.arange(height) - (height - 1) / 2.0) / (sigma * height)
    x = (np.arange(width) - (width - 1) / 2.0) / (sigma * width)
    g = np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))
    g = g - g.min()
    return g / g.max() if g.max() > 0 else np.ones_like(g)


def gaussian_baseline(
    gt_masks: Any = None,
    gt_boxes: Sequence[Any] | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    sigmas: Iterable[float] = DEFAULT_SIGMAS,
) -> dict[str, Any]:
    """Centered-Gaussian baseline with the best sigma per metric (chosen on the data itself).

    gt_masks: (N, H, W) or None; gt_boxes: N inclusive box arrays or None
    (then ``image_size`` = (H, W) is required). Returns
    ``{"mask_miou": {"value", "sigma"}, "max_box_acc_v2": {30, 50, 70, "mean", "sigma"}}``
    with the entries whose ground truth was given.
    """
    out: dict[str, Any] = {}
    sigmas = tuple(sigmas)
    if gt_masks is not None:
        g = _binarize(gt_masks, "gt_masks")
        n, h, w = g.shape
        scored = []
        for s in sigmas:
            disc = centered_gaussian(h, w, s) > 0.5  # binarised as mask_miou binarises
            scored.append((float(mask_ious(g, np.broadcast_to(disc, g.shape)).mean()), s))
        best = max(scored, key=lambda v: v[0])
        out["mask_miou"] = {"value": best[0], "sigma": best[1]}
    if gt_boxes is not None:
        if image_size is None:
            if gt_masks is None:
                raise ValueError("gaussian_baseline needs image_size (H, W) or gt_masks with gt_boxes")
            image_size = _to_numpy(gt_masks).shape[1:]
        h, w = image_size
        scored = [(fixed_map_box_acc(centered_gaussian(h, w, s), gt_boxes), s) for s in sigmas]
        acc, sigma = max(scored, key=lambda v: v[0]["mean"])
        out["max_box_acc_v2"] = {**acc, "sigma": sigma}
    return out


def ones_baseline(
    gt_masks: Any = None, gt_boxes: Sequence[Any] | None = None, *, image_size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The all-ones map (everything is the object): ``{"mask_miou": float, "max_box_acc_v2": {...}}``."""
    out: dict[str, Any] = {}
    if gt_masks is not None:
        g = _binarize(gt_masks, "gt_masks")
        out["mask_miou"] = float(mask_ious(g, np.ones(g.shape, bool)).mean())
        image_size = image_size or g.shape[1:]
    if gt_boxes is not None:
        if image_size is None:
            raise ValueError("ones_baseline needs image_size (H, W) or gt_masks with gt_boxes")
        out["max_box_acc_v2"] = fixed_map_box_acc(np.ones(tuple(image_size)), gt_boxes)
    return out


def localization_baselines(
    gt_masks: Any = None,
    gt_boxes: Sequence[Any] | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    sigmas: Iterable[float] = DEFAULT_SIGMAS,
) -> dict[str, Any]:
    """Both baselines: ``{"gaussian": gaussian_baseline(...), "ones": ones_baseline(...)}``."""
    return {
        "gaussian": gaussian_baseline(gt_masks, gt_boxes, image_size=image_size, sigmas=sigmas),
        "ones": ones_baseline(gt_masks, gt_boxes, image_size=image_size),
    }
