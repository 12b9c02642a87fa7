"""Where a ContraCAM map puts its mass, next to the same map on random weights; prints a Markdown table.

For a MoCo backbone file and a fixed random subset of each training split (embedded benchmark),
one row per (weights, expansion, NSR): the soft CAM's mean inside the ground-truth objects and
outside, PxAP after one iteration and after five, and PxAP of the inverted map (1 − CAM: high
when the CAM prefers the background). "random" is the same architecture and head drawn with
seed 0 (:func:`oacl.cam.nulls.random_init_like`). ``--supervised-steps N`` adds the ceiling
control: the same architecture trained with labels for N steps on the pipeline's training set
(``screen.train_supervised``; kept in ``--supervised-cache`` and read from there when present),
its linear classifier standing in for the projection head, so that ContraCAM's score is computed
on class logits; its frozen-feature probe is printed first. The same model's Grad-CAM of the
ground-truth class (:func:`oacl.cam.contracam.classifier_cam`, the paper's Table 2 baseline) is
added as ``supervised Grad-CAM`` rows (one iteration: no T = 5). Used for docs/benchmarks.md
("ContraCAM against null baselines").

``--temperatures`` screens a temperature tau in the contrastive score (Eq. 1 of the paper has one;
the paper's Algorithm 2 and this project's ``contrastive_score`` use tau = 1): the score is
computed on query / tau, i.e. logits q . k / tau, patched in this process only. A small tau weights
the gradient towards the negatives most similar to the image. ``--expansions`` and ``--nsr``
restrict the grid.

``--position`` asks whether a map follows the image's content or its position in the frame: per
(weights, expansion), ContraCAM (T = 1, NSR) on the images as they are and on the images flipped
upside down (the map flipped back), the mean of each map over the four horizontal bands of the
image (top to bottom), PxAP of each and of their average; and PxAP when every image is
reflect-padded by ``--pad`` px on each side and the map cropped back (the border moved out of the
frame). A map that stays top-heavy after the flip is reading position, not content.

``--alignment`` checks that the maps are registered with the ground truth: PxAP of each map (T = 1,
NSR) as computed, transposed, flipped either way and turned 180°, and its best shift by up to
8 px per axis; the map as computed must score highest.

``--aligned-upsampling`` upsamples each CAM as if feature cell j were centred on image pixel s j
(s = image side / map side: where a torchvision ResNet's stride-2 layers, padded top-left, put it)
instead of s j + (s - 1) / 2 (what bicubic interpolation without corner alignment assumes); patched
in this process only.

    PYTHONPATH=src python benchmarks/cam_diagnostics.py --model artifacts/models/pretrain-moco/backbone.pt
        [--params params.yaml] [--images 256] [--sets single multi] [--supervised-steps 900]
        [--supervised-cache /tmp/supervised.pt] [--weights trained random supervised]
        [--temperatures 1 0.2 0.05] [--expansions 1 2 4] [--nsr on off] [--position [--pad 16] | --alignment]
        [--aligned-upsampling]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oacl.cam.contracam import classifier_cam, prepare_cam_model
from oacl.cam.nulls import random_init_like
from oacl.cam.pipeline import ground_truth, open_cam_set, soft_masks
from oacl.config import Params, load_params
from oacl.imaging import normalize
from oacl.io.atomic import atomic_path
from oacl.io.checkpoint import load_encoder_projector, read_backbone
from oacl.localization import pxap
from oacl.models.backbones import build_backbone
from oacl.train.pretrain import open_train_set
from oacl.vocab import IMAGENET_MEAN, IMAGENET_STD

contracam_module = sys.modules["oacl.cam.contracam"]  # the module (the package exports a function of that name)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_learnability import probe  # noqa: E402
from screen import train_supervised  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="artifacts/models/pretrain-moco/backbone.pt")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--sets", nargs="+", default=["single", "multi"])
    p.add_argument("--supervised-steps", type=int, default=0, metavar="N", help="add a label-trained backbone")
    p.add_argument("--supervised-cache", type=Path, metavar="FILE", help="where the label-trained backbone is kept")
    p.add_argument("--weights", nargs="+", default=["trained", "random", "supervised"], help="the rows to compute")
    p.add_argument("--temperatures", nargs="+", type=float, default=[1.0], help="tau of the contrastive score")
    p.add_argument("--expansions", nargs="+", type=int, default=[1, 2, 4], choices=[1, 2, 4])
    p.add_argument("--nsr", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--position", action="store_true", help="the position table instead (see the docstring)")
    p.add_argument("--pad", type=int, default=16, metavar="PX", help="--position: reflect padding per side")
    p.add_argument("--alignment", action="store_true", help="the alignment table instead (see the docstring)")
    p.add_argument("--aligned-upsampling", action="store_true", help="cell j of the map centred on pixel s j")
    args = p.parse_args()
    if args.aligned_upsampling:
        contracam_module._upsample_normalize = aligned_upsample
    if min(args.temperatures) <= 0:
        raise SystemExit(f"--temperatures must be > 0, got {args.temperatures}")
    params = load_params(args.params)
    info = read_backbone(args.model, method="moco")
    enc, proj = load_encoder_projector(args.model, method="moco")
    mean, std = info.get("mean") or IMAGENET_MEAN, info.get("std") or IMAGENET_STD
    weights = {
        "trained": (enc, proj),
        "random": random_init_like(enc, proj, arch=info["arch"], stem=info["stem"], seed=0),
    }
    if args.supervised_steps:
        sup, head = supervised(params, args.supervised_steps, args.supervised_cache)
        row = probe(sup, Path(params.data.root), 0)
        print(
            f"# supervised, {args.supervised_steps} steps: probe crops {row['crops']:.1f}, "
            f"ORIGINAL {row['original']:.1f}, MIXED-RAND {row['mixed_rand']:.1f}",
            flush=True,
        )
        weights["supervised"] = (sup.eval(), nn.Sequential(head).eval())
    weights = {k: v for k, v in weights.items() if k in args.weights}
    if args.position or args.alignment:
        weights.pop("supervised", None)  # a classifier standing in for the projector: not what this asks
        (position_table if args.position else alignment_table)(params, args, weights, info, mean, std)
        return
    print("| set | weights | τ | expansion | NSR | CAM inside / outside | PxAP T=1 | PxAP of 1 − CAM | PxAP T=5 |")
    print("|---|---|---|---|---|---|---|---|---|")
    score = contracam_module.contrastive_score
    for name in args.sets:
        data, idx, masks, images = cam_subset(params, name, info, args.images)
        for label, (e, pr) in weights.items():
            for expand in args.expansions:
                model = prepare_cam_model(e, pr, expand_res=expand, amp=False)
                for nsr in (v == "on" for v in args.nsr):
                    for tau in args.temperatures:
                        contracam_module.contrastive_score = with_temperature(score, tau)
                        by_t = soft_masks(
                            model, images, iters=[1, 5], batch_size=64, remove_negative_signal=nsr, mean=mean, std=std
                        )
                        row = f"{label} | {tau:g}"
                        report(name, masks, row, expand, nsr, by_t[1] / 255.0, by_t[5] / 255.0)
                contracam_module.contrastive_score = score
        if "supervised" in weights:
            x = normalize(torch.from_numpy(images).permute(0, 3, 1, 2), mean, std)
            labels = torch.tensor([int(data[int(i)]["label"]) for i in idx])
            sup, head = weights["supervised"]
            for expand in args.expansions:
                for nsr in (v == "on" for v in args.nsr):
                    cams = [
                        classifier_cam(
                            sup, head, x[b : b + 64], labels[b : b + 64], expand_res=expand, remove_negative_signal=nsr
                        )
                        for b in range(0, len(x), 64)
                    ]
                    report(name, masks, "supervised Grad-CAM | –", expand, nsr, torch.cat(cams)[:, 0].numpy(), None)


def cam_subset(params: Params, name: str, info: dict, n: int) -> tuple[object, np.ndarray, np.ndarray, np.ndarray]:
    """A fixed random subset (seed 0) of ``name``'s training split: (data set, indices, GT masks (n, H, W),
    images (n, H, W, 3) uint8) — the same images for every row and every table."""
    data = open_cam_set(params, name, int(info.get("image_size") or 0))
    idx = np.sort(np.random.default_rng(0).choice(len(data), min(n, len(data)), replace=False))
    images = np.stack([np.asarray(data[int(i)]["image"]).transpose(1, 2, 0) for i in idx])
    return data, idx, ground_truth(data, idx).masks, images


def position_table(
    params: Params,
    args: argparse.Namespace,
    weights: dict[str, tuple[nn.Module, nn.Module]],
    info: dict,
    mean: Sequence[float],
    std: Sequence[float],
) -> None:
    """``--position``: does the CAM follow the content (flip test) or the frame (see the module docstring)?"""
    print(
        "| set | weights | expansion | bands top → bottom, as is | bands, flipped and back "
        "| PxAP as is / flipped / average | PxAP, reflect-padded |"
    )
    print("|---|---|---|---|---|---|---|")
    pad = args.pad
    for name in args.sets:
        _, _, masks, images = cam_subset(params, name, info, args.images)
        side = images.shape[1]
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        for label, (e, pr) in weights.items():
            for expand in args.expansions:
                model = prepare_cam_model(e, pr, expand_res=expand, amp=False)

                def cam(x: np.ndarray, model=model) -> np.ndarray:
                    return soft_masks(model, np.ascontiguousarray(x), iters=[1], batch_size=64, mean=mean, std=std)[1]

                plain = cam(images) / 255.0
                flipped = cam(images[:, ::-1])[:, ::-1] / 255.0
                cropped = cam(padded)[:, pad : pad + side, pad : pad + side] / 255.0
                lo, hi = cropped.min(axis=(1, 2), keepdims=True), cropped.max(axis=(1, 2), keepdims=True)
                cropped = (cropped - lo) / np.maximum(hi - lo, 1e-12)  # min-max again inside the frame
                print(
                    f"| {name} | {label} | ×{expand} | {bands(plain)} | {bands(flipped)} | {pxap(masks, plain):.1f} / "
                    f"{pxap(masks, flipped):.1f} / {pxap(masks, (plain + flipped) / 2):.1f} | {pxap(masks, cropped):.1f} |",
                    flush=True,
                )


ALIGNMENTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as is": lambda m: m,
    "transposed": lambda m: m.transpose(0, 2, 1),
    "upside down": lambda m: m[:, ::-1],
    "mirrored": lambda m: m[:, :, ::-1],
    "turned 180°": lambda m: m[:, ::-1, ::-1],
}
SHIFTS = (-8, -4, 0, 4, 8)  # px, each axis


def alignment_table(
    params: Params,
    args: argparse.Namespace,
    weights: dict[str, tuple[nn.Module, nn.Module]],
    info: dict,
    mean: Sequence[float],
    std: Sequence[float],
) -> None:
    """``--alignment``: are the maps registered with the masks? PxAP of each map as computed and
    transposed, flipped or turned (:data:`ALIGNMENTS`), and the best shift of it by :data:`SHIFTS`
    (rolled, wrapping round): a map that scores higher moved has its coordinates wrong."""
    print("| set | weights | expansion | " + " | ".join(ALIGNMENTS) + " | best shift (dy, dx): PxAP |")
    print("|---|---|---|" + "---|" * len(ALIGNMENTS) + "---|")
    for name in args.sets:
        _, _, masks, images = cam_subset(params, name, info, args.images)
        for label, (e, pr) in weights.items():
            for expand in args.expansions:
                model = prepare_cam_model(e, pr, expand_res=expand, amp=False)
                cam = soft_masks(model, images, iters=[1], batch_size=64, mean=mean, std=std)[1] / 255.0
                moved = " | ".join(f"{pxap(masks, np.ascontiguousarray(f(cam))):.1f}" for f in ALIGNMENTS.values())
                shift = max(
                    (pxap(masks, np.roll(cam, (dy, dx), axis=(1, 2))), (dy, dx)) for dy in SHIFTS for dx in SHIFTS
                )
                print(f"| {name} | {label} | ×{expand} | {moved} | {shift[1]}: {shift[0]:.1f} |", flush=True)


def aligned_upsample(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``--aligned-upsampling``: (B, 1, h, w) -> (B, 1, H, W), cell j on pixel s j, the last s - 1 rows and
    columns repeating the edge; min-max normalized per image as ContraCAM's own upsampling."""
    h, w = cam.shape[-2:]
    sh, sw = size[0] // h, size[1] // w
    up = F.interpolate(cam, size=(sh * (h - 1) + 1, sw * (w - 1) + 1), mode="bicubic", align_corners=True)
    up = F.pad(up, (0, size[1] - up.shape[-1], 0, size[0] - up.shape[-2]), mode="replicate")
    return contracam_module.minmax_normalize(up)


def bands(maps: np.ndarray) -> str:
    """Mean of (n, H, W) maps over four horizontal bands, top to bottom."""
    return " ".join(f"{b.mean():.2f}" for b in np.array_split(maps, 4, axis=1))


def with_temperature(score: Callable[..., torch.Tensor], tau: float) -> Callable[..., torch.Tensor]:
    """``score`` computed on query / tau: the logits q . k / tau of Eq. 1 (tau = 1: ``score`` itself)."""
    if tau == 1.0:
        return score

    def scored(
        query: torch.Tensor, key: torch.Tensor, negatives: Sequence[torch.Tensor], groups: torch.Tensor | None = None
    ) -> torch.Tensor:
        return score(query / tau, key, negatives, groups)

    return scored


def report(
    name: str, masks: np.ndarray, label: str, expand: int, nsr: bool, soft: np.ndarray, soft5: np.ndarray | None
) -> None:
    """One table row: soft maps (n, H, W) in [0, 1] (after one iteration; ``soft5``: after five) against ``masks``."""
    inside, outside = soft[masks == 1].mean(), soft[masks == 0].mean()
    t5 = "–" if soft5 is None else f"{pxap(masks, soft5):.1f}"
    print(
        f"| {name} | {label} | ×{expand} | {'on' if nsr else 'off'} | {inside:.2f} / {outside:.2f} "
        f"| {pxap(masks, soft):.1f} | {pxap(masks, 1 - soft):.1f} | {t5} |",
        flush=True,
    )


def supervised(params: Params, steps: int, cache: Path | None) -> tuple[nn.Module, nn.Linear]:
    """The label-trained backbone and its classifier: read from ``cache`` when it exists, else trained (and kept)."""
    cfg = params.pretrain
    made = {"steps": steps, "arch": cfg.arch, "stem": cfg.stem}
    if cache is not None and cache.is_file():
        state = torch.load(cache, map_location="cpu", weights_only=True)
        if state.get("made") != made:
            raise SystemExit(
                f"{cache} holds a model made with {state.get('made')}, not {made}: remove it or pick another"
            )
        encoder, head = build_backbone(cfg.arch, cfg.stem), nn.Linear(*state["head_shape"])
        encoder.load_state_dict(state["encoder"])
        head.load_state_dict(state["head"])
        return encoder, head
    data, size = open_train_set(params)
    encoder, head, seconds = train_supervised(params, data, size, steps, seed=0)
    print(f"# supervised: {steps} steps in {seconds:.0f} s", flush=True)
    if cache is not None:
        state = {
            "encoder": encoder.state_dict(),
            "head": head.state_dict(),
            "head_shape": [head.in_features, head.out_features],
            "made": made,
        }
        with atomic_path(cache) as tmp:
            torch.save(state, tmp)
    return encoder, head


if __name__ == "__main__":
    main()
