"""Augmentations: the two-view recipe and the debiased variants that plug into it.

- :mod:`oacl.augment.views` — the MoCo v2 / BYOL two-view recipe (per-item geometric half,
  per-batch photometric half), the :class:`ViewPipeline` seam;
- :mod:`oacl.augment.oacrop` — object-aware random crop (per item);
- :mod:`oacl.augment.bgmix` — background mixup and hard copy-paste (per item + per batch);
- :mod:`oacl.augment.mixing` — donors, Mixup and CutMix for contrastive learning (per batch).
"""

from oacl.augment.bgmix import (
    BackgroundTiles,
    BatchBgMix,
    BgMixItem,
    background_mixup,
    largest_empty_rectangle,
    largest_empty_rectangles,
)
from oacl.augment.mixing import BatchMix, cutmix, donor_permutation, mixup
from oacl.augment.oacrop import BatchPhotometricStats, ObjectAwareCrops
from oacl.augment.views import AugmentSettings, BatchPhotometric, TwoCrops, ViewPipeline, two_view_pipeline

__all__ = [
    "AugmentSettings",
    "BackgroundTiles",
    "BatchBgMix",
    "BatchMix",
    "BatchPhotometric",
    "BatchPhotometricStats",
    "BgMixItem",
    "ObjectAwareCrops",
    "TwoCrops",
    "ViewPipeline",
    "background_mixup",
    "cutmix",
    "donor_permutation",
    "largest_empty_rectangle",
    "largest_empty_rectangles",
    "mixup",
    "two_view_pipeline",
]
