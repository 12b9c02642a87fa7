"""Stage ``shift@<variant>``: background / distribution shift and contextual bias (params ``shift``, ``lineval``; paper Tables 7, 8, 24, D.2).

    PYTHONPATH=src python stages/shift.py --model <variant> [--params params.yaml]
        [--models-dir artifacts/models] [--out-dir artifacts]

Reads the variant's backbone and the ORIGINAL head ``eval/lineval-<variant>/heads.pt`` under
``--out-dir`` (written by ``lineval@<variant>``); writes ``metrics/shift-<variant>.json`` and
``plots/shift-<variant>/tsne.png`` (see :func:`oacl.eval.shift.run_shift`).
"""

from __future__ import annotations

import argparse

from oacl import perf
from oacl.cli import model_stage_args, run_stage
from oacl.config import Params
from oacl.eval.shift import ShiftPaths, run_shift


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return model_stage_args(__doc__, argv)


def main(params: Params, args: argparse.Namespace) -> None:
    perf.tune_malloc()
    perf.configure_threads(1)
    run_shift(params, args.model, ShiftPaths.under(args.out_dir, args.model), models_dir=args.models_dir)


if __name__ == "__main__":
    args = parse_args()
    run_stage(lambda params: main(params, args), args.params)
