"""Stage ``lineval@<variant>``: linear probes on frozen features (params ``lineval``; paper §3.2, appendix B.2).

    PYTHONPATH=src python stages/lineval.py --model <variant> [--params params.yaml]
        [--models-dir artifacts/models] [--out-dir artifacts]

``<variant>``: ``random`` (random-init control), ``moco``, ``byol`` or ``<method>-<debias>``
(see :func:`oacl.eval.features.variant_names`). Reads the variant's backbone and the object-crop
and single-object ORIGINAL splits; writes under ``--out-dir``: ``metrics/lineval-<variant>.json``
and ``eval/lineval-<variant>/heads.pt`` (see :func:`oacl.eval.linear.run_lineval`).
"""

from __future__ import annotations

import argparse

from oacl import perf
from oacl.cli import model_stage_args, run_stage
from oacl.config import Params
from oacl.eval.linear import LinevalPaths, run_lineval


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return model_stage_args(__doc__, argv)


def main(params: Params, args: argparse.Namespace) -> None:
    perf.tune_malloc()
    perf.configure_threads(1)
    run_lineval(params, args.model, LinevalPaths.under(args.out_dir, args.model), models_dir=args.models_dir)


if __name__ == "__main__":
    args = parse_args()
    run_stage(lambda params: main(params, args), args.params)
