"""Stage ``generate``: write the embedded scene-bias benchmark (params ``data.benchmark``).

Outputs: the data directory (default ``data/``; built in a temporary directory beside it and
swapped in at the end, so a killed run never leaves a half-written tree), one contact sheet per
set (``artifacts/plots/generate/<set>.png``), ``artifacts/metrics/generate.json`` (images,
seconds) and ``artifacts/eval/generate/details.json`` (measured co-occurrence /
background-correlation rates, bytes, seconds per step).

    PYTHONPATH=src python stages/generate.py [--params params.yaml] [--out-data DIR]
        [--out-plots DIR] [--out-metrics FILE]
"""

from __future__ import annotations

import argparse
import logging
import time

from oacl.cli import run_stage
from oacl.config import Params
from oacl.data.benchmark import generate_benchmark
from oacl.data.sheets import write_contact_sheets
from oacl.io.atomic import atomic_dir
from oacl.io.results import write_results

log = logging.getLogger("oacl.generate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out-data", default="data")
    p.add_argument("--out-plots", default="artifacts/plots/generate")
    p.add_argument("--out-metrics", default="artifacts/metrics/generate.json")
    return p.parse_args(argv)


def main(params: Params, args: argparse.Namespace) -> None:
    cfg = params.data.benchmark
    if params.data.source != "embedded":
        log.info(
            "data.source is %r: generating the embedded benchmark anyway (other stages read the real data)",
            params.data.source,
        )
    t0 = time.perf_counter()
    with atomic_dir(args.out_data) as tmp:
        metrics = generate_benchmark(cfg, tmp)
    t1 = time.perf_counter()
    with atomic_dir(args.out_plots) as tmp:
        sheets = write_contact_sheets(args.out_data, tmp)
    t2 = time.perf_counter()
    # The per-file sizes and bytes stay in <data>/benchmark.json; the metrics file keeps the
    # headline (images, seconds), the rest goes to eval/generate/details.json (oacl.io.results).
    summary = {
        "images": int(sum(metrics["sizes"].values())),
        "megabytes": round(metrics["total_bytes"] / 1e6, 1),
        "rates": metrics["rates"],
        "seconds": round(t2 - t0, 2),
        "timing": {"generate": round(t1 - t0, 2), "sheets": round(t2 - t1, 2)},
        "contact_sheets": len(sheets),
    }
    write_results(args.out_metrics, summary)
    log.info(
        "benchmark: %d images, %.1f MB in %.1f s (+ %.1f s for %d contact sheets)",
        summary["images"],
        summary["megabytes"],
        t1 - t0,
        t2 - t1,
        len(sheets),
    )


if __name__ == "__main__":
    args = parse_args()
    run_stage(lambda params: main(params, args), args.params)
