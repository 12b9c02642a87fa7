"""Datasets over the embedded set files and over real data, all yielding one item format.

Every dataset here returns the same dict, so that the rest of the pipeline has one code path::

    {
        "image":      tv_tensors.Image uint8 (3, H, W), RGB
        "label":      int, class index (0-based); -1 when the image has no label
        "boxes":      tv_tensors.BoundingBoxes float32 (K, 4), XYXY pixels, canvas_size (H, W)
        "box_labels": torch.int64 (K,), class index of each box
        "mask":       tv_tensors.Mask uint8 (H, W) in {0, 1} (union of the foreground objects)
                      or None when the source has no mask for the image
        "id":         str, unique within the dataset
    }

``transform`` receives that whole dict and must return one like it: any
``torchvision.transforms.v2`` transform does, moving image, boxes and mask together (plain
values — label, id, box_labels, a None mask — pass through untouched). Note that
``v2.SanitizeBoundingBoxes`` must be told where the box labels are:
``labels_getter=lambda sample: sample["box_labels"]`` (its default would pick ``"label"``).

Every dataset also exposes, without decoding any image: ``classes`` (list of names, index =
label), ``ids`` (list of str, dataset order) and ``labels`` (np.ndarray (N,) int64).

Formats (registry :data:`DATASETS`, :func:`build_dataset`):

- ``embedded``    :class:`EmbeddedSet` — an HDF5 set file (:mod:`oacl.io.sets`).
- ``coco``        :class:`CocoSet` — COCO instances JSON + an image folder (or a set file).
- ``imagefolder`` :class:`ImageFolderSet` — ``<root>/<class>/*.png|jpg|jpeg`` with optional
  sidecar masks; also the way to bring "your own images with masks".
- ``bgchallenge`` :class:`BackgroundChallengeSet` — the Background Challenge (IN-9) release.

Size: the four formats (embedded, COCO, ImageFolder, Background Challenge) share one item format, its checks and the image / mask decoders; one module keeps that contract in one place.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from oacl.data.boxes import mask_boxes
from oacl.errors import DataError
from oacl.io.sets import SetFile, open_set
from oacl.vocab import BG_VARIANTS

__all__ = [
    "Sample",
    "Transform",
    "make_sample",
    "collate_samples",
    "SampleDataset",
    "EmbeddedSet",
    "CocoSet",
    "ImageFolderSet",
    "BackgroundChallengeSet",
    "IMAGE_EXTENSIONS",
    "DATASETS",
    "build_dataset",
    "load_image",
    "load_mask_file",
    "mask_to_box",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")  # compared case-insensitively (.JPEG included)
# Variants whose images still show the original foreground where fg_mask says it is.
_BG_FG_VARIANTS = ("original", "only_fg", "mixed_same", "mixed_rand", "mixed_next")
COCO_BOX_TOLERANCE = 1.0  # px a COCO box may overhang its image (float rounding in real COCO); clipped


class Sample(TypedDict):
    """One item of every dataset in this module (see the module docstring)."""

    image: tv_tensors.Image
    label: int
    boxes: tv_tensors.BoundingBoxes
    box_labels: torch.Tensor
    mask: tv_tensors.Mask | None
    id: str


Transform = Callable[[Sample], Any]


# ---------------------------------------------------------------------- items


def make_sample(
    image: np.ndarray | torch.Tensor,
    label: int,
    boxes: np.ndarray | torch.Tensor | None,
    box_labels: np.ndarray | torch.Tensor | Sequence[int] | None,
    mask: np.ndarray | torch.Tensor | None,
    id: str,
) -> Sample:
    """Build an item in the common format. Inputs are copied; the caller's arrays stay untouched.

    Args:
        image: (H, W, 3) uint8 RGB (numpy / HWC) or (3, H, W) uint8 tensor (CHW).
        label: class index, -1 for none.
        boxes: (K, 4) pixel x0, y0, x1, y1 (exclusive right/bottom) or None for no boxes.
        box_labels: (K,) class indices or None for no boxes.
        mask: (H, W) {0, 1} or None.
        id: the item's id.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) when given as numpy, got shape {image.shape}")
        chw = torch.from_numpy(image.transpose(2, 0, 1).copy())
    else:
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W) when given as a tensor, got shape {tuple(image.shape)}")
        chw = image.clone()
    if chw.dtype != torch.uint8:
        raise ValueError(f"image must be uint8, got {chw.dtype}")
    h, w = chw.shape[1:]
    box_np = np.asarray(boxes if boxes is not None else np.zeros((0, 4)), dtype=np.float32)
    lab_np = np.asarray(box_labels if box_labels is not None else [], dtype=np.int64)
    box_t = torch.from_numpy(box_np.reshape(-1, 4).copy())
    lab_t = torch.from_numpy(lab_np.reshape(-1).copy())
    if lab_t.shape[0] != box_t.shape[0]:
        raise ValueError(f"{box_t.shape[0]} boxes but {lab_t.shape[0]} box labels for {id!r}")
    mask_t = None
    if mask is not None:
        mask_t = torch.as_tensor(np.asarray(mask, dtype=np.uint8)).clone()
        if tuple(mask_t.shape) != (h, w):
            raise ValueError(f"mask of {id!r} has shape {tuple(mask_t.shape)}, image is {(h, w)}")
        if mask_t.numel() and int(mask_t.max()) > 1:
            raise ValueError(f"mask of {id!r} must hold 0 or 1, found {int(mask_t.max())}")
        mask_t = tv_tensors.Mask(mask_t)
    return {
        "image": tv_tensors.Image(chw),
        "label": int(label),
        "boxes": tv_tensors.BoundingBoxes(box_t, format="XYXY", canvas_size=(int(h), int(w))),
        "box_labels": lab_t,
        "mask": mask_t,
        "id": str(id),
    }


def collate_samples(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate items for a DataLoader; the batch keeps the item's keys.

    - ``"image"``: a tensor (B, 3, H, W) (uint8 or float, whatever the items hold) when all
      images have the same size, else a list of B tensors. When a transform returns several
      views per item (a tuple / list of tensors), a list with one such stack per view.
    - ``"label"``: int64 tensor (B,).
    - ``"boxes"``, ``"box_labels"``, ``"mask"`` (entries may be None), ``"id"`` and any other
      key: lists of length B, in batch order.
    """
    if not batch:
        raise ValueError("collate_samples got an empty batch")
    keys = list(batch[0].keys())
    out: dict[str, Any] = {}
    for key in keys:
        values = [item[key] for item in batch]
        if key == "image":
            out[key] = _stack_images(values)
        elif key == "label":
            out[key] = torch.as_tensor([int(v) for v in values], dtype=torch.int64)
        else:
            out[key] = values
    return out


def _stack_images(values: list[Any]) -> Any:
    if isinstance(values[0], (tuple, list)):
        return [_stack_images([v[k] for v in values]) for k in range(len(values[0]))]
    if all(v.shape == values[0].shape for v in values):
        return torch.stack([v.as_subclass(torch.Tensor) for v in values])
    return [v.as_subclass(torch.Tensor) for v in values]


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; :class:`DataError` naming the file on failure.

    The format is read from the content, not the extension (a PNG named ``.JPEG`` decodes);
    greyscale, palette, CMYK (Adobe-inverted too) and alpha images become RGB (alpha dropped);
    16-bit greyscale is scaled to 8 bits (PIL's own conversion would clip it at 255).
    """
    path = Path(path)
    try:
        with PILImage.open(path) as im:
            if im.mode.startswith("I;16") or im.mode == "I":
                wide = np.asarray(im).astype(np.float64)  # (H, W), 16-bit grey (mode "I": 16-bit if above 255)
                if im.mode != "I" or (wide.size and wide.max() > 255):
                    wide = wide / 257.0  # 65535 -> 255
                grey = np.clip(np.rint(wide), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"image file {path} cannot be decoded (corrupt or truncated?): {err}") from None


def load_mask_file(path: str | Path) -> np.ndarray:
    """Read a binary mask: PNG (0/1 or 0/255; grey, palette or RGB) or .npy (bool / numbers).

    Returns (H, W) uint8 in {0, 1}: a pixel is foreground when any channel is above 0 for
    0/1 data, or at least 128 when the file's maximum is above 1.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with PILImage.open(path) as im:
                arr = np.asarray(im.convert("L") if im.mode in ("P", "RGB", "RGBA", "LA") else im)
    except FileNotFoundError:
        raise DataError(f"mask file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"mask file {path} cannot be read: {err}") from None
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr.max(axis=2)
    if arr.ndim != 2:
        raise DataError(f"mask file {path} has shape {arr.shape}, expected (H, W)")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"mask file {path} holds {arr.dtype} values, expected numbers or bool")
    if arr.size and float(arr.max()) > 1:
        return (arr >= 128).astype(np.uint8)
    return (arr > 0).astype(np.uint8)


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight box (1, 4) float32 x0, y0, x1, y1 (exclusive) around the 1s of (H, W) ``mask``; (0, 4) if empty."""
    box = mask_boxes(np.asarray(mask)[None])
    return box[~np.isnan(box[:, 0])]


class SampleDataset(Dataset):
    """Base: ``__getitem__`` builds the item with :meth:`_sample`, then applies ``transform``.

    Subclasses set ``classes``, ``ids``, ``labels`` in ``__init__`` and implement ``_sample``.
    """

    classes: list[str]
    ids: list[str]
    labels: np.ndarray

    def __init__(self, transform: Transform | None = None) -> None:
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {n} items")
        sample = self._sample(index % n)
        return self.transform(sample) if self.transform is not None else sample

    def _sample(self, index: int) -> Sample:
        raise NotImplementedError


# ------------------------------------------------------------------- embedded


class EmbeddedSet(SampleDataset):
    """A set file (:mod:`oacl.io.sets`) as a dataset; ``path`` may also be an open :class:`SetFile`.

    The item's mask is the stored union mask (all zero where the set stores none, e.g. a
    background-only variant); boxes and box labels are the stored ones.
    """

    def __init__(
        self, path: str | Path | SetFile, transform: Transform | None = None, *, in_memory: bool = True
    ) -> None:
        super().__init__(transform)
        self.set = path if isinstance(path, SetFile) else open_set(path, in_memory=in_memory)
        self.classes = self.set.classes
        self.ids = self.set.ids
        self.labels = self.set.labels

    @property
    def kind(self) -> str:
        return self.set.info.kind

    def _sample(self, index: int) -> Sample:
        boxes, box_labels = self.set.boxes_of(index)
        return make_sample(
            self.set.image(index), int(self.labels[index]), boxes, box_labels, self.set.mask(index), self.ids[index]
        )


# ----------------------------------------------------------------------- COCO


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"annotation file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"annotation file {path} cannot be read: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"annotation file {path} is not valid JSON: {err}"  # "<what>: line L column C (char N)"
        ) from None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _require(entry: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(entry, Mapping):
        raise DataError(f"{where} is not a JSON object: {str(entry)[:80]}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise DataError(f"{where} lacks key(s) {missing}")


class CocoSet(SampleDataset):
    """COCO "instances" annotations over an image folder, through pycocotools.

    Args:
        annotation_json: the instances JSON (``images``, ``annotations``, ``categories``).
        image_dir: folder that ``file_name`` is relative to — or a set file (``.h5``) whose
            ``/ids`` are the ``file_name`` values (the embedded multi-object set).
        transform: applied to each item.
        include_crowd: keep ``iscrowd = 1`` annotations (dropped by default, as detection
            references do).

    Item: ``id`` = the image's ``file_name``; ``boxes`` from ``bbox`` (x, y, w, h → XYXY),
    clipped to the image (an overhang of up to :data:`COCO_BOX_TOLERANCE` px is tolerated,
    more is an error; zero-size boxes are skipped); ``box_labels`` and ``label`` are category
    *indices* (ids sorted ascending → 0..K-1, names in ``classes``, ids in ``category_ids``);
    ``label`` is the category of the largest instance (``area``, else box area; -1 for an image
    without annotations); ``mask`` = union of the instance masks (``annToMask``: polygons,
    RLE, uncompressed RLE), None when an instance of the image has no ``segmentation`` or when
    no annotation in the file has one (bounding-box-only annotations).

    Validated at construction (:class:`DataError` naming the file and the image / annotation
    id): JSON syntax, missing keys, duplicate ids, annotations of unknown images, unknown
    category ids, malformed or out-of-image boxes, RLE sizes that differ from the image.
    Image files are decoded at access: a missing or corrupt file, or one whose size differs
    from the JSON, is a DataError naming it.
    """

    def __init__(
        self,
        annotation_json: str | Path,
        image_dir: str | Path,
        transform: Transform | None = None,
        *,
        include_crowd: bool = False,
    ) -> None:
        super().__init__(transform)
        self.annotation_json = Path(annotation_json)
        self.image_dir = Path(image_dir)
        where = f"annotation file {self.annotation_json}"
        raw = _read_json(self.annotation_json)
        _require(raw, ("images", "annotations", "categories"), where)
        for key in ("images", "annotations", "categories"):
            if not isinstance(raw[key], list):
                raise DataError(f"{where}: '{key}' must be a list, got {type(raw[key]).__name__}")

        self.category_ids, self.classes = _coco_categories(raw["categories"], where)
        index_of = {c: i for i, c in enumerate(self.category_ids)}
        images = _coco_images(raw["images"], where)
        per_image: dict[Any, list[dict[str, Any]]] = {i: [] for i in images}
        ann_ids: set[Any] = set()
        skipped = 0
        for j, ann in enumerate(raw["annotations"]):
            _require(ann, ("id", "image_id", "category_id", "bbox"), f"{where}: annotations[{j}]")
            aid, iid = ann["id"], ann["image_id"]
            here = f"{where}: annotation {aid!r} (image {iid!r})"
            if aid in ann_ids:
                raise DataError(f"{where}: annotation id {aid!r} appears twice")
            ann_ids.add(aid)
            if iid not in images:
                raise DataError(f"{here} refers to an image id not in 'images'")
            if ann["category_id"] not in index_of:
                raise DataError(
                    f"{here} has category_id {ann['category_id']!r}, not among the categories {self.category_ids}"
                )
            img = images[iid]
            box = _coco_box(ann["bbox"], img["width"], img["height"], here)
            _check_segmentation(ann.get("segmentation"), img["height"], img["width"], here)
            if ann.get("iscrowd", 0) and not include_crowd:
                continue
            if box is None:
                skipped += 1
                continue
            area = ann.get("area")
            per_image[iid].append(
                {
                    "ann": ann,
                    "box": box,
                    "label": index_of[ann["category_id"]],
                    "area": float(area) if _is_number(area) else float((box[2] - box[0]) * (box[3] - box[1])),
                }
            )
        if skipped:
            log.warning("%s: skipped %d zero-size boxes", where, skipped)
        self.has_masks = any(a.get("segmentation") for a in raw["annotations"])

        coco = COCO()
        coco.dataset = raw
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
            coco.createIndex()
        self.coco = coco
        self._images = [images[img["id"]] for img in raw["images"]]
        self._anns = [per_image[img["id"]] for img in self._images]
        self.image_ids: list[Any] = [img["id"] for img in self._images]
        self.ids = [str(img["file_name"]) for img in self._images]
        self.labels = np.array(
            [max(a, key=lambda r: r["area"])["label"] if a else -1 for a in self._anns], dtype=np.int64
        )
        self._source: SetFile | None = None
        if self.image_dir.suffix in (".h5", ".hdf5"):
            self._source = open_set(self.image_dir)
            self._row = {s: i for i, s in enumerate(self._source.ids)}
            missing = [s for s in self.ids if s not in self._row]
            if missing:
                raise DataError(f"{where}: file_name {missing[0]!r} is not an id of set file {self.image_dir}")

    def _load_image(self, img: Mapping[str, Any]) -> np.ndarray:
        if self._source is not None:
            array = self._source.image(self._row[str(img["file_name"])])
            path: Path | str = f"{self.image_dir}[{img['file_name']}]"
        else:
            path = self.image_dir / str(img["file_name"])
            array = load_image(path)
        if array.shape[:2] != (img["height"], img["width"]):
            raise DataError(
                f"image {path} is {array.shape[1]}x{array.shape[0]} but {self.annotation_json} says "
                f"{img['width']}x{img['height']} (image id {img['id']!r})"
            )
        return array

    def _sample(self, index: int) -> Sample:
        img, anns = self._images[index], self._anns[index]
        array = self._load_image(img)
        mask: np.ndarray | None = None
        if self.has_masks and all(a["ann"].get("segmentation") for a in anns):
            mask = np.zeros((img["height"], img["width"]), np.uint8)
            if anns:
                union = mask_utils.merge([self.coco.annToRLE(a["ann"]) for a in anns])
                with warnings.catch_warnings():  # pycocotools' decode trips numpy 2's copy= deprecation
                    warnings.simplefilter("ignore", DeprecationWarning)
                    mask = mask_utils.decode(union).astype(np.uint8)
        boxes = np.array([a["box"] for a in anns], np.float32).reshape(-1, 4)
        box_labels = np.array([a["label"] for a in anns], np.int64)
        return make_sample(array, int(self.labels[index]), boxes, box_labels, mask, self.ids[index])


def _coco_categories(categories: list[Any], where: str) -> tuple[list[int], list[str]]:
    """Category ids sorted ascending and their names (index = class index)."""
    names: dict[int, str] = {}
    for j, cat in enumerate(categories):
        _require(cat, ("id", "name"), f"{where}: categories[{j}]")
        if not isinstance(cat["id"], int) or cat["id"] in names:
            raise DataError(f"{where}: categories[{j}] has a repeated or non-integer id {cat['id']!r}")
        names[cat["id"]] = str(cat["name"])
    ids = sorted(names)
    return ids, [names[c] for c in ids]


def _coco_images(images: list[Any], where: str) -> dict[Any, Mapping[str, Any]]:
    """Image entries by id, in file order; ids and file names unique, sizes positive."""
    by_id: dict[Any, Mapping[str, Any]] = {}
    files: set[str] = set()
    for j, img in enumerate(images):
        _require(img, ("id", "file_name", "height", "width"), f"{where}: images[{j}]")
        if img["id"] in by_id:
            raise DataError(f"{where}: image id {img['id']!r} appears twice")
        if str(img["file_name"]) in files:
            raise DataError(f"{where}: file_name {img['file_name']!r} is used by more than one image")
        name = os.path.normpath(str(img["file_name"]))
        if os.path.isabs(name) or name == os.pardir or name.startswith(os.pardir + os.sep):
            raise DataError(f"{where}: file_name {img['file_name']!r} points outside the image folder")
        h, w = img["height"], img["width"]
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            raise DataError(f"{where}: image {img['id']!r} has height/width {h!r}/{w!r}")
        by_id[img["id"]] = img
        files.add(str(img["file_name"]))
    return by_id


def _coco_box(bbox: Any, width: int, height: int, where: str) -> list[float] | None:
    """COCO [x, y, w, h] → clipped [x0, y0, x1, y1]; None for a zero-size box; DataError if malformed / outside."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise DataError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise DataError(f"{where}: bbox {bbox} has a negative width or height")
    tol = COCO_BOX_TOLERANCE
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        raise DataError(f"{where}: bbox {bbox} (x, y, w, h) lies outside the {width}x{height} image")
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        return None
    return [x0, y0, x1, y1]


def _check_segmentation(seg: Any, height: int, width: int, where: str) -> None:
    if seg is None or (isinstance(seg, list) and not seg):
        return
    if isinstance(seg, list):
        for poly in seg:
            flat = isinstance(poly, list) and all(_is_number(v) for v in poly)
            if not (flat and len(poly) >= 4 and len(poly) % 2 == 0):
                raise DataError(f"{where}: a polygon must be a flat list of x, y pairs, got {str(poly)[:80]}")
        return
    if isinstance(seg, Mapping):
        if "counts" not in seg or "size" not in seg:
            raise DataError(f"{where}: RLE segmentation needs 'counts' and 'size', got keys {sorted(seg)}")
        if list(seg["size"]) != [height, width]:
            raise DataError(
                f"{where}: RLE size {list(seg['size'])} differs from the image's [height, width] = {[height, width]}"
            )
        return
    raise DataError(f"{where}: segmentation must be polygons or RLE, got {type(seg).__name__}")


# ---------------------------------------------------------------- image folder


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


class ImageFolderSet(SampleDataset):
    """``<root>/<class>/<stem>.png|jpg|jpeg`` (any case), classes in sorted folder order.

    Args:
        root: the folder of class folders.
        transform: applied to each item.
        masks_root: optional sidecar masks, looked up per image as
            ``<masks_root>/<class>/<stem>.png|.npy``, then ``<masks_root>/<stem>.png|.npy``
            (see :func:`load_mask_file`). An image with a mask gets it and one box, the mask's
            tight bounding box labelled with the image's class (none when the mask is empty);
            an image without one gets ``mask = None`` and no boxes.
        classes: fix the class list (and so the label indices), e.g. to the training split's
            when a test split lacks a class; folders not in it are an error.

    Item ``id`` = ``"<class>/<stem>"`` (two files with one stem in one class are an error).
    """

    def __init__(
        self,
        root: str | Path,
        transform: Transform | None = None,
        *,
        masks_root: str | Path | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist")
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            self.classes = folders
        else:
            self.classes = list(classes)
            extra = sorted(set(folders) - set(self.classes))
            if extra:
                raise DataError(
                    f"image folder {self.root}: class folder {extra[0]!r} is not among the given classes {self.classes}"
                )
        if not self.classes:
            raise DataError(f"image folder {self.root} has no class folders")
        self.masks_root = Path(masks_root) if masks_root is not None else None
        if self.masks_root is not None and not self.masks_root.is_dir():
            raise DataError(f"mask folder {self.masks_root} does not exist")

        self.files: list[Path] = []
        self.mask_files: list[Path | None] = []
        self.ids = []
        labels: list[int] = []
        for label, name in enumerate(self.classes):
            folder = self.root / name
            if not folder.is_dir():
                continue
            stems: dict[str, Path] = {}
            for path in sorted(p for p in folder.iterdir() if _is_image(p)):
                if path.stem in stems:
                    raise DataError(
                        f"image folder {folder}: {stems[path.stem].name} and {path.name} share the id {name}/{path.stem}"
                    )
                stems[path.stem] = path
                self.files.append(path)
                self.mask_files.append(self._find_mask(name, path.stem))
                self.ids.append(f"{name}/{path.stem}")
                labels.append(label)
        if not self.files:
            exts = "/".join(IMAGE_EXTENSIONS)
            raise DataError(f"image folder {self.root} holds no {exts} images in its class folders")
        self.labels = np.array(labels, dtype=np.int64)

    def _find_mask(self, cls: str, stem: str) -> Path | None:
        if self.masks_root is None:
            return None
        for folder in (self.masks_root / cls, self.masks_root):
            found = [folder / f"{stem}{ext}" for ext in (".png", ".npy") if (folder / f"{stem}{ext}").is_file()]
            if len(found) > 1:
                raise DataError(f"two masks for image {cls}/{stem}: {found[0]} and {found[1]}")
            if found:
                return found[0]
        return None

    def _sample(self, index: int) -> Sample:
        path, label = self.files[index], int(self.labels[index])
        image = load_image(path)
        mask_path = self.mask_files[index]
        mask, boxes = None, np.zeros((0, 4), np.float32)
        if mask_path is not None:
            mask = load_mask_file(mask_path)
            if mask.shape != image.shape[:2]:
                (mh, mw), (ih, iw) = mask.shape, image.shape[:2]
                raise DataError(f"mask {mask_path} is {mw}x{mh} but image {path} is {iw}x{ih}")
            boxes = mask_to_box(mask)
        return make_sample(image, label, boxes, np.full(len(boxes), label, np.int64), mask, self.ids[index])


_CLASS_FOLDER = re.compile(r"^\d+_(.+)$")


class BackgroundChallengeSet(ImageFolderSet):
    """The Background Challenge (Xiao et al. 2020, "IN-9") release: ``<root>/<variant>/<split>/<class>/*``.

    ``variant`` is one of :data:`oacl.vocab.BG_VARIANTS`; class folders (``00_dog``, ``01_bird``, ...) are
    sorted, ``classes`` keeps the folder names and ``class_names`` the names without the
    number. Masks come from ``<root>/fg_mask/<split>/<class>/<stem>.npy`` when that folder
    exists, matched by file stem, for the variants that still show the foreground in place
    (original, only_fg, mixed_*); the foreground-free variants (only_bg_b, only_bg_t, no_fg)
    get ``mask = None``. Images whose stem has no mask file (e.g. renamed mixed images) get
    None too.
    """

    def __init__(
        self,
        root: str | Path,
        variant: str,
        split: str = "val",
        transform: Transform | None = None,
        *,
        masks: bool = True,
    ) -> None:
        if variant not in BG_VARIANTS:
            raise ValueError(f"variant must be one of {list(BG_VARIANTS)}, got {variant!r}")
        root = Path(root)
        folder = root / variant / split
        if not folder.is_dir():
            raise DataError(
                f"Background Challenge folder {folder} does not exist (expected <root>/<variant>/<split>/<class>/)"
            )
        mask_dir = root / "fg_mask" / split
        use_masks = masks and variant in _BG_FG_VARIANTS and mask_dir.is_dir()
        super().__init__(folder, transform, masks_root=mask_dir if use_masks else None)
        self.variant, self.split = variant, split
        self.class_names = [m.group(1) if (m := _CLASS_FOLDER.match(c)) else c for c in self.classes]


# ------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[..., SampleDataset]] = {
    "embedded": EmbeddedSet,
    "coco": CocoSet,
    "imagefolder": ImageFolderSet,
    "bgchallenge": BackgroundChallengeSet,
}


def build_dataset(kind: str, /, **kwargs: Any) -> SampleDataset:
    """Construct the dataset registered as ``kind`` in :data:`DATASETS` with ``kwargs``."""
    try:
        ctor = DATASETS[kind]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {sorted(DATASETS)}") from None
    return ctor(**kwargs)
