"""Screening harness for issue 16: does self-supervised learning beat random weights on a candidate?

    PYTHONPATH=src python benchmarks/screen.py --tag NAME [--set KEY=VALUE ...] \\
        [--what random,supervised,moco,byol] [--steps 300] [--seeds 0 1] [--out docs/learnability.jsonl]
    PYTHONPATH=src python benchmarks/screen.py --table docs/learnability.jsonl   # the Markdown table

For one configuration — ``params.yaml`` plus ``--set`` overrides of any key (``data.benchmark.*``:
a candidate benchmark, generated once into ``/tmp/oacl-screen/<hash>``; ``pretrain.*``: the model
and the recipe) — it measures, on the same architecture and the same frozen-feature probe:

- ``random``: the random-init control, one row per init seed (``--random-seeds``, default 3);
- ``supervised``: the same backbone trained with labels (cross-entropy on one augmented view of
  the training images, their primary-object class) for the same number of steps — the learnable
  ceiling of that budget;
- ``moco`` / ``byol``: the project's MoCo v2 / BYOL through the training engine for ``--steps``
  optimiser steps (``pretrain.batch_size`` images each), one row per ``--seeds``; with
  ``--debias oacrop_gt`` (or another variant that needs no ContraCAM store) trained from scratch
  with that retraining variant's views instead: the ground-truth oracle of the debiasing;
  ``--donor-fill stretch`` (with ``hardmix_gt``) stretches each donor's background rectangle over
  the view instead of tiling it (the paper's way): a diagnostic of the tiling's seams.

``--byol-tau-final`` ends BYOL's target EMA ramp below 1 (patched in this process): a lever screened
before it becomes a param. Each moco / byol row keeps its per-epoch ``trace`` (loss, lr, the
engine's stats such as ``pair_cos``), to tell a run that collapsed from one that learnt slowly.

The probe is :func:`probe_learnability.probe` (scikit-learn logistic regression, C chosen on the
validation split): object crops, ORIGINAL, MIXED-SAME, MIXED-RAND, ONLY-FG and BG-Gap (test
splits), and ``crops_val`` / ``single_val``, the validation accuracies that configurations are
compared on. Each row is printed and appended to ``--out`` as JSON (config, steps, seconds, img/s,
accuracies), so every configuration tried stays on record.

``--variant`` generates the candidate under one of ``image_cues.py``'s renderer variants
(``scene-texture`` is ``data.benchmark.object_texture: scene``; the others are patched in this
process while the benchmark is written and are not params of the pipeline): benchmarks that
defeat the model-free localisation cues, screened for learnability before one becomes a param.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from image_cues import VARIANTS, variant  # noqa: E402
from probe_learnability import probe  # noqa: E402

from oacl.augment import bgmix  # noqa: E402
from oacl.augment.views import two_view_pipeline  # noqa: E402
from oacl.config import BenchmarkConfig, Params, overlay, parse_section  # noqa: E402
from oacl.data.benchmark import generate_benchmark  # noqa: E402
from oacl.models import byol  # noqa: E402
from oacl.models.backbones import build_backbone, feature_dim  # noqa: E402
from oacl.models.ema import cosine_momentum  # noqa: E402
from oacl.perf import resolve_amp  # noqa: E402
from oacl.schedules import effective_lr, lr_at  # noqa: E402
from oacl.train.engine import EpochRecord, IndexedViews, TrainResult, train  # noqa: E402
from oacl.train.pretrain import build_method, open_train_set, train_settings, view_settings  # noqa: E402
from oacl.train.retrain import DEBIAS, build_views  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def dotted(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` → ``{"a": {"b": 1}, "c": [1, 2]}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


# renderer variants that patch the object renderer (camouflage recolours finished images: image_cues only)
SCREEN_VARIANTS = tuple(v for v in VARIANTS if not v.endswith("camouflage"))


SCREEN_ROOT = Path("/tmp/oacl-screen")  # candidate benchmarks, one folder per settings hash


def benchmark_dir(raw: dict[str, Any], renderer: str | None = None, base: Path = SCREEN_ROOT) -> Path:
    """Generate the candidate benchmark once (keyed by its settings and renderer variant); return its folder.

    ``renderer`` None renders as the params say (``data.benchmark.object_texture`` included). A
    variant patches this process's renderer, so its benchmark is written in this process: the
    generator's worker processes start fresh (spawn) and would draw the unpatched benchmark.
    """
    bench = raw["data"]["benchmark"]
    keyed = bench if renderer is None else {**bench, "variant": renderer}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    root = base / f"bench-{key}"
    if not (root / "benchmark.json").is_file():
        t0 = time.perf_counter()
        cfg = parse_section(BenchmarkConfig, bench)
        if renderer is None:
            generate_benchmark(cfg, root)
        else:
            with variant(renderer, cfg) as drawn_cfg:
                generate_benchmark(drawn_cfg, root, workers=1)
        print(f"# generated {root} in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def labels_of(data: Any) -> torch.Tensor:
    """The class of every training item (multi-object scenes: the primary object's)."""
    return torch.tensor([int(data[i]["label"]) for i in range(len(data))])


def train_supervised(params: Params, data: Any, size: int, steps: int, seed: int) -> tuple[nn.Module, nn.Linear, float]:
    """The backbone + a linear classifier, cross-entropy on the first view, SGD with the SSL schedule.

    Returns (backbone, classifier, seconds).
    """
    cfg = params.pretrain
    torch.manual_seed(seed)
    encoder = build_backbone(cfg.arch, cfg.stem)
    labels = labels_of(data)
    head = nn.Linear(feature_dim(cfg.arch), int(labels.max()) + 1)
    model = nn.Sequential(encoder, head)
    views = two_view_pipeline(view_settings(cfg, size))
    loader_set = IndexedViews(data, views.per_item, seed=seed)
    peak = effective_lr(cfg.moco.base_lr, cfg.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=peak, momentum=cfg.sgd_momentum, weight_decay=cfg.moco.weight_decay)
    amp = resolve_amp(cfg.amp, torch.device("cpu"))
    step, t0 = 0, time.perf_counter()
    model.train()
    while step < steps:
        loader_set.epoch += 1
        gen = torch.Generator().manual_seed(seed * 1000 + loader_set.epoch)
        for index, batch in DataLoader(
            loader_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=gen
        ):
            x1 = views.per_batch(batch)[0]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, peak)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x1).float(), labels[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    return encoder, head, time.perf_counter() - t0


def train_ssl(
    params: Params,
    method: str,
    data: Any,
    size: int,
    steps: int,
    seed: int,
    on_epoch_end: Callable[[EpochRecord, TrainResult], None] | None = None,
    debias: str | None = None,
) -> tuple[nn.Module, float, int]:
    """MoCo / BYOL through the project's engine for about ``steps`` steps (whole epochs).

    ``debias``: train with a retraining variant's views instead of the vanilla two views — one
    that needs no ContraCAM store (``oacrop_gt``, ``hardmix_gt``, ``mixup``, ``cutmix``): the
    ground-truth oracles of the debiasing, screened from scratch like the vanilla model.

    ``on_epoch_end`` (the engine's hook) sees the model after every epoch: ``--probe-every``
    probes it there: a learning curve under one schedule (an intermediate point is not a run of
    that length; the lr decay and the momentum ramp are stretched over the whole run).
    """
    cfg = params.pretrain
    per_epoch = len(data) // cfg.batch_size
    epochs = max(1, math.ceil(steps / per_epoch))
    # the pipeline's settings, with this run's length and seed, on the CPU (where train() runs here)
    settings = replace(
        train_settings(method, cfg), epochs=epochs, seed=seed, amp=resolve_amp(cfg.amp, torch.device("cpu"))
    )
    torch.manual_seed(seed)
    model = build_method(method, cfg)
    if debias is None:
        views = two_view_pipeline(view_settings(cfg, size))
    else:
        data, views = build_views(params, debias, data, size)
    t0 = time.perf_counter()
    result = train(model, data, views, settings, device="cpu", progress=False, on_epoch_end=on_epoch_end)
    return result.model.encoder, time.perf_counter() - t0, epochs * per_epoch


def stretch_patch(patch: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``patch`` (C, h, w) resized (bilinear) to (C, H, W) = ``size``: ``--donor-fill stretch``'s
    stand-in for :func:`oacl.augment.bgmix.tile_patch` — a background without the tiling's seams,
    its texture scale distorted instead."""
    hh, ww = (size, size) if isinstance(size, int) else size
    out = F.interpolate(patch[None].float(), size=(hh, ww), mode="bilinear", align_corners=False)[0]
    return out if patch.is_floating_point() else out.round().clamp(0, 255).to(patch.dtype)


def end_byol_target_at(tau_final: float) -> None:
    """``--byol-tau-final``: BYOL's target EMA rate ramps (cosine) from ``tau_base`` to ``tau_final``
    instead of to 1, in this process — :meth:`oacl.models.byol.BYOL.update_target` looks the
    schedule up at call time."""
    byol.cosine_momentum = partial(cosine_momentum, final=tau_final)


def table(rows: list[dict[str, Any]]) -> str:
    """The screening table in Markdown: every row, then each trained row against the mean of the
    random-init rows of the same benchmark (same ``data`` overrides) and architecture."""
    out = [
        "| config | model | seed | steps | train s | img/s | crops | ORIGINAL | MIXED-RAND | BG-Gap |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    controls: dict[str, list[dict[str, Any]]] = {}

    def bench(r: dict[str, Any]) -> str:  # the generated folder (its settings' hash); older rows: the overrides
        return json.dumps([r.get("benchmark") or r["set"].get("data", {}), r["arch"], r["stem"]], sort_keys=True)

    for r in rows:
        steps, sec, ips = r.get("steps"), r.get("seconds"), r.get("img_per_s")
        if r.get("of_steps"):
            steps = f"{steps} of {r['of_steps']}"
        out.append(
            f"| {r['tag']} | {r['what']} | {r['seed']} | {steps or '–'} | {f'{sec:.0f}' if sec else '–'} | "
            f"{f'{ips:.0f}' if ips else '–'} | {r['crops']:.1f} | {r['original']:.1f} | {r['mixed_rand']:.1f} | "
            f"{r['bg_gap']:.1f} |"
        )
        if r["what"] == "random":
            controls.setdefault(bench(r), []).append(r)
    out += [
        "",
        "| config | model | seed | steps | Δ crops | Δ ORIGINAL | Δ MIXED-RAND | random-init seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = controls.get(bench(r), [])
        if r["what"] == "random" or not base:
            continue

        def delta(key: str, r: dict[str, Any] = r, base: list[dict[str, Any]] = base) -> str:
            return f"{r[key] - sum(b[key] for b in base) / len(base):+.1f}"

        out.append(
            f"| {r['tag']} | {r['what']} | {r['seed']} | {r['steps']}{' of ' + str(r['of_steps']) if r.get('of_steps') else ''} | {delta('crops')} | {delta('original')} | "
            f"{delta('mixed_rand')} | {len(base)} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, metavar="JSONL", help="print the Markdown table of a rows file and exit")
    p.add_argument("--tag")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--variant", choices=SCREEN_VARIANTS, help="renderer variant (image_cues.py); default: as the params say"
    )
    p.add_argument("--what", default="random,supervised,moco,byol")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--debias",
        choices=sorted(k for k, v in DEBIAS.items() if v.cam is None),
        help="moco/byol: train with this retraining variant's views (a ground-truth oracle or a mixing baseline)",
    )
    p.add_argument(
        "--donor-fill",
        choices=("tile", "stretch"),
        default="tile",
        help="hardmix_gt: fill the view with the donor's largest background rectangle tiled (the paper) or "
        "stretched (no seams; a diagnostic)",
    )
    p.add_argument(
        "--byol-tau-final",
        type=float,
        metavar="TAU",
        help="byol: ramp the target's EMA rate from tau_base to TAU instead of BYOL's 1 (a screening lever, "
        "not a pipeline param)",
    )
    p.add_argument("--probe-every", type=int, default=0, metavar="EPOCHS", help="moco/byol: also probe every n epochs")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "learnability.jsonl")
    args = p.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]))
        return
    if not args.tag:
        p.error("--tag is required (unless --table)")
    if args.debias and not set(args.what.split(",")) <= {"moco", "byol"}:
        p.error("--debias trains moco / byol only: pass --what moco, byol or moco,byol")
    if args.donor_fill != "tile":
        if args.debias != "hardmix_gt":
            p.error("--donor-fill stretch changes hardmix_gt's donor backgrounds: pass --debias hardmix_gt")
        bgmix.tile_patch = stretch_patch  # background_tile looks it up at call time; loader workers fork after this
    if args.byol_tau_final is not None:
        if not 0.0 <= args.byol_tau_final <= 1.0:
            p.error(f"--byol-tau-final must be in [0, 1], got {args.byol_tau_final}")
        end_byol_target_at(args.byol_tau_final)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    overrides = dotted(args.sets)
    raw = overlay(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    root = benchmark_dir(raw, args.variant)
    raw = overlay(raw, {"data": {"root": str(root), "source": "embedded"}})
    params = parse_section(Params, raw)
    data, size = open_train_set(params)
    cfg = params.pretrain
    base = {
        "tag": args.tag,
        "set": overrides,
        "benchmark": root.name,
        "variant": args.variant,
        "arch": cfg.arch,
        "stem": cfg.stem,
        "n_train": len(data),
        **({"debias": args.debias} if args.debias else {}),
        **({"donor_fill": args.donor_fill} if args.donor_fill != "tile" else {}),
        **({"byol_tau_final": args.byol_tau_final} if args.byol_tau_final is not None else {}),
    }

    def emit(row: dict[str, Any]) -> None:
        encoder = row.pop("encoder")
        row = {**base, **row, **{k: round(v, 1) for k, v in probe(encoder, root, 0).items()}}
        with open(args.out, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        print(
            f"| {row['tag']} | {row['what']} | {row['seed']} | {row.get('steps', 0)} | {row.get('seconds', 0):.0f} | "
            f"{row.get('img_per_s', 0):.0f} | {row['crops']:.1f} | {row['original']:.1f} | {row['mixed_rand']:.1f} | "
            f"{row['bg_gap']:.1f} |",
            flush=True,
        )

    for what in args.what.split(","):
        if what == "random":
            for s in args.random_seeds:
                torch.manual_seed(s)
                emit({"what": "random", "seed": s, "encoder": build_backbone(cfg.arch, cfg.stem)})
            continue
        for s in args.seeds:
            trace: list[dict[str, float]] = []  # per epoch of a moco / byol run: loss, lr, the engine's stats
            if what == "supervised":
                enc, _, sec = train_supervised(params, data, size, args.steps, s)
                steps = args.steps
            else:

                def curve(
                    record: EpochRecord, result: TrainResult, what: str = what, s: int = s, trace: list = trace
                ) -> None:
                    stats = {k: round(v, 4) for k, v in record.stats.items()}
                    trace.append({"epoch": record.epoch, "loss": round(record.loss, 4), "lr": record.lr, **stats})
                    last = record.epoch * result.steps_per_epoch >= args.steps
                    if args.probe_every and record.epoch % args.probe_every == 0 and not last:
                        sec = sum(r.seconds for r in result.history)
                        steps = record.epoch * result.steps_per_epoch
                        emit(
                            {
                                "what": what,
                                "seed": s,
                                "steps": steps,
                                "seconds": sec,
                                "img_per_s": steps * cfg.batch_size / sec,
                                "of_steps": args.steps,  # an intermediate point of a longer schedule
                                "encoder": result.model.encoder,
                            }
                        )
                        result.model.train()

                enc, sec, steps = train_ssl(
                    params, what, data, size, args.steps, s, on_epoch_end=curve, debias=args.debias
                )
            emit(
                {
                    "what": what,
                    "seed": s,
                    "steps": steps,
                    "seconds": sec,
                    "img_per_s": steps * cfg.batch_size / sec,  # training images per second (not views)
                    **({"trace": trace} if trace else {}),
                    "encoder": enc,
                }
            )


if __name__ == "__main__":
    main()
