"""Frozen-backbone features for the evaluation stages: model variants, image sources, extraction.

- **Variants** (:func:`variant_names`): ``random`` — a randomly initialised control,
  ``build_backbone(pretrain.arch, pretrain.stem)`` under ``torch.manual_seed(lineval.seed)``;
  ``moco`` / ``byol`` — ``<models>/pretrain-<m>/backbone.pt``; ``<method>-<debias>`` —
  ``<models>/retrain-<method>-<debias>/backbone.pt``. :func:`load_variant` returns a
  :class:`FrozenBackbone`: the encoder (eval mode, CPU), its input normalisation, the state
  dict as read from disk (the sanity-check reference) and its digest.
- **Image sources** (:class:`ImageSource`): labelled uint8 image batches. Embedded set files
  are read whole (the fast path, images as stored — the "center crop" at full size); real
  data goes through the project's datasets, each image resized (shorter side) and
  center-cropped to the backbone's input side; real object crops are cut from COCO boxes
  with a 20 % margin like the embedded crop set. :func:`crops_splits`,
  :func:`original_splits`, :func:`bg_sources` and :func:`shift_sources` map the params'
  ``data`` section to sources.
- **Extraction** (:func:`extract_features`): eval mode, no grad, batches, the pooled layer4
  output (the encoder's ``fc`` is ``Identity``), optional bf16 autocast.
  :func:`frozen` checks afterwards, like MoCo's ``sanity_check``, that every tensor of the
  state dict is bit-identical to the reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from oacl.augment.views import normalize
from oacl.cam.contracam import IMAGENET_MEAN, IMAGENET_STD
from oacl.errors import CheckpointError, ConfigError, DataError
from oacl.io.checkpoint import clean_state_dict, encoder_of, read_backbone
from oacl.io.sets import open_set
from oacl.models.backbones import build_backbone
from oacl.train.engine import autocast_context

__all__ = [
    "RANDOM",
    "METHODS",
    "DEBIAS",
    "REAL_CROP_MARGIN",
    "FrozenBackbone",
    "ImageSource",
    "SetSource",
    "DatasetSource",
    "CocoCropSource",
    "TensorSource",
    "assert_unchanged",
    "bg_sources",
    "crop_box",
    "crops_splits",
    "encode",
    "extract_features",
    "frozen",
    "holdout_split",
    "load_variant",
    "original_splits",
    "parse_variant",
    "shift_sources",
    "state_digest",
    "variant_backbone_path",
    "variant_names",
]

log = logging.getLogger(__name__)

RANDOM = "random"
METHODS = ("moco", "byol")
DEBIAS = ("oacrop", "oacrop_gt", "bgmix", "hardmix", "hardmix_gt", "mixup", "cutmix")
REAL_CROP_MARGIN = 0.2  # COCO-Crop: GT box + 20 % of its side on every side (paper appendix B.2)
BG_VARIANTS = ("original", "only_fg", "only_bg_b", "only_bg_t", "no_fg", "mixed_same", "mixed_rand", "mixed_next")


# ----------------------------------------------------------------------------- variants


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


def state_digest(state: Mapping[str, Tensor]) -> str:
    """sha256 over the sorted keys, dtypes, shapes and bytes of a state dict (CPU copies)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class FrozenBackbone:
    """A model variant ready for feature extraction (see :func:`load_variant`).

    encoder: (B, 3, H, W) normalized images → (B, C) pooled features, eval mode, CPU.
    mean / std: per-channel input normalisation (of [0, 1] images). image_size: the side the
    backbone was trained on (0 = unknown; only real data needs it). reference: the state
    dict as read from disk (or as built, for ``random``); digest: :func:`state_digest` of it.
    """

    variant: str
    encoder: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    arch: str
    stem: str
    source: str
    reference: dict[str, Tensor]
    digest: str

    def feature_settings(self, amp: bool) -> dict[str, Any]:
        """What a heads file records about how its features were made."""
        return {"image_size": int(self.image_size), "mean": list(self.mean), "std": list(self.std), "amp": bool(amp),
                "arch": self.arch, "stem": self.stem, "source": self.source}  # fmt: skip


def load_variant(variant: str, params: Any, *, models_dir: str | Path = "artifacts/models") -> FrozenBackbone:
    """Load (or, for ``random``, build) the frozen encoder of ``variant``.

    ``random`` reads ``pretrain.arch``, ``pretrain.stem``, ``pretrain.image_size`` and
    ``lineval.seed`` (the global RNG state is left untouched) and uses ImageNet's mean / std
    like the pretraining views. Other variants read their exported backbone; a missing or
    foreign file (unreadable, or of another method than the variant's, another architecture
    or stem than ``pretrain.arch`` / ``pretrain.stem``) is a :class:`CheckpointError` naming it.
    """
    path = variant_backbone_path(variant, models_dir)
    if path is None:
        arch, stem, seed = params.pretrain.arch, params.pretrain.stem, params.lineval.seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = build_backbone(arch, stem)
        encoder.eval()
        reference = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        return FrozenBackbone(
            variant, encoder, tuple(IMAGENET_MEAN), tuple(IMAGENET_STD), int(params.pretrain.image_size), arch, stem,
            f"random init {arch}/{stem} (seed {seed})", reference, state_digest(reference),
        )  # fmt: skip
    cfg = params.pretrain
    obj = read_backbone(path, method=parse_variant(variant)[0], arch=cfg.arch, stem=cfg.stem)
    encoder = encoder_of(obj, path)
    reference = clean_state_dict(obj["encoder"])
    mean, std = obj.get("mean", IMAGENET_MEAN), obj.get("std", IMAGENET_STD)
    if len(mean) != 3 or len(std) != 3:
        raise CheckpointError(f"backbone file {path} records a mean / std of {len(mean)} / {len(std)} channels, expected 3")
    return FrozenBackbone(
        variant, encoder, tuple(float(m) for m in mean), tuple(float(s) for s in std), int(obj.get("image_size", 0)),
        str(obj["arch"]), str(obj["stem"]), str(path), reference, state_digest(reference),
    )  # fmt: skip


def assert_unchanged(module: nn.Module, reference: Mapping[str, Tensor], where: str = "backbone") -> None:
    """MoCo's ``sanity_check``: every tensor of ``module.state_dict()`` equals ``reference`` bit for bit.

    Raises RuntimeError naming the first key that differs (or is missing / extra).
    """
    state = clean_state_dict(module.state_dict())
    if set(state) != set(reference):
        extra = sorted(set(state) ^ set(reference))
        raise RuntimeError(f"sanity check failed for {where}: state dict keys differ from the reference ({extra[:3]})")
    for key in sorted(state):
        a, b = state[key].detach().cpu(), reference[key].detach().cpu()
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            raise RuntimeError(f"sanity check failed for {where}: {key!r} changed during feature extraction")


@contextlib.contextmanager
def frozen(backbone: FrozenBackbone, device: torch.device | str = "cpu") -> Iterator[nn.Module]:
    """Yield the encoder in eval mode without gradients on ``device``; check it is unchanged on exit.

    The check (:func:`assert_unchanged` against the weights read from disk) runs when the
    block ends without an exception.
    """
    enc = backbone.encoder
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    enc.to(device)
    yield enc
    assert_unchanged(enc, backbone.reference, backbone.source)
    log.info("sanity check passed: %s is bit-identical to %s", backbone.variant, backbone.source)




# ----------------------------------------------------------------------------- extraction


def encode(
    encoder: nn.Module, images: Tensor, mean: Sequence[float], std: Sequence[float], *, amp: bool = False
) -> Tensor:
    """Pooled features (B, C) float32 of uint8 images (B, 3, H, W), on the encoder's device, no grad."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    device = next(iter(encoder.parameters()), torch.empty(0)).device
    with torch.no_grad(), autocast_context(device, amp):
        out = encoder(normalize(images.to(device), mean, std))
    if out.dim() != 2:
        raise ValueError(f"the encoder must return pooled (B, C) features, got shape {tuple(out.shape)}")
    return out.float()


def extract_features(
    encoder: nn.Module,
    source: "ImageSource",
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int = 256,
    amp: bool = False,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Features (N, C) float32 and labels (N,) int64 (both CPU) of every image of ``source``.

    The encoder runs in eval mode (its mode is restored afterwards) under ``torch.no_grad``;
    ``device`` defaults to the encoder's. Batches of ``batch_size`` images.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if device is not None:
        encoder.to(device)
    was_training = encoder.training
    encoder.eval()
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    try:
        for images, y in source.batches(batch_size):
            feats.append(encode(encoder, images, mean, std, amp=amp).cpu())
            labels.append(y.long().cpu())
    finally:
        encoder.train(was_training)
    if not feats:
        raise DataError(f"{source.name} holds no images")
    return torch.cat(feats), torch.cat(labels)


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

    def __init__(self, images: Tensor, labels: Tensor | np.ndarray, classes: Sequence[str], name: str = "tensor") -> None:
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
            yield torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2), torch.from_numpy(self.labels[i : i + batch_size])


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

    def __init__(self, dataset: Any, size: int, name: str, *, margin: float = REAL_CROP_MARGIN, indices: Sequence[int] | None = None) -> None:
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


def crops_splits(params: Any, image_size: int) -> tuple[ImageSource, ImageSource, ImageSource]:
    """(train, val, test) of the object-crop set.

    Embedded: ``<data.root>/multi/crops_{train,val,test}.h5``. Real: crops of the COCO train
    JSON's boxes (a ``lineval.val_fraction`` of its images, seeded by ``lineval.seed``,
    held out as val) and of the test JSON's, cut like the embedded set and resized to
    ``image_size``.
    """
    if params.data.source == "embedded":
        root = Path(params.data.root) / "multi"
        return tuple(SetSource(root / f"crops_{s}.h5") for s in ("train", "val", "test"))  # type: ignore[return-value]
    from oacl.data.datasets import build_dataset

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


def original_splits(params: Any, image_size: int) -> tuple[ImageSource, ImageSource, ImageSource]:
    """(train, val, test) of single-object ORIGINAL.

    Embedded: ``<data.root>/single/{train,val,original}.h5``. Real Background Challenge:
    ``original/train`` minus a held-out ``lineval.val_fraction`` (val), test ``original/val``.
    Real image folder: ``single_root`` split (seeded) into train / val / test with
    ``val_fraction`` of the images each for val and test.
    """
    if params.data.source == "embedded":
        root = Path(params.data.root) / "single"
        return tuple(SetSource(root / f"{s}.h5") for s in ("train", "val", "original"))  # type: ignore[return-value]
    from oacl.data.datasets import build_dataset

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


def bg_sources(params: Any, image_size: int) -> dict[str, ImageSource]:
    """Background Challenge variants present: embedded ``<data.root>/single/<variant>.h5``, real ``<root>/<variant>/val``.

    A variant missing from disk is left out (with a warning); an image-folder real source has none.
    """
    out: dict[str, ImageSource] = {}
    if params.data.source == "embedded":
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
    from oacl.data.datasets import build_dataset

    size = _need_size(image_size)
    for v in BG_VARIANTS:
        folder = Path(real.single_root) / v / "val"
        if folder.is_dir():
            out[v] = DatasetSource(build_dataset("bgchallenge", root=real.single_root, variant=v, split="val", masks=False), size, str(folder))
        else:
            log.warning("Background Challenge variant %s missing (%s)", v, folder)
    return out


def shift_sources(params: Any, image_size: int, classes: Sequence[str]) -> dict[str, ImageSource]:
    """Distribution-shift sets by name (``<corruption>-<severity>``, ``sketch``, ...).

    Embedded: every ``<data.root>/shift/*.h5``. Real: every folder ``<shift_root>/<name>/``
    laid out as ``<class>/*`` with the training ``classes`` (none when shift_root is empty).
    """
    if params.data.source == "embedded":
        folder = Path(params.data.root) / "shift"
        return {p.stem: SetSource(p) for p in sorted(folder.glob("*.h5")) if not p.name.startswith(".")}
    root = params.data.real.shift_root
    if not root:
        return {}
    from oacl.data.datasets import build_dataset

    size = _need_size(image_size)
    if not Path(root).is_dir():
        raise DataError(f"shift folder {root} (data.real.shift_root) does not exist")
    return {
        p.name: DatasetSource(build_dataset("imagefolder", root=p, classes=list(classes)), size, str(p))
        for p in sorted(Path(root).iterdir())
        if p.is_dir() and not p.name.startswith(".")
    }

