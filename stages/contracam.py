"""Stage ``contracam@<dataset>``: ContraCAM masks and boxes of a training split (params ``contracam.<dataset>``, ``contracam.ablation``).

    PYTHONPATH=src python stages/contracam.py --dataset multi|single [--params params.yaml]
        [--model artifacts/models/pretrain-moco/backbone.pt] [--out-dir artifacts]

Reads the vanilla MoCo backbone and ``<data.root>/<dataset>/train.h5``; writes under
``--out-dir``: ``cam/<dataset>.h5`` (schema oacl.cam/1), ``metrics/contracam-<dataset>.json``,
``metrics/contracam-<dataset>-ablation.json`` and ``plots/contracam-<dataset>/`` (see
:mod:`oacl.cam.pipeline`). The CRF worker pool re-imports this script, hence the
``__main__`` guard.
"""

from __future__ import annotations

import argparse

from oacl import perf
from oacl.cam.pipeline import CamPaths, run_contracam_stage
from oacl.cli import run_stage
from oacl.config import Params
from oacl.vocab import SETS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, choices=SETS)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--model", default="artifacts/models/pretrain-moco/backbone.pt")
    p.add_argument("--out-dir", default="artifacts")
    return p.parse_args(argv)


def main(params: Params, args: argparse.Namespace) -> None:
    perf.tune_malloc()
    perf.configure_threads(1)
    run_contracam_stage(params, args.dataset, args.model, CamPaths.under(args.out_dir, args.dataset))


if __name__ == "__main__":
    args = parse_args()
    run_stage(lambda params: main(params, args), args.params)
