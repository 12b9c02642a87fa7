"""Where a CAM store's masks lie on the original image: the store's one geometry contract.

ContraCAM runs on batches of one size, so ``contracam@<set>`` resizes every real image
*whole* to the backbone's input side S (``v2.Resize((S, S))``: both axes scaled
independently, aspect ratio not kept, nothing cropped; :func:`oacl.cam.pipeline.open_cam_set`)
and stores its masks at S × S. The store records this as the attribute ``mask_geometry`` =
:data:`RESIZE_FULL`; a store written before the attribute existed was made the same way and
reads as :data:`RESIZE_FULL`.

Under ``resize-full`` the stored pixel (i, j) covers the image region
``[i·H/S, (i+1)·H/S) × [j·W/S, (j+1)·W/S)`` of an H × W original — pixel edges map to pixel
edges and centres to centres (the half-pixel convention of torchvision, OpenCV and PIL), so:

- masks are resampled to (H, W) by :func:`mask_to_image` (the only way a consumer gets a stored
  mask onto an image of another size): soft masks smoothly, binary ones stay binary;
- normalized coordinates (the store's ``/boxes``) are the same on the stored masks and on the
  original image: :func:`boxes_to_image` gives the original's pixels, ``box × (W, H, W, H)``;
- a pixel rectangle found on a stored mask maps with :func:`rect_to_image`, rounded inwards so
  that it covers only original pixels wholly inside it.

Full-resolution masks are never stored: at S = 64 a mask costs 4 KiB (soft) per image, a
640 × 480 COCO image's would cost 300 KiB. This module imports neither torch nor h5py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import cv2
import numpy as np

__all__ = [
    "MASK_GEOMETRIES",
    "MASK_KINDS",
    "RESIZE_FULL",
    "Geometry",
    "boxes_to_image",
    "mask_to_image",
    "rect_to_image",
]

RESIZE_FULL = "resize-full"  # whole image resized to S x S, each axis on its own (no crop, no padding)
MASK_KINDS = ("soft", "binary")  # uint8 x 255 in [0, 255] / uint8 in {0, 1}

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 pixels, exclusive right / bottom


def _resample_full(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``resize-full``: (h, w) float32 → (H, W) float32, half-pixel centres, no overshoot.

    Bilinear when any axis grows (a smooth, monotone interpolation: values stay within their
    neighbours'), pixel-area averaging when both shrink (no aliasing).
    """
    (h, w), (hh, ww) = mask.shape, size
    shrink = hh <= h and ww <= w
    return cv2.resize(mask, (ww, hh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _rect_full(rect: Rect, src: tuple[int, int], dst: tuple[int, int]) -> Rect:
    """``resize-full``: destination pixels whose whole area lies inside ``rect`` (integer arithmetic, no rounding error).

    Destination column j covers source [j·w/W, (j+1)·w/W); it is inside [x0, x1) iff
    j ≥ x0·W/w and j + 1 ≤ x1·W/w.
    """
    (h, w), (hh, ww) = src, dst
    x0, y0, x1, y1 = rect
    return (-(-x0 * ww // w), -(-y0 * hh // h), x1 * ww // w, y1 * hh // h)


def _boxes_full(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``resize-full``: normalized (K, 4) x1, y1, x2, y2 → pixels of the (H, W) image: × (W, H, W, H)."""
    hh, ww = size
    return boxes * np.asarray([ww, hh, ww, hh], dtype=np.float32)


class Geometry(NamedTuple):
    """How one ``mask_geometry`` maps stored data onto the original image (see the module docstring)."""

    resample: Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # (h, w) float32 → (H, W) float32
    rect: Callable[[Rect, tuple[int, int], tuple[int, int]], Rect]  # mask pixels → image pixels, inwards
    boxes: Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # normalized (K, 4) → image pixels (K, 4)


# the registry of geometries a store may declare (readers refuse any other)
MASK_GEOMETRIES: dict[str, Geometry] = {
    RESIZE_FULL: Geometry(_resample_full, _rect_full, _boxes_full),
}


def _geometry(geometry: str) -> Geometry:
    try:
        return MASK_GEOMETRIES[geometry]
    except KeyError:
        raise ValueError(f"geometry must be one of {sorted(MASK_GEOMETRIES)}, got {geometry!r}") from None


def _size(size: Sequence[int], name: str) -> tuple[int, int]:
    hw = tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"{name} must be (H, W) with H, W >= 1, got {tuple(size)!r}")
    return hw  # type: ignore[return-value]


def mask_to_image(mask: np.ndarray, size: Sequence[int], kind: str, geometry: str = RESIZE_FULL) -> np.ndarray:
    """A stored mask laid onto an original image of ``size`` = (H, W) pixels.

    mask: (h, w) uint8 as stored — ``kind`` ``soft``: ContraCAM × 255 (``/masks``), resampled
    smoothly (bilinear up, area down), rounded and kept in [0, 255]; ``binary``: {0, 1}
    (``/masks_refined``), resampled the same way then thresholded at 0.5, so it stays {0, 1} and
    its edges follow the soft resampling's. geometry: the store's ``mask_geometry``.
    Returns (H, W) uint8 of the same kind; a copy of ``mask`` when the sizes already agree.
    """
    resample = _geometry(geometry).resample
    if kind not in MASK_KINDS:
        raise ValueError(f"kind must be one of {MASK_KINDS}, got {kind!r}")
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty (h, w) uint8 array, got {mask.shape} {mask.dtype}")
    if kind == "binary" and mask.max() > 1:
        raise ValueError(f"a binary mask must hold 0 / 1, found {int(mask.max())}")
    hw = _size(size, "size")
    if mask.shape == hw:
        return mask.copy()
    out = resample(mask.astype(np.float32), hw)  # (H, W) float32
    if kind == "binary":
        return (out >= 0.5).astype(np.uint8)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def rect_to_image(
    rect: Sequence[int], mask_size: Sequence[int], size: Sequence[int], geometry: str = RESIZE_FULL
) -> Rect:
    """A pixel rectangle of a stored mask (x0, y0, x1, y1, exclusive right / bottom) on the (H, W) = ``size`` image.

    Rounded inwards: the result covers only image pixels lying wholly inside ``rect``, so a
    background rectangle stays background. An empty input or one that collapses returns
    (0, 0, 0, 0). mask_size: the stored mask's (h, w).
    """
    mapping = _geometry(geometry).rect
    src, dst = _size(mask_size, "mask_size"), _size(size, "size")
    x0, y0, x1, y1 = (int(v) for v in rect)
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0)
    if not (0 <= x0 and x1 <= src[1] and 0 <= y0 and y1 <= src[0]):
        raise ValueError(f"rect {tuple(rect)} lies outside the {src[1]}x{src[0]} (w x h) mask")
    if src == dst:
        return (x0, y0, x1, y1)
    out = mapping((x0, y0, x1, y1), src, dst)
    return out if out[2] > out[0] and out[3] > out[1] else (0, 0, 0, 0)


def boxes_to_image(boxes: np.ndarray, size: Sequence[int], geometry: str = RESIZE_FULL) -> np.ndarray:
    """The store's normalized boxes (K, 4) x1, y1, x2, y2 in [0, 1] as float32 pixels of the (H, W) = ``size`` image.

    Pixel-edge coordinates (x2, y2 exclusive), as :func:`oacl.cam.postprocess.mask_to_boxes`
    normalizes them; K may be 0.
    """
    to_pixels = _geometry(geometry).boxes
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size % 4:
        raise ValueError(f"boxes must be (K, 4), got shape {arr.shape}")
    return to_pixels(arr.reshape(-1, 4), _size(size, "size"))
