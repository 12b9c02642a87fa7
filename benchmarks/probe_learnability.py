"""Learnability probe: linear-probe accuracy of a pretrained backbone vs a random-init one.

    PYTHONPATH=src python benchmarks/probe_learnability.py [BACKBONE.pt ...] [--seeds 0 1]

Features are the frozen encoder's pooled output on the un-augmented images; a multinomial
logistic regression (scikit-learn, L-BFGS) is fitted on the training split with its inverse
ℓ2 weight C chosen on the validation split from a small log grid, and scored on the test split.
Prints one row per backbone and task: the object-crop set (COCO-Crop analogue), single-object
ORIGINAL, and the Background Challenge MIXED-RAND / MIXED-SAME (BG-Gap = SAME − RAND).
This is a quick check for the benchmark's design, not the evaluation stage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from oacl.io.checkpoint import load_backbone, read_backbone
from oacl.io.sets import open_set
from oacl.models.backbones import build_backbone
from oacl.vocab import IMAGENET_MEAN, IMAGENET_STD


@torch.no_grad()
def features(encoder: torch.nn.Module, path: Path, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    data = open_set(path)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for i in range(0, data.info.num_images, batch):
        x = torch.from_numpy(np.ascontiguousarray(data.images[i : i + batch])).permute(0, 3, 1, 2).float() / 255
        out.append(encoder((x - mean) / std))
    return torch.cat(out).numpy(), np.asarray(data.labels)


def fit(train, val, seed: int) -> LogisticRegression:
    best, best_acc = None, -1.0
    for c in np.logspace(-3, 2, 6):
        clf = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(*train)
        acc = clf.score(*val)
        if acc > best_acc:
            best, best_acc = clf, acc
    return best


def standardize(train, *others):
    mu, sd = train[0].mean(0), train[0].std(0) + 1e-6
    return [((x - mu) / sd, y) for x, y in (train, *others)]


def probe(encoder: torch.nn.Module, data: Path, seed: int) -> dict[str, float]:
    encoder.eval()
    crops = standardize(*(features(encoder, data / "multi" / f"crops_{s}.h5") for s in ("train", "val", "test")))
    clf = fit(crops[0], crops[1], seed)
    # "*_val": the validation split that chose C (a little optimistic); configurations are compared on it
    row = {"crops": 100 * clf.score(*crops[2]), "crops_val": 100 * clf.score(*crops[1])}
    names = ("train", "val", "original", "mixed_same", "mixed_rand", "only_fg")
    single = standardize(*(features(encoder, data / "single" / f"{s}.h5") for s in names))
    clf = fit(single[0], single[1], seed)
    row["single_val"] = 100 * clf.score(*single[1])
    for name, split in zip(names[2:], single[2:]):
        row[name] = 100 * clf.score(*split)
    row["bg_gap"] = row["mixed_same"] - row["mixed_rand"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backbones", nargs="*", type=Path)
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args()
    torch.set_num_threads(2)
    cols = ("crops", "original", "mixed_same", "mixed_rand", "only_fg", "bg_gap")
    print(f"{'backbone':<40} seed " + " ".join(f"{c:>10}" for c in cols))
    arch, stem = "resnet18", "standard"
    if args.backbones:
        meta = read_backbone(args.backbones[0])
        arch, stem = meta["arch"], meta["stem"]
    for seed in args.seeds:
        torch.manual_seed(seed)
        runs = [(f"random-init {arch}/{stem}", build_backbone(arch, stem))]
        runs += [(str(b), load_backbone(b)) for b in args.backbones]
        for name, enc in runs:
            row = probe(enc, args.data, seed)
            print(f"{name:<40} {seed:>4} " + " ".join(f"{row[c]:>10.1f}" for c in cols), flush=True)


if __name__ == "__main__":
    main()
