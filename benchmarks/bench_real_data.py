"""What real-format data costs on this machine, per image: disk, decoding, and the CAM store.

    PYTHONPATH=src python benchmarks/bench_real_data.py [--images 300] [--side 64]

Writes ``--images`` generated photographs-like images (smooth noise + shapes) as JPEG at COCO's
typical 640 x 480 into a temporary folder, with a COCO-style mask (``.npy``) each, then times
what every stage does to a real image before the network sees it: decode
(:func:`oacl.data.datasets.load_image`) and resize to ``--side`` (ContraCAM's resize-full, the
evaluation's shorter side + centre crop), and the CAM store's mask bytes at ``--side``. Prints
one table row per item with the per-image figure and the figure per 10,000 images.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from oacl.data.datasets import load_image


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(n):
        low = rng.random((15, 20, 3)).astype(np.float32)
        img = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((640, 480), Image.BICUBIC)).copy()
        cx, cy, r = rng.uniform(160, 480), rng.uniform(120, 360), rng.uniform(40, 120)
        disk = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        img[disk] = rng.integers(0, 256, 3)
        img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        np.save(folder / f"{i:05d}.npy", disk)
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--side", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_images(folder, args.images)
        jpeg = sum(q.stat().st_size for q in paths) / len(paths)
        mask = sum((folder / f"{q.stem}.npy").stat().st_size for q in paths) / len(paths)
        t0 = time.perf_counter()
        decoded = [load_image(q) for q in paths]
        t_decode = (time.perf_counter() - t0) / len(paths)
        full = v2.Resize((args.side, args.side), antialias=True)
        t0 = time.perf_counter()
        for img in decoded:
            full(torch.from_numpy(img).permute(2, 0, 1))
        t_full = (time.perf_counter() - t0) / len(paths)
        t0 = time.perf_counter()
        for img in decoded:
            TF.center_crop(
                TF.resize(torch.from_numpy(img).permute(2, 0, 1), args.side, antialias=True), [args.side] * 2
            )
        t_crop = (time.perf_counter() - t0) / len(paths)
    store = 2 * args.side * args.side  # soft + refined uint8 masks, before gzip
    rows = [
        ("JPEG 640x480 on disk", f"{jpeg / 1e3:.1f} kB", f"{jpeg * 1e4 / 1e9:.2f} GB"),
        ("its mask as .npy (bool)", f"{mask / 1e3:.1f} kB", f"{mask * 1e4 / 1e9:.2f} GB"),
        (f"CAM store masks at {args.side} px (uncompressed)", f"{store / 1e3:.1f} kB", f"{store * 1e4 / 1e9:.3f} GB"),
        ("decode (load_image, 1 thread)", f"{t_decode * 1e3:.2f} ms", f"{t_decode * 1e4:.0f} s"),
        (f"resize-full to {args.side} (ContraCAM)", f"{t_full * 1e3:.2f} ms", f"{t_full * 1e4:.0f} s"),
        (f"shorter side + centre crop to {args.side} (evaluation)", f"{t_crop * 1e3:.2f} ms", f"{t_crop * 1e4:.0f} s"),
    ]
    print(f"| item ({args.images} generated images) | per image | per 10,000 images |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
