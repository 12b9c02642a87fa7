"""Tight boxes of binary masks: the one mask-to-box rule of the ground truth (generator and readers).

(ContraCAM's boxes, one per connected component with a margin, are :func:`oacl.cam.postprocess.mask_to_boxes`.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_boxes"]


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes (n, 4) float32 x0, y0, x1, y1 (exclusive) of masks (n, s, s); an empty mask gives NaN."""
    masks = np.asarray(masks).astype(bool)
    n, h, w = masks.shape
    rows, cols = masks.any(2), masks.any(1)
    empty = ~rows.any(1)
    y0 = np.argmax(rows, 1)
    y1 = h - np.argmax(rows[:, ::-1], 1)
    x0 = np.argmax(cols, 1)
    x1 = w - np.argmax(cols[:, ::-1], 1)
    boxes = np.stack([x0, y0, x1, y1], 1).astype(np.float32)
    boxes[empty] = np.nan
    return boxes
