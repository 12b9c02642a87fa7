"""ContraCAM on any folder of images: ``python -m oacl.cam --checkpoint CKPT --images DIR --out masks.h5``.

:func:`cam_folder` is everything the command does (``oacl.cam.__main__`` only parses flags):

1. the model — the project's exported ``backbone.pt`` or a published checkpoint with its
   projection head (:func:`oacl.io.published.load_model`: facebookresearch/moco, the paper's
   Lightning code, solo-learn, lightly) — is rebuilt; a file without a head, of another
   architecture, or unreadable is a :class:`CheckpointError`;
2. every JPEG / PNG directly in the folder (sorted by name; any size; greyscale, palette, CMYK
   and alpha images become RGB through :func:`oacl.data.datasets.load_image`) is resized
   *whole* to S × S, each axis on its own — the ``resize-full`` geometry of
   :mod:`oacl.io.geometry` that the store declares. S is the side the checkpoint was trained
   on when it says so, else 224. Headers are checked before any work, so a file that is not an
   image fails within seconds; one that is truncated fails when it is decoded — either way a
   :class:`DataError` naming the file and nothing written;
3. :func:`oacl.cam.run_contracam` (the ``contracam`` stage's loop: seeded random negative
   batches, dense CRF, cleaning, boxes) runs with :class:`oacl.config.ContraCAMConfig`'s
   defaults (the paper's box setting: T = 10, expansion ×2, CRF) unless overridden;
4. the HDF5 store (schema ``oacl.cam/1``; ids = file names; ``mask_geometry`` =
   ``resize-full``) and, optionally, a contact sheet of the first 16 images are written
   atomically, together: both appear or neither.

Boxes are normalized x1, y1, x2, y2, so on an original W × H image they are
``box × (W, H, W, H)`` (:func:`oacl.io.geometry.boxes_to_image`); masks are laid onto it with
:func:`oacl.io.geometry.mask_to_image`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import operator
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from torchvision.transforms.v2 import functional as TF

from oacl.cam.contracam import run_contracam
from oacl.cam.pipeline import file_sha256
from oacl.config import ContraCAMConfig
from oacl.data.datasets import IMAGE_EXTENSIONS, load_image
from oacl.errors import ConfigError, DataError
from oacl.io.atomic import atomic_path
from oacl.models.backbones import layer4_stride
from oacl.perf import resolve_device

__all__ = ["DEFAULT_SIDE", "SHEET_IMAGES", "FolderCamResult", "FolderImages", "cam_folder", "list_images"]

log = logging.getLogger(__name__)

DEFAULT_SIDE = 224  # input side when the checkpoint does not record one (ImageNet training)
SHEET_IMAGES = 16


def list_images(folder: str | Path) -> list[Path]:
    """The JPEG / PNG files directly in ``folder`` (extension, any case), sorted by name.

    :class:`DataError` when the folder does not exist or holds none.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    paths = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not paths:
        raise DataError(f"image folder {folder} holds no JPEG / PNG images ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def _header_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file's header, without decoding the pixels; :class:`DataError` naming the file."""
    try:
        with PILImage.open(path) as im:
            w, h = im.size
    except Exception as err:  # PIL raises many types on garbage (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise DataError(f"image file {path} cannot be decoded (corrupt or not an image): {err}") from None
    if w < 1 or h < 1:
        raise DataError(f"image file {path} is empty ({w}x{h})")
    return h, w


class FolderImages:
    """The images of a folder as ContraCAM reads them: item dicts ``{"image": uint8 (3, S, S), "id": file name}``.

    Each image is decoded with :func:`oacl.data.datasets.load_image` and resized whole to
    ``side`` × ``side`` (antialiased, as the ``contracam`` stage resizes real images).
    ``sizes``: the (H, W) of every original, from the headers (checked when constructed).
    """

    def __init__(self, paths: list[Path], side: int) -> None:
        if side < 1:
            raise ValueError(f"side must be >= 1, got {side!r}")
        self.paths = list(paths)
        self.side = int(side)
        self.ids = [p.name for p in self.paths]
        self.sizes = [_header_size(p) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        rgb = load_image(path)  # (H, W, 3) uint8
        if rgb.shape[:2] != self.sizes[index]:
            raise DataError(f"image file {path} decodes to {rgb.shape[:2]}, its header says {self.sizes[index]}")
        image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)  # (3, H, W), a writable copy
        image = TF.resize(image, [self.side, self.side], antialias=True)  # (3, S, S): resize-full
        return {"image": image, "id": self.ids[index]}


@dataclass
class FolderCamResult:
    """What :func:`cam_folder` wrote, for the caller.

    ids: N file names (the store's order); sizes: N original (H, W); boxes: N arrays (k_i, 4)
    normalized x1, y1, x2, y2; side: the S the masks have; seconds: CAM, post-processing, total.
    """

    ids: list[str]
    sizes: list[tuple[int, int]]
    boxes: list[np.ndarray]
    side: int
    checkpoint_source: str
    seconds: dict[str, float]


def cam_folder(
    checkpoint: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    sheet: str | Path | None = None,
    image_size: int | None = None,
    device: str = "auto",
    **settings: Any,
) -> FolderCamResult:
    """ContraCAM over every image of a folder → CAM store at ``out`` (and a contact sheet at ``sheet``).

    ``settings`` override fields of :class:`oacl.config.ContraCAMConfig` (``iters``,
    ``expand_res``, ``crf``, ``batch_size``, ``amp``, ``workers``, ``seed``, ...); ``image_size``
    the input side S (default: the checkpoint's, else :data:`DEFAULT_SIDE`); ``device``
    ``auto`` / ``cpu`` / ``cuda``. See the module docstring for the steps and the errors.
    """
    from oacl.cam.sheets import write_cam_sheet
    from oacl.io.camstore import CamStore, write_cam_store
    from oacl.io.geometry import RESIZE_FULL
    from oacl.io.published import load_model

    allowed = {f.name for f in dataclasses.fields(ContraCAMConfig)} - {"device"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise ConfigError(f"unknown ContraCAM settings {unknown}; known: {sorted(allowed)}")
    cfg = dataclasses.replace(ContraCAMConfig(), device=device, **settings)
    _check_settings(cfg)
    t0 = time.perf_counter()
    dev = resolve_device(device, "--device")
    paths = list_images(images)
    model = load_model(checkpoint)  # CheckpointError: missing, unreadable, foreign, another architecture
    encoder, projector = model.encoder_projector()
    side = int(image_size or model.image_size or DEFAULT_SIDE)
    stride = layer4_stride(model.stem)
    if side < stride:
        raise ConfigError(f"image_size {side} is smaller than the {model.stem} stem's total stride {stride}")
    data = FolderImages(paths, side)
    log.info(
        "contracam on %s: %d images -> %d x %d, %s (%s %s/%s), T=%d, expand x%d, CRF %s, %s",
        images,
        len(data),
        side,
        side,
        checkpoint,
        model.source,
        model.arch,
        model.stem,
        cfg.iters,
        cfg.expand_res,
        cfg.crf,
        dev,
    )
    torch.manual_seed(cfg.seed)
    result = run_contracam(encoder, projector, data, cfg, mean=model.mean, std=model.std, device=dev, progress=True)
    sha = file_sha256(checkpoint)
    params = {
        "source": "folder",
        "checkpoint_format": model.source,
        "arch": model.arch,
        **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("workers", "device")},
    }
    with contextlib.ExitStack() as stack:  # the store and the sheet appear together, or neither
        tmp_store = stack.enter_context(atomic_path(out))
        write_cam_store(
            tmp_store,
            image_ids=result.ids,
            masks=result.masks,
            boxes=result.boxes,
            masks_refined=result.masks_refined if cfg.crf else None,
            checkpoint_sha256=sha,
            params=params,
            image_size=side,
            iters=cfg.iters,
            expand_res=cfg.expand_res,
            crf=cfg.crf,
            mask_geometry=RESIZE_FULL,
        )
        CamStore(tmp_store, expected_ids=data.ids).close()
        if sheet is not None:
            tmp_sheet = stack.enter_context(atomic_path(sheet))
            k = min(SHEET_IMAGES, len(data))
            rgb = np.stack([data[i]["image"].permute(1, 2, 0).numpy() for i in range(k)])  # (k, S, S, 3)
            write_cam_sheet(
                tmp_sheet,
                rgb,
                result.masks[:k],
                result.masks_refined[:k],
                result.boxes[:k],
                title=f"ContraCAM on {Path(images).name} (T={cfg.iters}, x{cfg.expand_res}, CRF {cfg.crf}, {side} px)",
            )
    total = time.perf_counter() - t0
    seconds = {
        "cam": round(result.seconds_cam, 3),
        "postprocess": round(result.seconds_postprocess, 3),
        "total": round(total, 3),
    }
    log.info(
        "wrote %s%s: %d images, %.2f boxes per image, %.3f s per image (CAM %.1f s, post-processing %.1f s)",
        out,
        f" and {sheet}" if sheet is not None else "",
        len(data),
        float(np.mean([len(b) for b in result.boxes])),
        total / len(data),
        result.seconds_cam,
        result.seconds_postprocess,
    )
    return FolderCamResult(result.ids, list(data.sizes), result.boxes, side, model.source, seconds)


# the bounds of oacl.config.spec: name -> (sign, test)
_BOUNDS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}


def _check_settings(cfg: ContraCAMConfig) -> None:
    """The bounds :class:`ContraCAMConfig` declares for params.yaml, applied to values given as arguments."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        for key, (sign, holds) in _BOUNDS.items():
            bound = f.metadata.get(key)
            if bound is not None and not holds(value, bound):
                raise ConfigError(f"{f.name} = {value!r} is out of range (must be {sign} {bound})")
    if cfg.expand_res not in (1, 2, 4):
        raise ConfigError(f"expand_res must be 1, 2 or 4, got {cfg.expand_res!r}")
