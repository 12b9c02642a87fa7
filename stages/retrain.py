"""Stage ``retrain@<method>-<debias>``: debiased retraining, the vanilla twin with another augmentation.

    PYTHONPATH=src python stages/retrain.py --method moco|byol --debias oacrop|bgmix|...
        [--params params.yaml] [--out-dir artifacts] [--cam-dir artifacts/cam] [--seed N]

Reads the training set of ``pretrain.dataset``, the params of the vanilla twin (``pretrain``,
``pretrain.<method>``), the variant's block ``retrain.<debias>`` (and ``pmix`` for bgmix), and
for the ContraCAM variants ``<cam-dir>/<set>.h5``. Writes under ``--out-dir``:
``models/retrain-<method>-<debias>/{checkpoint.pt,backbone.pt}``, ``live/retrain-<method>-<debias>/``,
``plots/retrain-<method>-<debias>/{loss.png,augment.png}``, ``metrics/retrain-<method>-<debias>.json``
(the headline) and ``eval/retrain-<method>-<debias>/details.json`` (the rest);
keeps its resume checkpoint in ``cache/retrain-<method>-<debias>/last.pt``. With
``pretrain.nproc > 1`` it relaunches itself under torchrun. ``--seed N`` trains with seed N in
place of ``pretrain.seed`` (the ``retrain-seed@<N>-...`` stages of ``extra_seeds``).
"""

from __future__ import annotations

import argparse
import os
import sys

from oacl import dist, perf
from oacl.config import Params, for_seed
from oacl.io.results import write_results
from oacl.train.launch import run_training_stage
from oacl.train.pretrain import METHOD_BUILDERS
from oacl.train.retrain import DEBIAS, retrain_paths, run_retrain


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=sorted(METHOD_BUILDERS))
    p.add_argument("--debias", required=True, choices=sorted(DEBIAS))
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out-dir", default="artifacts")
    p.add_argument("--cam-dir", default="artifacts/cam")
    p.add_argument("--seed", type=int, help="train with this seed instead of pretrain.seed (an extra_seeds stage)")
    return p.parse_args(argv)


def main(params: Params, args: argparse.Namespace) -> None:
    params = for_seed(params, args.seed)
    perf.tune_malloc()
    perf.configure_threads(int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    try:
        paths = retrain_paths(args.out_dir, args.method, args.debias)
        metrics = run_retrain(params, args.method, args.debias, paths, cam_dir=args.cam_dir)
        if metrics is not None:  # rank 0: the headline stays, the rest goes to eval/retrain-<method>-<debias>/
            write_results(paths.metrics, metrics)
    finally:
        dist.cleanup()


if __name__ == "__main__":
    args = parse_args()
    run_training_stage(lambda params: main(params, args), args.params, __file__, sys.argv[1:])
