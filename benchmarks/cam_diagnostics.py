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

    PYTHONPATH=src python benchmarks/cam_diagnostics.py --model artifacts/models/pretrain-moco/backbone.pt
        [--params params.yaml] [--images 256] [--sets single multi] [--supervised-steps 900]
        [--supervised-cache /tmp/supervised.pt] [--weights trained random supervised]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
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
    args = p.parse_args()
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
    print("| set | weights | expansion | NSR | CAM inside / outside | PxAP T=1 | PxAP of 1 − CAM | PxAP T=5 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.sets:
        data = open_cam_set(params, name, int(info.get("image_size") or 0))
        idx = np.sort(np.random.default_rng(0).choice(len(data), min(args.images, len(data)), replace=False))
        gt = ground_truth(data, idx)
        images = np.stack([np.asarray(data[int(i)]["image"]).transpose(1, 2, 0) for i in idx])  # (n, H, W, 3)
        for label, (e, pr) in weights.items():
            for expand in (1, 2, 4):
                for nsr in (True, False):
                    model = prepare_cam_model(e, pr, expand_res=expand, amp=False)
                    by_t = soft_masks(
                        model, images, iters=[1, 5], batch_size=64, remove_negative_signal=nsr, mean=mean, std=std
                    )
                    report(name, gt.masks, label, expand, nsr, by_t[1] / 255.0, by_t[5] / 255.0)
        if "supervised" in weights:
            x = normalize(torch.from_numpy(images).permute(0, 3, 1, 2), mean, std)
            labels = torch.tensor([int(data[int(i)]["label"]) for i in idx])
            sup, head = weights["supervised"]
            for expand in (1, 2, 4):
                for nsr in (True, False):
                    cams = [
                        classifier_cam(
                            sup, head, x[b : b + 64], labels[b : b + 64], expand_res=expand, remove_negative_signal=nsr
                        )
                        for b in range(0, len(x), 64)
                    ]
                    report(name, gt.masks, "supervised Grad-CAM", expand, nsr, torch.cat(cams)[:, 0].numpy(), None)


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
