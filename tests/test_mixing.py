"""Batch mixing: donors are derangements of valid images, Mixup / CutMix closed forms, the prob semantics."""

from __future__ import annotations

import pytest
import torch

from oacl.augment.mixing import (
    BatchMix,
    box_masks,
    cutmix,
    cutmix_boxes,
    donor_permutation,
    mixup,
    photometric_views,
    sample_lambda,
)
from oacl.augment.views import AugmentSettings, BatchPhotometric


@pytest.mark.parametrize("seed", range(5))
def test_donors_are_other_valid_images(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(33, generator=g) < 0.6
    torch.manual_seed(seed)
    perm, ok = donor_permutation(valid)
    assert ok.all()
    assert (perm != torch.arange(33)).all() and valid[perm].all()
    cyc = perm[valid]
    assert sorted(cyc.tolist()) == torch.nonzero(valid).flatten().tolist()  # the valid ones form a derangement


def test_donor_edge_cases() -> None:
    perm, ok = donor_permutation(torch.zeros(4, dtype=torch.bool))
    assert not ok.any() and perm.tolist() == [0, 1, 2, 3]
    perm, ok = donor_permutation(torch.tensor([False, True, False]))
    assert ok.tolist() == [True, False, True] and perm.tolist() == [1, 1, 1]
    perm, ok = donor_permutation(torch.ones(2, dtype=torch.bool))
    assert perm.tolist() == [1, 0] and ok.all()
    with pytest.raises(ValueError, match="bool"):
        donor_permutation(torch.ones(3))


def test_lambda_is_folded_to_the_upper_half() -> None:
    torch.manual_seed(0)
    lam = sample_lambda(4000, 1.0)
    assert lam.min() >= 0.5 and lam.max() <= 1.0
    assert float(lam.mean()) == pytest.approx(0.75, abs=0.02)  # |U - 1/2| + 1/2 for Beta(1, 1)
    with pytest.raises(ValueError, match="alpha"):
        sample_lambda(2, 0.0)


def test_mixup_closed_form() -> None:
    x, d = torch.full((2, 3, 4, 4), 1.0), torch.zeros(2, 3, 4, 4)
    out = mixup(x, d, torch.tensor([0.5, 0.9]))
    assert torch.allclose(out[0], torch.full((3, 4, 4), 0.5)) and torch.allclose(out[1], torch.full((3, 4, 4), 0.9))


def test_box_masks_match_a_loop() -> None:
    boxes = torch.tensor([[0, 0, 3, 2], [2, 1, 6, 5], [4, 4, 4, 6]])
    m = box_masks(boxes, 5, 6)
    for b, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        ref = torch.zeros(5, 6)
        for y in range(5):
            for x in range(6):
                ref[y, x] = float(x0 <= x < x1 and y0 <= y < y1)
        assert torch.equal(m[b, 0], ref)


def test_cutmix_pastes_the_donor_inside_the_box_only() -> None:
    torch.manual_seed(0)
    lam = torch.full((500,), 0.75)
    boxes = cutmix_boxes(lam, 32, 32)
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 2] <= 32).all() and (boxes[:, 0] >= 0).all()
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).float() / 32**2
    assert area.max() <= 0.25 + 1e-6 and (area == 0.25).any()  # (1 - λ) before clipping at the borders
    x, d = torch.zeros(3, 3, 8, 8), torch.ones(3, 3, 8, 8)
    b = torch.tensor([[1, 2, 4, 6], [0, 0, 8, 8], [5, 5, 5, 5]])
    out = cutmix(x, d, b)
    assert out[0, :, 2:6, 1:4].eq(1).all() and out[0].sum() == 3 * 4 * 3
    assert out[1].eq(1).all() and out[2].eq(0).all()


def _views(b: int = 64, size: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g) for _ in range(2)]


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_prob_zero_is_the_plain_recipe_and_one_mixes_all(kind: str) -> None:
    cfg = AugmentSettings(size=8)
    views = _views()
    x = views[0].float() / 255
    torch.manual_seed(0)
    out, applied, _ = BatchMix(cfg, kind, 0.0, 1.0).mix(x)
    assert torch.equal(out, x) and not applied.any()
    torch.manual_seed(0)
    out, applied, perm = BatchMix(cfg, kind, 1.0, 1.0).mix(x)
    assert applied.all() and (perm != torch.arange(64)).all() and not torch.equal(out, x)
    torch.manual_seed(1)
    x1, x2, stats = BatchMix(cfg, kind, 0.5, 1.0)(views)
    assert x1.shape == (64, 3, 8, 8) and 0.3 < float(stats["mix_rate"]) < 0.7


def test_photometric_views_equal_the_batch_photometric() -> None:
    cfg = AugmentSettings(size=8)
    views = _views(b=8)
    torch.manual_seed(3)
    ref = BatchPhotometric(cfg)(views)
    torch.manual_seed(3)
    ours = photometric_views([v.float() / 255 for v in views], cfg)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])


def test_bad_arguments() -> None:
    cfg = AugmentSettings(size=8)
    with pytest.raises(ValueError, match="kind"):
        BatchMix(cfg, "blend", 0.5, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prob"):
        BatchMix(cfg, "mixup", 1.5, 1.0)
