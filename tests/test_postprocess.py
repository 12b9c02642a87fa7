"""Post-processing: CRF, mask cleaning, boxes from contours, process-parallel batches."""

from __future__ import annotations

import numpy as np
import pytest

from oacl.cam.postprocess import (
    PostprocessOptions,
    boxes_to_pixels,
    clean_mask,
    count_boxes,
    dense_crf,
    mask_to_boxes,
    refine_batch,
    refine_one,
)


def square_scene(h: int = 32, w: int = 32, box=(8, 10, 20, 24), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright red rectangle (x0, y0, x1, y1, exclusive) on a dark noisy background; and its mask."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 30, size=(h, w, 3)).astype(np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = (220, 40, 40)
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return img, mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ----------------------------------------------------------------------------- CRF


def test_crf_snaps_a_blurry_mask_to_the_object() -> None:
    img, truth = square_scene()
    yy, xx = np.mgrid[0:32, 0:32]
    # a soft blob shifted by 3 px and too wide: a CAM's typical error
    soft = np.exp(-(((xx - 17) / 9.0) ** 2 + ((yy - 19) / 9.0) ** 2)).astype(np.float32)
    before = iou(soft > 0.5, truth)
    prob = dense_crf(img, soft)
    assert prob.shape == (32, 32) and prob.dtype == np.float32
    assert prob.min() >= 0 and prob.max() <= 1
    after = iou(prob > 0.5, truth)
    assert after > 0.9 and after > before + 0.1


def test_crf_on_a_non_square_image_keeps_the_layout() -> None:
    img, truth = square_scene(h=24, w=40, box=(25, 4, 37, 14))
    soft = truth.astype(np.float32) * 0.7 + 0.15
    prob = dense_crf(img, soft)
    assert prob.shape == (24, 40)
    assert iou(prob > 0.5, truth) > 0.95


def test_crf_reads_uint8_masks_as_value_over_255() -> None:
    img, truth = square_scene()
    soft = np.where(truth, 0.8, 0.2).astype(np.float32)
    u8 = np.round(soft * 255).astype(np.uint8)
    np.testing.assert_allclose(dense_crf(img, u8), dense_crf(img, u8.astype(np.float32) / 255), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dense_crf(img, soft * 255)


# ----------------------------------------------------------------------------- cleaning and boxes


def test_clean_mask_drops_tiny_components_4_connected() -> None:
    m = np.zeros((32, 32), np.uint8)
    m[0, 0] = 1  # 1 px
    m[5, 5] = m[6, 6] = 1  # two 1-px components (diagonal is not 4-connected)
    m[10, 10:13] = 1  # 3 px
    m[20:25, 20:24] = 1  # 20 px
    out = clean_mask(m, min_component=2.5 / 1024)  # keep area > 2.5 px
    expected = np.zeros_like(m)
    expected[10, 10:13] = 1
    expected[20:25, 20:24] = 1
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint8


def test_box_with_margin_by_hand() -> None:
    m = np.zeros((32, 32), np.uint8)
    m[8:16, 4:14] = 1  # x 4..13 (w = 10), y 8..15 (h = 8)
    boxes = mask_to_boxes(m, margin=0.2, min_box_area=0.01)
    # x1 = 4 - 2, x2 = 14 + 2, y1 = 8 - 1.6, y2 = 16 + 1.6, divided by 32
    np.testing.assert_allclose(boxes, [[2 / 32, 6.4 / 32, 16 / 32, 17.6 / 32]], rtol=1e-6)
    assert boxes.dtype == np.float32
    np.testing.assert_allclose(boxes_to_pixels(boxes, 32, 32), [[2, 6.4, 16, 17.6]], rtol=1e-6)


def test_boxes_are_clipped_and_small_ones_dropped() -> None:
    m = np.zeros((20, 40), np.uint8)  # H = 20, W = 40: 1 % = 8 px
    m[0:10, 30:40] = 1  # touches the top-right corner
    m[15:17, 2:6] = 1  # 2 x 4 = 8 px: kept (not under 1 %)
    m[15:18, 20:22] = 1  # 3 x 2 = 6 px: dropped
    boxes = mask_to_boxes(m, margin=0.2, min_box_area=0.01)
    np.testing.assert_allclose(
        boxes,
        [[(30 - 2) / 40, 0.0, 1.0, (10 + 2) / 20], [(2 - 0.8) / 40, (15 - 0.4) / 20, (6 + 0.8) / 40, (17 + 0.4) / 20]],
        rtol=1e-6,
    )


def test_hole_is_not_an_object_and_empty_masks_give_no_box() -> None:
    ring = np.zeros((32, 32), np.uint8)
    ring[4:20, 4:20] = 1
    ring[8:16, 8:16] = 0
    assert len(mask_to_boxes(ring)) == 1
    empty = mask_to_boxes(np.zeros((32, 32), np.uint8))
    assert empty.shape == (0, 4) and empty.dtype == np.float32


def test_refine_one_without_crf_thresholds_the_soft_mask() -> None:
    img, _ = square_scene()
    soft = np.zeros((32, 32), np.float32)
    soft[4:12, 4:12] = 0.9
    soft[20:30, 18:28] = 0.5  # exactly 0.5 is not foreground
    refined, boxes = refine_one(img, soft, PostprocessOptions(crf=False, box_margin=0.0))
    assert refined.sum() == 64 and refined[4:12, 4:12].all()
    np.testing.assert_allclose(boxes, [[4 / 32, 4 / 32, 12 / 32, 12 / 32]])


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="crf_iters"):
        PostprocessOptions(crf_iters=0)
    with pytest.raises(ValueError, match="box_margin"):
        PostprocessOptions(box_margin=-0.1)
    with pytest.raises(ValueError, match="threshold"):
        PostprocessOptions(threshold=1.5)


# ----------------------------------------------------------------------------- batches


def batch(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images, soft = [], []
    for i in range(n):
        x0, y0 = rng.integers(0, 16, 2)
        img, truth = square_scene(box=(x0, y0, x0 + 14, y0 + 12), seed=i)
        blur = truth.astype(np.float32) * 0.6 + rng.random((32, 32)).astype(np.float32) * 0.3
        images.append(img)
        soft.append(np.round(blur * 255).astype(np.uint8))
    if n > 3:
        soft[3][:] = 0  # a mask with nothing in it
    return np.stack(images), np.stack(soft)


def test_one_and_two_processes_give_identical_results() -> None:
    images, soft = batch()
    r1, b1 = refine_batch(images, soft, processes=1)
    r2, b2 = refine_batch(images, soft, processes=2, chunk_size=2)
    np.testing.assert_array_equal(r1, r2)
    assert len(b1) == len(b2) == 12
    for x, y in zip(b1, b2):
        np.testing.assert_array_equal(x, y)
    assert r1.dtype == np.uint8 and set(np.unique(r1)) <= {0, 1}
    assert len(b1[3]) == 0 and r1[3].sum() == 0  # the empty mask keeps an empty list
    assert (count_boxes(b1) >= 1).sum() == 11
    for i in (0, 5, 9):  # one box around each rectangle
        assert len(b1[i]) == 1


def test_refine_batch_checks_shapes() -> None:
    images, soft = batch(2)
    with pytest.raises(ValueError, match="do not match"):
        refine_batch(images, soft[:, :16])
    with pytest.raises(ValueError, match="uint8"):
        refine_batch(images.astype(np.float32), soft)


def test_crf_kernels_come_from_the_params_block_and_matter() -> None:
    from oacl.config import ContraCAMConfig

    cfg = ContraCAMConfig(crf_gauss_sxy=2.0, crf_gauss_compat=1.0, crf_bi_sxy=6.0, crf_bi_srgb=20.0, crf_bi_compat=4.0)
    opts = PostprocessOptions.from_config(cfg)
    assert (opts.gauss_sxy, opts.gauss_compat, opts.bi_sxy, opts.bi_srgb, opts.bi_compat) == (2.0, 1.0, 6.0, 20.0, 4.0)
    defaults = PostprocessOptions.from_config(ContraCAMConfig())
    assert defaults == PostprocessOptions()  # the params' defaults are the paper code's kernels
    # a prior blob on 48 of the square's 168 pixels: the paper's 80 px colour kernel completes
    # it to the whole square (measured IoU 1.0); a 2 px one without smoothness does not (0.51)
    img, mask = square_scene()
    soft = np.full(mask.shape, 0.45, np.float32)
    soft[12:20, 11:17] = 0.9
    wide = dense_crf(img, soft, defaults) > 0.5
    narrow = dense_crf(img, soft, PostprocessOptions(gauss_compat=0.0, bi_sxy=2.0, bi_compat=1.0)) > 0.5
    assert iou(wide, mask) > 0.95 and iou(narrow, mask) < 0.6
