"""Typed, validated access to ``params.yaml``.

Every section of params.yaml is a frozen dataclass. Each field may carry a
``spec(...)`` in its metadata that bounds its value. :func:`load_params`
validates the *whole* file — unknown keys, wrong types, values out of range —
and raises one :class:`ConfigError` naming the dotted key, before any stage
does work. Derived values (effective learning rate, ...) are computed where
they are used and never written back.

Size: one frozen dataclass per params section and the validator they share: the whole params contract is read in one place.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from oacl.errors import ConfigError

__all__ = [
    "ConfigError",
    "BenchmarkConfig",
    "MultiSetConfig",
    "SingleSetConfig",
    "ShiftSetConfig",
    "RealDataConfig",
    "contained_path",
    "DataConfig",
    "MocoConfig",
    "ByolConfig",
    "PretrainConfig",
    "ContraCAMConfig",
    "ContraCAMSingleConfig",
    "ContraCAMAblationConfig",
    "ContraCAMSection",
    "OACropConfig",
    "OACropGTConfig",
    "BgMixConfig",
    "HardMixConfig",
    "HardMixGTConfig",
    "MixConfig",
    "RetrainSection",
    "DetectConfig",
    "LinevalConfig",
    "ShiftConfig",
    "Params",
    "load_params",
    "parse_section",
    "spec",
]


def spec(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    doc: str = "",
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with numeric bounds checked by :func:`parse_section`.

    Bounds apply to a number, or to every element of a tuple / list of numbers.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class MultiSetConfig:
    """Multi-object scenes (the COCO analogue, contextual bias)."""

    train: int = spec(3000, ge=1, doc="training scenes")
    val: int = spec(300, ge=1, doc="held-out scenes, used only to cut crops_val (choosing the lineval l2 weight)")
    test: int = spec(600, ge=1, doc="test scenes")
    objects: tuple[int, int] = spec((1, 4), ge=1, le=8, doc="objects per image, inclusive range")
    object_scale: tuple[float, float] = spec((0.3, 0.5), gt=0.0, le=1.0, doc="object size / image side, per object")
    group_size: int = spec(2, ge=1, doc="classes per co-occurring group (must divide num_classes)")
    cooccur: float = spec(0.85, ge=0.0, le=1.0, doc="P(an extra object comes from the primary object's group)")
    bg_corr: float = spec(0.5, ge=0.0, le=1.0, doc="P(scene background family == the primary object's class family)")
    min_visible: float = spec(0.5, gt=0.0, le=1.0, doc="an occluded object is dropped below this visible fraction")
    crop_margin: float = spec(0.2, ge=0.0, le=1.0, doc="margin of the object-crop set per side, fraction of box side")
    crop_size: int = spec(64, ge=8, le=1024, doc="side of the object-crop images, px")


@dataclass(frozen=True)
class SingleSetConfig:
    """Single-object images (the ImageNet-9 / Background Challenge analogue)."""

    train: int = spec(3000, ge=1, doc="ORIGINAL training images")
    val: int = spec(600, ge=1, doc="ORIGINAL held-out images (choosing the lineval l2 weight)")
    test: int = spec(900, ge=1, doc="test images per Background Challenge variant (>= 2 per class)")
    bg_corr: float = spec(0.9, ge=0.0, le=1.0, doc="P(background family == class's family) in ORIGINAL")


@dataclass(frozen=True)
class ShiftSetConfig:
    """Distribution-shift test sets for the single-object classes."""

    test: int = spec(450, ge=1, doc="images per shift set (per corruption and severity)")
    corruptions: tuple[str, ...] = spec(
        default_factory=lambda: ("gaussian_noise", "defocus_blur", "fog", "jpeg_compression"),
        doc="corruption names (see oacl.data.corruptions.CORRUPTIONS)",
    )
    severities: tuple[int, ...] = spec(default_factory=lambda: (1, 2, 3, 4, 5), ge=1, le=5)
    styles: tuple[str, ...] = spec(
        default_factory=lambda: ("sketch", "stylized", "rendition"),
        doc="rendering shifts (see oacl.data.benchmark.STYLES)",
    )


@dataclass(frozen=True)
class BenchmarkConfig:
    """The embedded, procedurally generated benchmark written by the ``generate`` stage."""

    seed: int = spec(0, ge=0)
    image_size: int = spec(64, ge=16, le=1024, doc="side of every image, px")
    num_classes: int = spec(8, ge=2, le=10, doc="object classes (shape families)")
    num_backgrounds: int = spec(8, ge=2, le=10, doc="background scene families (>= num_classes)")
    object_scale: tuple[float, float] = spec(
        (0.35, 0.65), gt=0.0, le=1.0, doc="object size / image side (single-object sets)"
    )
    object_texture: Literal["class", "scene"] = spec(
        "class",
        doc="class: each class its own object texture type, object palette, dark rim; "
        "scene: each object wears background family (texture class + num_backgrounds // 2) mod num_backgrounds, "
        "in that family's colours, no rim",
    )
    texture_corr: float = spec(
        1.0,
        ge=0.0,
        le=1.0,
        doc="P(an object wears its class's texture type); else another class's (1/num_classes: independent)",
    )
    hue_spread: float = spec(
        1.0,
        gt=0.0,
        le=1.0,
        doc="fraction of the hue circle every object and background colour is squeezed into (1: any hue)",
    )
    nuisance: float = spec(
        1.0,
        ge=0.0,
        le=1.0,
        doc="width of every per-instance texture / shape / background parameter range, fraction of the full one",
    )
    multi: MultiSetConfig = field(default_factory=MultiSetConfig)
    single: SingleSetConfig = field(default_factory=SingleSetConfig)
    shift: ShiftSetConfig = field(default_factory=ShiftSetConfig)


def contained_path(value: str, root: str, key: str) -> str:
    """``value`` (relative to ``root``, or absolute) joined and normalised; it must stay inside ``root``.

    The check is on the spelling (``..`` and absolute paths), not on symbolic links: a link
    inside ``root`` that points elsewhere is the user's choice and is followed. ``root`` ''
    is the project folder (the working directory DVC runs stages in).
    """
    base = os.path.normpath(root or ".")
    path = os.path.normpath(value if os.path.isabs(value) else os.path.join(base, value))
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        where = f"'data.real.root' = {root!r}" if root else "the project folder"
        raise ConfigError(f"params: '{key}' = {value!r} points outside {where}; paths from params must stay inside it")
    return path


@dataclass(frozen=True)
class RealDataConfig:
    """Pointers to real data sets; used when ``data.source`` is ``real``.

    Every path is relative to ``root`` (or absolute inside it) and is refused if it leaves it;
    after loading, the fields hold the joined, normalised paths.
    """

    root: str = spec("", doc="folder the paths below are relative to and must stay inside; '' = the project folder")
    multi_format: Literal["coco"] = "coco"
    multi_images: str = ""
    multi_train_json: str = ""
    multi_test_json: str = ""
    single_format: Literal["bgchallenge", "imagefolder"] = "bgchallenge"
    single_root: str = ""
    single_masks: str = spec("", doc="imagefolder only: sidecar masks <dir>/<class>/<stem>.png|.npy")
    shift_root: str = spec("", doc="shift test sets as image folders <dir>/<name>/<class>/*")

    def __post_init__(self) -> None:
        for name in (
            "multi_images",
            "multi_train_json",
            "multi_test_json",
            "single_root",
            "single_masks",
            "shift_root",
        ):
            value = getattr(self, name)
            if value:
                object.__setattr__(self, name, contained_path(value, self.root, f"data.real.{name}"))


@dataclass(frozen=True)
class DataConfig:
    source: Literal["embedded", "real"] = "embedded"
    root: str = spec("data", doc="folder of the embedded benchmark written by generate")
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    real: RealDataConfig = field(default_factory=RealDataConfig)


# -------------------------------------------------------------------- pretrain


@dataclass(frozen=True)
class MocoConfig:
    """MoCo v2 settings (``pretrain.moco``); the paper's values unless the doc says why not."""

    epochs: int = spec(4, ge=1, doc="passes over the training set (sized to the pipeline's CPU budget)")
    base_lr: float = spec(
        0.24, gt=0.0, doc="SGD lr = base_lr x global batch / 256 (paper 0.03 for 200 epochs; 0.24 learns more in a few)"
    )
    weight_decay: float = spec(1e-4, ge=0.0)
    warmup_epochs: int = spec(0, ge=0, doc="linear warm-up before the cosine decay")
    temperature: float = spec(0.2, gt=0.0, doc="InfoNCE temperature (MoCo v2: 0.2)")
    momentum: float = spec(
        0.99, ge=0.0, le=1.0, doc="key-encoder EMA; paper 0.999 (a ~1000-step lag: too slow for a run of ~600 steps)"
    )
    momentum_final: float = spec(
        0.0,
        ge=0.0,
        le=1.0,
        doc="0 = constant momentum; else a cosine ramp from momentum to this (short runs: 0.9 -> 0.99)",
    )
    queue_size: int = spec(1024, ge=1, doc="negatives; at most half the training set (checked; paper 65536 on COCO)")
    proj_hidden: int = spec(0, ge=0, doc="projector hidden width; 0 = the backbone's feature width (MoCo v2)")
    proj_dim: int = spec(128, ge=1)


@dataclass(frozen=True)
class ByolConfig:
    """BYOL settings (``pretrain.byol``)."""

    epochs: int = spec(2, ge=1, doc="a BYOL epoch costs ~2x a MoCo epoch (both views through both networks)")
    base_lr: float = spec(0.24, gt=0.0, doc="SGD lr = base_lr x global batch / 256 (as MoCo here)")
    weight_decay: float = spec(1e-4, ge=0.0)
    warmup_epochs: int = spec(0, ge=0)
    tau_base: float = spec(0.99, ge=0.0, le=1.0, doc="target EMA at the start, cosine to 1 (BYOL 0.996 for long runs)")
    proj_hidden: int = spec(4096, ge=1)
    proj_dim: int = spec(256, ge=1)
    pred_hidden: int = spec(4096, ge=1)
    pred_lr_mult: float = spec(1.0, gt=0.0, doc="the predictor's lr as a multiple of the scheduled lr (BYOL: 1)")


IMPORT_DIR = "artifacts/imported"  # where pretrain.imports files live, one folder per method (a dvc.yaml dep)


@dataclass(frozen=True)
class ImportConfig:
    """Published or earlier checkpoints used as the vanilla models (``pretrain.imports``).

    A non-empty path makes ``pretrain@<method>`` import that file (any format
    :func:`oacl.io.load_encoder_projector` reads) instead of training; it must lie in
    ``artifacts/imported/<method>/``, the folder the stage depends on.
    """

    moco: str = spec("", doc="'' = train MoCo; else a checkpoint under artifacts/imported/moco/")
    byol: str = spec("", doc="'' = train BYOL; else a checkpoint under artifacts/imported/byol/")

    def __post_init__(self) -> None:
        for method in ("moco", "byol"):
            value = getattr(self, method)
            if not value:
                continue
            folder = Path(IMPORT_DIR, method)
            path = Path(os.path.normpath(value))
            if path.is_absolute() or path.parent != folder:
                raise ConfigError(
                    f"params: 'pretrain.imports.{method}' = {value!r} must name a file directly in {folder}/ "
                    "(the folder pretrain@" + method + " depends on); copy the checkpoint there"
                )
            object.__setattr__(self, method, path.as_posix())


@dataclass(frozen=True)
class PretrainConfig:
    """Vanilla self-supervised pretraining (stages ``pretrain@moco``, ``pretrain@byol``)."""

    dataset: Literal["multi", "single", "both"] = spec(
        "both", doc="training set: multi-object, single-object ORIGINAL, or their union"
    )
    arch: Literal["resnet18", "resnet50", "resnet18_w32"] = spec(
        "resnet18", doc="torchvision ResNet-18 / -50 (the paper's); resnet18_w32: half width, for CPU budgets"
    )
    stem: Literal["standard", "s1", "cifar"] = spec(
        "standard", doc="standard: 7x7/2 + maxpool; s1: conv1 stride 1; cifar: 3x3/1, no maxpool"
    )
    image_size: int = spec(0, ge=0, le=1024, doc="side of the views, px; 0 = the embedded images' side")
    crop_scale: tuple[float, float] = spec(
        (0.08, 1.0), gt=0.0, le=1.0, doc="RandomResizedCrop area range (paper 0.08-1)"
    )
    blur_p: float = spec(0.5, ge=0.0, le=1.0, doc="P(Gaussian blur) per view (paper 0.5)")
    batch_size: int = spec(128, ge=2, doc="global batch, all processes together")
    sgd_momentum: float = spec(0.9, ge=0.0, lt=1.0)
    seed: int = spec(0, ge=0)
    nproc: int = spec(1, ge=1, le=64, doc="processes; > 1 relaunches the stage under torchrun (DDP)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int = spec(0, ge=0, le=64, doc="DataLoader workers per process (each takes a core)")
    amp: Literal["auto", True, False] = spec(
        "auto", doc="bf16 autocast; auto: on a GPU, or a CPU with native bf16 (AVX-512 BF16 / AMX), else fp32"
    )
    channels_last: bool = True
    compile: bool = spec(False, doc="torch.compile the encoder and projector (~30 s of compiling)")
    knn_every: int = spec(4, ge=0, doc="kNN monitor every n epochs and after the last; 0 = off")
    knn_k: int = spec(20, ge=1)
    moco: MocoConfig = field(default_factory=MocoConfig)
    byol: ByolConfig = field(default_factory=ByolConfig)
    imports: ImportConfig = field(default_factory=ImportConfig)


# -------------------------------------------------------------------- contracam


@dataclass(frozen=True)
class ContraCAMConfig:
    """ContraCAM on one data set's training split (``contracam.multi``; defaults: the paper's box setting).

    Also what :func:`oacl.cam.run_contracam` reads (its ``ContraCAMSettings``).
    """

    batch_size: int = spec(64, ge=2, doc="images per ContraCAM batch, a random negative batch (paper 64)")
    iters: int = spec(10, ge=1, le=100, doc="T, iterations of the iterative ContraCAM (paper: 10 for boxes)")
    expand_res: Literal[1, 2, 4] = spec(2, doc="layer4 (x2) / also layer3 (x4) first-block stride 1 at inference")
    remove_negative_signal: bool = spec(True, doc="clamp the channel weights at 0 (NSR, paper Eq. 2)")
    neg_batch: int = spec(
        0, ge=0, doc="random negative groups of this size inside a batch (paper Table 10); 0 = the whole batch"
    )
    stop_ratio: float = spec(
        0.0,
        ge=0.0,
        lt=1.0,
        doc="stopping rule, an extension beyond the paper: an image stops once its raw CAM peak falls "
        "below this fraction of its first iteration's; 0 = off (the paper)",
    )
    amp: Literal["auto", True, False] = spec(
        "auto",
        doc="fast path: bf16 backbone with folded BN (binarized masks agree with fp32, IoU >= 0.95); "
        "auto: on a GPU, or a CPU with native bf16, else fp32",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    crf: bool = spec(True, doc="dense CRF (pydensecrf defaults) before binarising; else threshold the soft CAM")
    crf_iters: int = spec(5, ge=1, le=50)
    crf_gauss_sxy: float = spec(3.0, gt=0.0, doc="CRF smoothness kernel width, px (paper code: 3, at 224 px)")
    crf_gauss_compat: float = spec(3.0, ge=0.0, doc="CRF smoothness kernel weight (paper code: 3)")
    crf_bi_sxy: float = spec(80.0, gt=0.0, doc="CRF appearance kernel width, px (paper code: 80, at 224 px)")
    crf_bi_srgb: float = spec(13.0, gt=0.0, doc="CRF appearance kernel colour scale, 0-255 units (paper code: 13)")
    crf_bi_compat: float = spec(10.0, ge=0.0, doc="CRF appearance kernel weight (paper code: 10)")
    threshold: float = spec(
        0.5, gt=0.0, lt=1.0, doc="binarisation of the CRF foreground probability (or of the soft CAM)"
    )
    min_component: float = spec(0.001, ge=0.0, lt=1.0, doc="drop connected components up to this fraction of the image")
    box_margin: float = spec(0.2, ge=0.0, le=1.0, doc="box margin per side, fraction of the box side")
    min_box_area: float = spec(0.01, ge=0.0, lt=1.0, doc="drop contour boxes under this fraction of the image")
    workers: int = spec(0, ge=0, le=64, doc="CRF processes (single-threaded); 0 = every usable core")
    seed: int = spec(0, ge=0, doc="order of the images, hence the random negative batches")

    def __post_init__(self) -> None:
        if self.neg_batch == 1:
            raise ConfigError(
                "params: 'neg_batch' = 1 is invalid in a contracam block (0 = whole batch, else >= 2: an image needs a negative)"
            )


@dataclass(frozen=True)
class ContraCAMSingleConfig(ContraCAMConfig):
    """``contracam.single``: the background-mixup masks, one iteration (paper), layer4 at twice its resolution.

    ``expand_res`` keeps the base default of 2, where the paper uses no expansion: at its 224 px
    layer4 is 7 x 7, at the embedded benchmark's 64 px it is 2 x 2 and the CAM cannot draw an
    object's outline (default run's MoCo, T = 1, CRF mask mIoU on the ablation subset: 14.0 without
    expansion, 46.5 with x2; centred Gaussian 28.0).
    """

    iters: int = spec(1, ge=1, le=100, doc="T (paper: 1 for the single-object background masks)")


@dataclass(frozen=True)
class ContraCAMAblationConfig:
    """``contracam.ablation``: paper Tables 1, 9, 10 analogues on a fixed random subset of each training split.

    Every variant changes one setting of the data set's own block.
    """

    images: int = spec(256, ge=0, doc="subset size (seeded by the block's seed); 0 = no ablation")
    iters: tuple[int, ...] = spec(default_factory=lambda: (1, 2, 3, 5, 10), ge=1, le=100, doc="T values (Table 9)")
    without_nsr: bool = spec(True, doc="also run without negative signal removal (Table 1)")
    neg_batch: tuple[int, ...] = spec(default_factory=lambda: (4, 16, 64), ge=2, doc="negative batch sizes (Table 10)")
    stop_ratio: float = spec(
        0.5,
        ge=0.0,
        lt=1.0,
        doc="the T values again with this stopping rule (an extension beyond the paper; 0 = no such rows)",
    )


@dataclass(frozen=True)
class ContraCAMSection:
    """Stages ``contracam@multi`` and ``contracam@single``; each lists its own block (+ ``ablation``)."""

    multi: ContraCAMConfig = field(default_factory=ContraCAMConfig)
    single: ContraCAMSingleConfig = field(default_factory=ContraCAMSingleConfig)
    ablation: ContraCAMAblationConfig = field(default_factory=ContraCAMAblationConfig)

    def __post_init__(self) -> None:
        for name in ("multi", "single"):
            block = getattr(self, name)
            if block.neg_batch > block.batch_size:
                raise ConfigError(
                    f"params: 'contracam.{name}.neg_batch' = {block.neg_batch} is larger than 'contracam.{name}.batch_size' "
                    f"= {block.batch_size}: a negative group must fit in one batch (0 = the whole batch)"
                )


# ----------------------------------------------------------------------- detect


@dataclass(frozen=True)
class DetectConfig:
    """Detection / instance-segmentation fine-tune (stages ``detect@<variant>``; paper Table 5).

    torchvision Mask R-CNN (Faster R-CNN when ``masks`` is false) with an FPN on the variant's
    ResNet, trainable BatchNorm, fine-tuned on the multi-object train split and scored with
    COCOeval on its test split. The defaults are "lite" settings sized to ~3 min per model on
    2 CPU cores (see :mod:`oacl.eval.detection`). Also what that module reads.
    """

    masks: bool = spec(True, doc="Mask R-CNN (bbox and segm AP); false: Faster R-CNN (bbox AP only)")
    steps: int = spec(80, ge=1, doc="SGD steps of the fine-tune")
    batch_size: int = spec(8, ge=1, doc="images per step")
    lr: float = spec(0.01, gt=0.0, doc="peak SGD lr (not scaled with the batch)")
    momentum: float = spec(0.9, ge=0.0, lt=1.0)
    weight_decay: float = spec(1e-4, ge=0.0)
    warmup_steps: int = spec(20, ge=0, doc="linear warm-up from lr/10 to lr, then cosine decay to 0")
    clip_grad: float = spec(10.0, ge=0.0, doc="max global gradient L2 norm; 0 = no clipping")
    image_size: int = spec(
        128, ge=16, le=2048, doc="shorter image side inside the detector (min_size), px; 64 px images are upscaled"
    )
    max_size: int = spec(0, ge=0, le=4096, doc="cap of the longer side (max_size), px; 0 = image_size x 1333 / 800")
    flip: bool = spec(True, doc="random horizontal flip of the training images")
    anchor_sizes: tuple[int, ...] = spec(
        default_factory=lambda: (8, 16, 32, 64, 128),
        ge=1,
        doc="anchor side per FPN level P2-P6, px at detector scale (5 values)",
    )
    fpn_channels: int = spec(128, ge=8, le=1024, doc="torchvision 256; 128 halves a step here")
    rpn_pre_nms_train: int = spec(
        300, ge=1, doc="RPN proposals kept per FPN level before NMS, training (torchvision 2000)"
    )
    rpn_post_nms_train: int = spec(150, ge=1, doc="RPN proposals per image after NMS, training (torchvision 2000)")
    rpn_pre_nms_test: int = spec(150, ge=1, doc="as rpn_pre_nms_train, at test (torchvision 1000)")
    rpn_post_nms_test: int = spec(100, ge=1, doc="as rpn_post_nms_train, at test (torchvision 1000)")
    rois_per_image: int = spec(128, ge=1, doc="RoIs sampled per image for the box head loss (torchvision 512)")
    box_head_dim: int = spec(1024, ge=8, doc="width of the two-layer box head")
    mask_head_layers: int = spec(4, ge=1, le=8, doc="3x3 convs of the mask head (torchvision 4)")
    mask_head_channels: int = spec(128, ge=8, le=1024, doc="torchvision 256")
    detections_per_image: int = spec(
        30,
        ge=1,
        doc="kept per test image (COCOeval scores up to 100; scenes hold <= 4 objects); each costs a mask-head pass",
    )
    eval_images: int = spec(0, ge=0, doc="test images scored (the first n); 0 = all")
    eval_batch: int = spec(16, ge=1, doc="images per inference batch")
    plot_images: int = spec(8, ge=1, le=64, doc="test images in predictions.png")
    seed: int = spec(0, ge=0, doc="head init, the random-init backbone, batch order and flips")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = spec(0, ge=0, le=256, doc="torch intra-op threads; 0 = every usable core")

    def __post_init__(self) -> None:
        if len(self.anchor_sizes) != 5:
            raise ConfigError(
                f"params: 'detect.anchor_sizes' = {list(self.anchor_sizes)!r} must hold 5 sizes, one per FPN level P2-P6"
            )


# ---------------------------------------------------------------- lineval / shift


@dataclass(frozen=True)
class LinevalConfig:
    """Linear evaluation on frozen features (stages ``lineval@<variant>``; paper appendix B.2).

    Also read by ``shift@<variant>`` (feature extraction, the ℓ2 path of its re-fitted heads).
    """

    batch_size: int = spec(256, ge=1, doc="images per forward pass when extracting features")
    amp: bool = spec(False, doc="bf16 autocast for feature extraction")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_l2: int = spec(45, ge=1, le=1000, doc="l2 weights on the path (paper: 45)")
    l2_range: tuple[float, float] = spec(
        (1e-6, 1e5), gt=0.0, doc="smallest and largest l2 weight, log-spaced between (paper: 1e-6, 1e5)"
    )
    max_iter: int = spec(
        300,
        ge=1,
        le=100000,
        doc="L-BFGS iterations per l2 weight at most (warm-started); only converged fits are eligible for the choice",
    )
    seed: int = spec(0, ge=0, doc="the random-init control backbone; real data: the held-out validation split")
    random_seeds: int = spec(
        3, ge=1, le=20, doc="random-init control: probes of init seeds seed, seed + 1, ... averaged (its heads: seed's)"
    )
    val_fraction: float = spec(
        0.1,
        gt=0.0,
        lt=0.5,
        doc="real data without a validation split: fraction of the training images held out to choose l2",
    )

    def __post_init__(self) -> None:
        lo, hi = self.l2_range
        if lo > hi:
            raise ConfigError(f"params: 'lineval.l2_range' = {list(self.l2_range)!r} must be [smallest, largest]")


@dataclass(frozen=True)
class ShiftConfig:
    """Background and distribution shift, contextual bias (stages ``shift@<variant>``; paper Tables 7, 8, 24, D.2)."""

    trials: int = spec(
        1,
        ge=1,
        le=100,
        doc="1: score the lineval ORIGINAL head; n > 1: n heads re-fitted on seeded subsamples, mean and std",
    )
    subsample: float = spec(
        0.8, gt=0.0, le=1.0, doc="fraction of ORIGINAL train each trial's head is fitted on (trials > 1)"
    )
    seed: int = spec(0, ge=0, doc="trial t draws its subsample with seed + t; also the 1-shot supports and t-SNE")
    bias_seeds: int = spec(
        5, ge=1, le=1000, doc="1-shot binary classification error averaged over this many draws (paper: 5)"
    )
    bias_pairs: tuple[str, ...] = spec(
        default_factory=tuple, doc="co-occurring class pairs 'a+b'; empty: the groups in <data.root>/benchmark.json"
    )
    tsne_per_class: int = spec(150, ge=5, doc="crops per class in the t-SNE picture")
    tsne_perplexity: float = spec(30.0, gt=0.0)

    def __post_init__(self) -> None:
        if self.trials > 1 and self.subsample == 1.0:
            raise ConfigError(
                "params: 'shift.subsample' = 1.0 makes every trial identical (L-BFGS is deterministic); use < 1 with 'shift.trials' > 1"
            )
        for pair in self.bias_pairs:
            if len([p for p in pair.split("+") if p]) != 2:
                raise ConfigError(f"params: 'shift.bias_pairs' entry {pair!r} must name two classes as 'a+b'")


# ---------------------------------------------------------------------- retrain


@dataclass(frozen=True)
class OACropConfig:
    """``retrain.oacrop``: object-aware random crop on the ContraCAM boxes (paper §2.3, B.2).

    The boxes carry the margin of the contracam block that made them.
    """

    prob: float = spec(
        1.0, ge=0.0, le=1.0, doc="P(crop to a random box) per image; paper 1 (always, when it has a box)"
    )


@dataclass(frozen=True)
class OACropGTConfig:
    """``retrain.oacrop_gt``: object-aware random crop on the ground-truth boxes."""

    prob: float = spec(1.0, ge=0.0, le=1.0, doc="P(crop to a random box) per image; paper 1")
    margin: float = spec(0.2, ge=0.0, le=1.0, doc="box margin per side, fraction of the box side (paper B.2: 20 %)")


@dataclass(frozen=True)
class BgMixConfig:
    """``retrain.bgmix``: background mixup with the soft ContraCAM (Eq. 4). Its probability is the top-level ``pmix``."""

    threshold: float = spec(
        0.2, gt=0.0, lt=1.0, doc="binarisation of the soft CAM for the background rectangle (paper B.3: 0.2)"
    )


@dataclass(frozen=True)
class HardMixConfig:
    """``retrain.hardmix``: BG-HardMix, copy-paste with the binarised ContraCAM (paper Table 20)."""

    prob: float = spec(0.4, ge=0.0, le=1.0, doc="P(mix) per positive patch (the default pmix)")
    threshold: float = spec(
        0.2, gt=0.0, lt=1.0, doc="binarisation of the soft CAM: the pasted mask and the background rectangle"
    )


@dataclass(frozen=True)
class HardMixGTConfig:
    """``retrain.hardmix_gt``: BG-HardMix with the ground-truth masks (paper Table 7)."""

    prob: float = spec(0.4, ge=0.0, le=1.0, doc="P(mix) per positive patch (the default pmix)")


@dataclass(frozen=True)
class MixConfig:
    """``retrain.mixup`` / ``retrain.cutmix``: Mixup / CutMix for contrastive learning (paper Table 8)."""

    prob: float = spec(
        0.4, ge=0.0, le=1.0, doc="P(mix) per positive patch (the default pmix, for a like-for-like rate)"
    )
    alpha: float = spec(1.0, gt=0.0, doc="lambda ~ Beta(alpha, alpha), folded to max(lambda, 1 - lambda)")


@dataclass(frozen=True)
class RetrainSection:
    """Stages ``retrain@<method>-<debias>``: one block per debiasing variant; each stage lists only its own.

    Everything else (data, architecture, epochs, seed, ...) is the vanilla twin's ``pretrain`` section.
    """

    oacrop: OACropConfig = field(default_factory=OACropConfig)
    oacrop_gt: OACropGTConfig = field(default_factory=OACropGTConfig)
    bgmix: BgMixConfig = field(default_factory=BgMixConfig)
    hardmix: HardMixConfig = field(default_factory=HardMixConfig)
    hardmix_gt: HardMixGTConfig = field(default_factory=HardMixGTConfig)
    mixup: MixConfig = field(default_factory=MixConfig)
    cutmix: MixConfig = field(default_factory=MixConfig)


# ------------------------------------------------------------------------ top level


@dataclass(frozen=True)
class Params:
    """The whole params.yaml. Sections are added here as their stages become real."""

    pmix: float = spec(0.4, ge=0.0, le=1.0, doc="P(background mixup) per positive patch")
    extra_seeds: tuple[int, ...] = spec(
        default_factory=tuple, ge=0, doc="training seeds beyond pretrain.seed, each run under artifacts/seeds/s<seed>/"
    )
    oracles: tuple[Literal["moco", "byol"], ...] = spec(
        default_factory=tuple,
        doc="methods retrained with the true boxes (oacrop_gt) and masks (hardmix_gt), for every seed",
    )
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    contracam: ContraCAMSection = field(default_factory=ContraCAMSection)
    retrain: RetrainSection = field(default_factory=RetrainSection)
    lineval: LinevalConfig = field(default_factory=LinevalConfig)
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)

    def __post_init__(self) -> None:
        seen = {self.pretrain.seed}
        for seed in self.extra_seeds:
            if seed in seen:
                what = "pretrain.seed" if seed == self.pretrain.seed else "another entry"
                raise ConfigError(f"params: 'extra_seeds' repeats seed {seed} ({what}); each seed trains once")
            seen.add(seed)
        if len(set(self.oracles)) != len(self.oracles):
            raise ConfigError(f"params: 'oracles' lists a method twice: {list(self.oracles)}")


# ----------------------------------------------------------------------- machinery


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_bounds(value: Any, meta: Mapping[str, Any], key: str) -> None:
    for name, ok in (
        ("ge", lambda v, b: v >= b),
        ("gt", lambda v, b: v > b),
        ("le", lambda v, b: v <= b),
        ("lt", lambda v, b: v < b),
    ):
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            sym = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[name]
            raise ConfigError(f"params: '{key}' = {value!r} is out of range (must be {sym} {bound})")


def _coerce(value: Any, tp: Any, key: str, meta: Mapping[str, Any]) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"params: '{key}' must be a mapping of settings, got {value!r}")
        return parse_section(tp, value, key)
    if origin is Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            raise ConfigError(f"params: '{key}' = {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, meta)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params: '{key}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(v, args[0], f"{key}[{i}]", meta) for i, v in enumerate(value)]
        else:
            if len(value) != len(args):
                raise ConfigError(f"params: '{key}' must have {len(args)} elements, got {value!r}")
            items = [_coerce(v, a, f"{key}[{i}]", meta) for i, (v, a) in enumerate(zip(value, args))]
        return tuple(items)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"params: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"params: '{key}' must be an integer, got {value!r}")
        _check_bounds(value, meta, key)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"params: '{key}' must be a number, got {value!r}")
        _check_bounds(float(value), meta, key)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"params: '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"config field '{key}' has an unsupported annotation {_type_name(tp)}")


def parse_section(cls: type, raw: Mapping[str, Any] | None, prefix: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from a mapping, validating every key.

    Missing keys take the dataclass default; unknown keys are an error.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"params: '{prefix or 'params.yaml'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"'{prefix}.{unknown[0]}'" if prefix else f"'{unknown[0]}'"
        raise ConfigError(f"params: unknown key {where} (known keys here: {', '.join(sorted(fields))})")
    values = {}
    for name, f in fields.items():
        if name in raw:
            key = f"{prefix}.{name}" if prefix else name
            values[name] = _coerce(raw[name], hints[name], key, f.metadata)
    return cls(**values)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file; raise :class:`ConfigError` on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"params: cannot read {path}: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"params: {path} is not valid YAML: {err}") from None
    return parse_section(Params, raw)


def for_seed(params: Params, seed: int | None) -> Params:
    """``params`` as one extra seed's training stage reads them: ``pretrain.seed`` = ``seed``.

    ``extra_seeds`` is emptied (the run trains one seed); None returns ``params`` unchanged.
    """
    if seed is None:
        return params
    if seed < 0:
        raise ConfigError(f"--seed {seed}: a training seed is >= 0")
    pretrain = dataclasses.replace(params.pretrain, seed=seed)
    return dataclasses.replace(params, pretrain=pretrain, extra_seeds=())


def overlay(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``extra``'s values put in, section by section (mappings merge, the rest replaces)."""
    out = {k: (overlay(v, {}) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = overlay(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"params: cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"params: {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"params: {path} must hold a mapping, got {type(raw).__name__}")
    return raw


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m oacl.config [--params P] [--overlay O]``: validate P, or merge O into P (validated, atomic)."""
    import argparse

    from oacl.io.atomic import write_text

    p = argparse.ArgumentParser(
        prog="python -m oacl.config", description="Validate params.yaml, or merge an overlay into it."
    )
    p.add_argument("--params", default="params.yaml", type=Path)
    p.add_argument(
        "--overlay", type=Path, help="a YAML file with the keys to change (e.g. params.smoke.yaml); rewrites --params"
    )
    args = p.parse_args(argv)
    try:
        if args.overlay is None:
            load_params(args.params)
            print(f"{args.params}: valid")
            return 0
        merged = overlay(_read_yaml(args.params), _read_yaml(args.overlay))
        parse_section(Params, merged)  # refuse before writing anything
        write_text(args.params, yaml.safe_dump(merged, sort_keys=False))
        print(f"{args.params}: merged {args.overlay} (comments dropped; `git checkout {args.params}` restores it)")
        return 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
