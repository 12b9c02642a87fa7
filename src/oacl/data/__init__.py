"""Data: the embedded benchmark generator, datasets (embedded set files, COCO, ImageFolder,
Background Challenge) that all yield one item format, and joint image/box/mask transforms."""

from oacl.data.datasets import (
    BG_VARIANTS,
    DATASETS,
    BackgroundChallengeSet,
    CocoSet,
    EmbeddedSet,
    ImageFolderSet,
    Sample,
    SampleDataset,
    build_dataset,
    collate_samples,
    make_sample,
)

__all__ = [
    "BG_VARIANTS",
    "DATASETS",
    "BackgroundChallengeSet",
    "CocoSet",
    "EmbeddedSet",
    "ImageFolderSet",
    "Sample",
    "SampleDataset",
    "build_dataset",
    "collate_samples",
    "make_sample",
]
