"""Background mixup: exact largest empty rectangle, Eq. 4, pmix semantics, mask / image alignment, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from conftest import make_scenes
from oacl.augment.bgmix import (
    BackgroundTiles,
    BatchBgMix,
    BgMixItem,
    background_mixup,
    background_tile,
    binarize,
    largest_empty_rectangle,
    largest_empty_rectangles,
    tile_patch,
)
from oacl.augment.views import AugmentSettings
from oacl.data.datasets import make_sample
from oacl.errors import DataError


def brute_force_area(fg: np.ndarray) -> int:
    """Largest all-zero rectangle area by trying every rectangle (prefix sums)."""
    h, w = fg.shape
    c = np.zeros((h + 1, w + 1), np.int64)
    c[1:, 1:] = fg.astype(np.int64).cumsum(0).cumsum(1)
    best = 0
    for y0 in range(h):
        for y1 in range(y0 + 1, h + 1):
            for x0 in range(w):
                for x1 in range(x0 + 1, w + 1):
                    if c[y1, x1] - c[y0, x1] - c[y1, x0] + c[y0, x0] == 0:
                        best = max(best, (y1 - y0) * (x1 - x0))
    return best


def _check_rect(fg: np.ndarray, rect, area: int) -> None:
    x0, y0, x1, y1 = (int(v) for v in rect)
    assert (x1 - x0) * (y1 - y0) == area
    if area:
        assert 0 <= x0 < x1 <= fg.shape[1] and 0 <= y0 < y1 <= fg.shape[0]
        assert not fg[y0:y1, x0:x1].any()


@pytest.mark.parametrize("density", [0.05, 0.2, 0.5, 0.8])
def test_largest_empty_rectangle_matches_brute_force(density: float) -> None:
    rng = np.random.default_rng(int(density * 100))
    masks = []
    for _ in range(60):
        h, w = rng.integers(1, 10, size=2)
        masks.append(rng.random((h, w)) < density)
    for fg in masks:
        area = brute_force_area(fg)
        _check_rect(fg, largest_empty_rectangle(fg), area)
        _check_rect(fg, largest_empty_rectangles(fg[None])[0], area)


def test_batched_rectangles_match_brute_force_on_a_stack() -> None:
    rng = np.random.default_rng(7)
    fg = rng.random((40, 9, 11)) < rng.random((40, 1, 1))  # a different density per mask
    rects = largest_empty_rectangles(fg)
    for i in range(len(fg)):
        _check_rect(fg[i], rects[i], brute_force_area(fg[i]))


def test_rectangle_edge_cases() -> None:
    assert largest_empty_rectangle(np.ones((5, 7), bool)) == (0, 0, 0, 0)
    assert largest_empty_rectangle(np.zeros((5, 7), bool)) == (0, 0, 7, 5)
    fg = np.zeros((6, 8), bool)
    fg[:, 2] = True  # a wall at column 2: the right part (5 x 6) beats the left (2 x 6)
    assert largest_empty_rectangle(fg) == (3, 0, 8, 6)
    assert largest_empty_rectangles(np.stack([np.ones((6, 8), bool), fg])).tolist() == [[0, 0, 0, 0], [3, 0, 8, 6]]


def test_tile_repeats_the_patch_from_its_corner() -> None:
    image = torch.arange(3 * 10 * 12, dtype=torch.int64).view(3, 10, 12).to(torch.uint8)
    tile, ok = background_tile(image, (2, 3, 5, 5), 9)  # patch 3 wide, 2 tall
    assert ok and tile.shape == (3, 9, 9)
    for y in range(9):
        for x in range(9):
            assert torch.equal(tile[:, y, x], image[:, 3 + y % 2, 2 + x % 3])
    empty, ok = background_tile(image, (0, 0, 0, 0), 9)
    assert not ok and empty.shape == (3, 9, 9) and not empty.any()
    with pytest.raises(ValueError, match="empty patch"):
        tile_patch(image[:, :0], 4)


def test_mixed_image_is_x1_on_the_mask_and_background_elsewhere() -> None:
    g = torch.Generator().manual_seed(0)
    x, bg = torch.rand(4, 3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    m = torch.zeros(4, 1, 8, 8)
    m[:, :, 2:6, 1:4] = 1.0
    m[1, :, 0, 0] = 0.25  # a soft value: the convex combination
    out = background_mixup(x, m, bg)
    on, off = m.expand_as(x) == 1, m.expand_as(x) == 0
    assert torch.equal(out[on], x[on]) and torch.equal(out[off], bg[off])
    torch.testing.assert_close(out[1, :, 0, 0], 0.25 * x[1, :, 0, 0] + 0.75 * bg[1, :, 0, 0])
    apply = torch.tensor([True, False, True, False])
    out = background_mixup(x, m, bg, apply)
    assert torch.equal(out[1], x[1]) and torch.equal(out[3], x[3]) and not torch.equal(out[0], x[0])
    with pytest.raises(ValueError, match="shapes do not fit"):
        background_mixup(x, m[:, :, :4], bg)


def _batch(b: int = 16, size: int = 8, has_bg: torch.Tensor | None = None):
    g = torch.Generator().manual_seed(1)
    views = [torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g) for _ in range(2)]
    masks = [torch.randint(0, 256, (b, 1, size, size), dtype=torch.uint8, generator=g) for _ in range(2)]
    bg = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g)
    has = torch.ones(b, dtype=torch.bool) if has_bg is None else has_bg
    return {"views": views, "masks": masks, "bg": bg, "has_bg": has}


def test_pmix_zero_leaves_the_batch_untouched_and_one_mixes_every_patch() -> None:
    cfg = AugmentSettings(size=8)
    batch = _batch()
    x = batch["views"][0].float() / 255
    bg = batch["bg"].float() / 255
    torch.manual_seed(0)
    out, applied, _ = BatchBgMix(cfg, 0.0).mix(x, batch["masks"][0], bg, batch["has_bg"])
    assert torch.equal(out, x) and not applied.any()
    assert float(BatchBgMix(cfg, 0.0)(batch)[2]["mix_rate"]) == 0.0
    mixer = BatchBgMix(cfg, 1.0)
    out, applied, perm = mixer.mix(x, batch["masks"][0], bg, batch["has_bg"])
    assert applied.all() and (perm != torch.arange(16)).all()
    torch.testing.assert_close(out, background_mixup(x, batch["masks"][0].float() / 255, bg[perm]))
    x1, x2, stats = mixer(batch)
    assert x1.shape == x2.shape == (16, 3, 8, 8) and float(stats["mix_rate"]) == 1.0


@pytest.mark.parametrize("pmix", [0.2, 0.4, 0.7])
def test_observed_mix_rate_matches_pmix(pmix: float) -> None:
    torch.manual_seed(0)
    batch = _batch(b=2048, size=4)
    rate = float(BatchBgMix(AugmentSettings(size=4, blur_p=0.0), pmix)(batch)[2]["mix_rate"])
    assert rate == pytest.approx(pmix, abs=0.03)  # 4096 patches: 3 % is > 4 standard deviations


def test_hard_mix_binarises_the_mask() -> None:
    cfg = AugmentSettings(size=4)
    mask = torch.tensor([0, 50, 51, 255], dtype=torch.uint8).view(1, 1, 1, 4).expand(2, 1, 4, 4)
    w = BatchBgMix(cfg, 1.0, hard_threshold=0.2).weights(mask)
    assert w[0, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]  # 51 / 255 = 0.2 exactly
    torch.testing.assert_close(BatchBgMix(cfg, 1.0).weights(mask)[0, 0, 0], mask[0, 0, 0].float() / 255)


def test_patches_without_a_donor_stay_unmixed() -> None:
    cfg = AugmentSettings(size=8)
    # image 0 alone has a background: nobody else can donate to it; everyone else gets image 0's
    has = torch.tensor([True, False, False, False])
    batch = _batch(b=4, has_bg=has)
    x, bg = batch["views"][0].float() / 255, batch["bg"].float() / 255
    for seed in range(5):
        torch.manual_seed(seed)
        out, applied, perm = BatchBgMix(cfg, 1.0).mix(x, batch["masks"][0], bg, has)
        assert applied.tolist() == [False, True, True, True] and perm[1:].tolist() == [0, 0, 0]
        assert torch.equal(out[0], x[0])
    out, applied, _ = BatchBgMix(cfg, 1.0).mix(x, batch["masks"][0], bg, torch.zeros(4, dtype=torch.bool))
    assert not applied.any() and torch.equal(out, x)


def _item(image: np.ndarray, soft: np.ndarray, id: str = "a", mask: np.ndarray | None = None) -> dict:
    item = make_sample(image, 0, None, None, mask, id)
    item["cam_mask"] = torch.from_numpy(soft)
    item["set"] = "s"
    return item


def test_all_foreground_mask_gives_no_background() -> None:
    image = np.full((16, 16, 3), 100, np.uint8)
    out = BgMixItem(AugmentSettings(size=16), BackgroundTiles(0.2))(_item(image, np.full((16, 16), 60, np.uint8)))
    assert not bool(out["has_bg"]) and not out["bg"].any()


def test_background_tile_holds_only_background_pixels() -> None:
    scenes = make_scenes(n=8, size=32, seed=3)
    tiles = BackgroundTiles(0.2)
    per_item = BgMixItem(AugmentSettings(size=32), tiles)
    for i in range(8):
        out = per_item(_item(scenes.images[i], (scenes.masks[i] * 255).astype(np.uint8), scenes.ids[i]))
        assert bool(out["has_bg"])
        # background is noise in [40, 200]; objects are pure 0 / 255 colours
        assert int(out["bg"].min()) >= 40 and int(out["bg"].max()) <= 200
        x0, y0, x1, y1 = tiles.rects[("s", scenes.ids[i])]
        assert not scenes.masks[i][y0:y1, x0:x1].any()


def test_prefill_equals_lazy_computation() -> None:
    rng = np.random.default_rng(0)
    soft = (rng.random((30, 12, 12)) * 255).astype(np.uint8)
    bulk, lazy = BackgroundTiles(0.8), BackgroundTiles(0.8)
    bulk.prefill([("s", str(i)) for i in range(30)], soft, chunk=7)
    for i in range(30):
        fg = binarize(soft[i], 0.8)
        area = brute_force_area(fg)
        _check_rect(fg, lazy.rect(("s", str(i)), soft[i]), area)  # the two algorithms may break ties apart
        _check_rect(fg, bulk.rects[("s", str(i))], area)


def test_mask_and_image_stay_aligned_through_the_v2_transforms() -> None:
    # the image *is* its mask (white objects on black), asymmetric so that flips show
    soft = np.zeros((32, 32), np.uint8)
    soft[4:20, 3:12] = 255
    soft[22:30, 18:30] = 128
    image = np.repeat(soft[..., None], 3, axis=2)
    per_item = BgMixItem(AugmentSettings(size=24, crop_scale=(0.1, 1.0)), BackgroundTiles(0.2))
    flipped = 0
    for seed in range(30):
        torch.manual_seed(seed)
        out = per_item(_item(image, soft))
        for view, mask in zip(out["views"], out["masks"]):
            assert view.shape == (3, 24, 24) and mask.shape == (1, 24, 24) and mask.dtype == torch.uint8
            assert torch.equal(view[0], mask[0]), f"seed {seed}: the mask was not cropped / flipped like the image"
            white, grey = (view[0] > 200).nonzero()[:, 1], ((view[0] > 100) & (view[0] < 150)).nonzero()[:, 1]
            if len(white) and len(grey):  # both objects visible: grey left of white only after a flip
                flipped += int(grey.float().mean() < white.float().mean())
    assert flipped > 0  # the check above also covered flipped views


def test_gt_source_uses_the_item_mask_and_needs_one() -> None:
    image = np.full((16, 16, 3), 80, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[:, :10] = 1
    per_item = BgMixItem(AugmentSettings(size=16), BackgroundTiles(0.5), source="gt")
    item = make_sample(image, 0, None, None, mask, "g")
    out = per_item(item)
    assert bool(out["has_bg"]) and per_item.tiles.rects[("", "g")] == (10, 0, 16, 16)
    assert set(torch.unique(out["masks"][0]).tolist()) <= {0, 255}
    with pytest.raises(DataError, match="has no ground-truth mask"):
        per_item(make_sample(image, 0, None, None, None, "none"))
    with pytest.raises(DataError, match="has no ContraCAM mask"):
        BgMixItem(AugmentSettings(size=16), BackgroundTiles(0.5))(item)


def test_collated_items_mix_on_the_batch() -> None:
    scenes = make_scenes(n=8, size=32, seed=4)
    per_item = BgMixItem(AugmentSettings(size=32), BackgroundTiles(0.2))
    batch = default_collate(
        [per_item(_item(scenes.images[i], (scenes.masks[i] * 255).astype(np.uint8), scenes.ids[i])) for i in range(8)]
    )
    assert batch["views"][0].shape == (8, 3, 32, 32) and batch["masks"][1].shape == (8, 1, 32, 32)
    assert batch["bg"].shape == (8, 3, 32, 32) and batch["has_bg"].tolist() == [True] * 8
    torch.manual_seed(0)
    x1, x2, stats = BatchBgMix(AugmentSettings(size=32), 1.0)(batch)
    assert x1.dtype == torch.float32 and torch.isfinite(x1).all() and float(stats["mix_rate"]) == 1.0
