"""Batch-level mixing for contrastive learning: donors, Mixup, CutMix, and the photometric tail.

Everything here runs in the training process on the collated batch and its device, vectorised
over the batch (no per-sample Python loop), after the per-item geometric half of
:mod:`oacl.augment.views` and before its photometric half.

Mixup and CutMix "for contrastive learning" (the paper's Table 8 comparison) are done the simple
way: each *view* of image i is, independently with probability ``prob``, mixed with the same view
of a donor image j ≠ i of the batch, and the contrastive target stays the unmixed pair (view 1 of
i is still the positive of view 2 of i; nothing in the loss changes). The mixing weight is
λ ~ Beta(α, α) folded to λ ← max(λ, 1 − λ) ∈ [0.5, 1], so the patch's own image always holds
at least half of it — the positive stays recognisable, as the unmixed target assumes.

- Mixup: x ← λ·x + (1 − λ)·x_donor.
- CutMix: a box of area fraction (1 − λ), centre uniform over the image and clipped to it
  (Yun et al. 2019), is replaced by the donor's pixels; the realised pasted fraction is what
  clipping leaves.

Donors come from :func:`donor_permutation`: a random cyclic order over the batch (a derangement,
so nobody is their own donor), restricted to the images that can donate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from oacl.augment.views import AugmentSettings, apply_photometric, sample_photometric
from oacl.imaging import normalize

__all__ = [
    "MIX_KINDS",
    "donor_permutation",
    "sample_lambda",
    "mixup",
    "cutmix_boxes",
    "box_masks",
    "cutmix",
    "photometric_views",
    "BatchMix",
]

MIX_KINDS = ("mixup", "cutmix")


def donor_permutation(valid: Tensor) -> tuple[Tensor, Tensor]:
    """A donor for every image of a batch: ``perm[i] != i`` and ``valid[perm[i]]`` wherever possible.

    valid: (B,) bool, which images may donate. Returns ``(perm, ok)``, both (B,): ``perm`` int64
    donor indices, ``ok`` bool — False where no valid donor other than the image itself exists
    (no valid image at all, or the only valid image asking for itself); ``perm[i] = i`` there.
    The valid images donate to each other along a random cycle (a derangement of them); every
    other image gets a uniformly random valid donor. Uses the global torch RNG of the device.
    """
    if valid.dim() != 1 or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a (B,) bool tensor, got {valid.dtype} {tuple(valid.shape)}")
    b = valid.shape[0]
    device = valid.device
    perm = torch.arange(b, device=device)
    donors = torch.nonzero(valid).flatten()  # (D,)
    d = donors.numel()
    if d == 0:
        return perm, torch.zeros(b, dtype=torch.bool, device=device)
    cycle = donors[torch.randperm(d, device=device)]  # a random order of the donors
    perm[cycle] = cycle.roll(-1)  # each valid image gives to the next in the cycle
    pick = donors[torch.randint(d, (b,), device=device)]
    perm = torch.where(valid, perm, pick)
    return perm, perm != torch.arange(b, device=device)


def sample_lambda(batch: int, alpha: float, device: torch.device | str = "cpu") -> Tensor:
    """(B,) mixing weights λ ~ Beta(α, α), folded to max(λ, 1 − λ) ∈ [0.5, 1]."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    a = torch.full((batch,), float(alpha), device=device)
    lam = torch.distributions.Beta(a, a).sample()
    return torch.maximum(lam, 1.0 - lam)


def mixup(x: Tensor, donor: Tensor, lam: Tensor) -> Tensor:
    """λ·x + (1 − λ)·donor per image; x, donor (B, C, H, W) float, lam (B,)."""
    w = lam.to(x.dtype).view(-1, 1, 1, 1)
    return w * x + (1.0 - w) * donor


def cutmix_boxes(lam: Tensor, height: int, width: int) -> Tensor:
    """(B, 4) int64 pixel boxes x0, y0, x1, y1 (exclusive) of area ≈ (1 − λ)·H·W, random centre, clipped."""
    b = lam.shape[0]
    cut = torch.sqrt(1.0 - lam.float())  # side fraction
    cw, ch = (cut * width).round(), (cut * height).round()
    cx = torch.rand(b, device=lam.device) * width
    cy = torch.rand(b, device=lam.device) * height
    x0 = (cx - cw / 2).round().clamp(0, width)
    x1 = (cx + cw / 2).round().clamp(0, width)
    y0 = (cy - ch / 2).round().clamp(0, height)
    y1 = (cy + ch / 2).round().clamp(0, height)
    return torch.stack([x0, y0, x1, y1], dim=1).long()


def box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """(B, 1, H, W) float {0, 1}: 1 inside each pixel box x0, y0, x1, y1 (exclusive) of ``boxes`` (B, 4)."""
    xs = torch.arange(width, device=boxes.device).view(1, 1, width)
    ys = torch.arange(height, device=boxes.device).view(1, height, 1)
    x0, y0, x1, y1 = (boxes[:, k].view(-1, 1, 1) for k in range(4))
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)  # (B, H, W)
    return inside.unsqueeze(1).float()


def cutmix(x: Tensor, donor: Tensor, boxes: Tensor) -> Tensor:
    """x with the donor's pixels inside each image's box; x, donor (B, C, H, W), boxes (B, 4) pixels."""
    m = box_masks(boxes, x.shape[-2], x.shape[-1]).to(x.dtype)
    return m * donor + (1.0 - m) * x


def photometric_views(views: Sequence[Tensor], cfg: AugmentSettings) -> tuple[Tensor, Tensor]:
    """The photometric half of the two-view recipe on two float [0, 1] batches (B, 3, H, W) → normalized.

    The same as :class:`oacl.augment.views.BatchPhotometric` after its uint8 → float step, so a
    variant can change the pixels in between.
    """
    if len(views) != 2:
        raise ValueError(f"expected 2 views, got {len(views)}")
    out = []
    for x in views:
        p = sample_photometric(x.shape[0], cfg, x.device)
        out.append(normalize(apply_photometric(x, p, cfg.kernel), cfg.mean, cfg.std))
    return out[0], out[1]


class BatchMix:
    """Per-batch half of Mixup / CutMix for contrastive learning (see the module docstring).

    ``__call__(views)``: the collated pair of uint8 (B, 3, H, W) views from
    :class:`~oacl.augment.views.TwoCrops` → ``(x1, x2, {"mix_rate": ...})``: two normalized
    float batches and the fraction of patches that were mixed (a 0-d tensor).
    """

    def __init__(self, cfg: AugmentSettings, kind: Literal["mixup", "cutmix"], prob: float, alpha: float) -> None:
        if kind not in MIX_KINDS:
            raise ValueError(f"kind must be one of {MIX_KINDS}, got {kind!r}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        self.cfg, self.kind, self.prob, self.alpha = cfg, kind, float(prob), float(alpha)

    def mix(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mix one view batch x (B, 3, H, W) float in [0, 1]; returns (mixed, applied (B,) bool, donor (B,) int64)."""
        b, _, h, w = x.shape
        perm, ok = donor_permutation(torch.ones(b, dtype=torch.bool, device=x.device))
        apply = (torch.rand(b, device=x.device) < self.prob) & ok
        lam = sample_lambda(b, self.alpha, x.device)
        if self.kind == "mixup":
            mixed = mixup(x, x[perm], lam)
        else:
            mixed = cutmix(x, x[perm], cutmix_boxes(lam, h, w))
        return torch.where(apply.view(-1, 1, 1, 1), mixed, x), apply, perm

    def __call__(self, views: Sequence[Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        if len(views) != 2:
            raise ValueError(f"expected 2 views, got {len(views)}")
        xs, applied = [], []
        for v in views:
            if v.dtype != torch.uint8 or v.dim() != 4 or v.shape[1] != 3:
                raise ValueError(f"views must be uint8 (B, 3, H, W), got {v.dtype} {tuple(v.shape)}")
            x, a, _ = self.mix(v.float().div_(255.0))
            xs.append(x)
            applied.append(a)
        x1, x2 = photometric_views(xs, self.cfg)
        return x1, x2, {"mix_rate": torch.cat(applied).float().mean()}
