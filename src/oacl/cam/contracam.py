"""Iterative ContraCAM (Mo et al., NeurIPS 2021, Sec. 2.2 and Algorithms 1-3).

ContraCAM is Grad-CAM with the class score replaced by a contrastive score:
each image should be close to its own embedding (the positive) and far from
the other images of the batch (the negatives). The iterative version masks
what was found so far with the batch's mean colour and looks again, adding the
masked images' embeddings as extra negatives; the CAMs are united by a
running maximum.

Two entry points:

* :func:`contracam` — the contract call (DESIGN.md A): one batch of normalized
  images in, one soft mask per image out. It prepares a private copy of the
  model on every call, so the caller's modules are never touched.
* :func:`prepare_cam_model` + :func:`contracam_prepared` — the same
  computation with the copy made once, for loops over a data set
  (:func:`run_contracam` uses them).

``amp=False`` is the reference path: float32, the operations of the authors'
code in the same order. ``amp=True`` is the fast path: BatchNorm folded into
the convolutions (in float32), then the backbone copy stored channels-last in
bfloat16 (float16 on GPUs without bf16) — the numbers of bf16 autocast without
re-casting the weights on every pass. Only the backbone runs in low precision;
the projector, the score, the gradient and the CAM stay in float32.

Negative batch (paper Table 10). ``neg_batch=n`` randomly partitions the batch
into groups of ``n`` images (a remainder of one image joins the previous
group) and treats every group as an independent ContraCAM batch: its own
positive sum, its own negatives (the group's images and their masked
versions) and its own mask colour. This is exactly "run ContraCAM on random
batches of ``n`` images" — the authors' negative batch is their inference batch
— while keeping the whole batch in one vectorised forward pass. ``neg_batch=None``
(or ``>= B``) is the paper's default: the whole batch.

Size: the reference path (a literal reading of Algorithms 1–3) and the fast path side by side, so that their agreement stays easy to check.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oacl.errors import DataError
from oacl.imaging import normalize
from oacl.perf import resolve_amp
from oacl.progress import track
from oacl.vocab import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "CamModel",
    "CamResult",
    "ContraCAMSettings",
    "cam_from_gradients",
    "channel_sum_cam",
    "classifier_cam",
    "contracam",
    "contracam_prepared",
    "contrastive_score",
    "expand_resolution",
    "minmax_normalize",
    "partition_groups",
    "prepare_cam_model",
    "raw_cam",
    "run_contracam",
]

log = logging.getLogger(__name__)

NORMALIZE_EPS = 1e-20
EXPAND_CHOICES = (1, 2, 4)
_STEM = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")


# ----------------------------------------------------------------------------- model preparation


@dataclass(frozen=True)
class CamModel:
    """A private, inference-ready copy of an encoder and projector.

    Built by :func:`prepare_cam_model`; never shares modules with the caller.
    ``amp_dtype`` is the low-precision dtype of the fast path (``None`` on the
    reference path).
    """

    encoder: nn.Module
    projector: nn.Module
    expand_res: int
    amp: bool
    amp_dtype: torch.dtype | None
    device: torch.device


def _check_encoder(encoder: nn.Module) -> None:
    missing = [name for name in _STEM if not hasattr(encoder, name)]
    if missing:
        raise ValueError(
            f"encoder must be a torchvision ResNet (with {', '.join(_STEM)}); "
            f"{type(encoder).__name__} lacks {', '.join(missing)}"
        )


def expand_resolution(encoder: nn.Module, expand_res: int) -> None:
    """Set the stride of every conv in ``layer4[0]`` (and ``layer3[0]`` for 4) to 1, IN PLACE.

    This is the expansion trick of Choe et al. (2020): the last feature map
    becomes 2x (or 4x) larger without retraining. Call it on a copy only.
    """
    if expand_res not in EXPAND_CHOICES:
        raise ValueError(f"expand_res must be one of {EXPAND_CHOICES}, got {expand_res!r}")
    blocks = []
    if expand_res >= 2:
        blocks.append(encoder.layer4[0])
    if expand_res >= 4:
        blocks.append(encoder.layer3[0])
    for block in blocks:
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)


def _fold_batchnorms(module: nn.Module) -> None:
    """Fold every eval-mode BatchNorm2d that directly follows a conv into it, IN PLACE.

    Handles the torchvision ResNet layout: ``convN``/``bnN`` attribute pairs and
    ``downsample = Sequential(conv, bn)``. The folded BN becomes ``nn.Identity``.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for m in list(module.modules()):
        if isinstance(m, nn.Sequential):
            kids = list(m.children())
            for i in range(len(kids) - 1):
                if isinstance(kids[i], nn.Conv2d) and isinstance(kids[i + 1], nn.BatchNorm2d):
                    m[i] = fuse_conv_bn_eval(kids[i], kids[i + 1])
                    m[i + 1] = nn.Identity()
            continue
        for name, child in list(m.named_children()):
            if isinstance(child, nn.Conv2d) and name.startswith("conv"):
                bn_name = "bn" + name[len("conv") :]
                bn = getattr(m, bn_name, None)
                if isinstance(bn, nn.BatchNorm2d) and bn.num_features == child.out_channels:
                    setattr(m, name, fuse_conv_bn_eval(child, bn))
                    setattr(m, bn_name, nn.Identity())


def prepare_cam_model(encoder: nn.Module, projector: nn.Module, *, expand_res: int = 1, amp: bool = False) -> CamModel:
    """Deep-copy ``encoder`` and ``projector`` and make the copy ready for ContraCAM.

    The copy is in eval mode, its parameters do not require gradients, and
    ``expand_res`` (1, 2 or 4) has been applied. With ``amp`` the copy's
    BatchNorms are folded into the convolutions and its weights are stored
    channels-last. The caller's modules are not modified.
    """
    _check_encoder(encoder)
    if expand_res not in EXPAND_CHOICES:
        raise ValueError(f"expand_res must be one of {EXPAND_CHOICES}, got {expand_res!r}")
    params = list(encoder.parameters())
    if not params:
        raise ValueError("encoder has no parameters")
    device = params[0].device
    with torch.inference_mode(False):  # copies made under a caller's inference_mode must stay usable by autograd
        enc = copy.deepcopy(encoder)
        proj = copy.deepcopy(projector)
        for m in (enc, proj):
            m.eval()
            m.requires_grad_(False)
        expand_resolution(enc, expand_res)
        amp_dtype = None
        if amp:
            amp_dtype = torch.bfloat16
            if device.type == "cuda" and not torch.cuda.is_bf16_supported():
                amp_dtype = torch.float16
            # Folding BN in float32 first, then storing the weights in low precision, gives the
            # numbers of bf16 autocast without re-casting every weight on every forward pass.
            _fold_batchnorms(enc)
            enc = enc.to(dtype=amp_dtype, memory_format=torch.channels_last)
    return CamModel(enc, proj, expand_res, amp, amp_dtype, device)


def _features(model: CamModel, x: Tensor) -> Tensor:
    """layer4 activations A of a batch, computed without a graph.

    x: (B, 3, H, W) float32 normalized -> A: (B, K, h, w) float32.
    The ResNet's layers are called directly (no hooks).
    """
    enc = model.encoder
    with torch.no_grad():
        if model.amp:
            x = x.to(dtype=model.amp_dtype, memory_format=torch.channels_last)
            return _backbone(enc, x).float().contiguous()
        return _backbone(enc, x)


def _backbone(enc: nn.Module, x: Tensor) -> Tensor:
    x = enc.conv1(x)
    x = enc.bn1(x)
    x = enc.relu(x)
    x = enc.maxpool(x)
    x = enc.layer1(x)
    x = enc.layer2(x)
    x = enc.layer3(x)
    return enc.layer4(x)


def _project(model: CamModel, feature: Tensor) -> Tensor:
    """Embedding q = normalize(projector(avgpool(A))). feature: (B, K, h, w) -> q: (B, D)."""
    pooled = torch.flatten(model.encoder.avgpool(feature), 1)  # (B, K)
    out = model.projector(pooled)  # (B, D)
    if out.dim() != 2 or out.shape[0] != feature.shape[0]:
        raise ValueError(f"projector must map (B, C) to (B, D), got output shape {tuple(out.shape)}")
    return F.normalize(out, dim=1)


# ----------------------------------------------------------------------------- score and CAM


def partition_groups(batch: int, size: int | None, generator: torch.Generator | None = None) -> Tensor | None:
    """Random partition of ``batch`` indices into groups of ``size``; (B,) group id per image.

    Returns ``None`` when ``size`` is ``None`` or covers the whole batch (one
    group). A remainder group of a single image joins the previous group, so
    that every image has at least one negative. The permutation is drawn on
    the CPU from ``generator`` (reproducible across devices).
    """
    if size is None or size >= batch:
        return None
    if size < 2:
        raise ValueError(f"neg_batch must be >= 2 (an image needs a negative), got {size!r}")
    n_groups = batch // size
    perm = torch.randperm(batch, generator=generator)
    slot = torch.arange(batch) // size  # position -> group
    slot = slot.clamp_max(n_groups - 1) if batch % size == 1 else slot
    groups = torch.empty(batch, dtype=torch.long)
    groups[perm] = slot
    return groups


def contrastive_score(query: Tensor, key: Tensor, negatives: Sequence[Tensor], groups: Tensor | None = None) -> Tensor:
    """The contrastive score of Algorithm 2, one value per sample.

    score_b = log sum_i exp(q_i . k_i) - log sum_l sum_j exp(q_b . n^l_j * [j != b])

    The positive sum runs over the whole batch (as the authors' code computes
    it: ``pos`` has shape (1, B) before ``sum(dim=1)``), and the masked logits
    (j == b) are multiplied by 0, so each contributes exp(0) = 1. With
    ``groups`` the sums run over the sample's own group only (images of other
    groups are neither positives nor negatives).

    query: (B, D) L2-normalized, carries the graph; key: (B, D); negatives: L
    tensors (B, D) (detached embeddings of every iteration so far);
    groups: optional (B,) long. Returns (B,).
    """
    if query.dim() != 2 or key.shape != query.shape:
        raise ValueError(f"query and key must both be (B, D), got {tuple(query.shape)} and {tuple(key.shape)}")
    if len(negatives) == 0:
        raise ValueError("negatives must hold at least one (B, D) tensor")
    b = query.shape[0]
    negs = torch.stack(list(negatives))  # (L, B, D)
    if negs.shape[1:] != query.shape:
        raise ValueError(f"every negative must be {tuple(query.shape)}, got {tuple(negs.shape[1:])}")
    eye = torch.eye(b, device=query.device, dtype=query.dtype)
    pos = torch.einsum("nc,nc->n", query, key)  # (B,)
    logits = torch.einsum("nc,lkc->nlk", query, negs) * (1 - eye)[:, None, :]  # (B, L, B); j == b -> 0
    neg_exp = logits.exp()  # (B, L, B)
    if groups is None:
        pos_sum = pos.exp().sum().expand(b)  # (B,) the same sum for every sample
    else:
        same = (groups[:, None] == groups[None, :]).to(query.dtype)  # (B, B)
        pos_sum = same @ pos.exp()  # (B,)
        neg_exp = neg_exp * same[:, None, :]
    return (pos_sum / neg_exp.sum(dim=(1, 2))).log()


def minmax_normalize(cam: Tensor, eps: float = NORMALIZE_EPS) -> Tensor:
    """Per-image min-max normalisation (x - min) / (max(x - min) + eps). cam: (B, 1, H, W)."""
    flat = cam.flatten(1)
    shifted = cam - flat.amin(dim=1).view(-1, 1, 1, 1)
    return shifted / (shifted.flatten(1).amax(dim=1).view(-1, 1, 1, 1) + eps)


def cam_from_gradients(
    feature: Tensor, grad: Tensor, size: tuple[int, int], *, remove_negative_signal: bool = True
) -> Tensor:
    """Algorithm 3: CAM from layer4 activations and the score's gradient.

    alpha_k = mean_ij dS/dA_kij (clamped at 0 with negative-signal removal);
    CAM = normalize(bicubic(ReLU(sum_k alpha_k A_k))). feature, grad: (B, K, h, w);
    returns (B, 1, H, W) in [0, 1].
    """
    return _upsample_normalize(raw_cam(feature, grad, remove_negative_signal=remove_negative_signal), size)


def raw_cam(feature: Tensor, grad: Tensor, *, remove_negative_signal: bool = True) -> Tensor:
    """ReLU(Σ_k α_k A_k) on the feature grid, before upsampling and normalisation: (B, 1, h, w).

    Its per-image peak is what the optional stopping rule compares across iterations.
    """
    weight = F.adaptive_avg_pool2d(grad, output_size=(1, 1))  # (B, K, 1, 1)
    if remove_negative_signal:
        weight = weight.clamp_min(0)
    return F.relu(torch.sum(weight * feature, dim=1, keepdim=True))


def _upsample_normalize(cam: Tensor, size: tuple[int, int]) -> Tensor:
    return minmax_normalize(F.interpolate(cam, size=size, mode="bicubic", align_corners=False))


def channel_sum_cam(model: CamModel, images: Tensor) -> Tensor:
    """A gradient-free null map of the same backbone: Σ_k A_k, the channel sum of the layer4 activations.

    Upsampled and normalized exactly as a ContraCAM map (ReLU, bicubic to the image size,
    per-image min-max), so it can take the same post-processing. images: (B, 3, H, W)
    normalized, on the model's device. Returns (B, 1, H, W) in [0, 1].
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if images.device != model.device:
        raise ValueError(f"images are on {images.device} but the model is on {model.device}")
    cam = F.relu(_features(model, images.float()).sum(dim=1, keepdim=True))  # (B, 1, h, w)
    cam = F.interpolate(cam, size=tuple(images.shape[-2:]), mode="bicubic", align_corners=False)
    return minmax_normalize(cam)


def _mask_colour(images: Tensor, groups: Tensor | None) -> Tensor:
    """Per-channel mean colour of the batch (or of each image's group). Returns (1|B, C, 1, 1)."""
    if groups is None:
        return images.mean(dim=(0, 2, 3), keepdim=True)
    n_groups = int(groups.max()) + 1
    onehot = F.one_hot(groups, n_groups).to(images.dtype)  # (B, G)
    per_image = images.mean(dim=(2, 3))  # (B, C)
    per_group = (onehot.T @ per_image) / onehot.sum(0)[:, None]  # (G, C)
    return per_group[groups][:, :, None, None]  # (B, C, 1, 1)


def contracam_prepared(
    model: CamModel,
    images: Tensor,
    *,
    iters: int = 1,
    remove_negative_signal: bool = True,
    neg_batch: int | None = None,
    generator: torch.Generator | None = None,
    return_steps: bool = False,
    stop_ratio: float = 0.0,
) -> Tensor | tuple[Tensor, Tensor]:
    """Iterative ContraCAM with a model prepared by :func:`prepare_cam_model`.

    images: (B, 3, H, W) float, normalized, on the model's device.
    Returns the united mask (B, 1, H, W) in [0, 1]; with ``return_steps`` also
    the per-iteration CAMs (T, B, 1, H, W). See :func:`contracam`.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be normalized floats, got dtype {images.dtype}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    if images.device != model.device:
        raise ValueError(f"images are on {images.device} but the model is on {model.device}")
    if neg_batch is not None and (isinstance(neg_batch, bool) or not isinstance(neg_batch, int) or neg_batch < 2):
        raise ValueError(f"neg_batch must be None or an integer >= 2, got {neg_batch!r}")
    if not 0.0 <= stop_ratio < 1.0:
        raise ValueError(f"stop_ratio must be in [0, 1), got {stop_ratio!r}")

    with torch.inference_mode(False), torch.enable_grad():  # works inside a caller's no_grad / inference_mode
        return _contracam_loop(
            model,
            images.detach().float().clone(),
            iters,
            remove_negative_signal,
            neg_batch,
            generator,
            return_steps,
            stop_ratio,
        )


def _contracam_loop(
    model: CamModel,
    images: Tensor,
    iters: int,
    remove_negative_signal: bool,
    neg_batch: int | None,
    generator: torch.Generator | None,
    return_steps: bool,
    stop_ratio: float = 0.0,
) -> Tensor | tuple[Tensor, Tensor]:
    """The iterations of Algorithm 1; images (B, 3, H, W) float32 owned by this call.

    ``stop_ratio`` > 0 is the stopping rule (an extension beyond the paper, off at 0): from the
    second iteration on, an image whose raw CAM peak (:func:`raw_cam`) falls below ``stop_ratio``
    times its first iteration's stops for good — its later CAMs are zero, so its mask and its
    masked input stay as they were. Nothing else changes (its images still serve as negatives).
    """
    b, _, h, w = images.shape
    groups = partition_groups(b, neg_batch, generator)
    if groups is not None:
        groups = groups.to(images.device)
    colour = _mask_colour(images, groups)

    x = images
    mask: Tensor | None = None
    key: Tensor | None = None
    first_peak: Tensor | None = None
    active = torch.ones(b, dtype=torch.bool, device=images.device)
    queue: list[Tensor] = []
    steps: list[Tensor] = []
    for t in range(iters):
        feature = _features(model, x)  # (B, K, h', w')
        feature.requires_grad_(True)
        query = _project(model, feature)  # (B, D)
        if t == 0:
            key = query.detach()  # the original images are the positives
        queue.append(query.detach())  # every iteration's images are negatives
        score = contrastive_score(query, key, queue, groups)  # (B,)
        (grad,) = torch.autograd.grad(score.sum(), feature)
        raw = raw_cam(feature.detach(), grad, remove_negative_signal=remove_negative_signal)
        cam = _upsample_normalize(raw, (h, w))
        del feature, query, score, grad
        if stop_ratio > 0:  # the extension: an image whose raw CAM peak fell below stop_ratio x its first stops
            peak = raw.flatten(1).amax(dim=1)  # (B,)
            if first_peak is None:
                first_peak = peak
            active = active & (peak >= stop_ratio * first_peak)
            cam = cam * active.view(-1, 1, 1, 1).to(cam.dtype)  # a stopped image adds nothing (max with 0)
        mask = cam if mask is None else torch.maximum(mask, cam)  # union over iterations
        if return_steps:
            steps.append(cam)
        if t + 1 < iters:
            x = images * (1 - mask) + colour * mask  # soft mask with the mean colour
    assert mask is not None
    if return_steps:
        return mask, torch.stack(steps)
    return mask


def contracam(
    encoder: nn.Module,
    projector: nn.Module,
    images: Tensor,
    *,
    iters: int = 1,
    expand_res: int = 1,
    remove_negative_signal: bool = True,
    amp: bool = False,
    neg_batch: int | None = None,
    generator: torch.Generator | None = None,
    return_steps: bool = False,
    stop_ratio: float = 0.0,
) -> Tensor | tuple[Tensor, Tensor]:
    """Iterative ContraCAM of a batch (DESIGN.md contract A; paper Algorithms 1-3).

    Args:
        encoder: torchvision ResNet with ``fc = nn.Identity()`` (only its
            conv1 .. layer4 and avgpool are used).
        projector: maps pooled features (B, C) to embeddings (B, D).
        images: (B, 3, H, W) normalized images on the encoder's device.
        iters: T, the number of refinement iterations (paper: 10 for boxes,
            1 for background-mixup masks).
        expand_res: 1, 2 or 4 — layer4 (and layer3 for 4) first-block strides
            set to 1 on a private copy.
        remove_negative_signal: clamp the channel weights alpha at 0 (NSR).
        amp: fast path (bf16 backbone, folded BN, channels-last).
        neg_batch: size of the random negative groups (paper Table 10);
            ``None`` uses the whole batch. See the module docstring.
        generator: RNG for the negative groups.
        return_steps: also return each iteration's CAM (T, B, 1, H, W).
        stop_ratio: the stopping rule, an extension beyond the paper (0 = off, the paper's
            semantics): see :func:`_contracam_loop`.

    Returns:
        (B, 1, H, W) float32 in [0, 1]: the running max of the T CAMs, detached.
    """
    model = prepare_cam_model(encoder, projector, expand_res=expand_res, amp=amp)
    try:
        return contracam_prepared(
            model,
            images,
            iters=iters,
            remove_negative_signal=remove_negative_signal,
            neg_batch=neg_batch,
            generator=generator,
            return_steps=return_steps,
            stop_ratio=stop_ratio,
        )
    finally:
        del model


def classifier_cam(
    encoder: nn.Module,
    head: nn.Module,
    images: Tensor,
    labels: Tensor | None = None,
    *,
    expand_res: int = 1,
    remove_negative_signal: bool = True,
    amp: bool = False,
) -> Tensor:
    """Grad-CAM of a classifier on the same backbone (the paper's Table 2 baseline).

    The score of image b is the logit ``head(avgpool(A_b))[labels[b]]`` (the
    predicted class when ``labels`` is None); the rest is Algorithm 3.
    images: (B, 3, H, W) normalized; labels: (B,) long. Returns (B, 1, H, W) in [0, 1].
    """
    model = prepare_cam_model(encoder, head, expand_res=expand_res, amp=amp)
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    with torch.inference_mode(False), torch.enable_grad():
        x = images.detach().float().clone()
        feature = _features(model, x)
        feature.requires_grad_(True)
        logits = model.projector(torch.flatten(model.encoder.avgpool(feature), 1))  # (B, classes)
        if labels is None:
            labels = logits.argmax(dim=1)
        labels = torch.as_tensor(labels, device=logits.device).long()
        if labels.shape != (x.shape[0],) or labels.min() < 0 or labels.max() >= logits.shape[1]:
            raise ValueError(f"labels must be (B,) class indices < {logits.shape[1]}, got {labels.tolist()}")
        score = logits.gather(1, labels[:, None]).squeeze(1)  # (B,)
        (grad,) = torch.autograd.grad(score.sum(), feature)
        return cam_from_gradients(
            feature.detach(), grad, tuple(x.shape[2:]), remove_negative_signal=remove_negative_signal
        )


# ----------------------------------------------------------------------------- whole data sets


class ContraCAMSettings(Protocol):
    """The settings :func:`run_contracam` reads (the ``contracam`` params section provides them)."""

    batch_size: int
    iters: int
    expand_res: int
    remove_negative_signal: bool
    neg_batch: int  # 0: the whole batch
    stop_ratio: float  # the stopping rule (extension; 0 = off)
    amp: bool
    crf: bool
    crf_iters: int
    crf_gauss_sxy: float  # pydensecrf pairwise kernels (oacl.cam.postprocess.PostprocessOptions)
    crf_gauss_compat: float
    crf_bi_sxy: float
    crf_bi_srgb: float
    crf_bi_compat: float
    threshold: float
    min_component: float
    box_margin: float
    min_box_area: float
    workers: int  # CRF processes; 0: all available cores
    seed: int


@dataclass
class CamResult:
    """ContraCAM of a whole data set, in dataset order.

    ids: N image ids; masks: (N, H, W) uint8 soft CAM x 255; masks_refined:
    (N, H, W) uint8 in {0, 1} (CRF + cleaning, or threshold + cleaning when
    CRF is off); boxes: N float32 arrays (k_i, 4) of normalized x1, y1, x2, y2.
    """

    ids: list[str]
    masks: np.ndarray
    masks_refined: np.ndarray
    boxes: list[np.ndarray]
    seconds_cam: float = 0.0
    seconds_postprocess: float = 0.0


def _batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Split range(n) into ceil(n / batch_size) nearly equal consecutive batches."""
    if n == 0:
        return []
    return [a for a in np.array_split(np.arange(n), math.ceil(n / batch_size)) if len(a)]


def run_contracam(
    encoder: nn.Module,
    projector: nn.Module,
    dataset: Any,
    cfg: ContraCAMSettings,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> CamResult:
    """ContraCAM masks, refined masks and boxes for every image of ``dataset``.

    ``dataset[i]`` returns the project's item dict (``image``: uint8 (3, H, W),
    ``id``: str). Images are visited in a seeded random order (so each batch is
    a random negative batch, as in the paper) in batches of about
    ``cfg.batch_size``; the results come back in dataset order. Images are
    normalized with ``mean`` / ``std`` (those the encoder was trained with).
    Post-processing (CRF, cleaning, boxes) runs on ``cfg.workers`` processes.
    """
    import time

    from oacl.cam.postprocess import PostprocessOptions, refine_batch

    n = len(dataset)
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size!r}")
    if device is None:
        device = next(encoder.parameters()).device
    device = torch.device(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(n, generator=gen).numpy()

    enc_dev = next(encoder.parameters()).device
    enc_src, proj_src = encoder, projector
    if enc_dev != device:  # copies on the target device; the caller's modules stay where they are
        enc_src, proj_src = copy.deepcopy(encoder).to(device), copy.deepcopy(projector).to(device)
    model = prepare_cam_model(enc_src, proj_src, expand_res=cfg.expand_res, amp=resolve_amp(cfg.amp, device))

    ids: list[str] = [""] * n
    rgb: np.ndarray | None = None
    soft: np.ndarray | None = None
    t0 = time.perf_counter()
    batches = _batches(n, cfg.batch_size)
    iterator: Any = batches
    if progress:
        iterator = track(batches, desc="contracam", unit="batch")
    for idx in iterator:
        items = [dataset[int(order[i])] for i in idx]
        imgs = [torch.as_tensor(it["image"]) for it in items]
        shapes = {tuple(im.shape) for im in imgs}
        if len(shapes) != 1 or next(iter(shapes))[0] != 3:
            raise DataError(f"contracam needs (3, H, W) images of one size per batch, got shapes {sorted(shapes)}")
        batch_u8 = torch.stack(imgs)  # (b, 3, H, W) uint8
        if rgb is None:
            _, _, hh, ww = batch_u8.shape
            rgb = np.zeros((n, hh, ww, 3), np.uint8)
            soft = np.zeros((n, hh, ww), np.uint8)
        elif batch_u8.shape[2:] != rgb.shape[1:3]:
            raise DataError(f"all images must share one size: {tuple(batch_u8.shape[2:])} vs {rgb.shape[1:3]}")
        x = normalize(batch_u8.to(device), mean, std)
        mask = contracam_prepared(
            model,
            x,
            iters=cfg.iters,
            remove_negative_signal=cfg.remove_negative_signal,
            neg_batch=cfg.neg_batch or None,
            generator=gen,
            stop_ratio=cfg.stop_ratio,
        )
        dest = order[idx]
        rgb[dest] = batch_u8.permute(0, 2, 3, 1).numpy()
        soft[dest] = (mask[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        for i, it in zip(dest, items):
            ids[i] = str(it["id"])
    t1 = time.perf_counter()
    if rgb is None or soft is None:
        return CamResult([], np.zeros((0, 0, 0), np.uint8), np.zeros((0, 0, 0), np.uint8), [])
    refined, boxes = refine_batch(rgb, soft, PostprocessOptions.from_config(cfg), processes=cfg.workers)
    t2 = time.perf_counter()
    log.info("contracam: %d images, %.1f s CAM, %.1f s post-processing", n, t1 - t0, t2 - t1)
    return CamResult(ids, soft, refined, boxes, t1 - t0, t2 - t1)
