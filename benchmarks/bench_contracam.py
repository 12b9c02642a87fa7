"""Throughput of ContraCAM and of its post-processing; prints Markdown tables.

ContraCAM: images/s at batch 64, 64 px, T in {1, 10}, expand_res in {1, 2}, for
the reference path (amp off, plain float32) and the fast path (amp on), with
the fast path's binarized-mask IoU against the reference. Post-processing:
CRF + cleaning + boxes per image on 1 process and on 2 (or --processes).

    .venv/bin/python benchmarks/bench_contracam.py            # full table
    .venv/bin/python benchmarks/bench_contracam.py --quick    # a smoke run in seconds

Images come from ``--data`` (an ``oacl.set/1`` HDF5 file, default
data/multi/train.h5 when it exists) or are synthetic shapes on textured
backgrounds. The model is a ResNet-18 with a MoCo-v2 projector, randomly
initialised (the cost does not depend on the weights) unless ``--weights``
names a file holding {"encoder": state_dict, "projector": state_dict}.
Run it on a quiet machine: the numbers are wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from oacl.cam.contracam import contracam_prepared, prepare_cam_model
from oacl.cam.postprocess import PostprocessOptions, refine_batch, resolve_workers
from oacl.vocab import IMAGENET_MEAN, IMAGENET_STD


def synthetic_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: 1-3 coloured ellipses / rectangles on a smooth textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        f = rng.uniform(2, 8, size=3)
        bg = 0.5 + 0.25 * np.sin(2 * np.pi * (f[0] * xx + f[1] * yy))[..., None] * rng.uniform(0.3, 1, 3)
        img = bg * rng.uniform(0.4, 1.0, 3)
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.uniform(0.2, 0.8, 2)
            rx, ry = rng.uniform(0.08, 0.25, 2)
            shape = (
                ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
                if rng.random() < 0.5
                else ((abs(xx - cx) <= rx) & (abs(yy - cy) <= ry))
            )
            img[shape] = rng.uniform(0, 1, 3)
        out[i] = np.clip(img * 255 + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return out


def load_images(args: argparse.Namespace, n: int) -> tuple[np.ndarray, str]:
    path = Path(args.data) if args.data else Path("data/multi/train.h5")
    if path.exists():
        import h5py
        from torch.nn.functional import interpolate

        with h5py.File(path, "r") as f:
            imgs = np.asarray(f["images"][:n])
        if imgs.shape[1] != args.size:
            t = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
            t = interpolate(t, size=(args.size, args.size), mode="bilinear", antialias=True, align_corners=False)
            imgs = t.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        reps = -(-n // len(imgs))
        return np.concatenate([imgs] * reps)[:n], str(path)
    if args.data:
        sys.exit(f"error: --data {path} does not exist")
    return synthetic_images(n, args.size), "synthetic"


def build_model(weights: str | None) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    enc = torchvision.models.resnet18()
    enc.fc = nn.Identity()
    proj = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, 128))
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        enc.load_state_dict(state["encoder"])
        proj.load_state_dict(state["projector"])
    return enc, proj


def time_call(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (oneDNN primitive creation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--iters", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--expand", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all available cores)")
    ap.add_argument("--crf-images", type=int, default=256)
    ap.add_argument("--processes", type=int, default=0, help="CRF processes to compare with 1 (0: all cores)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--quick", action="store_true", help="batch 8, T in {1, 2}, 16 CRF images, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.iters, args.repeats, args.crf_images = 8, [1, 2], 1, 16

    threads = resolve_workers(args.threads)
    torch.set_num_threads(threads)
    enc, proj = build_model(args.weights)
    images, source = load_images(args, max(args.batch, args.crf_images))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(images[: args.batch]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    print(
        f"# ContraCAM benchmark: ResNet-18, batch {args.batch}, {args.size} px, images: {source}, "
        f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs\n"
    )

    results: dict = {"contracam": [], "postprocess": []}
    print("| T | expand | path | s / batch | images / s | speed-up | mask IoU vs reference |")
    print("|---|---|---|---|---|---|---|")
    for iters in args.iters:
        for expand in args.expand:
            row_ref = None
            for amp in (False, True):
                model = prepare_cam_model(enc, proj, expand_res=expand, amp=amp)
                sec, out = time_call(lambda m=model, t=iters: contracam_prepared(m, x, iters=t), args.repeats)
                if not amp:
                    row_ref = (sec, out)
                speed = row_ref[0] / sec
                iou = mask_iou(row_ref[1], out)
                name = "fast (amp)" if amp else "reference (fp32)"
                ips = args.batch / sec
                print(f"| {iters} | {expand} | {name} | {sec:.3f} | {ips:.1f} | {speed:.2f}x | {iou:.4f} |", flush=True)
                results["contracam"].append(
                    dict(
                        iters=iters,
                        expand=expand,
                        amp=amp,
                        seconds=sec,
                        images_per_s=args.batch / sec,
                        speedup=speed,
                        mask_iou=iou,
                    )
                )

    # post-processing on realistic soft masks: ContraCAM (T = 10, expand 2, fast path) of the images
    n = args.crf_images
    model = prepare_cam_model(enc, proj, expand_res=2, amp=True)
    xs = (torch.from_numpy(images[:n]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    soft = torch.cat([contracam_prepared(model, xs[i : i + 64], iters=max(args.iters)) for i in range(0, n, 64)])
    soft_u8 = (soft[:, 0] * 255).round().byte().numpy()
    opts = PostprocessOptions()
    many = resolve_workers(args.processes)
    t0 = time.perf_counter()
    refine_batch(images[:4], soft_u8[:4], opts, processes=max(many, 2))  # starts the worker pool once
    start = time.perf_counter() - t0
    print(
        f"\n# CRF + cleaning + boxes, {n} images of {args.size} px "
        f"(starting the {max(many, 2)}-process pool took {start:.1f} s, once per process)\n"
    )
    print("| processes | ms / image | speed-up | boxes / image |")
    print("|---|---|---|---|")
    base = None
    for procs in sorted({1, max(many, 2)}):
        t0 = time.perf_counter()
        refined, boxes = refine_batch(images[:n], soft_u8, opts, processes=procs)
        sec = time.perf_counter() - t0
        base = base or sec
        per = 1000 * sec / n
        nbox = float(np.mean([len(b) for b in boxes]))
        print(f"| {procs} | {per:.2f} | {base / sec:.2f}x | {nbox:.2f} |", flush=True)
        results["postprocess"].append(
            dict(processes=procs, ms_per_image=per, speedup=base / sec, pool_start_s=start if procs > 1 else 0.0)
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
