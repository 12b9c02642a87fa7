"""Stage ``report``: the paper-style tables, the claims check and bar charts from every metrics JSON.

    PYTHONPATH=src python stages/report.py [--params params.yaml] [--metrics-dir artifacts/metrics]
        [--out artifacts/report.md] [--summary artifacts/metrics/report.json] [--plots artifacts/plots/report]
        [--figures artifacts/plots] [--seeds-dir artifacts/seeds]

Reads the JSON files the other stages wrote under ``--metrics-dir`` and their details beside
them (``../eval/``; see :mod:`oacl.report`); writes PNG bar charts, the Markdown report (a
five-line summary, the claims, the tables, and relative links to the charts and to the stages'
pictures under ``--figures``) and a summary for ``dvc metrics``, each atomically.
With ``extra_seeds`` in the params it also reads each seed's metrics under
``<seeds-dir>/s<seed>/metrics/`` and judges the claims on the paired seeds (:mod:`oacl.claims`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from oacl import report
from oacl.cli import run_stage
from oacl.config import Params
from oacl.io.atomic import atomic_dir, atomic_path, write_json

log = logging.getLogger("oacl.report")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--metrics-dir", default="artifacts/metrics")
    p.add_argument("--out", default="artifacts/report.md")
    p.add_argument("--summary", default="artifacts/metrics/report.json")
    p.add_argument("--plots", default="artifacts/plots/report")
    p.add_argument("--figures", default="artifacts/plots", help="the stages' pictures, linked from the report")
    p.add_argument(
        "--seeds-dir", default="artifacts/seeds", help="the extra_seeds runs and oracles, s<seed>/metrics/*.json"
    )
    return p.parse_args(argv)


def main(params: Params, args: argparse.Namespace) -> None:
    metrics = report.load_metrics(args.metrics_dir)
    seed, extra, oracles = params.pretrain.seed, params.extra_seeds, params.oracles
    seeds = report.seed_runs(args.metrics_dir, args.seeds_dir, seed, extra, oracles)
    with atomic_dir(args.plots) as tmp:  # first: the report links these charts
        report.write_charts(metrics, tmp)
    figures = report.Figures(Path(args.figures), Path(args.out).parent)
    text = report.render(metrics, figures=figures, data_source=params.data.source, seeds=seeds)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    summary = report.summary(metrics, seeds, report.seeds_seconds(args.seeds_dir, extra, seed, oracles))
    write_json(args.summary, summary)
    log.info(
        "report: %d metrics files, %d of %d claims hold -> %s",
        len(metrics),
        summary["claims_hold"],
        summary["claims_checked"],
        args.out,
    )


if __name__ == "__main__":
    args = parse_args()
    run_stage(lambda params: main(params, args), args.params)
