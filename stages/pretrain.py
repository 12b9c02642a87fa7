"""Stage ``pretrain@<method>``: vanilla MoCo v2 / BYOL pretraining (params ``pretrain``).

    PYTHONPATH=src python stages/pretrain.py --method moco|byol [--params params.yaml]
        [--out-dir artifacts] [--seed N]

Reads ``<data.root>/<set>/train.h5`` (``pretrain.dataset``); writes under ``--out-dir``:
``models/pretrain-<method>/{checkpoint.pt,backbone.pt}``, ``live/pretrain-<method>/``
(dvclive), ``plots/pretrain-<method>/loss.png``, ``metrics/pretrain-<method>.json`` (the
headline) and ``eval/pretrain-<method>/details.json`` (the rest, :mod:`oacl.io.results`); keeps
its resume checkpoint in ``cache/pretrain-<method>/last.pt`` (not a DVC output). With
``pretrain.nproc > 1`` it relaunches itself under torchrun with that many processes. With
``pretrain.imports.<method>`` set it imports that checkpoint instead of training
(:mod:`oacl.train.imported`). ``--seed N`` trains with seed N in place of ``pretrain.seed`` (the
``pretrain-seed@<N>-<method>`` stages of ``extra_seeds``, with ``--out-dir artifacts/seeds/s<N>``).
"""

from __future__ import annotations

import argparse
import os
import sys

from oacl import dist, perf
from oacl.config import Params, for_seed
from oacl.io.results import write_results
from oacl.train.imported import import_file, run_import
from oacl.train.launch import run_training_stage
from oacl.train.pretrain import METHOD_BUILDERS, PretrainPaths, run_pretrain


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=sorted(METHOD_BUILDERS))
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out-dir", default="artifacts")
    p.add_argument("--seed", type=int, help="train with this seed instead of pretrain.seed (an extra_seeds stage)")
    return p.parse_args(argv)


def main(params: Params, args: argparse.Namespace) -> None:
    params = for_seed(params, args.seed)
    paths = PretrainPaths.under(args.out_dir, args.method)
    if import_file(params, args.method) is not None:  # pretrain.imports.<method>: no training
        if int(os.environ.get("RANK", 0)) == 0:
            write_results(paths.metrics, run_import(params, args.method, paths))
        return
    perf.tune_malloc()
    perf.configure_threads(int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    try:
        metrics = run_pretrain(params, args.method, paths)
        if metrics is not None:  # rank 0: the headline stays, the rest goes to eval/pretrain-<method>/
            write_results(paths.metrics, metrics)
    finally:
        dist.cleanup()


if __name__ == "__main__":
    args = parse_args()
    run_training_stage(lambda params: main(params, args), args.params, __file__, sys.argv[1:])
