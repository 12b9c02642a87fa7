"""Stage ``detect@<variant>``: detection / instance-segmentation fine-tune evaluation (params ``detect``).

    PYTHONPATH=src python stages/detect.py --model random|moco|byol|<moco|byol>-<debias>
        [--params params.yaml] [--models-dir artifacts/models] [--out-dir artifacts]

Reads the variant's backbone (``<models-dir>/pretrain-<m>/backbone.pt`` or
``<models-dir>/retrain-<m>-<debias>/backbone.pt``; ``random`` = a seeded random init of
``pretrain.arch`` / ``pretrain.stem``) and the multi-object set's COCO JSON; fine-tunes a
Mask R-CNN (Faster R-CNN with ``detect.masks: false``) and writes under ``--out-dir``:
``metrics/detect-<variant>.json`` (bbox / segm AP, AP50, AP75, AR@100 in percent, steps,
seconds) and ``plots/detect-<variant>/predictions.png`` (see :mod:`oacl.eval.detection`).
"""

from __future__ import annotations

import argparse

import torch

from oacl import perf
from oacl.cli import model_stage_args, run_stage
from oacl.config import Params
from oacl.eval.detection import DetectPaths, run_detect


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return model_stage_args(__doc__, argv)


def main(params: Params, args: argparse.Namespace) -> None:
    perf.tune_malloc()
    if params.detect.threads:
        torch.set_num_threads(params.detect.threads)
    else:
        perf.configure_threads(1)
    run_detect(params, args.model, DetectPaths.under(args.out_dir, args.model), models_dir=args.models_dir)


if __name__ == "__main__":
    args = parse_args()
    run_stage(lambda params: main(params, args), args.params)
