"""Time debiased retraining against its vanilla twin: the whole training step, and the loader alone.

    PYTHONPATH=src python benchmarks/bench_retrain.py                       # params.yaml defaults
    PYTHONPATH=src python benchmarks/bench_retrain.py --variants vanilla oacrop bgmix --batch 128
    PYTHONPATH=src python benchmarks/bench_retrain.py --device cuda --steps 20

Prints two tables.

1. Step: images/s of one full training step per variant — fetch the next batch from a DataLoader
   with ``pretrain.workers`` workers (the per-item half runs there), the per-batch half (mixing,
   photometric), forward, backward, SGD, EMA — with the median over steps after warm-up. The
   variants run round-robin, one step each in turn, in the same process on the same data, so a
   load change on a shared machine hits them alike. Overhead = vanilla / variant − 1.
2. Loader: images/s of the DataLoader alone (per-item half + collation) with 0 and 2 workers.

Data: the embedded benchmark under ``--data`` (training set of ``pretrain.dataset``) and the CAM
stores under ``--cam-dir``; where a store is missing, a stand-in is written to a temporary folder
from the ground-truth masks (same shapes and dtypes: the cost is what is measured).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from oacl import perf
from oacl.augment.views import AugmentSettings, ViewPipeline, two_view_pipeline
from oacl.config import Params, load_params
from oacl.io.camstore import write_cam_store
from oacl.perf import autocast_context, resolve_amp
from oacl.train.engine import IndexedViews, _to_device
from oacl.train.pretrain import build_method, open_train_set, train_set_names
from oacl.train.retrain import DEBIAS, build_views, open_cam_store


def cam_stores(params: Params, data: Dataset, cam_dir: Path, tmp: Path) -> dict[str, Any]:
    """The CAM stores of the training parts; stand-ins from the GT masks where none exists."""
    names = train_set_names(params.pretrain)
    parts = data.datasets if hasattr(data, "datasets") else [data]  # type: ignore[attr-defined]
    stores = {}
    for name, part in zip(names, parts):
        if (cam_dir / f"{name}.h5").is_file():
            stores[name] = open_cam_store(cam_dir, name)
            continue
        masks = np.asarray(part.set.masks)  # type: ignore[attr-defined]
        size = masks.shape[1]
        boxes = [part.set.boxes_of(i)[0] / size for i in range(len(part))]  # type: ignore[attr-defined]
        write_cam_store(
            tmp / f"{name}.h5",
            image_ids=part.ids,
            masks=(masks * 200).astype(np.uint8),
            boxes=boxes,
            checkpoint_sha256="stand-in",
            params={},
            image_size=size,
            iters=1,
            expand_res=1,
            crf=False,
        )
        stores[name] = open_cam_store(tmp, name)
        print(f"# {cam_dir / (name + '.h5')} missing: stand-in store from the ground-truth masks")
    return stores


def loader(dataset: Dataset, views: ViewPipeline, batch: int, workers: int, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        IndexedViews(dataset, views.per_item),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        collate_fn=default_collate,
        generator=g,
        worker_init_fn=perf.worker_init if workers else None,
    )


def forever(dl: DataLoader) -> Iterator[Any]:
    while True:
        yield from dl


def loader_rate(dl: DataLoader, batches: int) -> float:
    """Images/s of ``batches`` batches after the first (worker start-up excluded)."""
    it = iter(dl)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        idx, _ = next(it)
        n += len(idx)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default=None, help="data root (default: data.root of the params)")
    ap.add_argument("--cam-dir", type=Path, default=Path("artifacts/cam"))
    ap.add_argument("--method", default="moco", choices=["moco", "byol"])
    ap.add_argument(
        "--variants", nargs="+", default=["vanilla", "oacrop", "bgmix"], choices=["vanilla", *sorted(DEBIAS)]
    )
    ap.add_argument("--batch", type=int, default=None, help="default: pretrain.batch_size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--loader-batches", type=int, default=8)
    ap.add_argument("--loader-workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()

    params = load_params(args.params)
    if args.data is not None:
        from dataclasses import replace

        params = replace(params, data=replace(params.data, root=args.data))
    cfg = params.pretrain
    batch = args.batch or cfg.batch_size
    device = torch.device(args.device)
    perf.tune_malloc()
    threads = perf.configure_threads(1) if device.type == "cpu" else torch.get_num_threads()
    data, size = open_train_set(params)
    amp = resolve_amp(cfg.amp, device)
    print(
        f"# {args.method} {cfg.arch}/{cfg.stem}, batch {batch}, {size} px, {len(data)} training images "
        f"({cfg.dataset}), device {device}, threads {threads}, workers {cfg.workers}, amp {amp}, "
        f"channels_last {cfg.channels_last}, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        stores = (
            cam_stores(params, data, args.cam_dir, Path(tmp))
            if any(v != "vanilla" and DEBIAS[v].cam for v in args.variants)
            else {}
        )
        pipelines: dict[str, tuple[Dataset, ViewPipeline]] = {}
        for v in args.variants:
            t0 = time.perf_counter()
            if v == "vanilla":
                pipelines[v] = (data, two_view_pipeline(AugmentSettings(size=size, crop_scale=cfg.crop_scale)))
            else:
                pipelines[v] = build_views(params, v, data, size, stores)
            print(f"# {v}: set-up {time.perf_counter() - t0:.2f} s (CAM look-ups, background-rectangle cache)")

        # ---- 1. full training step, round-robin over the variants
        torch.manual_seed(0)
        model = build_method(args.method, cfg).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.online_parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        streams = {v: forever(loader(d, p, batch, cfg.workers)) for v, (d, p) in pipelines.items()}

        def step(v: str) -> float:
            t0 = time.perf_counter()
            index, views = next(streams[v])
            views, index = _to_device(views, device), index.to(device)
            x1, x2, *_ = pipelines[v][1].per_batch(views)
            if cfg.channels_last:
                x1 = x1.contiguous(memory_format=torch.channels_last)
                x2 = x2.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp):
                loss = model(x1, x2, index)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.update_target(0.5)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - t0

        times: dict[str, list[float]] = {v: [] for v in pipelines}
        for i in range(args.warmup + args.steps):
            for v in pipelines:
                t = step(v)
                if i >= args.warmup:
                    times[v].append(t)
        base = statistics.median(times[args.variants[0]])
        print(f"{'variant':12} {'step ms':>8} {'img/s':>8} {'overhead':>9}   (median of {args.steps} steps)")
        for v, t in times.items():
            med = statistics.median(t)
            print(f"{v:12} {med * 1e3:8.1f} {batch / med:8.1f} {med / base - 1:+8.1%}")

        # ---- 2. the loader alone
        print(
            f"{'variant':12} "
            + " ".join(f"{f'{w} workers':>12}" for w in args.loader_workers)
            + "   (images/s, loader only)"
        )
        for v, (d, p) in pipelines.items():
            rates = [loader_rate(loader(d, p, batch, w), args.loader_batches) for w in args.loader_workers]
            print(f"{v:12} " + " ".join(f"{r:12.0f}" for r in rates))


if __name__ == "__main__":
    main()
