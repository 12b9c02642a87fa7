"""The dense CRF's kernels against ContraCAM's stored masks and the image-blind baselines; prints a Markdown table.

Mask mIoU (%) after the CRF and cleaning, on a fixed random subset of each training split, for
ContraCAM's soft masks (read from ``artifacts/cam/<set>.h5``, i.e. after ``dvc repro
contracam@<set>``), the centred Gaussian (its best σ on the subset) and the all-ones map, under
the paper code's kernels and a few others. Used for docs/benchmarks.md.

    PYTHONPATH=src python benchmarks/crf_kernels.py [--params params.yaml] [--images 512]
"""

from __future__ import annotations

import argparse

import numpy as np

from oacl.cam.nulls import gaussian_map
from oacl.cam.pipeline import ground_truth, open_cam_set
from oacl.cam.postprocess import PostprocessOptions, refine_batch
from oacl.config import load_params
from oacl.io.camstore import CamStore
from oacl.localization import gaussian_baseline, mask_ious

SETTINGS = {
    "paper code (smoothness 3 / 3; appearance 80 / 13 / 10)": {},
    "appearance sxy 23 (80 x 64 / 224)": {"bi_sxy": 23.0},
    "appearance sxy 10": {"bi_sxy": 10.0},
    "appearance sxy 23, srgb 25": {"bi_sxy": 23.0, "bi_srgb": 25.0},
    "no appearance kernel": {"bi_compat": 0.0},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--cam-dir", default="artifacts/cam")
    args = p.parse_args()
    params = load_params(args.params)
    print("| set | CRF kernels | ContraCAM | centred Gaussian | all-ones |")
    print("|---|---|---|---|---|")
    for name in ("multi", "single"):
        store = CamStore(f"{args.cam_dir}/{name}.h5")
        data = open_cam_set(params, name, store.image_size[0])
        idx = np.sort(np.random.default_rng(0).choice(len(data), min(args.images, len(data)), replace=False))
        gt = ground_truth(data, idx)
        images = np.stack([np.asarray(data[int(i)]["image"]).transpose(1, 2, 0) for i in idx])
        cam = store.read_all("masks")[idx]
        sigma = gaussian_baseline(gt.masks)["mask_miou"]["sigma"]
        gauss = np.ascontiguousarray(np.broadcast_to(gaussian_map(*cam.shape[1:], sigma), cam.shape))
        ones = np.full(cam.shape, 255, np.uint8)
        for label, kernels in SETTINGS.items():
            opts = PostprocessOptions(**kernels)
            row = [
                100 * mask_ious(gt.masks, refine_batch(images, m, opts, processes=0)[0]).mean()
                for m in (cam, gauss, ones)
            ]
            print(f"| {name} | {label} | " + " | ".join(f"{v:.1f}" for v in row) + " |", flush=True)


if __name__ == "__main__":  # the CRF worker pool re-imports this script
    main()
