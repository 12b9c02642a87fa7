"""HDF5 "set files": the on-disk form of every embedded image set (schema ``oacl.set/1``).

One file holds one split of one set — images, ids, labels, foreground masks and boxes — so
that DVC hashes a handful of files instead of thousands of PNGs. Layout (N images, M boxes)::

    /images       (N, H, W, 3) uint8   RGB
    /ids          (N,)         UTF-8   unique within the file
    /labels       (N,)         int64   class index (0-based); for "multi" scenes the class of the
                                       largest object, -1 for a scene without objects
    /masks        (N, H, W)    uint8   {0, 1}, union of the foreground objects
    /boxes        (M, 4)       float32 pixel x0, y0, x1, y1; x1, y1 exclusive (torchvision XYXY)
    /box_labels   (M,)         int64   class index of each box
    /box_index    (N + 1,)     int64   boxes of image i are rows box_index[i]:box_index[i + 1]
    /backgrounds  (N,)         int64   background family index, -1 if none
    attrs: schema = "oacl.set/1", kind ("multi" | "single" | "crops" | "shift"),
           classes (JSON list of names), image_size (= H = W), name, plus optional extras

:func:`open_set` validates a file completely except for the mask values (checked when the masks
are loaded) and returns a :class:`SetFile` that reads lazily: nothing stays open between calls
and every process (DataLoader worker) opens the file itself. :func:`write_set` writes a file
atomically with deterministic bytes (no timestamps), so regenerating identical data gives an
identical DVC hash.

Size: the ``oacl.set/1`` format's one reader, one writer and the validation both share.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from oacl.errors import DataError
from oacl.io.atomic import atomic_path

__all__ = ["SCHEMA", "SET_KINDS", "SetInfo", "SetFile", "open_set", "write_set"]

log = logging.getLogger(__name__)

SCHEMA = "oacl.set/1"
SET_KINDS = ("multi", "single", "crops", "shift")
REQUIRED_DATASETS = ("images", "ids", "labels", "masks", "boxes", "box_labels", "box_index", "backgrounds")
# Arrays small enough to read and check when a set is opened; images and masks load lazily.
_SMALL = ("ids", "labels", "boxes", "box_labels", "box_index", "backgrounds")
_STRING = h5py.string_dtype("utf-8")
_CHUNK_IMAGES = 16  # images per HDF5 chunk: per-item reads decompress at most 16 images


@dataclass(frozen=True)
class SetInfo:
    """What a set file is, read from its attributes and shapes."""

    path: Path
    name: str
    kind: str
    classes: tuple[str, ...]
    image_size: int
    num_images: int
    num_boxes: int
    extra: Mapping[str, Any]


class SetFile:
    """A validated set file, read lazily.

    ``in_memory=True`` (default): each array is read whole on first use and kept; nothing stays
    open. A DataLoader worker forked after the parent loaded an array shares it copy-on-write;
    one that did not, or one started by ``spawn`` (the cache is not pickled), reads it itself.
    ``in_memory=False``: :meth:`image` and :meth:`mask` read one item at a time through an HDF5
    handle that belongs to the process that opened it (re-opened after a fork).

    Build it with :func:`open_set`, which validates the file first.
    """

    def __init__(self, info: SetInfo, small: Mapping[str, np.ndarray], *, in_memory: bool = True) -> None:
        self.info = info
        self.in_memory = in_memory
        self._small = dict(small)
        self._cache: dict[str, np.ndarray] = {}
        self._handle: h5py.File | None = None
        self._pid = os.getpid()
        self.ids: list[str] = [str(s) for s in self._small["ids"]]

    # ------------------------------------------------------------------ basics
    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    def __len__(self) -> int:
        return self.info.num_images

    def __repr__(self) -> str:
        i = self.info
        return f"SetFile({str(i.path)!r}, kind={i.kind!r}, name={i.name!r}, images={i.num_images}, boxes={i.num_boxes})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        state["_handle"] = None
        return state

    # ------------------------------------------------------------- small arrays
    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 class index per image."""
        return self._small["labels"]

    @property
    def boxes(self) -> np.ndarray:
        """(M, 4) float32 pixel x0, y0, x1, y1 (exclusive right / bottom)."""
        return self._small["boxes"]

    @property
    def box_labels(self) -> np.ndarray:
        """(M,) int64 class index per box."""
        return self._small["box_labels"]

    @property
    def box_index(self) -> np.ndarray:
        """(N + 1,) int64; boxes of image i are rows box_index[i]:box_index[i + 1]."""
        return self._small["box_index"]

    @property
    def backgrounds(self) -> np.ndarray:
        """(N,) int64 background family per image, -1 if none."""
        return self._small["backgrounds"]

    def boxes_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (k, 4) float32 and their labels (k,) int64 of image ``i``."""
        lo, hi = int(self.box_index[i]), int(self.box_index[i + 1])
        return self.boxes[lo:hi], self.box_labels[lo:hi]

    # -------------------------------------------------------------- big arrays
    @property
    def images(self) -> np.ndarray:
        """(N, H, W, 3) uint8, read whole on first use (in this process)."""
        return self._load("images")

    @property
    def masks(self) -> np.ndarray:
        """(N, H, W) uint8 in {0, 1}, read whole on first use (in this process)."""
        return self._load("masks")

    def image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 image ``i`` (a view into the cache when ``in_memory``)."""
        if self.in_memory:
            return self.images[i]
        return self._read_item("images", i)

    def mask(self, i: int) -> np.ndarray:
        """(H, W) uint8 {0, 1} mask of image ``i``."""
        if self.in_memory:
            return self.masks[i]
        return _check_mask_values(self._read_item("masks", i), f"{self.path}: /masks[{i}]")

    def _load(self, name: str) -> np.ndarray:
        arr = self._cache.get(name)
        if arr is None:
            try:
                with h5py.File(self.path, "r") as f:
                    arr = f[name][()]
            except (OSError, KeyError) as err:
                raise DataError(
                    f"set file {self.path}: cannot read /{name} ({err}); is the file truncated or replaced?"
                ) from None
            if name == "masks":
                _check_mask_values(arr, f"{self.path}: /masks")
            self._cache[name] = arr
        return arr

    def _read_item(self, name: str, i: int) -> np.ndarray:
        if self._handle is None or self._pid != os.getpid():
            # A handle inherited across fork is never used (HDF5 state is per process).
            self._pid = os.getpid()
            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as err:
                raise DataError(f"set file {self.path}: cannot open ({err})") from None
        try:
            return self._handle[name][i]
        except OSError as err:
            raise DataError(f"set file {self.path}: cannot read /{name}[{i}] ({err})") from None

    def close(self) -> None:
        """Drop the per-process HDF5 handle (if any) and the cached arrays."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None
        self._cache.clear()


# ----------------------------------------------------------------- validation


def _check_mask_values(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.size and int(arr.max()) > 1:
        bad = np.argwhere(arr > 1)[0].tolist()
        raise DataError(f"{where}: masks must hold 0 or 1, found {int(arr[tuple(bad)])} at index {bad}")
    return arr


def _check_arrays(
    where: str,
    *,
    images_shape: tuple[int, ...],
    images_dtype: np.dtype,
    masks_shape: tuple[int, ...],
    masks_dtype: np.dtype,
    small: Mapping[str, np.ndarray],
    kind: str,
    classes: Sequence[str],
) -> None:
    """Raise :class:`DataError` naming ``where`` on the first inconsistency of a set's arrays."""
    if kind not in SET_KINDS:
        raise DataError(f"{where}: kind {kind!r} is not one of {list(SET_KINDS)}")
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise DataError(f"{where}: classes must be a non-empty list of names, got {list(classes)!r}")
    if len(set(classes)) != len(classes):
        raise DataError(f"{where}: class names repeat: {list(classes)!r}")
    num_classes = len(classes)

    if len(images_shape) != 4 or images_shape[3] != 3:
        raise DataError(f"{where}: /images must be (N, H, W, 3), got shape {images_shape}")
    if images_dtype != np.uint8:
        raise DataError(f"{where}: /images must be uint8, got {images_dtype}")
    n, h, w = images_shape[:3]
    if n == 0:
        raise DataError(f"{where}: the set holds no images")
    if h != w:
        raise DataError(f"{where}: images must be square, got H={h}, W={w}")
    if masks_shape != (n, h, w):
        raise DataError(f"{where}: /masks shape {masks_shape} does not match /images (N, H, W) = {(n, h, w)}")
    if masks_dtype != np.uint8:
        raise DataError(f"{where}: /masks must be uint8, got {masks_dtype}")

    for name in ("ids", "labels", "backgrounds"):
        if small[name].shape != (n,):
            raise DataError(f"{where}: /{name} has shape {small[name].shape}, expected ({n},) like /images")
    for name in ("labels", "box_labels", "box_index", "backgrounds"):
        if not np.issubdtype(small[name].dtype, np.integer):
            raise DataError(f"{where}: /{name} must be integer, got {small[name].dtype}")

    ids = small["ids"]
    if not all(isinstance(s, str) and s for s in ids):
        raise DataError(f"{where}: /ids must be non-empty strings")
    if len(set(ids)) != n:
        seen: set[str] = set()
        for s in ids:
            if s in seen:
                raise DataError(f"{where}: /ids are not unique, {s!r} appears more than once")
            seen.add(s)

    labels = small["labels"]
    low = -1 if kind == "multi" else 0
    bad = np.flatnonzero((labels < low) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{where}: /labels[{i}] = {int(labels[i])} (id {ids[i]!r}) is outside [{low}, {num_classes})")
    bad = np.flatnonzero(small["backgrounds"] < -1)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{where}: /backgrounds[{i}] = {int(small['backgrounds'][i])} is below -1")

    boxes, box_labels, box_index = small["boxes"], small["box_labels"], small["box_index"]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{where}: /boxes must be (M, 4), got shape {boxes.shape}")
    m = boxes.shape[0]
    if box_labels.shape != (m,):
        raise DataError(f"{where}: /box_labels has shape {box_labels.shape}, expected ({m},) like /boxes")
    if box_index.shape != (n + 1,):
        raise DataError(f"{where}: /box_index has shape {box_index.shape}, expected ({n + 1},) = N + 1")
    if box_index[0] != 0 or box_index[-1] != m:
        raise DataError(
            f"{where}: /box_index must start at 0 and end at M = {m}, got {int(box_index[0])} ... {int(box_index[-1])}"
        )
    steps = np.diff(box_index)
    if (steps < 0).any():
        i = int(np.flatnonzero(steps < 0)[0])
        raise DataError(f"{where}: /box_index decreases at image {i} ({int(box_index[i])} -> {int(box_index[i + 1])})")
    if m:
        x0, y0, x1, y1 = boxes.T
        ok = np.isfinite(boxes).all(1) & (x0 >= 0) & (y0 >= 0) & (x1 <= w) & (y1 <= h) & (x0 < x1) & (y0 < y1)
        if not ok.all():
            j = int(np.flatnonzero(~ok)[0])
            img = int(np.searchsorted(box_index, j, side="right") - 1)
            raise DataError(
                f"{where}: /boxes[{j}] = {boxes[j].tolist()} (image {ids[img]!r}) is empty or outside the "
                f"{w}x{h} image (need 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h})"
            )
        bad = np.flatnonzero((box_labels < 0) | (box_labels >= num_classes))
        if bad.size:
            j = int(bad[0])
            raise DataError(f"{where}: /box_labels[{j}] = {int(box_labels[j])} is outside [0, {num_classes})")


def _attr_str(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (str for bytes, int / float for numpy scalars)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value.item() if isinstance(value, np.generic) else value


def open_set(path: str | Path, *, in_memory: bool = True) -> SetFile:
    """Open and validate the set file at ``path``; see the module docstring for the schema.

    Raises :class:`DataError` naming the file and the problem: missing, not HDF5 / truncated,
    wrong schema, missing datasets or attributes, N differing between datasets, a bad
    box_index, a box outside its image, labels out of range, repeated ids.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"set file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"set file {path} is not a readable HDF5 file (truncated or corrupt?): {err}") from None
    where = f"set file {path}"
    try:
        with f:
            schema = _attr_str(f.attrs.get("schema"))
            if schema != SCHEMA:
                raise DataError(f"{where}: schema is {schema!r}, expected {SCHEMA!r}")
            missing = [d for d in REQUIRED_DATASETS if not isinstance(f.get(d), h5py.Dataset)]
            if missing:
                raise DataError(f"{where}: missing dataset(s) {', '.join('/' + d for d in missing)}")
            for key in ("kind", "classes", "image_size", "name"):
                if key not in f.attrs:
                    raise DataError(f"{where}: missing attribute {key!r}")
            kind = _attr_str(f.attrs["kind"])
            try:
                classes = json.loads(_attr_str(f.attrs["classes"]))
            except (TypeError, ValueError):
                raise DataError(f"{where}: attribute 'classes' is not a JSON list: {f.attrs['classes']!r}") from None
            if not isinstance(classes, list):
                raise DataError(f"{where}: attribute 'classes' is not a JSON list: {classes!r}")
            small: dict[str, np.ndarray] = {}
            for name in _SMALL:
                ds = f[name]
                small[name] = ds.asstr()[()] if name == "ids" and ds.dtype.kind == "O" else ds[()]
            if small["ids"].dtype.kind != "O":
                raise DataError(f"{where}: /ids must be UTF-8 strings, got {small['ids'].dtype}")
            images, masks = f["images"], f["masks"]
            _check_arrays(
                where,
                images_shape=images.shape,
                images_dtype=images.dtype,
                masks_shape=masks.shape,
                masks_dtype=masks.dtype,
                small=small,
                kind=kind,
                classes=classes,
            )
            n, h = images.shape[:2]
            image_size = _attr_str(f.attrs["image_size"])
            if not isinstance(image_size, int) or image_size != h:
                raise DataError(f"{where}: attribute image_size = {image_size!r} but the images are {h}x{h}")
            known = {"schema", "kind", "classes", "image_size", "name"}
            extra = {k: _attr_str(v) for k, v in f.attrs.items() if k not in known}
            info = SetInfo(
                path=path,
                name=str(_attr_str(f.attrs["name"])),
                kind=kind,
                classes=tuple(classes),
                image_size=h,
                num_images=n,
                num_boxes=int(small["boxes"].shape[0]),
                extra=extra,
            )
    except OSError as err:  # a read failing inside a file whose header opened (truncation)
        raise DataError(f"{where}: read failed (truncated or corrupt?): {err}") from None
    small["ids"] = np.asarray([str(s) for s in small["ids"]], dtype=object)
    for name in ("labels", "box_labels", "box_index", "backgrounds"):
        small[name] = small[name].astype(np.int64, copy=False)
    small["boxes"] = small["boxes"].astype(np.float32, copy=False)
    return SetFile(info, small, in_memory=in_memory)


# --------------------------------------------------------------------- writer


def write_set(
    path: str | Path,
    images: np.ndarray,
    ids: Sequence[str],
    labels: np.ndarray | Sequence[int],
    masks: np.ndarray,
    boxes: np.ndarray,
    box_labels: np.ndarray | Sequence[int],
    box_index: np.ndarray | Sequence[int],
    backgrounds: np.ndarray | Sequence[int],
    kind: str,
    classes: Sequence[str],
    name: str,
    *,
    attrs: Mapping[str, Any] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
    compression: str | None = "gzip",
) -> int:
    """Validate the arrays and write them as a set file, atomically and byte-reproducibly.

    The one writer of the format: the benchmark generator and the tests' fixtures both use it.
    Returns the file's size in bytes.

    Args:
        images: (N, H, W, 3) uint8 RGB, H == W.
        ids: N unique non-empty strings.
        labels: (N,) class indices in [0, K) (-1 allowed for ``kind="multi"``).
        masks: (N, H, W) uint8 in {0, 1}.
        boxes: (M, 4) pixel x0, y0, x1, y1, exclusive right/bottom, inside the image.
        box_labels: (M,) class indices; box_index: (N + 1,) offsets into boxes.
        backgrounds: (N,) background family, -1 if none.
        kind: one of :data:`SET_KINDS`; classes: the K class names; name: the set's name.
        attrs: extra JSON-able attributes (e.g. ``{"variant": "mixed_rand"}``); stored as JSON
            strings unless already str / int / float (numpy scalars included).
        extra: additional datasets of N rows by name (e.g. ``bg_donors``); those of rank >= 3
            (per-image maps) are chunked and compressed like the images.
        compression: "gzip" (level 6) or None for images, masks and per-image maps.

    Raises :class:`DataError` (with the path) when the arrays break the schema; nothing is
    written then.
    """
    path = Path(path)
    images = np.asarray(images)
    masks = np.asarray(masks)
    small = {
        "ids": np.asarray(list(ids), dtype=object),
        "labels": np.asarray(labels, dtype=np.int64),
        "boxes": np.asarray(boxes, dtype=np.float32),
        "box_labels": np.asarray(box_labels, dtype=np.int64).reshape(-1),
        "box_index": np.asarray(box_index, dtype=np.int64),
        "backgrounds": np.asarray(backgrounds, dtype=np.int64),
    }
    if small["boxes"].size == 0:
        small["boxes"] = small["boxes"].reshape(0, 4)
    where = f"write_set {path}"
    _check_arrays(
        where,
        images_shape=images.shape,
        images_dtype=images.dtype,
        masks_shape=masks.shape,
        masks_dtype=masks.dtype,
        small=small,
        kind=kind,
        classes=list(classes),
    )
    _check_mask_values(masks, f"{where}: /masks")
    extra = dict(extra or {})
    for key, arr in extra.items():
        if key in REQUIRED_DATASETS or np.asarray(arr).shape[:1] != (images.shape[0],):
            raise DataError(
                f"{where}: extra dataset {key!r} must be new and have one row per image, got shape {np.shape(arr)}"
            )
    if compression not in ("gzip", None):
        raise ValueError(f"compression must be 'gzip' or None, got {compression!r}")
    n, h = images.shape[:2]
    big_opts: dict[str, Any] = {}
    if compression == "gzip":
        big_opts = {"compression": "gzip", "compression_opts": 6}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=False) as f:
            f.attrs["schema"] = SCHEMA
            f.attrs["kind"] = kind
            f.attrs["classes"] = json.dumps(list(classes))
            f.attrs["image_size"] = np.int64(h)
            f.attrs["name"] = name
            for key, value in sorted((attrs or {}).items()):
                if key in f.attrs:
                    raise ValueError(f"extra attribute {key!r} would overwrite a schema attribute")
                plain = isinstance(value, (str, int, float, np.generic))
                f.attrs[key] = value if plain else json.dumps(value)
            chunk = min(n, _CHUNK_IMAGES)

            def put_big(key: str, arr: np.ndarray) -> None:
                f.create_dataset(key, data=arr, chunks=(chunk, *arr.shape[1:]), track_times=False, **big_opts)

            put_big("images", images)
            put_big("masks", masks)
            f.create_dataset("ids", data=small["ids"], dtype=_STRING, track_times=False)
            for key in ("labels", "boxes", "box_labels", "box_index", "backgrounds"):
                f.create_dataset(key, data=small[key], track_times=False)
            for key, arr in sorted(extra.items()):
                arr = np.asarray(arr)
                if arr.ndim >= 3:
                    put_big(key, arr)
                else:
                    f.create_dataset(key, data=arr, track_times=False)
    log.debug("wrote %s: %d images, %d boxes", path, n, small["boxes"].shape[0])
    return path.stat().st_size
