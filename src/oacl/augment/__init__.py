"""Augmentations: the two-view recipe and the debiased variants that plug into it.

- :mod:`oacl.augment.views` — the MoCo v2 / BYOL two-view recipe (per-item geometric half,
  per-batch photometric half), the :class:`~oacl.augment.views.ViewPipeline` seam;
- :mod:`oacl.augment.oacrop` — object-aware random crop (per item);
- :mod:`oacl.augment.bgmix` — background mixup and hard copy-paste (per item + per batch);
- :mod:`oacl.augment.mixing` — donors, Mixup and CutMix for contrastive learning (per batch).

Nothing is imported here, so that importing one of them does not import (and depend on) the rest.
"""
