"""Object-aware random crop: views stay inside box + margin, uniform box choice, the whole-image fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from oacl.augment.oacrop import (
    BatchPhotometricStats,
    ObjectAwareCrops,
    choose_box,
    crop_window,
    expand_boxes,
    item_boxes,
)
from oacl.augment.views import AugmentSettings
from oacl.data.datasets import make_sample
from oacl.errors import DataError

SIZE = 32


def coordinate_image(size: int = SIZE) -> np.ndarray:
    """(H, W, 3) uint8 whose red channel is 4·x and green channel 4·y (blue 0): pixels tell where they came from."""
    ys, xs = np.mgrid[0:size, 0:size]
    return np.stack([4 * xs, 4 * ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)


def _item(boxes, cam_boxes=None) -> dict:
    item = make_sample(coordinate_image(), 0, np.asarray(boxes, np.float32).reshape(-1, 4), [0] * len(boxes), None, "i")
    if cam_boxes is not None:
        item["cam_boxes"] = torch.tensor(cam_boxes, dtype=torch.float32).reshape(-1, 4)
    return item


def _source_range(view: torch.Tensor) -> tuple[float, float, float, float]:
    """Smallest and largest source x and y that a view's pixels were interpolated from."""
    x = view[0].float() / 4
    y = view[1].float() / 4
    return float(x.min()), float(y.min()), float(x.max()), float(y.max())


def test_expand_boxes_and_crop_window_known_values() -> None:
    grown = expand_boxes(torch.tensor([[10.0, 20.0, 20.0, 30.0]]), 0.2)
    torch.testing.assert_close(grown, torch.tensor([[8.0, 18.0, 22.0, 32.0]]))
    assert crop_window([8.0, 18.0, 22.0, 32.0], 64, 64) == (18, 8, 14, 14)
    assert crop_window([-5.0, -3.2, 70.0, 10.5], 64, 64) == (0, 0, 11, 64)  # clamped, rounded outwards
    assert crop_window([63.9, 63.9, 63.95, 63.95], 64, 64) == (63, 63, 1, 1)  # at least one pixel
    assert crop_window([40.0, 5.0, 40.0, 5.0], 64, 64) == (5, 40, 1, 1)
    with pytest.raises(ValueError, match="finite"):
        crop_window([float("nan"), 0, 1, 1], 8, 8)
    with pytest.raises(ValueError, match="margin"):
        expand_boxes(torch.zeros(1, 4), -0.1)


@pytest.mark.parametrize("margin", [0.0, 0.2])
def test_gt_views_stay_inside_box_plus_margin(margin: float) -> None:
    boxes = [[4, 6, 14, 20], [18, 2, 30, 12]]
    per_item = ObjectAwareCrops(AugmentSettings(size=SIZE), "gt", margin=margin)
    allowed = [crop_window(b, SIZE, SIZE) for b in expand_boxes(torch.tensor(boxes, dtype=torch.float32), margin)]
    hits = [0, 0]
    for seed in range(40):
        torch.manual_seed(seed)
        out = per_item(_item(boxes))
        assert bool(out["boxed"])
        inside = []
        for top, left, h, w in allowed:
            ok = all(
                left <= x0 and x1 <= left + w - 1 and top <= y0 and y1 <= top + h - 1
                for x0, y0, x1, y1 in map(_source_range, out["views"])
            )
            inside.append(ok)
        assert any(inside), f"seed {seed}: a view left box + margin"
        hits[inside.index(True)] += 1
        assert float(out["box_area"]) in [h * w / SIZE**2 for _, _, h, w in allowed]
    assert min(hits) > 0  # both boxes were used


def test_cam_boxes_are_normalized_and_carry_their_margin() -> None:
    item = _item([[0, 0, 1, 1]], cam_boxes=[[0.25, 0.5, 0.5, 1.0]])
    torch.testing.assert_close(item_boxes(item, "cam"), torch.tensor([[8.0, 16.0, 16.0, 32.0]]))
    per_item = ObjectAwareCrops(AugmentSettings(size=16), "cam")
    for seed in range(20):
        torch.manual_seed(seed)
        image, window = per_item.crop(item)
        assert window == (16, 8, 16, 8) and tuple(image.shape) == (3, 16, 8)
        for view in per_item(item)["views"]:
            x0, y0, x1, y1 = _source_range(view)
            assert 8 <= x0 and x1 <= 15 and 16 <= y0 and y1 <= 31
    with pytest.raises(ValueError, match="margin must be 0"):
        ObjectAwareCrops(AugmentSettings(size=16), "cam", margin=0.2)
    with pytest.raises(DataError, match="no ContraCAM boxes"):
        per_item(_item([[0, 0, 1, 1]]))


def test_boxes_are_chosen_uniformly() -> None:
    boxes = torch.tensor([[0.0, 0, 4, 4], [4, 4, 8, 8], [8, 8, 12, 12]])
    torch.manual_seed(0)
    counts = np.bincount([int(choose_box(boxes)[0]) // 4 for _ in range(3000)], minlength=3)
    assert np.allclose(counts / 3000, 1 / 3, atol=0.04)
    assert choose_box(torch.zeros(0, 4)) is None


def test_no_box_takes_the_whole_image() -> None:
    per_item = ObjectAwareCrops(AugmentSettings(size=SIZE, crop_scale=(1.0, 1.0), flip_p=0.0), "gt")
    item = _item([])
    image, window = per_item.crop(item)
    assert window is None and torch.equal(image, item["image"])
    out = per_item(item)
    assert not bool(out["boxed"]) and float(out["box_area"]) == 1.0
    assert torch.equal(out["views"][0], item["image"].as_subclass(torch.Tensor))  # scale 1, no flip: identity
    cam = ObjectAwareCrops(AugmentSettings(size=SIZE), "cam")
    assert not bool(cam(_item([], cam_boxes=np.zeros((0, 4))))["boxed"])


def test_prob_zero_never_crops() -> None:
    per_item = ObjectAwareCrops(AugmentSettings(size=SIZE), "gt", prob=0.0)
    torch.manual_seed(0)
    assert not any(bool(per_item(_item([[4, 4, 10, 10]]))["boxed"]) for _ in range(20))


def test_batch_half_reports_the_box_rate() -> None:
    cfg = AugmentSettings(size=SIZE)
    per_item = ObjectAwareCrops(cfg, "gt")
    torch.manual_seed(0)
    batch = default_collate([per_item(_item([[4, 4, 12, 12]])) for _ in range(3)] + [per_item(_item([]))])
    x1, x2, stats = BatchPhotometricStats(cfg)(batch)
    assert x1.shape == x2.shape == (4, 3, SIZE, SIZE) and x1.dtype == torch.float32
    assert float(stats["box_rate"]) == 0.75
    assert float(stats["box_area"]) == pytest.approx((3 * 64 / SIZE**2 + 1.0) / 4)
