"""Where the data of each split lives: the one place that decides "embedded or real, and which file
is split X". Every stage asks this module; none of them reads ``data.source`` itself.

- **Training sets** (:func:`train_set`): the TRAINING split of ``multi`` (COCO-like scenes) or
  ``single`` (ImageNet-9-like objects) as a dataset of the project's item dicts — pretraining,
  retraining and ContraCAM read it. Embedded: ``<data.root>/<set>/train.h5``; real: the COCO
  train JSON, or the Background Challenge / image-folder ORIGINAL train split.
- **Evaluation sources** (:class:`ImageSource`): labelled uint8 image batches for frozen-feature
  probes. Embedded set files are read whole (images as stored); real data goes through the
  project's datasets, each image resized (shorter side) and center-cropped to the backbone's
  input side; real object crops are cut from COCO boxes with a 20 % margin like the embedded crop
  set. :func:`crops_splits`, :func:`original_splits`, :func:`bg_sources` and
  :func:`shift_sources` map the ``data`` section to sources.
- **Other files**: the detection JSON / image pairs (:func:`detection_files`), the kNN monitor's
  bank / query sets (:func:`knn_files`), the generator's record (:func:`benchmark_record`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from oacl.config import DataConfig, Params
from oacl.data.datasets import EmbeddedSet, SampleDataset, build_dataset
from oacl.errors import ConfigError, DataError
from oacl.io.sets import open_set
from oacl.vocab import BG_VARIANTS, SETS

__all__ = [
    "REAL_CROP_MARGIN",
    "ImageSource",
    "TensorSource",
    "SetSource",
    "DatasetSource",
    "CocoCropSource",
    "DetectionFiles",
    "benchmark_record",
    "bg_sources",
    "crop_box",
    "crops_splits",
    "detection_files",
    "holdout_split",
    "knn_files",
    "original_splits",
    "shift_sources",
    "stored_side",
    "train_set",
]

log = logging.getLogger(__name__)

REAL_CROP_MARGIN = 0.2  # COCO-Crop: GT box + 20 % of its side on every side (paper appendix B.2)


def _embedded(data: DataConfig) -> bool:
    return data.source == "embedded"


# ----------------------------------------------------------------------------- training sets


def train_set(data: DataConfig, part: str, *, side: int | None = None) -> SampleDataset:
    """The TRAINING split of ``part`` (``multi`` or ``single``) as a dataset of item dicts.

    Embedded: ``<data.root>/<part>/train.h5``, images as stored (``side`` is ignored: they
    already have the backbone's size). Real: the COCO train JSON over ``multi_images`` (multi),
    the Background Challenge ``original/train`` split or the image folder ``single_root`` with its
    optional ``single_masks`` (single); with ``side`` each image (its boxes and mask with it) is
    resized to ``side`` x ``side``, aspect ratio not kept (the ContraCAM geometry,
    :mod:`oacl.io.geometry`); ``side`` 0 means "unknown" and is refused for real data.
    """
    if part not in SETS:
        raise ValueError(f"part must be one of {SETS}, got {part!r}")
    if _embedded(data):
        ds = EmbeddedSet(Path(data.root) / part / "train.h5")
        if ds.kind != part:
            raise DataError(f"{ds.set.path} holds a {ds.kind!r} set, expected {part!r}")
        return ds
    transform = None
    if side is not None:
        if side < 1:
            raise DataError(
                f"real images must be resized to the backbone's training side, but none is known ({side!r})"
            )
        transform = v2.Resize((side, side), antialias=True)
    real = data.real
    if part == "multi":
        return build_dataset(
            "coco", annotation_json=real.multi_train_json, image_dir=real.multi_images, transform=transform
        )
    if real.single_format == "bgchallenge":
        return build_dataset(
            "bgchallenge", root=real.single_root, variant="original", split="train", transform=transform
        )
    return build_dataset(
        "imagefolder", root=real.single_root, masks_root=real.single_masks or None, transform=transform
    )


def stored_side(data: DataConfig, part: str) -> int:
    """The side (px) of the embedded images of ``part``; 0 for real data, whose images vary."""
    if not _embedded(data):
        return 0
    return int(open_set(Path(data.root) / part / "train.h5").info.image_size)


def knn_files(data: DataConfig, part: str) -> tuple[str, Path, Path] | None:
    """(probe name, bank set file, query set file) of the pretraining kNN monitor for ``part``.

    Embedded only (None for real data): the object crops of ``multi`` (``crops_train`` /
    ``crops_val``) and single-object ``train`` / ``val``.
    """
    if not _embedded(data):
        return None
    root = Path(data.root)
    if part == "multi":
        return "crops", root / "multi" / "crops_train.h5", root / "multi" / "crops_val.h5"
    if part == "single":
        return "single", root / "single" / "train.h5", root / "single" / "val.h5"
    raise ValueError(f"part must be one of {SETS}, got {part!r}")


@dataclass(frozen=True)
class DetectionFiles:
    """COCO instances JSONs and the images they refer to (a folder, or an embedded set file)."""

    train_json: Path
    train_images: Path
    test_json: Path
    test_images: Path


def detection_files(data: DataConfig) -> DetectionFiles:
    """The multi-object set for detection. Embedded: ``<data.root>/multi/instances_{train,test}.json``
    over ``{train,test}.h5``; real: ``multi_train_json`` / ``multi_test_json`` over ``multi_images``."""
    if _embedded(data):
        root = Path(data.root) / "multi"
        return DetectionFiles(
            root / "instances_train.json", root / "train.h5", root / "instances_test.json", root / "test.h5"
        )
    real = data.real
    for key in ("multi_images", "multi_train_json", "multi_test_json"):
        if not getattr(real, key):
            raise ConfigError(f"params: 'data.real.{key}' must be set when data.source is 'real'")
    images = Path(real.multi_images)
    return DetectionFiles(Path(real.multi_train_json), images, Path(real.multi_test_json), images)


def benchmark_record(data: DataConfig) -> Path | None:
    """The generator's ``benchmark.json`` (class pairs, sizes) of the embedded benchmark; None for real data."""
    return Path(data.root) / "benchmark.json" if _embedded(data) else None


# ----------------------------------------------------------------------------- image sources


class ImageSource(Protocol):
    """Labelled images for feature extraction.

    ``name`` (a path, for messages), ``classes`` (names, index = label) and
    ``batches(batch_size)`` yielding (uint8 (B, 3, H, W), int64 (B,)) in a fixed order.
    """

    name: str
    classes: list[str]

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]: ...


class TensorSource:
    """Images already in memory: uint8 (N, 3, H, W) and labels (N,)."""

    def __init__(
        self, images: Tensor, labels: Tensor | np.ndarray, classes: Sequence[str], name: str = "tensor"
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels = images, torch.as_tensor(labels).long()
        if self.labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(self.labels.shape)}")
        self.classes, self.name = list(classes), name

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(0, len(self), batch_size):
            yield self.images[i : i + batch_size], self.labels[i : i + batch_size]


class SetSource:
    """An embedded set file (or rows ``indices`` of it), images as stored (the fast path)."""

    def __init__(self, path: str | Path, indices: Sequence[int] | None = None) -> None:
        self.set = open_set(path)
        self.name = str(path)
        self.classes = self.set.classes
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        all_labels = self.set.labels
        self.labels = all_labels if self.indices is None else all_labels[self.indices]
        if (self.labels < 0).any():
            i = int(np.flatnonzero(self.labels < 0)[0])
            raise DataError(f"set file {path}: row {i} has no class label (-1); a linear probe needs one per image")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        images = self.set.images  # (N, H, W, 3) uint8, read once
        rows = np.arange(images.shape[0]) if self.indices is None else self.indices
        for i in range(0, rows.shape[0], batch_size):
            sel = rows[i : i + batch_size]
            batch = images[sel[0] : sel[-1] + 1] if _contiguous(sel) else images[sel]
            yield (
                torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2),
                torch.from_numpy(self.labels[i : i + batch_size]),
            )


def _contiguous(sel: np.ndarray) -> bool:
    return sel.size > 0 and int(sel[-1]) - int(sel[0]) + 1 == sel.size and bool((np.diff(sel) == 1).all())


def _center_crop(image: Tensor, size: int) -> Tensor:
    """(3, H, W) uint8 → (3, size, size): shorter side resized to ``size`` (antialiased), then center-cropped."""
    image = TF.resize(image, size, antialias=True)
    return TF.center_crop(image, [size, size])


class DatasetSource:
    """A dataset of the project's item dicts (real data), each image resized + center-cropped to ``size``.

    ``size`` 0 keeps the images as they are (they must then share one size).
    """

    def __init__(self, dataset: Any, size: int, name: str, indices: Sequence[int] | None = None) -> None:
        self.dataset, self.size, self.name = dataset, int(size), name
        self.classes = list(dataset.classes)
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(0, len(self), batch_size):
            images, labels = [], []
            for j in self.indices[i : i + batch_size]:
                item = self.dataset[int(j)]
                img = item["image"].as_subclass(Tensor)
                images.append(_center_crop(img, self.size) if self.size else img)
                labels.append(int(item["label"]))
            if len({tuple(im.shape) for im in images}) > 1:
                raise DataError(f"{self.name}: images of different sizes; set the backbone's image_size to resize them")
            yield torch.stack(images), torch.as_tensor(labels, dtype=torch.int64)


def crop_box(image: np.ndarray, box: Sequence[float], margin: float, size: int) -> np.ndarray:
    """(H, W, 3) uint8 → (size, size, 3): box x0, y0, x1, y1 grown by ``margin`` × side per side, clipped, resized.

    The embedded crop set's rule (bilinear; area when shrinking).
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    cx0, cy0 = int(max(0, np.floor(x0 - margin * bw))), int(max(0, np.floor(y0 - margin * bh)))
    cx1, cy1 = int(min(w, np.ceil(x1 + margin * bw))), int(min(h, np.ceil(y1 + margin * bh)))
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"box {list(box)} is empty inside the {w}x{h} image")
    patch = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
    interp = cv2.INTER_AREA if max(cx1 - cx0, cy1 - cy0) > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


class CocoCropSource:
    """Object crops of a COCO-style dataset: every GT box + ``margin``, resized to ``size`` (label = box class)."""

    def __init__(
        self,
        dataset: Any,
        size: int,
        name: str,
        *,
        margin: float = REAL_CROP_MARGIN,
        indices: Sequence[int] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1 for object crops, got {size!r}")
        self.dataset, self.size, self.margin, self.name = dataset, int(size), float(margin), name
        self.classes = list(dataset.classes)
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        crops: list[np.ndarray] = []
        labels: list[int] = []
        for j in self.indices:
            item = self.dataset[int(j)]
            image = item["image"].as_subclass(Tensor).permute(1, 2, 0).numpy()
            for box, lab in zip(np.asarray(item["boxes"]).reshape(-1, 4), item["box_labels"].tolist()):
                crops.append(crop_box(image, box, self.margin, self.size))
                labels.append(int(lab))
                if len(crops) == batch_size:
                    yield torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2), torch.as_tensor(labels)
                    crops, labels = [], []
        if crops:
            yield torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2), torch.as_tensor(labels)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of range(n) into (kept, held out), ``ceil(fraction × n)`` held out (≥ 1), both sorted."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    if n < 2:
        raise DataError(f"cannot hold out a validation split from {n} image(s)")
    k = min(n - 1, max(1, int(np.ceil(fraction * n))))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


# ----------------------------------------------------------------------------- params → sources


def _need_size(size: int) -> int:
    if size < 1:
        raise ConfigError(
            "params: real images must be resized to the backbone's input side, but none is known "
            "(set 'pretrain.image_size' > 0; it is also the random variant's side)"
        )
    return size


def crops_splits(params: Params, image_size: int) -> tuple[ImageSource, ImageSource, ImageSource]:
    """(train, val, test) of the object-crop set.

    Embedded: ``<data.root>/multi/crops_{train,val,test}.h5``. Real: crops of the COCO train
    JSON's boxes (a ``lineval.val_fraction`` of its images, seeded by ``lineval.seed``,
    held out as val) and of the test JSON's, cut like the embedded set and resized to
    ``image_size``.
    """
    if _embedded(params.data):
        root = Path(params.data.root) / "multi"
        return tuple(SetSource(root / f"crops_{s}.h5") for s in ("train", "val", "test"))  # type: ignore[return-value]
    real, cfg = params.data.real, params.lineval
    size = _need_size(image_size)
    train = build_dataset("coco", annotation_json=real.multi_train_json, image_dir=real.multi_images)
    test = build_dataset("coco", annotation_json=real.multi_test_json, image_dir=real.multi_images)
    keep, held = holdout_split(len(train), cfg.val_fraction, cfg.seed)
    name = str(real.multi_train_json)
    return (
        CocoCropSource(train, size, f"{name} (crops, train part)", indices=keep),
        CocoCropSource(train, size, f"{name} (crops, held-out val part)", indices=held),
        CocoCropSource(test, size, f"{real.multi_test_json} (crops)"),
    )


def original_splits(params: Params, image_size: int) -> tuple[ImageSource, ImageSource, ImageSource]:
    """(train, val, test) of single-object ORIGINAL.

    Embedded: ``<data.root>/single/{train,val,original}.h5``. Real Background Challenge:
    ``original/train`` minus a held-out ``lineval.val_fraction`` (val), test ``original/val``.
    Real image folder: ``single_root`` split (seeded) into train / val / test with
    ``val_fraction`` of the images each for val and test.
    """
    if _embedded(params.data):
        root = Path(params.data.root) / "single"
        return tuple(SetSource(root / f"{s}.h5") for s in ("train", "val", "original"))  # type: ignore[return-value]
    real, cfg = params.data.real, params.lineval
    size = _need_size(image_size)
    if real.single_format == "bgchallenge":
        train = build_dataset("bgchallenge", root=real.single_root, variant="original", split="train", masks=False)
        test = build_dataset("bgchallenge", root=real.single_root, variant="original", split="val", masks=False)
        keep, held = holdout_split(len(train), cfg.val_fraction, cfg.seed)
        where = Path(real.single_root) / "original"
        return (
            DatasetSource(train, size, f"{where / 'train'} (train part)", keep),
            DatasetSource(train, size, f"{where / 'train'} (held-out val part)", held),
            DatasetSource(test, size, str(where / "val")),
        )
    data = build_dataset("imagefolder", root=real.single_root)
    rest, test_idx = holdout_split(len(data), cfg.val_fraction, cfg.seed)
    keep, held = holdout_split(len(rest), cfg.val_fraction / (1.0 - cfg.val_fraction), cfg.seed + 1)
    where = str(real.single_root)
    return (
        DatasetSource(data, size, f"{where} (train part)", rest[keep]),
        DatasetSource(data, size, f"{where} (held-out val part)", rest[held]),
        DatasetSource(data, size, f"{where} (held-out test part)", test_idx),
    )


def bg_sources(params: Params, image_size: int) -> dict[str, ImageSource]:
    """Background Challenge variants present: embedded ``<data.root>/single/<variant>.h5``, real ``<root>/<variant>/val``.

    A variant missing from disk is left out (with a warning); an image-folder real source has none.
    """
    out: dict[str, ImageSource] = {}
    if _embedded(params.data):
        root = Path(params.data.root) / "single"
        for v in BG_VARIANTS:
            if (root / f"{v}.h5").is_file():
                out[v] = SetSource(root / f"{v}.h5")
            else:
                log.warning("Background Challenge variant %s missing (%s)", v, root / f"{v}.h5")
        return out
    real = params.data.real
    if real.single_format != "bgchallenge":
        log.warning("data.real.single_format is %r: no Background Challenge variants to test", real.single_format)
        return out
    size = _need_size(image_size)
    for v in BG_VARIANTS:
        folder = Path(real.single_root) / v / "val"
        if folder.is_dir():
            out[v] = DatasetSource(
                build_dataset("bgchallenge", root=real.single_root, variant=v, split="val", masks=False),
                size,
                str(folder),
            )
        else:
            log.warning("Background Challenge variant %s missing (%s)", v, folder)
    return out


def shift_sources(params: Params, image_size: int, classes: Sequence[str]) -> dict[str, ImageSource]:
    """Distribution-shift sets by name (``<corruption>-<severity>``, ``sketch``, ...).

    Embedded: every ``<data.root>/shift/*.h5``. Real: every folder ``<shift_root>/<name>/``
    laid out as ``<class>/*`` with the training ``classes`` (none when shift_root is empty).
    """
    if _embedded(params.data):
        folder = Path(params.data.root) / "shift"
        return {p.stem: SetSource(p) for p in sorted(folder.glob("*.h5")) if not p.name.startswith(".")}
    root = params.data.real.shift_root
    if not root:
        return {}
    size = _need_size(image_size)
    if not Path(root).is_dir():
        raise DataError(f"shift folder {root} (data.real.shift_root) does not exist")
    return {
        p.name: DatasetSource(build_dataset("imagefolder", root=p, classes=list(classes)), size, str(p))
        for p in sorted(Path(root).iterdir())
        if p.is_dir() and not p.name.startswith(".")
    }
