"""The experiment's vocabulary: every name the stages, the library and the report agree on.

This module is the bottom of the package: it imports nothing from ``oacl`` (nor torch), and every
other module takes these names from here instead of spelling them again.

- Methods, debiasing variants and model variants (the ``<model>`` of ``lineval@<model>``):
  ``random`` (the random-init control), ``moco`` / ``byol`` (vanilla), ``<method>-<debias>``.
- The two training sets (``multi``: COCO-like scenes, ``single``: ImageNet-9-like objects).
- Background Challenge variants (Xiao et al. 2020), in the generator's order and in the order
  of the paper's Table 7.
- Data sources and dataset kinds.
- ImageNet's input normalisation, the one every backbone of the project is fed with.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "RANDOM",
    "METHODS",
    "CAM_METHOD",
    "DEBIAS",
    "SETS",
    "BG_VARIANTS",
    "BG_VARIANTS_TABLE",
    "DATA_SOURCES",
    "DATASET_KINDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "variant_names",
    "parse_variant",
    "variant_backbone_path",
]

RANDOM = "random"
METHODS: tuple[str, ...] = ("moco", "byol")
CAM_METHOD = "moco"  # the paper computes the CAMs of every method with the vanilla MoCo model
DEBIAS: tuple[str, ...] = ("oacrop", "oacrop_gt", "bgmix", "hardmix", "hardmix_gt", "mixup", "cutmix")
SETS: tuple[str, ...] = ("multi", "single")

BG_VARIANTS: tuple[str, ...] = (
    "original",
    "only_fg",
    "only_bg_b",
    "only_bg_t",
    "no_fg",
    "mixed_same",
    "mixed_rand",
    "mixed_next",
)
# The same names in the column order of the paper's Table 7 (what the report prints).
BG_VARIANTS_TABLE: tuple[str, ...] = (
    "original",
    "only_fg",
    "mixed_same",
    "mixed_rand",
    "mixed_next",
    "only_bg_b",
    "only_bg_t",
    "no_fg",
)

DATA_SOURCES: tuple[str, ...] = ("embedded", "real")
DATASET_KINDS: tuple[str, ...] = ("embedded", "coco", "imagefolder", "bgchallenge")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def variant_names() -> list[str]:
    """Every model variant name: ``random``, the vanilla methods, then ``<method>-<debias>``."""
    return [RANDOM, *METHODS, *(f"{m}-{d}" for m in METHODS for d in DEBIAS)]


def parse_variant(variant: str) -> tuple[str | None, str | None]:
    """``(method, debias)`` of a variant name: (None, None) for random, (m, None) for vanilla."""
    if variant == RANDOM:
        return None, None
    method, sep, debias = variant.partition("-")
    if method not in METHODS or (sep and debias not in DEBIAS):
        raise ValueError(f"unknown model variant {variant!r}; known: {', '.join(variant_names())}")
    return method, debias or None


def variant_backbone_path(variant: str, models_dir: str | Path = "artifacts/models") -> Path | None:
    """The exported backbone file of ``variant`` (None for ``random``)."""
    method, debias = parse_variant(variant)
    if method is None:
        return None
    folder = f"pretrain-{method}" if debias is None else f"retrain-{method}-{debias}"
    return Path(models_dir) / folder / "backbone.pt"
