"""Detection and instance-segmentation fine-tune evaluation (paper Table 5).

A model variant's ResNet initialises the backbone of a torchvision Mask R-CNN (Faster R-CNN
when ``detect.masks`` is false) with an FPN; the whole network is fine-tuned on the
multi-object set's train split and scored with pycocotools' COCOeval on its test split:
bbox (and segm) AP, AP50, AP75 and AR@100, all in percent.

Choices (measured on the embedded benchmark, 64 px images, ResNet-18, 2 CPU cores; see
``benchmarks/bench_detect.py``):

- **BatchNorm** stays plain, trainable ``nn.BatchNorm2d`` in train mode (batch statistics
  while fine-tuning, running statistics at test) — the paper's detectron2 recipe uses
  (Sync)BN too; torchvision's FrozenBatchNorm with a randomly initialised backbone diverged.
- **Scale**: images are upscaled inside the detector (``min_size = detect.image_size``,
  128 px by default), so that layer4 of a standard-stem ResNet is 4 x 4, not 2 x 2.
- **"Lite" heads**: anchors 8-128 px (one size per FPN level P2-P6, ratios 0.5 / 1 / 2),
  fewer RPN proposals and RoIs than torchvision's COCO defaults, a narrower box / mask head
  when the params say so — the objects are few (1-4 per image) and the images tiny.
- **Optimiser**: SGD (momentum, weight decay), linear warm-up from lr / 10, cosine decay to
  0, global gradient-norm clipping; a non-finite loss stops the run with one error naming
  the step and the loss terms (never a silent AP of 0).
- **Data**: COCO "instances" JSON + images (an image folder, or the embedded set file whose
  ``/ids`` are the ``file_name`` values), through :class:`oacl.data.datasets.CocoSet`;
  instance masks come from each annotation's segmentation (pycocotools). Training images are
  flipped horizontally at random (image, boxes and masks together).
- **Evaluation**: the ground truth is the test JSON itself (crowd regions ignored as COCO
  does); predictions in original-image pixels, masks binarised at 0.5 and RLE-encoded.

Labels: torchvision detectors use 0 for background, so class index c (0-based, as
everywhere in this project) is detector label c + 1 and COCO category ``category_ids[c]``.

:func:`run_detect` is everything the stage ``detect@<variant>`` does.

Size: the detection fine-tune from data adapter to COCOeval (data, model assembly, training loop, evaluation, picture, stage) — each part short, used only by ``detect@<model>``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from oacl.config import DetectConfig, Params
from oacl.data.datasets import CocoSet
from oacl.data.source import detection_files
from oacl.errors import ConfigError, DataError
from oacl.eval.features import load_variant
from oacl.io.atomic import save_png
from oacl.io.results import write_results
from oacl.io.sets import open_set
from oacl.perf import resolve_device
from oacl.progress import progress as progress_bar
from oacl.schedules import lr_at
from oacl.vocab import IMAGENET_MEAN, IMAGENET_STD, variant_names

__all__ = [
    "METRIC_KEYS",
    "DetectPaths",
    "DetectionSet",
    "FinetuneResult",
    "EvalResult",
    "check_same_categories",
    "open_detection_sets",
    "collate_detection",
    "hflip",
    "build_detector",
    "detect_lr",
    "finetune",
    "detections_to_coco",
    "coco_ap",
    "evaluate",
    "predictions_sheet",
    "run_detect",
]

log = logging.getLogger(__name__)

# Stats of COCOeval.summarize(), in its order; all but -1 ("no ground truth") are in [0, 1].
_STAT_NAMES = (
    "ap",
    "ap50",
    "ap75",
    "ap_small",
    "ap_medium",
    "ap_large",
    "ar1",
    "ar10",
    "ar100",
    "ar_small",
    "ar_medium",
    "ar_large",
)
METRIC_KEYS = ("ap", "ap50", "ap75", "ar100")  # written to the stage's metrics file, per iou type


# ---------------------------------------------------------------------------- data


class DetectionSet(Dataset):
    """COCO instances as training / test items of a torchvision detector.

    Args:
        annotation_json: the instances JSON.
        images: the image folder its ``file_name`` values are relative to, or a set file
            (``.h5``) whose ``/ids`` are the ``file_name`` values (the embedded benchmark).
        masks: build the per-instance masks (Mask R-CNN); False leaves them out.

    Item ``i``: ``(image, target)`` with ``image`` float32 (3, H, W) in [0, 1] and ``target``
    ``{"boxes": (K, 4) float32 XYXY px, "labels": (K,) int64 in 1..C (class index + 1),
    "masks": (K, H, W) uint8 {0, 1} (only with ``masks``), "image_id": COCO image id}``.
    Crowd annotations and zero-size boxes are left out (as :class:`CocoSet` does); an image
    with an annotation but no segmentation is a :class:`DataError` when ``masks`` is on.

    Attributes: ``classes`` (names, index = class), ``category_ids`` (COCO id per class),
    ``image_ids`` (COCO image id per item), ``coco`` (pycocotools COCO of the JSON, the
    evaluation ground truth), ``ids`` (file names).
    """

    def __init__(self, annotation_json: str | Path, images: str | Path, *, masks: bool = True) -> None:
        self.source = CocoSet(annotation_json, images)
        self.annotation_json = Path(annotation_json)
        self.masks = masks
        self.classes: list[str] = list(self.source.classes)
        self.category_ids: list[int] = list(self.source.category_ids)
        self.image_ids: list[Any] = list(self.source.image_ids)
        self.ids: list[str] = list(self.source.ids)
        self.coco: COCO = self.source.coco
        self._label_of = {c: i + 1 for i, c in enumerate(self.category_ids)}
        if masks and not self.source.has_masks:
            raise DataError(
                f"annotation file {self.annotation_json} has no segmentation: use detect.masks = false (Faster R-CNN)"
            )
        if Path(images).suffix in (".h5", ".hdf5"):
            set_classes = list(open_set(images).classes)
            if set_classes != self.classes:
                raise DataError(
                    f"annotation file {self.annotation_json} has {len(self.classes)} categories {self.classes}, "
                    f"but set file {images} has {len(set_classes)} classes {set_classes}"
                )

    def __len__(self) -> int:
        return len(self.source)

    def _instances(self, index: int, height: int, width: int) -> list[Mapping[str, Any]]:
        """Annotations of item ``index`` in file order: no crowd, positive size after clipping."""
        kept = []
        for ann in self.coco.imgToAnns.get(self.image_ids[index], []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann.get("iscrowd", 0) or min(x + w, width) <= max(x, 0.0) or min(y + h, height) <= max(y, 0.0):
                continue
            kept.append(ann)
        return kept

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        item = self.source[index]
        image = item["image"].as_subclass(Tensor).float().div_(255.0)  # (3, H, W)
        h, w = image.shape[-2:]
        boxes = item["boxes"].as_subclass(Tensor).float().reshape(-1, 4)
        labels = item["box_labels"] + 1
        target: dict[str, Any] = {"boxes": boxes, "labels": labels, "image_id": self.image_ids[index]}
        if self.masks:
            anns = self._instances(index, h, w)
            if len(anns) != len(boxes):
                raise DataError(
                    f"{self.annotation_json}: image {self.ids[index]!r} has {len(boxes)} boxes but {len(anns)} usable annotations"
                )
            masks = np.zeros((len(anns), h, w), np.uint8)
            for k, ann in enumerate(anns):
                if not ann.get("segmentation"):
                    raise DataError(
                        f"{self.annotation_json}: annotation {ann['id']!r} of image {self.ids[index]!r} has no segmentation "
                        "(needed by Mask R-CNN; set detect.masks = false)"
                    )
                with warnings.catch_warnings():  # pycocotools' decode trips numpy 2's copy= deprecation
                    warnings.simplefilter("ignore", DeprecationWarning)
                    masks[k] = self.coco.annToMask(ann)
            target["masks"] = torch.from_numpy(masks)
        return image, target

    def image_uint8(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of item ``index`` (for pictures)."""
        return self.source[index]["image"].as_subclass(Tensor).permute(1, 2, 0).numpy()


def check_same_categories(train: DetectionSet, test: DetectionSet) -> None:
    """The train and test JSON must list the same categories (ids and names): else DataError."""
    if train.category_ids != test.category_ids or train.classes != test.classes:
        raise DataError(
            f"categories differ: {train.annotation_json} has {len(train.classes)} "
            f"{list(zip(train.category_ids, train.classes))}, {test.annotation_json} has {len(test.classes)} "
            f"{list(zip(test.category_ids, test.classes))}"
        )


def open_detection_sets(params: Params) -> tuple[DetectionSet, DetectionSet]:
    """(train, test) of the multi-object set (:func:`oacl.data.source.detection_files`), categories checked to agree."""
    files = detection_files(params.data)
    train = DetectionSet(files.train_json, files.train_images, masks=params.detect.masks)
    test = DetectionSet(files.test_json, files.test_images, masks=params.detect.masks)
    check_same_categories(train, test)
    return train, test


def collate_detection(batch: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """A list of ``(image, target)`` → (list of B images, list of B targets); sizes may differ."""
    return [b[0] for b in batch], [b[1] for b in batch]


def hflip(image: Tensor, target: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """Mirror an item left-right: image (3, H, W), boxes (K, 4) XYXY px, masks (K, H, W)."""
    w = image.shape[-1]
    out = dict(target)
    boxes = target["boxes"]
    out["boxes"] = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
    if "masks" in target:
        out["masks"] = target["masks"].flip(-1)
    return image.flip(-1), out


# --------------------------------------------------------------------------- model


def _out_channels(layer: nn.Sequential) -> int:
    """Output width of a ResNet stage (its last block's last conv)."""
    block = layer[-1]
    return int((block.conv3 if hasattr(block, "conv3") else block.conv2).out_channels)


def build_detector(
    backbone: torchvision.models.ResNet,
    num_classes: int,
    cfg: DetectConfig,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> GeneralizedRCNN:
    """Mask R-CNN (``cfg.masks``) or Faster R-CNN with an FPN on ``backbone``; heads random.

    ``backbone`` (a torchvision ResNet-18/50, used in place, its ``avgpool`` / ``fc`` dropped)
    keeps plain trainable BatchNorm; FPN levels P2-P5 from layer1-4 plus P6 by max-pooling.
    ``num_classes`` counts object classes (background is added). The model takes a list of
    float images (3, H, W) in [0, 1] of any size, normalises them with ``mean`` / ``std`` and
    resizes them to ``cfg.image_size`` on the shorter side; outputs are in input pixels.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    if not all(hasattr(backbone, f"layer{i}") for i in range(1, 5)):
        raise ValueError(f"backbone must be a torchvision ResNet (layer1-4), got {type(backbone).__name__}")
    channels = [_out_channels(getattr(backbone, f"layer{i}")) for i in range(1, 5)]
    body = BackboneWithFPN(
        backbone,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=list(channels),
        out_channels=cfg.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = AnchorGenerator(sizes=tuple((int(s),) for s in cfg.anchor_sizes), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    pool = torchvision.ops.MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    c, res = cfg.fpn_channels, pool.output_size[0]
    common: dict[str, Any] = dict(
        min_size=cfg.image_size,
        max_size=cfg.max_size or round(cfg.image_size * 1333 / 800),
        image_mean=list(mean),
        image_std=list(std),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_test,
        box_roi_pool=pool,
        box_head=TwoMLPHead(c * res * res, cfg.box_head_dim),
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, num_classes + 1),
        box_batch_size_per_image=cfg.rois_per_image,
        box_detections_per_img=cfg.detections_per_image,
    )
    if not cfg.masks:
        return FasterRCNN(body, **common)
    mask_pool = torchvision.ops.MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=14, sampling_ratio=2)
    layers = [cfg.mask_head_channels] * cfg.mask_head_layers
    return MaskRCNN(
        body,
        mask_roi_pool=mask_pool,
        mask_head=MaskRCNNHeads(c, layers, 1),
        mask_predictor=MaskRCNNPredictor(layers[-1], layers[-1], num_classes + 1),
        **common,
    )


# ------------------------------------------------------------------------ training


def detect_lr(step: int, cfg: DetectConfig) -> float:
    """The fine-tune's learning rate at ``step``: :func:`oacl.schedules.lr_at`, warm-up from lr / 10."""
    return lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps, warmup_start=0.1)


@dataclass
class FinetuneResult:
    """What :func:`finetune` did: per-step summed loss and its terms, seconds, images seen."""

    steps: int
    losses: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    images: int = 0

    @property
    def final_loss(self) -> float:
        """Mean loss of the last 10 % of the steps (at least one)."""
        k = max(1, len(self.losses) // 10)
        return float(np.mean(self.losses[-k:])) if self.losses else float("nan")


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator) -> Iterator[list[int]]:
    """``steps`` batches of indices, reshuffled every pass; a batch never repeats an index."""
    if n < batch_size:
        raise ConfigError(f"params: 'detect.batch_size' = {batch_size} is larger than the {n} training images")
    done, order, pos = 0, torch.randperm(n, generator=gen).tolist(), 0
    while done < steps:
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen).tolist(), 0
        yield order[pos : pos + batch_size]
        pos += batch_size
        done += 1


def _to_device(target: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in target.items()}


def finetune(
    model: GeneralizedRCNN,
    data: Dataset,
    cfg: DetectConfig,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> FinetuneResult:
    """Fine-tune ``model`` in place for ``cfg.steps`` SGD steps on ``data`` (a :class:`DetectionSet`).

    Batches of ``cfg.batch_size`` distinct images, reshuffled each pass and flipped at random
    (``cfg.flip``), all drawn from a generator seeded by ``cfg.seed``; lr from :func:`detect_lr`;
    gradients clipped to ``cfg.clip_grad`` (L2 norm over all parameters). A non-finite loss
    raises :class:`ConfigError` naming the step and the loss terms. Leaves the model in eval mode.
    """
    device = torch.device(device)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=detect_lr(0, cfg), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    result = FinetuneResult(steps=cfg.steps)
    bar = None
    if progress:
        bar = progress_bar(cfg.steps, desc="detect fine-tune", unit="step", mininterval=5.0)
    t0 = time.perf_counter()
    for step, idx in enumerate(_batches(len(data), cfg.batch_size, cfg.steps, gen)):
        flips = torch.rand(len(idx), generator=gen) < 0.5
        images, targets = [], []
        for i, flip in zip(idx, flips.tolist()):
            image, target = data[i]
            if cfg.flip and flip:
                image, target = hflip(image, target)
            images.append(image.to(device))
            targets.append(_to_device(target, device))
        for group in opt.param_groups:
            group["lr"] = detect_lr(step, cfg)
        losses = model(images, targets)
        loss = sum(losses.values())
        values = {k: float(v.detach()) for k, v in losses.items()}
        if not math.isfinite(float(loss.detach())):
            terms = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            raise ConfigError(
                f"params: the detection fine-tune diverged at step {step + 1} of {cfg.steps} ({terms}); "
                f"lower 'detect.lr' (= {cfg.lr}) or keep 'detect.clip_grad' on (= {cfg.clip_grad})"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad > 0:
            nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        opt.step()
        result.losses.append(float(loss.detach()))
        for k, v in values.items():
            result.terms.setdefault(k, []).append(v)
        result.images += len(idx)
        if bar is not None:
            bar.set_postfix(loss=f"{result.losses[-1]:.3f}", refresh=False)
            bar.update(1)
    result.seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    model.eval()
    return result


# ---------------------------------------------------------------------- evaluation


def detections_to_coco(
    output: Mapping[str, Tensor], image_id: Any, category_ids: Sequence[int], *, masks: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One image's detector output → COCO result entries (bbox list, segm list).

    ``output``: ``boxes`` (D, 4) XYXY px, ``labels`` (D,) in 1..C, ``scores`` (D,) and, with
    ``masks``, ``masks`` (D, 1, H, W) probabilities (binarised at 0.5, RLE-encoded). Boxes
    become COCO ``[x, y, w, h]``; label l becomes ``category_ids[l - 1]``.
    """
    boxes = output["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
    labels = output["labels"].detach().cpu().numpy().reshape(-1)
    scores = output["scores"].detach().float().cpu().numpy().reshape(-1)
    if labels.size and (labels.min() < 1 or labels.max() > len(category_ids)):
        raise ValueError(f"detector labels must lie in 1..{len(category_ids)}, got {labels.min()}..{labels.max()}")
    cats = [int(category_ids[int(lab) - 1]) for lab in labels]
    bbox = [
        {
            "image_id": image_id,
            "category_id": c,
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "score": float(s),
        }
        for b, c, s in zip(boxes, cats, scores)
    ]
    segm: list[dict[str, Any]] = []
    if masks:
        binary = (output["masks"].detach()[:, 0] >= 0.5).cpu().numpy().astype(np.uint8)  # (D, H, W)
        if len(binary):
            rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
            for rle, c, s in zip(rles, cats, scores):
                rle["counts"] = rle["counts"].decode("ascii")
                segm.append({"image_id": image_id, "category_id": c, "segmentation": rle, "score": float(s)})
    return bbox, segm


def coco_ap(
    gt: COCO, results: Sequence[Mapping[str, Any]], iou_type: str, image_ids: Sequence[Any] | None = None
) -> dict[str, float | None]:
    """COCOeval of ``results`` against ``gt``: the 12 summary numbers in percent.

    Keys ``ap`` (IoU .50:.95), ``ap50``, ``ap75``, ``ap_small`` … ``ar1``, ``ar10``, ``ar100``,
    ``ar_small`` …; a number COCOeval cannot compute (no ground truth in that range) is None.
    ``image_ids`` restricts the evaluation (default: every image of ``gt``). No results at
    all scores 0 everywhere there is ground truth.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    ids = list(gt.getImgIds() if image_ids is None else image_ids)
    if not gt.getAnnIds(imgIds=ids):
        raise DataError("the evaluation ground truth holds no annotations for the scored images")
    if not results:
        stats = np.zeros(len(_STAT_NAMES))
    else:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            dt = gt.loadRes([dict(r) for r in results])
            ev = COCOeval(gt, dt, iou_type)
            ev.params.imgIds = ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = ev.stats
    return {name: (None if s < 0 else float(100.0 * s)) for name, s in zip(_STAT_NAMES, stats)}


@dataclass
class EvalResult:
    """Metrics of :func:`evaluate` (flat ``bbox/ap`` … in percent) and the first images' outputs."""

    metrics: dict[str, float | None]
    outputs: list[dict[str, Tensor]]
    images: int
    seconds: float
    detections: int


@torch.no_grad()
def evaluate(
    model: GeneralizedRCNN, data: DetectionSet, cfg: DetectConfig, *, device: torch.device | str = "cpu", keep: int = 0
) -> EvalResult:
    """Run ``model`` (eval mode) on the first ``cfg.eval_images`` items (0 = all) and score them.

    Returns ``bbox/<k>`` (and ``segm/<k>`` with ``cfg.masks``) for every k of
    :func:`coco_ap`, in percent, plus the raw outputs (CPU) of the first ``keep`` images.
    """
    device = torch.device(device)
    model.to(device).eval()
    n = len(data) if cfg.eval_images == 0 else min(cfg.eval_images, len(data))
    bbox: list[dict[str, Any]] = []
    segm: list[dict[str, Any]] = []
    kept: list[dict[str, Tensor]] = []
    t0 = time.perf_counter()
    for start in range(0, n, cfg.eval_batch):
        idx = list(range(start, min(n, start + cfg.eval_batch)))
        images = [data[i][0].to(device) for i in idx]
        outputs = model(images)
        for i, out in zip(idx, outputs):
            b, s = detections_to_coco(out, data.image_ids[i], data.category_ids, masks=cfg.masks)
            bbox.extend(b)
            segm.extend(s)
            if len(kept) < keep:
                kept.append({k: v.detach().cpu() for k, v in out.items()})
    seconds = time.perf_counter() - t0
    ids = data.image_ids[:n]
    metrics: dict[str, float | None] = {f"bbox/{k}": v for k, v in coco_ap(data.coco, bbox, "bbox", ids).items()}
    if cfg.masks:
        metrics.update({f"segm/{k}": v for k, v in coco_ap(data.coco, segm, "segm", ids).items()})
    return EvalResult(metrics=metrics, outputs=kept, images=n, seconds=seconds, detections=len(bbox))


# ------------------------------------------------------------------------ pictures


def predictions_sheet(
    data: DetectionSet,
    outputs: Sequence[Mapping[str, Tensor]],
    *,
    score_thresh: float | None = None,
    side: int = 96,
    title: str = "",
) -> Any:
    """PIL image: the first ``len(outputs)`` items of ``data``, ground truth (top row) and
    detections (bottom row; predicted mask outlines when present).

    Detections shown: those scoring ≥ ``score_thresh``, or with None the k best of each
    image, k = its number of ground-truth objects (a short fine-tune scores below 0.5).
    Images are resized to ``side`` x ``side`` (boxes scaled along); colours per class.
    """
    from PIL import Image

    from oacl.data.sheets import contact_sheet

    n = len(outputs)
    if n == 0:
        raise ValueError("predictions_sheet needs at least one output")
    images, gt_boxes, gt_labels, gt_masks, pr_boxes, pr_labels, pr_masks = [], [], [], [], [], [], []
    for i, out in enumerate(outputs):
        img = data.image_uint8(i)
        h, w = img.shape[:2]
        sx, sy = side / w, side / h
        scale = np.array([sx, sy, sx, sy], np.float32)
        images.append(np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR)))
        _, target = data[i]
        gt_boxes.append(target["boxes"].numpy() * scale)
        gt_labels.append(target["labels"].numpy() - 1)
        gt_union = (
            target["masks"].amax(0).numpy()
            if "masks" in target and len(target["masks"])
            else np.zeros((h, w), np.uint8)
        )
        gt_masks.append(np.asarray(Image.fromarray(gt_union * 255).resize((side, side), Image.NEAREST)) > 127)
        if score_thresh is None:
            keep = torch.zeros(len(out["scores"]), dtype=torch.bool)
            keep[torch.argsort(out["scores"], descending=True)[: len(target["boxes"])]] = True
        else:
            keep = out["scores"] >= score_thresh
        pr_boxes.append(out["boxes"][keep].numpy() * scale)
        pr_labels.append(out["labels"][keep].numpy() - 1)
        if "masks" in out and int(keep.sum()):
            union = (out["masks"][keep, 0] >= 0.5).any(0).numpy().astype(np.uint8)
        else:
            union = np.zeros((h, w), np.uint8)
        pr_masks.append(np.asarray(Image.fromarray(union * 255).resize((side, side), Image.NEAREST)) > 127)
    return contact_sheet(
        np.stack(images + images),
        masks=np.stack(gt_masks + pr_masks),
        boxes=gt_boxes + pr_boxes,
        box_labels=gt_labels + pr_labels,
        cols=n,
        scale=1,
        title=title,
        row_titles=["truth", "top-k pred" if score_thresh is None else f"pred>={score_thresh:g}"],
    )


# --------------------------------------------------------------------------- stage


@dataclass(frozen=True)
class DetectPaths:
    """Outputs of ``detect@<variant>`` under one root (default ``artifacts``)."""

    metrics: Path
    details: Path
    plots_dir: Path

    @classmethod
    def under(cls, root: str | Path, variant: str) -> DetectPaths:
        root = Path(root)
        return cls(
            metrics=root / "metrics" / f"detect-{variant}.json",
            details=root / "eval" / f"detect-{variant}" / "details.json",
            plots_dir=root / "plots" / f"detect-{variant}",
        )


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 2)


def run_detect(
    params: Params,
    variant: str,
    paths: DetectPaths,
    *,
    models_dir: str | Path = "artifacts/models",
    progress: bool = True,
) -> dict[str, Any]:
    """Everything stage ``detect@<variant>`` does; returns every number it measured.

    1. the variant's backbone (:func:`oacl.eval.features.load_variant`; arch / stem of ``pretrain``),
    2. train / test sets (:func:`open_detection_sets`), categories checked,
    3. :func:`build_detector` with the heads seeded by ``detect.seed``, :func:`finetune`,
    4. :func:`evaluate` → ``paths.metrics`` (the headline: ``bbox/ap50``, ``segm/ap50``, in
       percent), ``paths.details`` (AP, AP75, AR@100, losses, steps, seconds) and
       ``paths.plots_dir/predictions.png``. Returns the whole record.
    """
    cfg = params.detect
    t0 = time.perf_counter()
    device = resolve_device(cfg.device, "detect.device")
    if variant not in variant_names():
        raise ConfigError(f"detect: unknown model variant {variant!r}; known: {', '.join(variant_names())}")
    frozen = load_variant(variant, params, seed=cfg.seed, models_dir=models_dir)
    backbone, mean, std, source = frozen.encoder, frozen.mean, frozen.std, frozen.source
    train, test = open_detection_sets(params)
    torch.manual_seed(cfg.seed)  # the heads: the same initial heads for every pretrained variant
    model = build_detector(backbone, len(train.classes), cfg, mean=mean, std=std)
    log.info(
        "detect %s: %s/%s from %s, %d train / %d test images, %d classes, %d steps of %d at %d px on %s, %d threads",
        variant,
        params.pretrain.arch,
        params.pretrain.stem,
        source,
        len(train),
        len(test),
        len(train.classes),
        cfg.steps,
        cfg.batch_size,
        cfg.image_size,
        device,
        torch.get_num_threads(),
    )
    fit = finetune(model, train, cfg, device=device, progress=progress)
    ev = evaluate(model, test, cfg, device=device, keep=cfg.plot_images)
    metrics: dict[str, Any] = {
        **{
            f"{t}/{k}": _round(ev.metrics[f"{t}/{k}"])
            for t in (("bbox", "segm") if cfg.masks else ("bbox",))
            for k in METRIC_KEYS
        },
        "steps": cfg.steps,
        "train_images": len(train),
        "test_images": ev.images,
        "first_loss": round(float(np.mean(fit.losses[: max(1, len(fit.losses) // 10)])), 4),
        "final_loss": round(fit.final_loss, 4),
        "s_per_step": round(fit.seconds / max(1, cfg.steps), 3),
        "ms_per_test_image": round(1000.0 * ev.seconds / max(1, ev.images), 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_results(paths.metrics, metrics, "detect", details=paths.details)
    if cfg.plot_images:
        sheet = predictions_sheet(test, ev.outputs, title=f"detect {variant}: bbox AP50 {metrics['bbox/ap50']}")
        save_png(sheet, paths.plots_dir / "predictions.png")
    log.info("detect %s: %s", variant, json.dumps({k: v for k, v in metrics.items() if "/" in k}))
    return metrics
