"""Where a ContraCAM map puts its mass, next to the same map on random weights; prints a Markdown table.

For a MoCo backbone file and a fixed random subset of each training split (embedded benchmark),
one row per (weights, expansion, NSR): the soft CAM's mean inside the ground-truth objects and
outside, PxAP after one iteration and after five, and PxAP of the inverted map (1 − CAM: high
when the CAM prefers the background). "random" is the same architecture and head drawn with
seed 0 (:func:`oacl.cam.nulls.random_init_like`). ``--supervised-steps N`` adds the ceiling
control: the same architecture trained with labels for N steps on the pipeline's training set
(``screen.train_supervised``), its linear classifier standing in for the projection head, so that
ContraCAM's score is computed on class logits; its frozen-feature probe is printed first. Used for
docs/benchmarks.md ("ContraCAM against null baselines").

    PYTHONPATH=src python benchmarks/cam_diagnostics.py --model artifacts/models/pretrain-moco/backbone.pt
        [--params params.yaml] [--images 256] [--sets single multi] [--supervised-steps 900]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from torch import nn

from oacl.cam.contracam import prepare_cam_model
from oacl.cam.nulls import random_init_like
from oacl.cam.pipeline import ground_truth, open_cam_set, soft_masks
from oacl.config import load_params
from oacl.io.checkpoint import load_encoder_projector, read_backbone
from oacl.localization import pxap
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
        data, size = open_train_set(params)
        sup, head, seconds = train_supervised(params, data, size, args.supervised_steps, seed=0)
        row = probe(sup, Path(params.data.root), 0)
        print(
            f"# supervised, {args.supervised_steps} steps in {seconds:.0f} s: probe crops {row['crops']:.1f}, "
            f"ORIGINAL {row['original']:.1f}, MIXED-RAND {row['mixed_rand']:.1f}",
            flush=True,
        )
        weights["supervised"] = (sup.eval(), nn.Sequential(head).eval())
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
                    soft = by_t[1] / 255.0
                    inside, outside = soft[gt.masks == 1].mean(), soft[gt.masks == 0].mean()
                    print(
                        f"| {name} | {label} | ×{expand} | {'on' if nsr else 'off'} | {inside:.2f} / {outside:.2f} "
                        f"| {pxap(gt.masks, soft):.1f} | {pxap(gt.masks, 1 - soft):.1f} "
                        f"| {pxap(gt.masks, by_t[5] / 255.0):.1f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
