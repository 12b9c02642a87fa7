"""Pictures of a ContraCAM run (matplotlib figures on an Agg canvas; no pyplot, no global state).

* :func:`cam_sheet` — per image three panels: the image with its ground-truth boxes (green),
  the soft ContraCAM as a heat map over the image, and the refined mask (the image dimmed
  outside it, its outline in yellow) with the ContraCAM boxes (red, margin included).
* :func:`boxes_histogram` — boxes per image, ContraCAM vs ground truth (paper Fig. 12).

``write_*`` save a PNG atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from oacl.io.atomic import save_png

__all__ = ["boxes_histogram", "cam_sheet", "write_boxes_histogram", "write_cam_sheet"]

_GT = "#3cb44b"
_CAM = "#e6194b"
_OUTLINE = "#ffe119"
_PANEL_IN = 1.25  # inches per panel


def _check(images: np.ndarray, soft: np.ndarray, refined: np.ndarray, boxes: Sequence[np.ndarray]) -> None:
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (n, H, W, 3) uint8, got {images.shape} {images.dtype}")
    if soft.shape != images.shape[:3] or refined.shape != images.shape[:3]:
        raise ValueError(f"masks {soft.shape} / {refined.shape} do not match the images {images.shape[:3]}")
    if len(boxes) != len(images):
        raise ValueError(f"boxes must hold one array per image ({len(images)}), got {len(boxes)}")


def _draw_boxes(ax, boxes: np.ndarray, colour: str) -> None:
    """Pixel boxes x0, y0, x1, y1 (exclusive right / bottom) as rectangles on pixel edges."""
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.2))


def cam_sheet(
    images: np.ndarray,
    soft: np.ndarray,
    refined: np.ndarray,
    boxes: Sequence[np.ndarray],
    *,
    gt_boxes: Sequence[np.ndarray] | None = None,
    cols: int = 4,
    title: str = "",
) -> Figure:
    """A grid of (image + GT boxes | heat map | refined mask + CAM boxes) triplets.

    images: (n, H, W, 3) uint8; soft: (n, H, W) uint8 CAM x 255 (or float in [0, 1]);
    refined: (n, H, W) {0, 1}; boxes: n arrays (k_i, 4) of normalized x1, y1, x2, y2 (the CAM
    store's); gt_boxes: n arrays (k_i, 4) of pixel x0, y0, x1, y1, exclusive (the set file's).
    ``cols`` triplets per row.
    """
    images, soft, refined = np.asarray(images), np.asarray(soft), np.asarray(refined)
    _check(images, soft, refined, boxes)
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols!r}")
    n, h, w = images.shape[:3]
    heat = soft.astype(np.float32) / 255.0 if soft.dtype == np.uint8 else soft.astype(np.float32)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    top = 0.45 if title else 0.2
    fig = Figure(figsize=(3 * cols * _PANEL_IN, rows * _PANEL_IN + top), dpi=100)
    axes = fig.subplots(rows, 3 * cols, squeeze=False)
    fig.subplots_adjust(
        left=0.005, right=0.995, bottom=0.005, top=1 - top / (rows * _PANEL_IN + top), wspace=0.04, hspace=0.04
    )
    if title:
        fig.suptitle(title, fontsize=9)
    scale = np.asarray([w, h, w, h], np.float64)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, cols)
        a_img, a_cam, a_ref = axes[r, 3 * c : 3 * c + 3]
        a_img.imshow(images[i], interpolation="nearest")
        if gt_boxes is not None:
            _draw_boxes(a_img, gt_boxes[i], _GT)
        a_cam.imshow(images[i], interpolation="nearest")
        a_cam.imshow(heat[i], cmap="jet", vmin=0.0, vmax=1.0, alpha=0.5, interpolation="bilinear")
        m = refined[i].astype(bool)
        dim = (images[i].astype(np.float32) * np.where(m, 1.0, 0.3)[..., None]).astype(np.uint8)
        a_ref.imshow(dim, interpolation="nearest")
        if m.any() and not m.all():
            a_ref.contour(m.astype(np.float32), levels=[0.5], colors=_OUTLINE, linewidths=0.8)
        _draw_boxes(a_ref, np.asarray(boxes[i], np.float64).reshape(-1, 4) * scale, _CAM)
        if r == 0:
            for ax, name in ((a_img, "image + GT"), (a_cam, "ContraCAM"), (a_ref, "refined + boxes")):
                ax.set_title(name, fontsize=7, pad=2)
    return fig


def boxes_histogram(cam_counts: Sequence[int], gt_counts: Sequence[int] | None = None, *, title: str = "") -> Figure:
    """Histogram of boxes per image: ContraCAM (left) and ground truth (right), as in paper Fig. 12.

    cam_counts, gt_counts: (N,) integers. Bars give the percentage of images.
    """
    cam = np.asarray(cam_counts, np.int64).reshape(-1)
    panels = [("ContraCAM boxes", cam, _CAM)]
    if gt_counts is not None:
        panels.append(("ground-truth boxes", np.asarray(gt_counts, np.int64).reshape(-1), _GT))
    if any(len(v) == 0 for _, v, _ in panels) or any(v.min() < 0 for _, v, _ in panels):
        raise ValueError("box counts must be non-empty and non-negative")
    top = max(int(v.max()) for _, v, _ in panels)
    bins = np.arange(top + 1)
    fig = Figure(figsize=(4.0 * len(panels), 3.0), dpi=100)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (name, counts, colour) in zip(axes, panels):
        pct = np.bincount(counts, minlength=top + 1) * 100.0 / len(counts)
        ax.bar(bins, pct, color=colour, width=0.8)
        ax.set_xticks(bins)
        ax.set_xlabel("boxes per image")
        ax.set_title(f"{name} (mean {counts.mean():.2f})", fontsize=9)
    axes[0].set_ylabel("images (%)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def write_cam_sheet(path: str | Path, *args, **kwargs) -> None:
    """:func:`cam_sheet` saved as a PNG at ``path``."""
    save_png(cam_sheet(*args, **kwargs), path)


def write_boxes_histogram(path: str | Path, *args, **kwargs) -> None:
    """:func:`boxes_histogram` saved as a PNG at ``path``."""
    save_png(boxes_histogram(*args, **kwargs), path)
