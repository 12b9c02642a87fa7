"""The localisation gate of a candidate benchmark (issue 17): does a trained model's CAM find its objects?

    PYTHONPATH=src python benchmarks/cam_screen.py --tag NAME [--variant shared-scene] [--set KEY=VALUE ...] \\
        [--steps 552] [--seed 0] [--images 256] [--supervised-steps 0 [--supervised-crop-scale 0.8 1]] \\
        [--also-expand 1] [--vflip] [--padding circular] [--norm group|instance|layer] [--shuffle-bn 4] \\
        [--keep moco.pt [--device cuda] [--train-only]] [--load moco.pt] [--out docs/cam_screen.jsonl]
    PYTHONPATH=src python benchmarks/cam_screen.py --table docs/cam_screen.jsonl   # the Markdown tables

For one configuration (``params.yaml`` with ``--set`` overrides and a renderer ``--variant`` of
``image_cues.py``, generated once by :func:`screen.benchmark_dir`), in one process:

1. MoCo v2 through the project's engine for about ``--steps`` steps (the pipeline's recipe), and the
   frozen-feature probe (:func:`probe_learnability.probe`) of it and of three random-init seeds;
2. soft maps on a fixed subset (seed 0) of each training split, scored by PxAP (%) against the
   ground-truth masks (at the pipeline's expansion ×2; ``--also-expand`` adds ×1 or ×4):
   ContraCAM of the trained model (NSR on; T = 1 and T = 5) and of random weights of the same
   architecture and head (seed 0); each ContraCAM map inverted (1 − map); the gradient-free channel
   sum of each model's activations after layer2, layer3 and layer4, and ContraCAM's T = 1 map with
   the gradient taken at layer2 and layer3, or on layer4 activations centred on the batch's mean
   (diagnostics beyond the paper); the centred Gaussian at its best σ for PxAP on these images
   (image-blind and optimistic); the all-ones map (PxAP = the object fraction); whether the channel
   sum follows the frame (:func:`frame_stats`) and, on single, where the class lives in layer4
   (:func:`cell_probe`); and the ground-truth mask at the CAM's own resolution (area-averaged to the
   map's side, upsampled as ContraCAM's maps are): the ceiling of a perfect map (``gt_at_map_side``;
   ``gt_at_side`` at sides 2, 4, 8 and 16);
3. with ``--supervised-steps N``, the same backbone trained with labels for N steps
   (:func:`screen.train_supervised`; ``--supervised-crop-scale`` gives it milder crops than
   MoCo's, which often cut the object out while keeping its label), its probe and its Grad-CAM of
   the ground-truth class: the gate of issue 17 — a benchmark on which a label-trained model's CAM does not beat the Gaussian
   has no discriminative object for a CAM to find.

``--padding circular`` / ``--norm group|instance|layer`` change every backbone built in the process
(:func:`patch_backbones`): levers on where training moves the activations. ``--shuffle-bn S`` trains MoCo
with MoCo's Shuffling BN emulated in one process (:func:`shuffle_bn`): BatchNorm statistics over S
sub-batches, the key batch permuted before the key encoder.

The soft maps are compared without the CRF: the maps themselves, where the CAM is measured (the
CRF completes any prior near an object on these images; docs/benchmarks.md). Each configuration
is appended to ``--out`` as one JSON row, so every configuration tried stays on record.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cam_diagnostics import cam_subset  # noqa: E402
from probe_learnability import probe  # noqa: E402
from screen import SCREEN_VARIANTS, benchmark_dir, dotted, train_supervised  # noqa: E402

from oacl.augment import views as views_module  # noqa: E402
from oacl.augment.views import two_view_pipeline  # noqa: E402
from oacl.cam.contracam import (
    CamModel,
    cam_from_gradients,
    channel_sum_cam,
    classifier_cam,
    contrastive_score,
    minmax_normalize,
    prepare_cam_model,
)  # noqa: E402
from oacl.cam.nulls import random_init_like  # noqa: E402
from oacl.cam.pipeline import soft_masks  # noqa: E402
from oacl.config import Params, overlay, parse_section  # noqa: E402
from oacl.imaging import normalize  # noqa: E402
from oacl.io.atomic import atomic_path  # noqa: E402
from oacl.io.checkpoint import encoder_of, export_backbone, projector_of, read_backbone  # noqa: E402
from oacl.localization import centered_gaussian, pxap  # noqa: E402
from oacl.models import backbones  # noqa: E402
from oacl.models import moco as moco_module  # noqa: E402
from oacl.models.backbones import build_backbone, layer4_stride  # noqa: E402
from oacl.perf import resolve_amp  # noqa: E402
from oacl.train.engine import train  # noqa: E402
from oacl.train.pretrain import build_method, open_train_set, train_settings, view_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIGMAS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)  # the Gaussian's σ grid (fraction of the side)
EXPAND, ITERS = 2, (1, 5)  # the pipeline's expansion; T = 1 (single's default) and a later iteration
PROBE_KEYS = ("crops", "original", "mixed_rand", "bg_gap", "crops_val", "single_val")
# What a --keep run records in the exported file, and --load copies into its row.
RUN_KEYS = ("benchmark", "seed", "steps", "seconds", "device", "norm", "padding", "shuffle_bn")


def train_moco(
    params: Params, data: Any, size: int, steps: int, seed: int, bn_splits: int = 1, device: str = "cpu"
) -> tuple[nn.Module, float]:
    """MoCo with the pipeline's settings for about ``steps`` steps (whole epochs): (the MoCo module on the CPU,
    seconds).

    ``bn_splits`` > 1: trained with :func:`shuffle_bn` in force (plain BatchNorm again afterwards). ``device``: where
    it trains (``pretrain.amp`` resolved for it); everything after training runs on the CPU."""
    cfg = params.pretrain
    epochs = max(1, round(steps / (len(data) // cfg.batch_size)))
    settings = replace(
        train_settings("moco", cfg), epochs=epochs, seed=seed, amp=resolve_amp(cfg.amp, torch.device(device))
    )
    torch.manual_seed(seed)
    model = build_method("moco", cfg)
    t0 = time.perf_counter()
    with shuffle_bn(model, bn_splits):
        result = train(
            model, data, two_view_pipeline(view_settings(cfg, size)), settings, device=device, progress=False
        )
    return result.model.cpu().eval(), time.perf_counter() - t0


def load_kept(path: Path, row: dict[str, Any], arch: str) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(encoder, projector, the run it records) of a ``--keep`` file, read once, after checking that it trained on
    ``row``'s benchmark and levers."""
    obj = read_backbone(path, method="moco", arch=arch)
    run = obj["params"]
    for key in ("benchmark", "norm", "padding"):
        if run.get(key) != row.get(key):
            raise SystemExit(f"--load {path}: trained with {key} {run.get(key)!r}, this run has {row.get(key)!r}")
    return encoder_of(obj, path), projector_of(obj, path), run


def _split_bn_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm in training mode with statistics over ``self.splits`` sub-batches (sample i in sub-batch
    i mod splits), as ``splits`` processes of plain DDP each see their own; the running statistics move
    by the sub-batches' mean. Evaluation mode: plain BatchNorm."""
    base = type(self).__mro__[1]
    if not self.training:
        return base.forward(self, x)
    s, n, c = self.splits, x.shape[0], x.shape[1]
    if n % s:
        raise ValueError(f"--shuffle-bn {s}: a batch of {n} does not split into {s} equal sub-batches")
    rep = lambda t: None if t is None else t.repeat(s)  # noqa: E731
    mean, var = rep(self.running_mean), rep(self.running_var)
    y = F.batch_norm(
        x.reshape(n // s, c * s, *x.shape[2:]),
        mean,
        var,
        rep(self.weight),
        rep(self.bias),
        True,
        self.momentum,
        self.eps,
    )
    with torch.no_grad():
        self.running_mean.copy_(mean.view(s, c).mean(0))
        self.running_var.copy_(var.view(s, c).mean(0))
        self.num_batches_tracked += 1
    return y.reshape(x.shape)


@contextmanager
def shuffle_bn(model: nn.Module, splits: int) -> Iterator[None]:
    """``--shuffle-bn``: MoCo's Shuffling BN (He et al. 2020, section 3.3) emulated in one process, as
    multi-GPU runs have it. Every BatchNorm of ``model`` (backbones and projectors, query and key) takes
    its statistics over ``splits`` sub-batches, and the key batch is randomly permuted before the key
    encoder (and back after), so a query and its positive key are normalised with different samples
    (probability 1 − 1/splits): the batch statistics no longer leak which key is the positive. Without
    it, our single-process MoCo normalises query and key batches each as one whole batch. Restores
    plain BatchNorm and the pipeline's (single-process: identity) shuffle on exit."""
    if splits <= 1:
        yield
        return
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    classes = {
        cls: type(f"Split{cls.__name__}", (cls,), {"forward": _split_bn_forward, "splits": splits})
        for cls in {type(m) for m in bns}
    }
    for m in bns:
        m.__class__ = classes[type(m)]

    def shuffle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        perm = torch.randperm(x.shape[0], device=x.device)
        return x[perm], torch.argsort(perm)

    saved = moco_module.shuffle_across_ranks, moco_module.unshuffle_across_ranks
    moco_module.shuffle_across_ranks, moco_module.unshuffle_across_ranks = shuffle, lambda x, inverse: x[inverse]
    try:
        yield
    finally:
        moco_module.shuffle_across_ranks, moco_module.unshuffle_across_ranks = saved
        for m in bns:
            m.__class__ = type(m).__mro__[1]


def random_probe(params: Params, root: Path, patch: str = "") -> dict[str, float]:
    """The probe of three random-init seeds (0, 1, 2), averaged; kept beside the benchmark per architecture
    (and ``patch``, the :func:`patch_backbones` in force)."""
    cfg = params.pretrain
    cache = root / f"random-probe-{cfg.arch}-{cfg.stem}{patch}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    rows = []
    for s in (0, 1, 2):
        torch.manual_seed(s)
        rows.append(probe(build_backbone(cfg.arch, cfg.stem), root, 0))
    out = {k: round(float(np.mean([r[k] for r in rows])), 1) for k in PROBE_KEYS}
    with atomic_path(cache) as tmp:
        tmp.write_text(json.dumps(out))
    return out


def flip_both_ways() -> None:
    """``--vflip``: every horizontal flip of the view pipeline is followed by a vertical flip of the same
    probability, in the :class:`oacl.augment.views.TwoCrops` this process builds from now on. The
    standard stem's stride-2 layers see an even-sized input's top row of padding and never its bottom
    one; training that only flips left-right leaves that top-bottom asymmetry in place
    (docs/benchmarks.md, "The trained CAM reads the frame")."""
    views_module.VERTICAL_FLIPS = True


PADS = {"circular": nn.CircularPad2d, "reflect": nn.ReflectionPad2d}


def _patched_stem(apply: Callable[[nn.Module], None], padding: str, norm: str, net: nn.Module) -> None:
    """The stem ``apply``, then :func:`patch_backbones`' changes to the whole ``net``."""
    apply(net)
    if padding != "zeros":
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and any(m.padding):
                m.padding_mode = padding
        if isinstance(net.maxpool, nn.MaxPool2d):  # the max-pool pads the same way, then pools unpadded
            pool = net.maxpool
            net.maxpool = nn.Sequential(PADS[padding](pool.padding), nn.MaxPool2d(pool.kernel_size, pool.stride))
    if norm != "batch":
        swap_batchnorm(net, norm)


# ``--norm``: the number of GroupNorm groups for C channels. All three normalise each image on its own;
# instance: every channel alone (InstanceNorm with an affine), layer: all channels together.
NORM_GROUPS: dict[str, Callable[[int], int]] = {
    "group": lambda c: min(32, c),
    "instance": lambda c: c,
    "layer": lambda c: 1,
}


def swap_batchnorm(module: nn.Module, norm: str = "group") -> None:
    """Replace every ``BatchNorm2d`` under ``module`` by a ``GroupNorm`` of ``NORM_GROUPS[norm](C)``
    groups (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(NORM_GROUPS[norm](child.num_features), child.num_features))
        else:
            swap_batchnorm(child, norm)


def patch_backbones(padding: str = "zeros", norm: str = "batch") -> None:
    """``--padding`` / ``--norm``: every backbone built in this process (MoCo's, the random-init
    controls', ContraCAM's random-weight twin — all through :func:`oacl.models.backbones.apply_stem`,
    which looks its stem up in ``STEMS`` when called) gets convolutions that pad with ``padding``
    (the max-pool too; ``circular``: the network is blind to where the frame is — its activations
    shift with the image rolled by a multiple of its stride) and, with ``norm`` other than ``batch``,
    a per-image GroupNorm in place of every BatchNorm (:data:`NORM_GROUPS`): levers on where training
    moves the activations (docs/benchmarks.md), patched here, not pipeline params."""
    for stem, apply in list(backbones.STEMS.items()):
        backbones.STEMS[stem] = partial(_patched_stem, apply, padding, norm)


def cam_side(params: Params, image_side: int, expand: int = EXPAND) -> int:
    """The side of the CAM (layer4 after the expansion ``expand``) for images of ``image_side`` px."""
    return max(1, image_side // layer4_stride(params.pretrain.stem)) * expand


def mask_at_side(masks: np.ndarray, side: int) -> np.ndarray:
    """The ground-truth masks (n, H, W) as a CAM of side ``side`` would hold them at best: area-averaged
    to side x side, then upsampled and min-max normalised as ContraCAM's maps are. The map's
    resolution ceiling: the PxAP a perfect CAM of that size reaches."""
    small = F.adaptive_avg_pool2d(torch.from_numpy(masks.astype(np.float32))[:, None], side)
    return minmax_normalize(F.interpolate(small, size=masks.shape[1:], mode="bicubic", align_corners=False))[
        :, 0
    ].numpy()


def best_gaussian(masks: np.ndarray) -> tuple[float, float]:
    """(PxAP %, σ) of the centred Gaussian with the best PxAP on ``masks`` over :data:`SIGMAS`."""
    h, w = masks.shape[1:]
    return max((pxap(masks, centered_gaussian(h, w, s)), s) for s in SIGMAS)


LAYERS = ("layer1", "layer2", "layer3", "layer4")


def activations_upto(encoder: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """A ResNet's activations after ``layer`` (its stem, then layer1 … ``layer``), without a graph."""
    with torch.no_grad():
        a = encoder.maxpool(encoder.relu(encoder.bn1(encoder.conv1(x))))
        for name in LAYERS[: LAYERS.index(layer) + 1]:
            a = getattr(encoder, name)(a)
    return a


def channel_sum_upto(encoder: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The channel sum of a ResNet's activations after ``layer``, upsampled and normalised as
    :func:`oacl.cam.contracam.channel_sum_cam` does layer4's: (B, 1, H, W)."""
    a = F.relu(activations_upto(encoder, x, layer).sum(dim=1, keepdim=True))
    return minmax_normalize(F.interpolate(a, size=x.shape[-2:], mode="bicubic", align_corners=False))


def contracam_at(model: CamModel, x: torch.Tensor, layer: str, centred: bool = False) -> torch.Tensor:
    """ContraCAM's first iteration (T = 1, NSR, the batch as negatives) with the score's gradient taken
    at the activations after ``layer`` instead of layer4 — a diagnostic beyond the paper (a Grad-CAM at
    an earlier layer: the map of the layer whose activations still sit on the object). For ``layer4``
    it is :func:`oacl.cam.contracam.contracam_prepared` with ``iters=1``. With ``centred`` (also beyond
    the paper) the map weighs each activation's difference from the batch's mean at the same channel
    and position — what in this image differs from the others there — instead of the activation
    itself. x: (B, 3, H, W) normalised; returns (B, 1, H, W) in [0, 1]."""
    enc = model.encoder
    with torch.enable_grad():
        a = activations_upto(enc, x, layer).requires_grad_(True)
        out = a
        for name in LAYERS[LAYERS.index(layer) + 1 :]:
            out = getattr(enc, name)(out)
        query = F.normalize(model.projector(torch.flatten(enc.avgpool(out), 1)), dim=1)
        key = query.detach()
        (grad,) = torch.autograd.grad(contrastive_score(query, key, [key]).sum(), a)
    a = a.detach()
    return cam_from_gradients(a - a.mean(dim=0, keepdim=True) if centred else a, grad, tuple(x.shape[-2:]))


def cell_probe(model: CamModel, x: torch.Tensor, masks: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Where the object's class lives in layer4 (a diagnostic beyond the paper): the activations (at the
    model's expansion) averaged over the cells the object fills (≥ half of the cell, or its fullest one)
    and, apart, over the cells it does not touch; the accuracy (%) of a logistic-regression probe of the
    class on each (4-fold cross-validation, standardised features), and the mean channel sum of object
    cells over background cells. A network whose background cells predict the class as well as its
    object cells has spread the object over the whole map: a map of where activations are cannot point
    at it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a = in_batches(partial(activations_upto, model.encoder, layer="layer4"), x)
    cover = F.adaptive_avg_pool2d(torch.from_numpy(masks.astype(np.float32))[:, None], a.shape[-2:])
    fullest = cover == cover.amax((2, 3), keepdim=True)  # so that an object under half a cell has one
    obj, bg = ((cover >= 0.5) | fullest).float(), (cover == 0).float()
    out: dict[str, float] = {}
    for name, where in (("object", obj), ("background", bg)):
        pooled = ((a * where).sum((2, 3)) / where.sum((2, 3)).clamp_min(1)).numpy()
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        out[f"cells_{name}"] = round(100 * float(cross_val_score(clf, pooled, labels, cv=4).mean()), 1)
    sums = a.sum(1, keepdim=True)
    out["cells_object_over_background"] = round(
        float(((sums * obj).sum() / obj.sum()) / ((sums * bg).sum() / bg.sum()).clamp_min(1e-12)), 2
    )
    return out


def in_batches(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to ``inputs`` sliced alike in batches of 64, the outputs concatenated."""
    return torch.cat([fn(*(t[b : b + 64] for t in inputs)) for b in range(0, len(inputs[0]), 64)])


def batched_maps(cam: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> np.ndarray:
    """The maps ``cam`` draws for ``inputs`` (:func:`in_batches`; (B, 1, H, W) each): (n, H, W)."""
    return in_batches(cam, *inputs)[:, 0].numpy()


def batched_pxap(masks: np.ndarray, cam: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> float:
    """PxAP (%) of the maps ``cam`` draws for ``inputs`` (see :func:`batched_maps`)."""
    return round(pxap(masks, batched_maps(cam, *inputs)), 1)


def frame_stats(masks: np.ndarray, maps: np.ndarray, border: float = 0.125) -> dict[str, float]:
    """Does a map follow the image or the frame? PxAP (%) of the maps' mean over the images given to every
    image (``blind``: what position alone earns) and the mean map's value in the band of width ``border``
    (a fraction of the side) along the frame over its value inside it (``border_over_centre``)."""
    mean = maps.mean(0)
    band = np.ones(mean.shape, bool)
    h, w = mean.shape
    band[round(border * h) : h - round(border * h), round(border * w) : w - round(border * w)] = False
    return {
        "blind": round(pxap(masks, mean), 1),
        "border_over_centre": round(float(mean[band].mean() / max(float(mean[~band].mean()), 1e-12)), 2),
    }


def cam_rows(
    params: Params, weights: dict[str, tuple[nn.Module, nn.Module]], n: int, mean, std, expand: int = EXPAND
) -> dict[str, Any]:
    """PxAP of every map on each set's subset at layer4 expansion ``expand``: ``{set: {map: PxAP}}`` (see
    the module docstring)."""
    out: dict[str, Any] = {}
    for name in ("single", "multi"):
        data, idx, masks, images = cam_subset(params, name, {}, n)
        row: dict[str, float] = {}
        x = normalize(torch.from_numpy(images).permute(0, 3, 1, 2), mean, std)
        labels = torch.tensor([int(data[int(i)]["label"]) for i in idx])  # each image's (primary) class, read once
        for label, (enc, proj) in weights.items():
            if label == "supervised":
                cam = partial(classifier_cam, enc, proj, expand_res=expand)
                row["supervised_gradcam"] = batched_pxap(masks, cam, x, labels)
                continue
            model = prepare_cam_model(enc, proj, expand_res=expand, amp=False)
            by_t = soft_masks(model, images, iters=list(ITERS), batch_size=64, mean=mean, std=std)
            for t in ITERS:
                row[f"{label}_T{t}"] = round(pxap(masks, by_t[t] / 255.0), 1)
            # the map turned inside out (does it point at the background?) and the gradient-free
            # channel sum of the same features (is the weighting by the score's gradient the culprit?)
            row[f"{label}_T1_inverted"] = round(pxap(masks, 1.0 - by_t[1] / 255.0), 1)
            sum_maps = batched_maps(partial(channel_sum_cam, model), x)
            row[f"{label}_channel_sum"] = round(pxap(masks, sum_maps), 1)
            row.update({f"{label}_channel_sum_{k}": v for k, v in frame_stats(masks, sum_maps).items()})
            row[f"{label}_T1_centred"] = batched_pxap(
                masks, partial(contracam_at, model, layer="layer4", centred=True), x
            )
            if name == "single":  # one object, one class per image
                row.update({f"{label}_{k}": v for k, v in cell_probe(model, x, masks, labels.numpy()).items()})
            for layer in ("layer2", "layer3"):  # where along the network the activations leave the object
                sums = partial(channel_sum_upto, model.encoder, layer=layer)
                row[f"{label}_channel_sum_{layer}"] = batched_pxap(masks, sums, x)
                row[f"{label}_T1_{layer}"] = batched_pxap(masks, partial(contracam_at, model, layer=layer), x)
        row["gt_at_map_side"] = round(pxap(masks, mask_at_side(masks, cam_side(params, images.shape[1], expand))), 1)
        row["gt_at_side"] = {str(k): round(pxap(masks, mask_at_side(masks, k)), 1) for k in (2, 4, 8, 16)}
        gauss, sigma = best_gaussian(masks)
        row["gaussian"], row["gaussian_sigma"] = round(gauss, 1), sigma
        row["ones"] = round(pxap(masks, np.ones(masks.shape[1:], np.float32)), 1)
        out[name] = row
        print(f"# {name} x{expand}: {row}", flush=True)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of a rows file: learning (Δ against random init) and PxAP per set."""
    out = [
        "| config | steps | crops (Δ random) | ORIGINAL (Δ) | set | MoCo T=1 / T=5 | MoCo T=1 inverted | "
        "random weights T=1 | channel sum, MoCo / random | Gaussian | ones | supervised ORIGINAL (crops) | "
        "supervised Grad-CAM | GT at the map's side |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines = [(r, key) for r in rows for key in ["pxap", *sorted(k for k in r if k.startswith("pxap_x"))]]
    for r, key in lines:  # the pipeline's x2 first, then any other expansion as its own line
        tag, pxaps = r["tag"] + ("" if key == "pxap" else f" {key[len('pxap_') :]}"), r[key]
        m, c = r["moco"], r["random"]
        sv = r.get("supervised")
        supervised = (
            "–"
            if sv is None
            else f"{sv['original']:.1f} ({'–'.join(f'{v:g}' for v in sv.get('crop_scale', [0.2, 1]))})"
        )
        for name in ("single", "multi"):
            p = pxaps[name]
            sup = p.get("supervised_gradcam")
            out.append(
                f"| {tag} | {r['steps']} | {m['crops']:.1f} ({m['crops'] - c['crops']:+.1f}) | "
                f"{m['original']:.1f} ({m['original'] - c['original']:+.1f}) | {name} | "
                f"{p['trained_T1']:.1f} / {p['trained_T5']:.1f} | {fmt(p.get('trained_T1_inverted'))} | "
                f"{p['random_T1']:.1f} | {fmt(p.get('trained_channel_sum'))} / {fmt(p.get('random_channel_sum'))} | "
                f"{p['gaussian']:.1f} | "
                f"{p['ones']:.1f} | {supervised} | {fmt(sup)} | {fmt(p.get('gt_at_map_side'))} |"
            )
    return "\n".join(out)


def fmt(v: float | None) -> str:
    """A table cell: one decimal, or a dash for a value a row does not have (rows from before it existed)."""
    return "–" if v is None else f"{v:.1f}"


def layer_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the layer diagnostics (rows that have them): per set and weights, PxAP of
    ContraCAM's T = 1 map and of the channel sum with the activations taken after layer2 / layer3 /
    layer4 (the pipeline's expansion)."""
    out = [
        "| config | steps | set | weights | ContraCAM T=1 at layer2 / layer3 / layer4 | "
        "channel sum at layer2 / layer3 / layer4 | ContraCAM T=1, layer4 centred on the batch | Gaussian | ones |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r, name, p, weights in weight_rows(rows, "T1_layer3"):
        cams = " / ".join(f"{p[k]:.1f}" for k in (f"{weights}_T1_layer2", f"{weights}_T1_layer3", f"{weights}_T1"))
        sums = " / ".join(f"{p[f'{weights}_channel_sum{layer}']:.1f}" for layer in ("_layer2", "_layer3", ""))
        out.append(
            f"| {r['tag']} | {r['steps']} | {name} | {WEIGHTS[weights]} | {cams} | {sums} | "
            f"{fmt(p.get(f'{weights}_T1_centred'))} | {p['gaussian']:.1f} | {p['ones']:.1f} |"
        )
    return "\n".join(out)


WEIGHTS = {"trained": "MoCo", "random": "random"}  # a row's weights as the tables name them


def weight_rows(rows: list[dict[str, Any]], key: str) -> Iterator[tuple[dict[str, Any], str, dict[str, Any], str]]:
    """(row, set, the set's PxAP dict, weights) for each set and each of :data:`WEIGHTS` that has ``<weights>_<key>``
    (rows from before a diagnostic existed have no line for it)."""
    for r in rows:
        for name, p in r["pxap"].items():
            for weights in WEIGHTS:
                if f"{weights}_{key}" in p:
                    yield r, name, p, weights


def frame_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the frame and cell diagnostics (rows that have them): per set and weights, the
    layer4 channel sum's PxAP, the PxAP of its mean map given to every image, its border / centre ratio,
    and on single the class probe on object cells / background cells and their activation ratio."""
    out = [
        "| config | steps | set | weights | channel sum PxAP | its mean map (image-blind) | border / centre | "
        "class from object cells / background cells (%) | activation, object / background cells |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r, name, p, weights in weight_rows(rows, "channel_sum_blind"):
        cells = p.get(f"{weights}_cells_object")
        probe_cell = "–" if cells is None else f"{cells:.1f} / {p[f'{weights}_cells_background']:.1f}"
        ratio = p.get(f"{weights}_cells_object_over_background")
        out.append(
            f"| {r['tag']} | {r['steps']} | {name} | {WEIGHTS[weights]} | "
            f"{p[f'{weights}_channel_sum']:.1f} | {p[f'{weights}_channel_sum_blind']:.1f} | "
            f"{p[f'{weights}_channel_sum_border_over_centre']:.2f} | {probe_cell} | "
            f"{'–' if ratio is None else f'{ratio:.2f}'} |"
        )
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, metavar="JSONL", help="print the Markdown table of a rows file and exit")
    p.add_argument("--tag")
    p.add_argument("--variant", choices=SCREEN_VARIANTS, help="renderer variant (image_cues.py)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=552)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--supervised-steps", type=int, default=0, metavar="N")
    p.add_argument(
        "--supervised-crop-scale",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="the label-trained model's RandomResizedCrop area range (default: pretrain.crop_scale, MoCo's)",
    )
    p.add_argument(
        "--also-expand",
        type=int,
        nargs="+",
        default=[],
        choices=(1, 4),
        metavar="E",
        help="also score every map at layer4 expansion E (1: the stride the model was trained with; 4: layer3 too), "
        "kept as pxap_xE beside the pipeline's x2",
    )
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "cam_screen.jsonl")
    p.add_argument(
        "--vflip",
        action="store_true",
        help="MoCo's views also flipped upside down (p 0.5): a lever on the CAM's positional artefact, patched in "
        "this process (not a pipeline param)",
    )
    p.add_argument(
        "--padding",
        choices=("zeros", "circular", "reflect"),
        default="zeros",
        help="every backbone convolution pads this way (patched in this process, not a pipeline param)",
    )
    p.add_argument(
        "--norm",
        choices=("batch", *NORM_GROUPS),
        default="batch",
        help="GroupNorm in place of every backbone BatchNorm (patched, not a pipeline param): group 32 groups, "
        "instance one per channel, layer one for all channels",
    )
    p.add_argument(
        "--shuffle-bn",
        type=int,
        default=1,
        metavar="S",
        help="S > 1: MoCo trained with Shuffling BN emulated in this process (BatchNorm over S sub-batches, keys "
        "permuted); not a pipeline param",
    )
    p.add_argument(
        "--keep", type=Path, metavar="FILE", help="also export the MoCo model there (cam_diagnostics.py reads it)"
    )
    p.add_argument("--device", default="cpu", help="where MoCo trains (cpu | cuda); the evaluation runs on the CPU")
    p.add_argument("--train-only", action="store_true", help="train, export to --keep and stop (evaluate with --load)")
    p.add_argument(
        "--load", type=Path, metavar="FILE", help="evaluate the MoCo model a --keep run exported instead of training"
    )
    return p


def main() -> None:
    p = parser()
    args = p.parse_args()
    if args.table:
        rows = [json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]
        print(table(rows) + "\n\n" + layer_table(rows) + "\n\n" + frame_table(rows))
        return
    if not args.tag:
        p.error("--tag is required (unless --table)")
    if args.train_only and not args.keep:
        p.error("--train-only needs --keep FILE")
    if args.load and (args.keep or args.shuffle_bn > 1 or args.device != "cpu"):
        p.error("--load evaluates a trained model: --keep, --shuffle-bn and --device belong to the run that trained it")
    if args.vflip:
        flip_both_ways()
    patch = "".join(f"-{v}" for v, default in ((args.padding, "zeros"), (args.norm, "batch")) if v != default)
    patch_backbones(args.padding, args.norm)
    overrides = dotted(args.sets)
    raw = overlay(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    root = benchmark_dir(raw, args.variant)
    params = parse_section(Params, overlay(raw, {"data": {"root": str(root), "source": "embedded"}}))
    data, size = open_train_set(params)
    views = view_settings(params.pretrain, size)
    row: dict[str, Any] = {"tag": args.tag, "variant": args.variant, "set": overrides, "benchmark": root.name}
    if args.vflip:
        row["vflip"] = True
    if args.padding != "zeros":
        row["padding"] = args.padding
    if args.norm != "batch":
        row["norm"] = args.norm
    if args.shuffle_bn > 1:
        row["shuffle_bn"] = args.shuffle_bn

    if args.load:
        enc, proj, run = load_kept(args.load, row, params.pretrain.arch)
        row.update({k: v for k, v in run.items() if k not in row})
    else:
        moco, sec = train_moco(params, data, size, args.steps, args.seed, args.shuffle_bn, args.device)
        row.update(seed=args.seed, steps=args.steps, seconds=round(sec))
        if args.device != "cpu":
            row["device"] = args.device
        if args.keep:
            run = {k: row[k] for k in RUN_KEYS if k in row}
            export_backbone(args.keep, moco, image_size=size, mean=views.mean, std=views.std, params=run)
        if args.train_only:
            print(f"# trained {args.steps} steps on {args.device} in {sec:.0f} s; exported to {args.keep}", flush=True)
            return
        enc, proj = moco.encoder, moco.projector
    row["moco"] = {k: round(v, 1) for k, v in probe(enc, root, 0).items() if k in PROBE_KEYS}
    row["random"] = random_probe(params, root, patch)
    print(f"# MoCo {row['moco']} in {row['seconds']} s; random init (3 seeds) {row['random']}", flush=True)
    weights = {
        "trained": (enc, proj),
        "random": random_init_like(enc, proj, arch=params.pretrain.arch, stem=params.pretrain.stem, seed=0),
    }
    if args.supervised_steps:
        crop = tuple(args.supervised_crop_scale or params.pretrain.crop_scale)
        sup_params = replace(params, pretrain=replace(params.pretrain, crop_scale=crop))
        sup, head, sec = train_supervised(sup_params, data, size, args.supervised_steps, seed=args.seed)
        row["supervised"] = {k: round(v, 1) for k, v in probe(sup, root, 0).items() if k in PROBE_KEYS}
        row["supervised"].update(steps=args.supervised_steps, seconds=round(sec), crop_scale=list(crop))
        print(f"# supervised {row['supervised']}", flush=True)
        weights["supervised"] = (sup.eval(), nn.Sequential(head).eval())
    row["pxap"] = cam_rows(params, weights, args.images, views.mean, views.std)
    for e in args.also_expand:
        row[f"pxap_x{e}"] = cam_rows(params, weights, args.images, views.mean, views.std, expand=e)
    with open(args.out, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
    print(table([row]) + "\n\n" + layer_table([row]) + "\n\n" + frame_table([row]))


if __name__ == "__main__":
    main()
