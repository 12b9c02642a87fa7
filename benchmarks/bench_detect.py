"""Time the detection fine-tune: one SGD step and inference per image, per detector setting.

Prints a table with, per setting: seconds per training step (median over repeats after a
warm-up step; wall clock and process CPU time), inference ms per image, and the number of
steps that fit a time budget after inference on the whole test split — the numbers that
sized ``detect.steps`` and the "lite" defaults of params.yaml.

    PYTHONPATH=src python benchmarks/bench_detect.py                      # params.yaml's detect section
    PYTHONPATH=src python benchmarks/bench_detect.py --threads 2 --budget 180 --repeats 5
    PYTHONPATH=src python benchmarks/bench_detect.py --settings params torchvision faster

Settings (``--settings``, registry :data:`SETTINGS`): ``params`` = params.yaml's ``detect``
section as it is; ``torchvision`` = torchvision's COCO defaults (FPN 256, 2000 / 1000
proposals, 512 RoIs, anchors 32-512) at the same image size; the others change one or two
keys of ``params``. Inference is timed on a detector after ``--train-steps`` steps (an
untrained detector keeps ~100 low-score detections per image and runs its mask head on all
of them, far slower than a trained one).

Run it alone on the machine: another torch process on the same cores makes wall-clock
numbers meaningless (CPU time is the steadier column on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from oacl import perf
from oacl.config import DetectConfig, load_params
from oacl.eval.detection import DetectionSet, build_detector, detect_lr
from oacl.models.backbones import build_backbone

SETTINGS: dict[str, Callable[[DetectConfig], DetectConfig]] = {
    "params": lambda c: c,
    "torchvision": lambda c: replace(
        c,
        anchor_sizes=(32, 64, 128, 256, 512),
        fpn_channels=256,
        rpn_pre_nms_train=2000,
        rpn_post_nms_train=2000,
        rpn_pre_nms_test=1000,
        rpn_post_nms_test=1000,
        rois_per_image=512,
        box_head_dim=1024,
        mask_head_layers=4,
        mask_head_channels=256,
        detections_per_image=100,
    ),
    "faster": lambda c: replace(c, masks=False),
    "fpn256": lambda c: replace(c, fpn_channels=256, box_head_dim=1024),
    "mask4x256": lambda c: replace(c, mask_head_layers=4, mask_head_channels=256),
    "rois128": lambda c: replace(c, rois_per_image=128),
    "size96": lambda c: replace(c, image_size=96),
    "size160": lambda c: replace(c, image_size=160),
}


def time_setting(
    cfg: DetectConfig, train: DetectionSet, test: DetectionSet, *, repeats: int, train_steps: int, infer_images: int
) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_detector(build_backbone("resnet18"), len(train.classes), cfg)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    wall, cpu = [], []
    for step in range(max(train_steps, repeats + 1)):
        idx = [(step * cfg.batch_size + k) % len(train) for k in range(cfg.batch_size)]
        batch = [train[i] for i in idx]
        for g in opt.param_groups:
            g["lr"] = detect_lr(min(step, cfg.steps - 1), cfg)
        t0, c0 = time.perf_counter(), time.process_time()
        losses = model([b[0] for b in batch], [b[1] for b in batch])
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad or float("inf"))
        opt.step()
        if step >= 1:  # the first step warms up allocators and kernels
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    model.eval()
    n = min(infer_images, len(test))
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, n, cfg.eval_batch):
            model([test[i][0] for i in range(start, min(n, start + cfg.eval_batch))])
    infer = (time.perf_counter() - t0) / n
    return {
        "step_s": statistics.median(wall[-repeats:]),
        "step_cpu_s": statistics.median(cpu[-repeats:]),
        "infer_ms": 1000 * infer,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument(
        "--settings",
        nargs="+",
        default=["params", "faster", "fpn256", "mask4x256", "torchvision"],
        choices=sorted(SETTINGS),
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = every usable core")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per setting (median)")
    p.add_argument(
        "--train-steps",
        type=int,
        default=40,
        help="steps before timing inference (a trained detector keeps fewer boxes)",
    )
    p.add_argument("--infer-images", type=int, default=64)
    p.add_argument("--budget", type=float, default=180.0, help="seconds per model for the 'steps in budget' column")
    args = p.parse_args()

    perf.tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = args.threads or perf.configure_threads(1)
    params = load_params(args.params)
    root = Path(params.data.root) / "multi"
    base = params.detect
    train = DetectionSet(root / "instances_train.json", root / "train.h5", masks=True)
    test = DetectionSet(root / "instances_test.json", root / "test.h5", masks=True)
    n_test = len(test) if base.eval_images == 0 else min(base.eval_images, len(test))
    print(
        f"threads {threads}, batch {base.batch_size}, image_size {base.image_size}, test images {n_test}, budget {args.budget:.0f} s"
    )
    print(f"{'setting':<12} {'s/step':>8} {'cpu s/step':>10} {'infer ms/img':>13} {'steps in budget':>16}")
    for name in args.settings:
        cfg = SETTINGS[name](base)
        train.masks = test.masks = cfg.masks
        r = time_setting(
            cfg, train, test, repeats=args.repeats, train_steps=args.train_steps, infer_images=args.infer_images
        )
        fit = max(0, int((args.budget - 10 - n_test * r["infer_ms"] / 1000) / r["step_s"]))  # ~10 s of start-up
        print(f"{name:<12} {r['step_s']:>8.2f} {r['step_cpu_s']:>10.2f} {r['infer_ms']:>13.1f} {fit:>16d}", flush=True)


if __name__ == "__main__":
    main()
