"""Debiased retraining (stages ``retrain@<method>-<debias>``): the vanilla twin with one change, its augmentation.

A retrained model uses everything of its vanilla twin — training set (``pretrain.dataset``),
method settings (``pretrain.*``, ``pretrain.<method>``), epochs and seed — and trains from
scratch through :func:`oacl.train.pretrain.run_pretrain`; only the two-view augmentation
differs. Variants (:data:`DEBIAS`, the ``--debias`` names):

============  ======================================================  ===========================
name          augmentation                                            reads
============  ======================================================  ===========================
oacrop        OA-Crop on the ContraCAM boxes                          ``retrain.oacrop``
oacrop_gt     OA-Crop on the ground-truth boxes + margin               ``retrain.oacrop_gt``
bgmix         BG-Mixup, soft ContraCAM masks (Eq. 4)                   ``pmix``, ``retrain.bgmix``
hardmix       BG-HardMix, binarised ContraCAM masks (copy-paste)       ``retrain.hardmix``
hardmix_gt    BG-HardMix, ground-truth masks                           ``retrain.hardmix_gt``
mixup         Mixup for contrastive learning                           ``retrain.mixup``
cutmix        CutMix for contrastive learning                          ``retrain.cutmix``
============  ======================================================  ===========================

ContraCAM data comes from ``<cam_dir>/<set>.h5`` (stage ``contracam@<set>``): a training image of
set ``multi`` / ``single`` is looked up by id in that set's store (:class:`RetrainSet`); a missing
store or a missing id stops the run before training. Outputs, like pretraining's, under
``retrain-<method>-<debias>`` (:func:`retrain_paths`), plus ``plots/.../augment.png``: a picture
sheet of the variant's inputs (:func:`augment_sheet`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, default_collate

from oacl.augment.bgmix import BackgroundTiles, BatchBgMix, BgMixItem
from oacl.augment.mixing import BatchMix
from oacl.augment.oacrop import BatchPhotometricStats, ObjectAwareCrops, item_boxes
from oacl.augment.views import AugmentSettings, TwoCrops, ViewPipeline
from oacl.config import ConfigError, Params
from oacl.errors import DataError
from oacl.io.atomic import save_png
from oacl.io.camstore import CamStore
from oacl.train.engine import EpochRecord, TrainResult
from oacl.train.pretrain import PretrainPaths, TrainVariant, method_config, run_pretrain, train_set_names, view_settings

__all__ = [
    "Debias",
    "DEBIAS",
    "RetrainSet",
    "open_cam_store",
    "retrain_paths",
    "variant_settings",
    "build_views",
    "augment_sheet",
    "run_retrain",
]

log = logging.getLogger(__name__)

MASKS_IN_MEMORY = 1 << 30  # bytes: a CAM store's soft masks up to this size are read whole


# ------------------------------------------------------------------------- CAM data per item


class RetrainSet(Dataset):
    """One part of the training set as retraining sees it: items tagged with the part's name, plus CAM data.

    Each item gains ``"set"`` = ``name`` (ids are unique within a part only, so per-image caches
    key on (set, id)) and, with a ``store``, its ContraCAM data looked up by ``item["id"]``:
    ``"cam_boxes"`` (k, 4) float32 normalized x1, y1, x2, y2 (``boxes``) and / or ``"cam_mask"``
    (h, w) uint8 soft mask × 255 at the store's ``image_size`` (``masks``), with
    ``"cam_geometry"`` = the store's ``mask_geometry``: the augmentations lay both onto the
    item's image, which for real data has its own size (:mod:`oacl.io.geometry`). Every id of
    the part must be in the store (checked here: :class:`DataError` naming the first missing
    one). Soft masks are read whole into memory when they take at most :data:`MASKS_IN_MEMORY`
    bytes (DataLoader workers share them after the fork), else one at a time from the file.
    """

    def __init__(
        self, dataset: Dataset, name: str, store: CamStore | None = None, *, boxes: bool = False, masks: bool = False
    ) -> None:
        ids = getattr(dataset, "ids", None)
        if ids is None:
            raise ValueError(f"{type(dataset).__name__} has no 'ids'; retraining looks images up by id")
        if (boxes or masks) and store is None:
            raise ValueError(f"part {name!r}: CAM boxes / masks requested without a CAM store")
        if store is not None:
            store.check_ids(ids, exact=False)
        self.dataset, self.name, self.store = dataset, name, store
        self.ids, self.labels = ids, getattr(dataset, "labels", None)
        self.classes = getattr(dataset, "classes", None)
        self.boxes, self.masks = boxes, masks
        self.soft: np.ndarray | None = None
        if masks and store is not None:
            h, w = store.image_size
            if len(store) * h * w <= MASKS_IN_MEMORY:
                self.soft = store.read_all("masks")

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        item["set"] = self.name
        if self.store is None:
            return item
        image_id = str(item["id"])
        item["cam_geometry"] = self.store.mask_geometry
        if self.boxes:
            item["cam_boxes"] = torch.from_numpy(self.store.boxes(image_id))
        if self.masks:
            row = self.store.index_of(image_id)
            soft = self.soft[row] if self.soft is not None else self.store.mask(image_id)
            item["cam_mask"] = torch.from_numpy(np.ascontiguousarray(soft))
        return item


def open_cam_store(cam_dir: str | Path, set_name: str) -> CamStore:
    """The CAM store of training set ``set_name`` (``<cam_dir>/<set_name>.h5``), validated."""
    path = Path(cam_dir) / f"{set_name}.h5"
    if not path.is_file():
        raise DataError(
            f"CAM store {path} not found: retraining on the {set_name!r} training set needs the ContraCAM "
            f"export of stage contracam@{set_name} (run it first, or point --cam-dir at it)"
        )
    return CamStore(path)


# ---------------------------------------------------------------------------- the variants


@dataclass(frozen=True)
class Debias:
    """One debiasing variant.

    cam: what it needs from the CAM stores — ``None``, ``"boxes"`` or ``"masks"``.
    build: ``build(params, aug, parts) -> ViewPipeline`` from the params, the two-view recipe
        and the training-set parts (:class:`RetrainSet`; used to pre-fill caches).
    pmix: whether it reads the top-level ``pmix`` (only ``bgmix``).
    """

    cam: str | None
    build: Callable[[Params, AugmentSettings, Sequence[Dataset]], ViewPipeline]
    pmix: bool = False


def _prefill(tiles: BackgroundTiles, parts: Sequence[Dataset], source: str) -> None:
    """Fill the background-rectangle cache in bulk where the masks are at hand (else it fills lazily)."""
    for part in parts:
        if not isinstance(part, RetrainSet):
            continue
        if source == "cam" and part.soft is not None and part.store is not None:
            tiles.prefill([(part.name, i) for i in part.store.ids], part.soft)
        elif source == "gt":
            setfile = getattr(part.dataset, "set", None)  # an EmbeddedSet's set file: masks in memory
            if setfile is not None and hasattr(setfile, "masks"):
                tiles.prefill([(part.name, i) for i in part.ids], setfile.masks * np.uint8(255))


def _oacrop(params: Params, aug: AugmentSettings, parts: Sequence[Dataset]) -> ViewPipeline:
    c = params.retrain.oacrop
    return ViewPipeline(ObjectAwareCrops(aug, "cam", prob=c.prob), BatchPhotometricStats(aug))


def _oacrop_gt(params: Params, aug: AugmentSettings, parts: Sequence[Dataset]) -> ViewPipeline:
    c = params.retrain.oacrop_gt
    return ViewPipeline(ObjectAwareCrops(aug, "gt", margin=c.margin, prob=c.prob), BatchPhotometricStats(aug))


def _bgmix(params: Params, aug: AugmentSettings, parts: Sequence[Dataset]) -> ViewPipeline:
    tiles = BackgroundTiles(params.retrain.bgmix.threshold)
    _prefill(tiles, parts, "cam")
    return ViewPipeline(BgMixItem(aug, tiles, "cam"), BatchBgMix(aug, params.pmix))


def _hardmix(params: Params, aug: AugmentSettings, parts: Sequence[Dataset]) -> ViewPipeline:
    c = params.retrain.hardmix
    tiles = BackgroundTiles(c.threshold)
    _prefill(tiles, parts, "cam")
    return ViewPipeline(BgMixItem(aug, tiles, "cam"), BatchBgMix(aug, c.prob, hard_threshold=c.threshold))


def _hardmix_gt(params: Params, aug: AugmentSettings, parts: Sequence[Dataset]) -> ViewPipeline:
    tiles = BackgroundTiles(0.5)  # GT masks are {0, 255}: any threshold in (0, 1) binarises them alike
    _prefill(tiles, parts, "gt")
    return ViewPipeline(
        BgMixItem(aug, tiles, "gt"), BatchBgMix(aug, params.retrain.hardmix_gt.prob, hard_threshold=0.5)
    )


def _mix(kind: str) -> Callable[[Params, AugmentSettings, Sequence[Dataset]], ViewPipeline]:
    def build(params: Params, aug: AugmentSettings, parts: Sequence[Dataset]) -> ViewPipeline:
        c = getattr(params.retrain, kind)
        return ViewPipeline(TwoCrops(aug.size, aug.crop_scale, aug.flip_p), BatchMix(aug, kind, c.prob, c.alpha))  # type: ignore[arg-type]

    return build


DEBIAS: dict[str, Debias] = {
    "oacrop": Debias("boxes", _oacrop),
    "oacrop_gt": Debias(None, _oacrop_gt),
    "bgmix": Debias("masks", _bgmix, pmix=True),
    "hardmix": Debias("masks", _hardmix),
    "hardmix_gt": Debias(None, _hardmix_gt),
    "mixup": Debias(None, _mix("mixup")),
    "cutmix": Debias(None, _mix("cutmix")),
}


def _debias(name: str) -> Debias:
    try:
        return DEBIAS[name]
    except KeyError:
        raise ConfigError(f"unknown debias variant {name!r}; known: {', '.join(sorted(DEBIAS))}") from None


def variant_settings(params: Params, debias: str) -> dict[str, Any]:
    """Exactly the params ``debias`` reads besides the vanilla twin's: its ``retrain`` block (and ``pmix`` for bgmix)."""
    spec = _debias(debias)
    out: dict[str, Any] = {"debias": debias, debias: asdict(getattr(params.retrain, debias))}
    if spec.pmix:
        out["pmix"] = params.pmix
    return out


def build_views(
    params: Params, debias: str, data: Dataset, size: int, stores: Mapping[str, CamStore] | None = None
) -> tuple[Dataset, ViewPipeline]:
    """The training set with its CAM data attached (when the variant needs it) and the variant's views.

    data: the vanilla training set (:func:`oacl.train.pretrain.open_train_set`), whose parts are
    ``train_set_names(params.pretrain)``; stores: CAM store per part name (CAM variants).
    """
    spec = _debias(debias)
    parts = list(data.datasets) if isinstance(data, ConcatDataset) else [data]
    names = train_set_names(params.pretrain)
    if len(parts) != len(names):
        raise ValueError(f"the training set has {len(parts)} parts, pretrain.dataset names {names}")
    stores = stores or {}
    if spec.cam is not None:
        missing = [n for n in names if n not in stores]
        if missing:
            raise ValueError(f"variant {debias!r} needs the CAM stores of {missing}")
    parts = [
        RetrainSet(p, n, stores.get(n) if spec.cam else None, boxes=spec.cam == "boxes", masks=spec.cam == "masks")
        for p, n in zip(parts, names)
    ]
    aug = view_settings(params.pretrain, size)
    views = spec.build(params, aug, parts)
    return (parts[0] if len(parts) == 1 else ConcatDataset(parts)), views


# ------------------------------------------------------------------------------ picture sheet

_BOX = "#e6194b"
_CANDIDATE = "#ffe119"
_PANEL_IN = 1.2


def _hwc(x: Tensor) -> np.ndarray:
    """(3, H, W) uint8 or float [0, 1] → (H, W, 3) uint8 for imshow."""
    if x.dtype != torch.uint8:
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()


def _sample_indices(n_items: int, n: int) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(0, n_items - 1, num=min(n, n_items))})


def augment_sheet(dataset: Dataset, views: ViewPipeline, *, n: int = 6, seed: int = 0, title: str = "") -> Figure:
    """What the variant feeds the network, on ``n`` items spread over ``dataset`` (before the photometric half).

    - OA-Crop: the image with its candidate boxes (yellow) and the chosen crop (red), view 1, view 2;
    - BG-Mixup / HardMix: view x1, its (cropped) mask, the donor's background tile x2_bg, the mix;
    - Mixup / CutMix: view, the donor's view, the mix.
    Every row is mixed (probability 1) so the sheet shows the operation itself.
    """
    per_item, per_batch = views.per_item, views.per_batch
    idx = _sample_indices(len(dataset), n)  # type: ignore[arg-type]
    items = [dataset[i] for i in idx]
    rows: list[list[tuple[str, np.ndarray, Any]]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(per_item, ObjectAwareCrops):
            for item in items:
                image, window = per_item.crop(item)
                v1, v2 = per_item.two_crops({"image": image})
                cands = item_boxes(item, per_item.source, per_item.margin).numpy()
                rows.append(
                    [
                        ("image + crop box", _hwc(item["image"]), (cands, window)),
                        ("view 1", _hwc(v1), None),
                        ("view 2", _hwc(v2), None),
                    ]
                )
        elif isinstance(per_item, BgMixItem) and isinstance(per_batch, BatchBgMix):
            batch = default_collate([per_item(item) for item in items])
            x = batch["views"][0].float() / 255
            bg = batch["bg"].float() / 255
            mixer = BatchBgMix(per_batch.cfg, 1.0, per_batch.hard_threshold)
            mixed, applied, perm = mixer.mix(x, batch["masks"][0], bg, batch["has_bg"].bool())
            weights = mixer.weights(batch["masks"][0])
            for i in range(len(items)):
                donor = bg[perm[i]] if applied[i] else torch.zeros_like(bg[i])
                rows.append(
                    [
                        ("x1 (view)", _hwc(x[i]), None),
                        ("mask of x1", (weights[i, 0].numpy() * 255).astype(np.uint8), None),
                        ("x2 background" if applied[i] else "no donor", _hwc(donor), None),
                        ("mixed", _hwc(mixed[i]), None),
                    ]
                )
        elif isinstance(per_batch, BatchMix):
            pairs = default_collate([per_item(item) for item in items])
            x = pairs[0].float() / 255
            mixer = BatchMix(per_batch.cfg, per_batch.kind, 1.0, per_batch.alpha)  # type: ignore[arg-type]
            mixed, _, perm = mixer.mix(x)
            for i in range(len(items)):
                rows.append(
                    [
                        ("view", _hwc(x[i]), None),
                        ("donor view", _hwc(x[perm[i]]), None),
                        (per_batch.kind, _hwc(mixed[i]), None),
                    ]
                )
        else:
            raise ValueError(f"no picture sheet for views {type(per_item).__name__} / {type(per_batch).__name__}")
    cols = len(rows[0])
    top = 0.45 if title else 0.25
    fig = Figure(figsize=(cols * _PANEL_IN, len(rows) * _PANEL_IN + top), dpi=100)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - top / (len(rows) * _PANEL_IN + top), wspace=0.05, hspace=0.05
    )
    if title:
        fig.suptitle(title, fontsize=8)
    for r, row in enumerate(rows):
        for c, (name, img, boxes) in enumerate(row):
            ax = axes[r, c]
            ax.set_axis_off()
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=7, pad=2)
            if boxes is not None:
                cands, window = boxes
                h, w = img.shape[:2]
                for x0, y0, x1, y1 in cands.reshape(-1, 4):
                    ax.add_patch(
                        Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=_CANDIDATE, lw=0.6)
                    )
                if window is not None:
                    top, left, hh, ww = window
                    ax.add_patch(Rectangle((left - 0.5, top - 0.5), ww, hh, fill=False, edgecolor=_BOX, lw=1.4))
                else:
                    ax.set_title("no box: whole image", fontsize=6, pad=2)
    return fig


# ------------------------------------------------------------------------------------ the run


def retrain_paths(root: str | Path, method: str, debias: str) -> PretrainPaths:
    """The standard output layout of ``retrain@<method>-<debias>`` under ``root`` (``artifacts``)."""
    root = Path(root)
    name = f"retrain-{method}-{debias}"
    return PretrainPaths(
        model_dir=root / "models" / name,
        cache_dir=root / "cache" / name,
        live_dir=root / "live" / name,
        plots_dir=root / "plots" / name,
        metrics=root / "metrics" / f"{name}.json",
    )


def _epoch_mean(result: TrainResult, key: str) -> float | None:
    values = [r.stats[key] for r in result.history if key in r.stats]
    return round(float(np.mean(values)), 4) if values else None


def run_retrain(
    params: Params,
    method: str,
    debias: str,
    paths: PretrainPaths,
    *,
    cam_dir: str | Path = "artifacts/cam",
    on_epoch_end: Callable[[EpochRecord, TrainResult], None] | None = None,
) -> dict[str, Any] | None:
    """Retrain ``method`` from scratch with augmentation ``debias``; write the outputs (rank 0).

    Everything but the augmentation is the vanilla twin's (:func:`run_pretrain`). Opens the CAM
    stores the variant needs (``<cam_dir>/<set>.h5`` per training-set part) and checks every
    training id is in them before any training. Returns the metrics on rank 0, None elsewhere:
    pretraining's keys plus ``debias``, the per-epoch means ``mix_rate`` / ``box_rate`` /
    ``box_area`` where the variant records them, and the settings it read.
    """
    spec = _debias(debias)
    method_config(method, params.pretrain)
    names = train_set_names(params.pretrain)
    stores: dict[str, CamStore] = {}
    if spec.cam is not None:
        stores = {n: open_cam_store(cam_dir, n) for n in names}
    record = variant_settings(params, debias)
    if stores:
        record["cam"] = {
            n: {"checkpoint_sha256": s.attrs["checkpoint_sha256"], "bytes": s.path.stat().st_size}
            for n, s in stores.items()
        }
    name = f"retrain-{method}-{debias}"

    def prepare(data: Dataset, size: int) -> tuple[Dataset, ViewPipeline]:
        return build_views(params, debias, data, size, stores)

    def finish(result: TrainResult, dataset: Dataset, views: ViewPipeline) -> dict[str, Any]:

        save_png(
            augment_sheet(dataset, views, seed=params.pretrain.seed, title=f"{name}: augmentation inputs"),
            paths.plots_dir / "augment.png",
        )
        extra: dict[str, Any] = {"debias": debias}
        for key in ("mix_rate", "box_rate", "box_area"):
            value = _epoch_mean(result, key)
            if value is not None:
                extra[key] = value
        if spec.pmix:
            extra["pmix"] = params.pmix
        return extra

    variant = TrainVariant(name=name, record=record, prepare=prepare, finish=finish)
    return run_pretrain(params, method, paths, on_epoch_end=on_epoch_end, variant=variant)
