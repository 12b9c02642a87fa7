"""Shared tiny fixtures with known answers (8 images, 32×32).

``scenes`` — the arrays of a tiny multi-object set: each image is noise in [40, 200] with one
or two solid rectangles in a pure colour per class (red, green, blue), so "where is the
object" can be read off the pixels. ``set_path`` — the same scenes written as a set file
with :func:`oacl.io.sets.write_set`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from oacl.io.sets import write_set

CLASSES = ("red", "green", "blue")
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)  # index = class


@dataclass(frozen=True)
class Scenes:
    """Arrays of a set file (schema oacl.set/1) plus the per-object masks that made them."""

    images: np.ndarray  # (N, H, W, 3) uint8
    ids: list[str]
    labels: np.ndarray  # (N,) class of the largest object
    masks: np.ndarray  # (N, H, W) {0, 1} union
    boxes: np.ndarray  # (M, 4) float32 x0, y0, x1, y1 exclusive
    box_labels: np.ndarray  # (M,)
    box_index: np.ndarray  # (N + 1,)
    backgrounds: np.ndarray  # (N,)
    object_masks: list[np.ndarray]  # M masks (H, W), one per box, in box order
    classes: tuple[str, ...] = CLASSES

    def boxes_of(self, i: int) -> np.ndarray:
        return self.boxes[self.box_index[i] : self.box_index[i + 1]]

    def box_labels_of(self, i: int) -> np.ndarray:
        return self.box_labels[self.box_index[i] : self.box_index[i + 1]]


def make_scenes(n: int = 8, size: int = 32, seed: int = 0) -> Scenes:
    """``n`` images; image i has 1 + i % 2 rectangles (left half, then right half), classes (i + j) % 3."""
    rng = np.random.default_rng(seed)
    images = rng.integers(40, 201, size=(n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    boxes, box_labels, object_masks, labels, index = [], [], [], [], [0]
    half = size // 2
    for i in range(n):
        areas = []
        for j in range(1 + i % 2):
            cls = (i + j) % 3
            w, h = rng.integers(4, half - 1), rng.integers(4, size - 2)
            x0 = j * half + rng.integers(0, half - w + 1)
            y0 = rng.integers(0, size - h + 1)
            images[i, y0 : y0 + h, x0 : x0 + w] = COLOURS[cls]
            masks[i, y0 : y0 + h, x0 : x0 + w] = 1
            obj = np.zeros((size, size), np.uint8)
            obj[y0 : y0 + h, x0 : x0 + w] = 1
            object_masks.append(obj)
            boxes.append([x0, y0, x0 + w, y0 + h])
            box_labels.append(cls)
            areas.append((w * h, cls))
        labels.append(max(areas, key=lambda a: a[0])[1])
        index.append(len(boxes))
    return Scenes(
        images=images,
        ids=[f"scene-{i:03d}" for i in range(n)],
        labels=np.array(labels, np.int64),
        masks=masks,
        boxes=np.array(boxes, np.float32),
        box_labels=np.array(box_labels, np.int64),
        box_index=np.array(index, np.int64),
        backgrounds=np.arange(n, dtype=np.int64) % 2,
        object_masks=object_masks,
    )


def write_scenes(path: Path, scenes: Scenes, *, kind: str = "multi", name: str = "tiny") -> Path:
    write_set(
        path,
        scenes.images,
        scenes.ids,
        scenes.labels,
        scenes.masks,
        scenes.boxes,
        scenes.box_labels,
        scenes.box_index,
        scenes.backgrounds,
        kind,
        list(scenes.classes),
        name,
    )
    return path


@pytest.fixture(scope="session")
def scenes() -> Scenes:
    return make_scenes()


@pytest.fixture
def set_path(tmp_path: Path, scenes: Scenes) -> Path:
    return write_scenes(tmp_path / "tiny.h5", scenes)
