"""Object-aware random crop, OA-Crop (paper §2.3, appendix B.2).

Per item, before the usual two-view augmentation: pick one of the image's boxes uniformly at
random, crop the image to it, then make both views from that crop (so the two positives lie in
the same box and never pair two different objects). An image without boxes uses the whole image.

Boxes come from ``source``:

- ``cam`` — ``item["cam_boxes"]``: the ContraCAM boxes of the CAM store, normalized x1, y1, x2, y2
  with their margin already applied (attached per image id by :mod:`oacl.train.retrain`), laid
  onto the item's image, whatever its size, by :func:`oacl.io.geometry.boxes_to_image` (the
  store's ``mask_geometry``, ``item["cam_geometry"]``);
- ``gt`` — ``item["boxes"]``: the ground-truth pixel boxes, grown by ``margin`` × the box's width
  (left and right) and height (top and bottom), 20 % in the paper.

Boxes are clamped to the image and rounded outwards to whole pixels (at least 1 × 1). The crop is
``torchvision.transforms.v2.functional.crop`` on the item's ``tv_tensors.Image``.

``per_item`` is :class:`ObjectAwareCrops`; ``per_batch`` is :class:`BatchPhotometricStats`, the
usual photometric half that also reports ``box_rate`` (fraction of images cropped to a box) and
``box_area`` (mean crop area / image area; 1 for a whole image).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from oacl.augment.mixing import photometric_views
from oacl.augment.views import AugmentSettings, TwoCrops
from oacl.errors import DataError
from oacl.io.geometry import RESIZE_FULL, boxes_to_image

__all__ = [
    "BOX_SOURCES",
    "expand_boxes",
    "crop_window",
    "item_boxes",
    "choose_box",
    "ObjectAwareCrops",
    "BatchPhotometricStats",
]

BOX_SOURCES = ("cam", "gt")


def expand_boxes(boxes: Tensor, margin: float) -> Tensor:
    """Grow pixel boxes (K, 4) x0, y0, x1, y1 by ``margin`` × width on each side and × height on top / bottom."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    b = boxes.reshape(-1, 4).float()
    w = (b[:, 2] - b[:, 0]) * margin
    h = (b[:, 3] - b[:, 1]) * margin
    return torch.stack([b[:, 0] - w, b[:, 1] - h, b[:, 2] + w, b[:, 3] + h], dim=1)


def crop_window(box: Sequence[float] | Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """Integer crop (top, left, h, w) covering pixel box x0, y0, x1, y1, clamped to the image, >= 1 px a side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box must be finite, got {[x0, y0, x1, y1]}")
    left = min(max(int(math.floor(x0)), 0), width - 1)
    top = min(max(int(math.floor(y0)), 0), height - 1)
    right = max(min(int(math.ceil(x1)), width), left + 1)
    bottom = max(min(int(math.ceil(y1)), height), top + 1)
    return top, left, bottom - top, right - left


def item_boxes(item: Mapping[str, Any], source: str, margin: float = 0.0) -> Tensor:
    """The item's candidate boxes as (K, 4) float pixel x0, y0, x1, y1 (K may be 0).

    ``cam``: ``item["cam_boxes"]`` normalized → pixels of the item's image by
    :func:`oacl.io.geometry.boxes_to_image` (``margin`` must be 0: the store's boxes carry
    theirs). ``gt``: ``item["boxes"]`` grown by ``margin``.
    """
    h, w = item["image"].shape[-2:]
    if source == "cam":
        boxes = item.get("cam_boxes")
        if boxes is None:
            raise DataError(
                f"item {item.get('id')!r} has no ContraCAM boxes (no 'cam_boxes'; is the CAM store attached?)"
            )
        geometry = str(item.get("cam_geometry", RESIZE_FULL))
        return torch.from_numpy(boxes_to_image(torch.as_tensor(boxes).numpy(), (int(h), int(w)), geometry))
    if source == "gt":
        return expand_boxes(torch.as_tensor(item["boxes"]).as_subclass(Tensor), margin)
    raise ValueError(f"source must be one of {BOX_SOURCES}, got {source!r}")


def choose_box(boxes: Tensor) -> Tensor | None:
    """One row of ``boxes`` (K, 4) uniformly at random (global torch RNG), None when K = 0."""
    k = boxes.shape[0]
    if k == 0:
        return None
    return boxes[int(torch.randint(k, ()))]


class ObjectAwareCrops:
    """Per-item half of OA-Crop: crop to one random box (with probability ``prob``), then :class:`TwoCrops`.

    ``__call__(item)`` returns ``{"views": (v1, v2) uint8 (3, S, S), "boxed": bool 0-d,
    "box_area": float32 0-d}`` (``default_collate`` stacks it).

    Args:
        cfg: the two-view recipe (size, crop scale, flip).
        source: ``cam`` or ``gt`` (see the module docstring).
        margin: ``gt`` only, margin per side as a fraction of the box side.
        prob: probability of cropping to a box at all (the paper: always).
    """

    def __init__(self, cfg: AugmentSettings, source: str = "cam", *, margin: float = 0.0, prob: float = 1.0) -> None:
        if source not in BOX_SOURCES:
            raise ValueError(f"source must be one of {BOX_SOURCES}, got {source!r}")
        if source == "cam" and margin != 0.0:
            raise ValueError(f"margin must be 0 for ContraCAM boxes (they carry their own), got {margin!r}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin!r}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}")
        self.two_crops = TwoCrops(cfg.size, cfg.crop_scale, cfg.flip_p)
        self.source, self.margin, self.prob = source, float(margin), float(prob)

    def crop(self, item: Mapping[str, Any]) -> tuple[Any, tuple[int, int, int, int] | None]:
        """The image cropped to a random box and that crop as (top, left, h, w); (image, None) for no box."""
        image = item["image"]
        if self.prob < 1.0 and float(torch.rand(())) >= self.prob:
            return image, None
        box = choose_box(item_boxes(item, self.source, self.margin))
        if box is None:
            return image, None
        h, w = image.shape[-2:]
        window = crop_window(box, h, w)
        return TF.crop(image, *window), window

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        image, window = self.crop(item)
        h, w = item["image"].shape[-2:]
        area = 1.0 if window is None else window[2] * window[3] / float(h * w)
        return {
            "views": self.two_crops({"image": image}),
            "boxed": torch.tensor(window is not None),
            "box_area": torch.tensor(area, dtype=torch.float32),
        }


class BatchPhotometricStats:
    """Per-batch half: the usual photometric augmentation of ``batch["views"]`` plus crop statistics.

    ``__call__(batch)`` → ``(x1, x2, {"box_rate": mean of "boxed", "box_area": mean of "box_area"})``.
    """

    def __init__(self, cfg: AugmentSettings) -> None:
        self.cfg = cfg

    def __call__(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        xs = [v.float().div_(255.0) for v in batch["views"]]
        x1, x2 = photometric_views(xs, self.cfg)
        return x1, x2, {"box_rate": batch["boxed"].float().mean(), "box_area": batch["box_area"].float().mean()}
