"""The ContraCAM export: one HDF5 file per data set (schema "oacl.cam/1", DESIGN.md A).

Layout::

    /image_ids      (N,)      UTF-8 strings, dataset order, unique
    /masks          (N, H, W) uint8  soft ContraCAM mask x 255 (before CRF)
    /masks_refined  (N, H, W) uint8  {0, 1} mask after CRF and cleaning (optional)
    /boxes          (M, 4)    float32 normalized x1, y1, x2, y2 in [0, 1], margin applied
    /box_index      (N+1,)    int64  boxes of image i: rows box_index[i]:box_index[i+1]
    attrs: schema, checkpoint_sha256, params (JSON), image_size, iters, expand_res, crf,
           mask_geometry (optional; "resize-full" when absent)

The masks are at ``image_size`` (the backbone's input side), not at each original image's
size; ``mask_geometry`` says how that square maps onto the original (:mod:`oacl.io.geometry`:
``resize-full``, the whole image resized, each axis on its own). Consumers lay a mask onto
an image with :func:`oacl.io.geometry.mask_to_image` and boxes with
:func:`~oacl.io.geometry.boxes_to_image`, never by assuming equal sizes.

:func:`write_cam_store` writes it atomically with deterministic bytes (no
timestamps, fixed chunking, gzip). :class:`CamStore` reads it: it validates the
file once, keeps the ids and boxes in memory, and opens the HDF5 file lazily in
each process that reads masks (safe to hand to DataLoader workers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from oacl.errors import DataError
from oacl.io.atomic import atomic_path
from oacl.io.geometry import MASK_GEOMETRIES, RESIZE_FULL

__all__ = ["CAM_SCHEMA", "CamStore", "write_cam_store"]

CAM_SCHEMA = "oacl.cam/1"
_MASK_CHUNK = 64  # images per chunk
_BOX_CHUNK = 4096  # boxes per chunk
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
_REQUIRED_ATTRS = ("schema", "checkpoint_sha256", "params", "image_size", "iters", "expand_res", "crf")


def _dataset(f: h5py.File, name: str, data: np.ndarray, chunk_rows: int) -> None:
    """Create a chunked, compressed dataset without timestamps (empty arrays are stored plain)."""
    if data.shape[0] == 0:
        f.create_dataset(name, data=data, track_times=False)
        return
    chunks = (min(chunk_rows, data.shape[0]),) + data.shape[1:]
    f.create_dataset(name, data=data, chunks=chunks, track_times=False, **_COMPRESSION)


def write_cam_store(
    path: str | Path,
    *,
    image_ids: Sequence[str],
    masks: np.ndarray,
    boxes: Sequence[np.ndarray],
    masks_refined: np.ndarray | None = None,
    checkpoint_sha256: str,
    params: Mapping[str, Any],
    image_size: int | Sequence[int],
    iters: int,
    expand_res: int,
    crf: bool,
    mask_geometry: str = RESIZE_FULL,
) -> None:
    """Write a CAM store atomically (the file appears complete or not at all).

    image_ids: N unique strings; masks: (N, H, W) uint8 soft mask x 255;
    boxes: N arrays (k_i, 4) of normalized x1, y1, x2, y2 in [0, 1];
    masks_refined: optional (N, H, W) uint8 in {0, 1}; mask_geometry: how the
    (H, W) masks map onto each original image, a key of
    :data:`oacl.io.geometry.MASK_GEOMETRIES`; the remaining arguments become
    attributes (``params`` as sorted JSON). The same inputs give the same bytes.
    """
    if mask_geometry not in MASK_GEOMETRIES:
        raise ValueError(f"mask_geometry must be one of {sorted(MASK_GEOMETRIES)}, got {mask_geometry!r}")
    ids = [str(i) for i in image_ids]
    n = len(ids)
    if len(set(ids)) != n:
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"image ids must be unique, {dup!r} repeats")
    masks = np.asarray(masks)
    if masks.dtype != np.uint8 or masks.ndim != 3 or masks.shape[0] != n:
        raise ValueError(f"masks must be (N={n}, H, W) uint8, got {masks.shape} {masks.dtype}")
    if masks_refined is not None:
        masks_refined = np.asarray(masks_refined)
        if masks_refined.dtype != np.uint8 or masks_refined.shape != masks.shape:
            raise ValueError(
                f"masks_refined must be {masks.shape} uint8, got {masks_refined.shape} {masks_refined.dtype}"
            )
        if masks_refined.size and masks_refined.max() > 1:
            raise ValueError(f"masks_refined must hold 0 / 1, found {int(masks_refined.max())}")
    if len(boxes) != n:
        raise ValueError(f"boxes must hold one array per image ({n}), got {len(boxes)}")
    parts = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]
    counts = np.asarray([len(b) for b in parts], dtype=np.int64)
    box_index = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    flat = np.concatenate(parts, axis=0) if parts else np.zeros((0, 4), np.float32)
    if flat.size:
        if not np.isfinite(flat).all() or flat.min() < 0.0 or flat.max() > 1.0:
            raise ValueError(f"boxes must be normalized to [0, 1], got range [{flat.min()}, {flat.max()}]")
        if (flat[:, 2] < flat[:, 0]).any() or (flat[:, 3] < flat[:, 1]).any():
            bad = flat[(flat[:, 2] < flat[:, 0]) | (flat[:, 3] < flat[:, 1])][0]
            raise ValueError(f"boxes must have x1 <= x2 and y1 <= y2, got {bad.tolist()}")
    size = [int(image_size)] * 2 if np.isscalar(image_size) else [int(s) for s in image_size]
    if len(size) != 2 or (n and tuple(size) != masks.shape[1:]):
        raise ValueError(f"image_size {image_size!r} does not match the masks' (H, W) = {masks.shape[1:]}")

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(
                "image_ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype("utf-8"), track_times=False
            )
            _dataset(f, "masks", masks, _MASK_CHUNK)
            if masks_refined is not None:
                _dataset(f, "masks_refined", masks_refined, _MASK_CHUNK)
            _dataset(f, "boxes", flat, _BOX_CHUNK)
            f.create_dataset("box_index", data=box_index, track_times=False)
            f.attrs["schema"] = CAM_SCHEMA
            f.attrs["checkpoint_sha256"] = str(checkpoint_sha256)
            f.attrs["params"] = json.dumps(dict(params), sort_keys=True, default=str)
            # an int for square images (as in the data set files), else [H, W]
            f.attrs["image_size"] = size[0] if size[0] == size[-1] else np.asarray(size, dtype=np.int64)
            f.attrs["iters"] = int(iters)
            f.attrs["expand_res"] = int(expand_res)
            f.attrs["crf"] = bool(crf)
            f.attrs["mask_geometry"] = str(mask_geometry)


class CamStore:
    """Read a CAM store by image id; validates the file when constructed.

    The ids, box index and boxes (small) are read once and kept; masks are
    read on demand through an HDF5 handle opened lazily by each process (the
    object pickles without its handle, so DataLoader workers each open their
    own). Every problem with the file raises :class:`DataError` naming it.

    Args:
        path: the ``.h5`` file.
        expected_ids: if given, the ids of the data set this store must match
            (see :meth:`check_ids`).
        exact: with ``expected_ids``, require the same ids in the same order
            (else only that every expected id is present).
    """

    def __init__(self, path: str | Path, *, expected_ids: Iterable[str] | None = None, exact: bool = True) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        try:
            with h5py.File(self.path, "r") as f:
                self._validate_and_load(f)
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError(f"{self.path}: CAM store not found") from None
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise DataError(f"{self.path}: not a readable CAM store ({err})") from None
        if expected_ids is not None:
            self.check_ids(expected_ids, exact=exact)

    # -- validation ----------------------------------------------------------------------
    def _fail(self, what: str) -> DataError:
        return DataError(f"{self.path}: {what}")

    def _validate_and_load(self, f: h5py.File) -> None:
        schema = f.attrs.get("schema")
        if isinstance(schema, bytes):
            schema = schema.decode()
        if schema != CAM_SCHEMA:
            raise self._fail(f"schema is {schema!r}, expected {CAM_SCHEMA!r}")
        missing = [a for a in _REQUIRED_ATTRS if a not in f.attrs]
        if missing:
            raise self._fail(f"missing attributes {missing}")
        for name in ("image_ids", "masks", "boxes", "box_index"):
            if name not in f:
                raise self._fail(f"missing dataset /{name}")
        ids = [str(s) for s in f["image_ids"].asstr()[()]]
        n = len(ids)
        if len(set(ids)) != n:
            raise self._fail("image ids are not unique")
        masks = f["masks"]
        if masks.dtype != np.uint8 or masks.ndim != 3 or masks.shape[0] != n:
            raise self._fail(f"/masks must be (N={n}, H, W) uint8, found {masks.shape} {masks.dtype}")
        size = tuple(int(s) for s in np.atleast_1d(f.attrs["image_size"]))
        size = size * 2 if len(size) == 1 else size
        if n and masks.shape[1:] != size:
            raise self._fail(f"/masks are {masks.shape[1:]} but attribute image_size is {size}")
        # stores written before the attribute existed were all made by resizing whole images
        geometry = _text(f.attrs.get("mask_geometry", RESIZE_FULL))
        if geometry not in MASK_GEOMETRIES:
            raise self._fail(
                f"attribute mask_geometry is {geometry!r}, this reader knows {sorted(MASK_GEOMETRIES)}; "
                "rerun its contracam stage with this version"
            )
        self.has_refined = "masks_refined" in f
        if self.has_refined:
            ref = f["masks_refined"]
            if ref.dtype != np.uint8 or ref.shape != masks.shape:
                raise self._fail(f"/masks_refined must be {masks.shape} uint8, found {ref.shape} {ref.dtype}")
        box_index = np.asarray(f["box_index"][()], dtype=np.int64)
        boxes = np.asarray(f["boxes"][()], dtype=np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise self._fail(f"/boxes must be (M, 4), found {boxes.shape}")
        if box_index.shape != (n + 1,) or box_index[0] != 0 or box_index[-1] != len(boxes):
            raise self._fail(f"/box_index must be (N+1={n + 1},) from 0 to M={len(boxes)}, found {box_index.shape}")
        if (np.diff(box_index) < 0).any():
            raise self._fail("/box_index is not non-decreasing")
        if boxes.size and (not np.isfinite(boxes).all() or boxes.min() < 0 or boxes.max() > 1):
            raise self._fail("/boxes are not normalized to [0, 1]")
        self.ids: tuple[str, ...] = tuple(ids)
        self._index = {s: i for i, s in enumerate(ids)}
        self.image_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.mask_geometry: str = geometry
        self.box_index = box_index
        self.all_boxes = boxes
        attrs = {k: f.attrs[k] for k in _REQUIRED_ATTRS}
        self.attrs: dict[str, Any] = {
            "schema": CAM_SCHEMA,
            "checkpoint_sha256": _text(attrs["checkpoint_sha256"]),
            "params": json.loads(_text(attrs["params"])),
            "image_size": list(self.image_size),
            "iters": int(attrs["iters"]),
            "expand_res": int(attrs["expand_res"]),
            "crf": bool(attrs["crf"]),
            "mask_geometry": geometry,
        }

    def check_ids(self, dataset_ids: Iterable[str], *, exact: bool = True) -> None:
        """Raise :class:`DataError` unless the store covers ``dataset_ids``.

        exact: same ids in the same order; otherwise every id must be present.
        """
        want = [str(i) for i in dataset_ids]
        if exact and tuple(want) == self.ids:
            return
        missing = [i for i in want if i not in self._index]
        if missing:
            raise self._fail(
                f"{len(missing)} of the data set's {len(want)} image ids are not in the CAM store "
                f"(first: {missing[0]!r}); it was made for another data set — rerun its contracam stage"
            )
        if exact:
            if len(want) != len(self.ids):
                raise self._fail(f"the store has {len(self.ids)} images, the data set {len(want)}")
            first = next(k for k, (a, b) in enumerate(zip(want, self.ids)) if a != b)
            raise self._fail(
                f"image ids are in another order than the data set's (position {first}: "
                f"{self.ids[first]!r} vs {want[first]!r})"
            )

    # -- access ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index

    def index_of(self, image_id: str) -> int:
        """Row of ``image_id``; :class:`DataError` if absent."""
        try:
            return self._index[image_id]
        except KeyError:
            raise self._fail(f"image id {image_id!r} is not in the CAM store") from None

    def _handle(self) -> h5py.File:
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as err:
                raise self._fail(f"cannot open ({err})") from None
            self._pid = pid
        return self._file

    def _read(self, name: str, row: int) -> np.ndarray:
        try:
            return np.asarray(self._handle()[name][row])
        except (OSError, KeyError) as err:
            raise self._fail(f"cannot read /{name}[{row}] ({err}); the file may be truncated") from None

    def mask(self, image_id: str) -> np.ndarray:
        """Soft mask of ``image_id`` at the store's size, (H, W) = ``image_size`` uint8 (value / 255 = CAM in [0, 1]).

        On an image of another size: :func:`oacl.io.geometry.mask_to_image` with ``mask_geometry``.
        """
        return self._read("masks", self.index_of(image_id))

    def refined_mask(self, image_id: str) -> np.ndarray:
        """Refined binary mask of ``image_id`` at the store's size, (H, W) uint8 in {0, 1}."""
        if not self.has_refined:
            raise self._fail("has no /masks_refined (CRF did not run)")
        return self._read("masks_refined", self.index_of(image_id))

    def boxes(self, image_id: str) -> np.ndarray:
        """Boxes of ``image_id``, (k, 4) float32 normalized x1, y1, x2, y2 (k may be 0)."""
        i = self.index_of(image_id)
        return self.all_boxes[self.box_index[i] : self.box_index[i + 1]].copy()

    def read_all(self, name: str = "masks") -> np.ndarray:
        """A whole mask array, (N, H, W) uint8 (``masks`` or ``masks_refined``)."""
        if name not in ("masks", "masks_refined"):
            raise ValueError(f"name must be 'masks' or 'masks_refined', got {name!r}")
        if name == "masks_refined" and not self.has_refined:
            raise self._fail("has no /masks_refined (CRF did not run)")
        try:
            return np.asarray(self._handle()[name][()])
        except OSError as err:
            raise self._fail(f"cannot read /{name} ({err}); the file may be truncated") from None

    def boxes_list(self) -> list[np.ndarray]:
        """Boxes of every image, in store order: N arrays (k_i, 4)."""
        return [self.all_boxes[a:b].copy() for a, b in zip(self.box_index[:-1], self.box_index[1:])]

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None

    def __enter__(self) -> CamStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
