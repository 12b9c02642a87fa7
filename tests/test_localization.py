"""Localization metrics against small cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oacl.eval.localization import (
    box_acc_curve,
    boxes_at_thresholds,
    centered_gaussian,
    exclusive_to_inclusive,
    gaussian_baseline,
    inclusive_box_iou,
    localization_baselines,
    mask_miou,
    max_box_acc_v2,
    ones_baseline,
    pxap,
)

# ----------------------------------------------------------------------------- mask mIoU


def test_mask_miou_by_hand() -> None:
    gt = np.zeros((3, 4, 4), np.uint8)
    pred = np.zeros((3, 4, 4), np.float32)
    gt[0, 0, :4] = 1  # 4 px
    pred[0, 0, 2:4] = 0.9  # 2 px inside ...
    pred[0, 1, 0:2] = 0.6  # ... and 2 px outside: IoU 2 / 6
    # image 1: both empty -> 1
    gt[2, :2, :2] = 1  # 4 px, prediction exactly 0.5 is background -> IoU 0
    pred[2, :2, :2] = 0.5
    assert mask_miou(gt, pred) == pytest.approx((2 / 6 + 1 + 0) / 3)
    assert mask_miou(torch.from_numpy(gt), torch.from_numpy(pred)) == pytest.approx((2 / 6 + 1 + 0) / 3)
    assert mask_miou(gt.astype(bool), gt) == 1.0


def test_mask_miou_rejects_0_255_masks_and_bad_shapes() -> None:
    gt = np.zeros((1, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="255"):
        mask_miou(gt, np.full((1, 4, 4), 255, np.uint8))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        mask_miou(gt, np.zeros((1, 4, 5)))


# ----------------------------------------------------------------------------- boxes


def test_inclusive_iou_by_hand() -> None:
    a = np.array([[0, 0, 9, 9]])  # 10 x 10 = 100 px
    b = np.array([[5, 5, 14, 14], [20, 20, 29, 29], [0, 0, 9, 9]])
    np.testing.assert_allclose(inclusive_box_iou(a, b), [[25 / 175, 0.0, 1.0]])
    np.testing.assert_allclose(exclusive_to_inclusive([[0, 0, 10, 10]]), [[0, 0, 9, 9]])


def test_boxes_from_every_contour_with_wsolevaluations_conventions() -> None:
    cam = np.zeros((16, 16))
    cam[2:6, 3:9] = 1.0  # x 3..8 (w = 6), y 2..5 (h = 4)
    cam[10:16, 12:16] = 1.0  # touches the bottom-right corner
    boxes = boxes_at_thresholds(cam, thresholds=[0.0, 0.5])
    for b in boxes:  # (x, y, x + w, y + h), right/bottom clipped to W - 1 / H - 1
        assert sorted(map(tuple, b.tolist())) == [(3, 2, 9, 6), (12, 10, 15, 15)]
    empty = boxes_at_thresholds(np.zeros((8, 8)), thresholds=[0.5])
    np.testing.assert_array_equal(empty[0], [[0, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        boxes_at_thresholds(cam * 2)


def block_cam(size: int, *blocks: tuple[int, int, int, int]) -> np.ndarray:
    cam = np.zeros((size, size))
    for x0, y0, x1, y1 in blocks:  # exclusive
        cam[y0:y1, x0:x1] = 1.0
    return cam


def test_max_box_acc_v2_by_hand() -> None:
    s = 32
    gt = [np.array([[4, 4, 11, 11]])] * 4  # inclusive 8 x 8 box
    cams = np.stack(
        [
            block_cam(s, (4, 4, 12, 12)),  # est. box (4, 4, 12, 12): IoU 64 / 81 = 0.79
            block_cam(s, (20, 20, 28, 28)),  # elsewhere: IoU 0
            block_cam(s, (4, 4, 12, 12), (20, 20, 28, 28)),  # two contours, one right: counts (any box)
            block_cam(s, (8, 4, 16, 12)),  # shifted by 4: est. (8, 4, 16, 12), inter 4 x 8 = 32,
        ]
    )  # union 64 + 81 - 32 = 113: IoU 0.283 -> wrong at 30 too
    acc = max_box_acc_v2(cams, gt)
    assert acc == {30: 50.0, 50: 50.0, 70: 50.0, "mean": 50.0}
    shifted = np.stack([block_cam(s, (6, 4, 14, 12))])  # inter 6 x 8 = 48, union 64 + 81 - 48 = 97: 0.495
    assert max_box_acc_v2(shifted, gt[:1]) == {30: 100.0, 50: 0.0, 70: 0.0, "mean": 100.0 / 3}


def test_one_threshold_serves_all_images() -> None:
    # A core (value 1) inside a ring (value 0.5). Image 0's object is the large square, image 1's the
    # core: thresholds < 0.50 find the square, >= 0.50 the core, so no single threshold gets both.
    s = 32
    cam = np.zeros((s, s))
    cam[4:20, 4:20] = 0.5
    cam[10:14, 10:14] = 1.0
    gts = [np.array([[4, 4, 19, 19]]), np.array([[10, 10, 13, 13]])]
    curve = box_acc_curve(np.stack([cam, cam]), gts)
    assert curve.shape == (100, 3)
    np.testing.assert_allclose(curve[:50], 50.0)  # square found (IoU 256 / 289 = 0.89), core missed
    np.testing.assert_allclose(curve[50:, :2], 50.0)  # core found (IoU 16 / 25 = 0.64) ...
    np.testing.assert_allclose(curve[50:, 2], 0.0)  # ... which is < 0.7
    assert max_box_acc_v2(np.stack([cam, cam]), gts) == {30: 50.0, 50: 50.0, 70: 50.0, "mean": 50.0}


def test_max_box_acc_v2_needs_ground_truth() -> None:
    with pytest.raises(ValueError, match="no ground-truth box"):
        max_box_acc_v2(np.zeros((1, 8, 8)), [np.zeros((0, 4))])
    with pytest.raises(ValueError, match="one box array per image"):
        max_box_acc_v2(np.zeros((2, 8, 8)), [np.array([[0, 0, 3, 3]])])


# ----------------------------------------------------------------------------- baselines


def test_centered_gaussian() -> None:
    g = centered_gaussian(9, 9, 0.2)
    assert g[4, 4] == 1.0 and g.min() == 0.0
    np.testing.assert_allclose(g, g.T)
    np.testing.assert_allclose(g, g[::-1, ::-1])


def test_ones_baseline_is_the_foreground_fraction() -> None:
    gt = np.zeros((2, 10, 10), np.uint8)
    gt[0, :5] = 1  # 50 %
    gt[1, :2, :5] = 1  # 10 %
    out = ones_baseline(gt, [np.array([[0, 0, 9, 4]]), np.array([[0, 0, 4, 1]])])
    assert out["mask_miou"] == pytest.approx(0.3)
    # the all-ones map gives the full-image box (0, 0, 9, 9): IoU 0.5 and 0.1
    assert out["max_box_acc_v2"] == {30: 50.0, 50: 50.0, 70: 0.0, "mean": pytest.approx(100 / 3)}


def test_gaussian_baseline_finds_a_centred_object() -> None:
    size = 32
    yy, xx = np.mgrid[0:size, 0:size]
    disc = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2 <= 8**2).astype(np.uint8)  # radius 8 = 0.25 x side
    gt = np.stack([disc] * 3)
    boxes = [np.array([[8, 8, 23, 23]])] * 3
    out = gaussian_baseline(gt, boxes)
    assert out["mask_miou"]["value"] > 0.85
    assert out["mask_miou"]["sigma"] in (0.2, 0.25)  # 0.5-level radius = 1.18 sigma x side
    assert out["max_box_acc_v2"]["mean"] == 100.0
    both = localization_baselines(gt, boxes)
    assert both["gaussian"] == out and both["ones"]["mask_miou"] == pytest.approx(disc.mean())


def test_pxap_equals_average_precision_on_binned_scores() -> None:
    # Scores at bin centres: PxAP is exactly the step-wise average precision over pixels
    # (scikit-learn's average_precision_score: sum over thresholds of precision x recall gain).
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    gt = rng.random((6, 12, 12)) < 0.3
    bins = rng.integers(0, 100, size=gt.shape)
    bins = np.where(gt, np.minimum(bins + 30, 99), bins)  # informative but imperfect
    cams = (bins + 0.5) / 100.0
    ref = 100.0 * average_precision_score(gt.ravel(), cams.ravel())
    assert pxap(gt, cams) == pytest.approx(ref, abs=1e-9)
    assert 50.0 < pxap(gt, cams) < 100.0


def test_pxap_known_answers() -> None:
    gt = np.zeros((2, 8, 8), bool)
    gt[:, 2:6, 2:6] = True  # 16 of 64 pixels per image
    assert pxap(gt, gt.astype(np.float32)) == 100.0  # the mask itself
    assert pxap(gt, np.ones((8, 8))) == pytest.approx(25.0)  # a constant map: the foreground fraction
    assert pxap(gt, np.zeros((2, 8, 8))) == pytest.approx(25.0)
    assert pxap(gt, 1.0 - gt) == pytest.approx(25.0)  # the complement: only the bottom threshold recalls
    with pytest.raises(ValueError, match="at least one ground-truth foreground pixel"):
        pxap(np.zeros((1, 4, 4)), np.ones((1, 4, 4)))
    with pytest.raises(ValueError, match=r"cams must lie in \[0, 1\]"):
        pxap(gt, np.full((2, 8, 8), 2.0))
    with pytest.raises(ValueError, match="must both be"):
        pxap(gt, np.ones((3, 8, 8)))
