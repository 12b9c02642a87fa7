"""Time one pretraining step (MoCo v2, BYOL): our variants side by side with lightly's.

Prints a table: images/s (median over repeats, after warm-up), speed-up over lightly's
out-of-the-box step (or over our fp32 step when lightly is absent), achieved GFLOP/s of
the step and its fraction of the machine's measured convolution peak (same dtype). Also
times the two halves of the view pipeline (per-item crops, per-batch photometric).

    PYTHONPATH=src python benchmarks/bench_pretrain.py                  # defaults of params
    PYTHONPATH=src python benchmarks/bench_pretrain.py --batch 64 --size 64 --methods moco
    PYTHONPATH=src python benchmarks/bench_pretrain.py --device cuda --arch resnet50 --size 224 --batch 256

The lightly columns need lightly, which is *not* a project requirement: install it in the
benchmark's environment only, without letting pip touch torch::

    pip install --no-deps lightly      # its loss / head / momentum modules need nothing else

Run it alone on the machine: another torch process on the same cores makes the numbers
meaningless (measured here: 3-17x slower steps).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from oacl import perf
from oacl.augment.views import AugmentSettings, BatchPhotometric, TwoCrops
from oacl.config import PretrainConfig
from oacl.models.backbones import build_backbone
from oacl.perf import autocast_context
from oacl.train.pretrain import build_method


@dataclass(frozen=True)
class Variant:
    name: str
    amp: bool
    channels_last: bool
    compile: bool = False


VARIANTS = {
    "fp32": Variant("fp32", False, False),
    "fp32-cl": Variant("fp32-cl", False, True),
    "bf16": Variant("bf16", True, False),
    "bf16-cl": Variant("bf16-cl", True, True),
    "bf16-cl-compile": Variant("bf16-cl-compile", True, True, True),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step: Callable[[], None], device: torch.device, steps: int, warmup: int, repeats: int) -> list[float]:
    """Seconds per step, one value per repeat (each the mean over ``steps`` steps)."""
    for _ in range(warmup):
        step()
    _sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        out.append((time.perf_counter() - t0) / steps)
    return out


def _step_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


# ------------------------------------------------------------------------------ ours


def our_step(method: str, cfg: PretrainConfig, v: Variant, x1: torch.Tensor, x2: torch.Tensor) -> Callable[[], None]:
    """One training step of our engine's inner loop (forward, backward, SGD, EMA)."""
    torch.manual_seed(0)
    # the stage's own builder; a 4096-key queue whatever params.yaml says (the benchmark's batch stream)
    model: nn.Module = build_method(method, replace(cfg, moco=replace(cfg.moco, queue_size=4096)))
    device = x1.device
    model = model.to(device)
    if v.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x1 = x1.contiguous(memory_format=torch.channels_last)
        x2 = x2.contiguous(memory_format=torch.channels_last)
    if v.compile:
        model.encoder.compile()
        model.projector.compile()
    opt = torch.optim.SGD(model.online_parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    index = torch.arange(x1.shape[0], device=device)

    def step() -> None:
        with autocast_context(device, v.amp):
            loss = model(x1, x2, index)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.update_target(0.5)

    return step


# ---------------------------------------------------------------------------- lightly


def lightly_step(method: str, cfg: PretrainConfig, x1: torch.Tensor, x2: torch.Tensor) -> Callable[[], None] | None:
    """The equivalent step written with lightly's building blocks, out of the box (fp32)."""
    try:
        from lightly.loss import NegativeCosineSimilarity, NTXentLoss
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead, MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad, update_momentum
    except ImportError:
        return None
    torch.manual_seed(0)
    device = x1.device
    backbone = build_backbone(cfg.arch, cfg.stem).to(device)
    c = 512 if cfg.arch == "resnet18" else 2048
    if method == "moco":
        head = MoCoProjectionHead(c, c, cfg.moco.proj_dim).to(device)
        backbone_m, head_m = copy.deepcopy(backbone), copy.deepcopy(head)
        deactivate_requires_grad(backbone_m)
        deactivate_requires_grad(head_m)
        criterion = NTXentLoss(temperature=cfg.moco.temperature, memory_bank_size=(4096, cfg.moco.proj_dim)).to(device)
        params = [*backbone.parameters(), *head.parameters()]

        def loss_fn() -> torch.Tensor:
            update_momentum(backbone, backbone_m, m=cfg.moco.momentum)
            update_momentum(head, head_m, m=cfg.moco.momentum)
            q = head(backbone(x1))
            with torch.no_grad():
                k = head_m(backbone_m(x2))
            return criterion(q, k)

    else:
        b = cfg.byol
        head = BYOLProjectionHead(c, b.proj_hidden, b.proj_dim).to(device)
        pred = BYOLPredictionHead(b.proj_dim, b.pred_hidden, b.proj_dim).to(device)
        backbone_m, head_m = copy.deepcopy(backbone), copy.deepcopy(head)
        deactivate_requires_grad(backbone_m)
        deactivate_requires_grad(head_m)
        criterion = NegativeCosineSimilarity()
        params = [*backbone.parameters(), *head.parameters(), *pred.parameters()]

        def loss_fn() -> torch.Tensor:
            update_momentum(backbone, backbone_m, m=0.99)
            update_momentum(head, head_m, m=0.99)
            p1, p2 = pred(head(backbone(x1))), pred(head(backbone(x2)))
            with torch.no_grad():
                z1, z2 = head_m(backbone_m(x1)), head_m(backbone_m(x2))
            return 0.5 * (criterion(p1, z2) + criterion(p2, z1))

    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


# ------------------------------------------------------------------------------ peaks


def conv_peak(device: torch.device, dtype: torch.dtype, channels_last: bool, repeats: int = 5) -> float:
    """GFLOP/s of a large 3x3 convolution (forward), the machine's practical conv peak."""
    torch.manual_seed(0)
    n, c, s = (64, 128, 32) if device.type == "cpu" else (256, 256, 56)
    x = torch.randn(n, c, s, s, device=device, dtype=dtype)
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device=device, dtype=dtype)
    if channels_last:
        x, conv = x.contiguous(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
    flops = 2 * n * c * c * 9 * s * s
    with torch.no_grad():
        times = _time_steps(lambda: conv(x), device, steps=3, warmup=2, repeats=repeats)
    return flops / min(times) / 1e9


def time_views(size: int, batch: int, device: torch.device, repeats: int) -> tuple[float, float]:
    """ms per batch: per-item crops (two views, one process) and per-batch photometric."""
    img = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    crops = TwoCrops(size)
    item = {"image": img}
    t = _time_steps(lambda: [crops(item) for _ in range(batch)], torch.device("cpu"), 1, 1, repeats)
    phot = BatchPhotometric(AugmentSettings(size=size))
    v = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    p = _time_steps(lambda: phot((v, v)), device, 3, 1, repeats)
    return statistics.median(t) * 1e3, statistics.median(p) * 1e3


def parser() -> argparse.ArgumentParser:
    defaults = PretrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["moco", "byol"], choices=["moco", "byol"])
    ap.add_argument("--arch", default=defaults.arch)
    ap.add_argument("--stem", default=defaults.stem)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=defaults.batch_size)
    ap.add_argument("--variants", default="fp32,bf16,bf16-cl", help=f"comma list of {sorted(VARIANTS)}")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=5, help="steps per repeat")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-malloc-tuning", action="store_true")
    ap.add_argument("--no-lightly", action="store_true")
    return ap


def main() -> None:
    args = parser().parse_args()

    device = torch.device(args.device)
    if not args.no_malloc_tuning:
        perf.tune_malloc()
    threads = perf.configure_threads(1) if device.type == "cpu" else torch.get_num_threads()
    cfg = PretrainConfig(arch=args.arch, stem=args.stem, batch_size=args.batch)
    variants = [VARIANTS[v] for v in args.variants.split(",")]
    print(
        f"# device {device}, threads {threads}, torch {torch.__version__}, {args.arch}/{args.stem}, "
        f"batch {args.batch}, {args.size} px, malloc tuning {'off' if args.no_malloc_tuning else 'on'}"
    )
    peak32 = conv_peak(device, torch.float32, False)
    peak16 = conv_peak(device, torch.bfloat16, True)
    print(f"# conv peak: fp32 {peak32:.0f} GFLOP/s, bf16 channels-last {peak16:.0f} GFLOP/s")
    crop_ms, phot_ms = time_views(args.size, args.batch, device, args.repeats)
    print(f"# views per batch: per-item crops {crop_ms:.1f} ms (one process), batch photometric {phot_ms:.1f} ms")
    print(f"{'method':6} {'step':18} {'img/s':>8} {'vs ref':>7} {'GFLOP/s':>8} {'of peak':>8}")
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
    x2 = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
    for method in args.methods:
        rows = []
        ref = lightly_step(method, cfg, x1, x2) if not args.no_lightly else None
        if ref is not None:
            rows.append(("lightly fp32", ref, False))
        for v in variants:
            rows.append((f"ours {v.name}", our_step(method, cfg, v, x1, x2), v.amp))
        flops = [_step_flops(step) for _, step, _ in rows]
        for _, step, _ in rows:
            _time_steps(step, device, 1, args.warmup, 1)
        # Round-robin over the rows, one repeat at a time: a load change on a shared machine
        # then hits every row alike instead of whichever ran during it.
        times: list[list[float]] = [[] for _ in rows]
        for _ in range(args.repeats):
            for i, (_, step, _) in enumerate(rows):
                times[i] += _time_steps(step, device, args.steps, 0, 1)
        peak32 = max(peak32, conv_peak(device, torch.float32, False))
        peak16 = max(peak16, conv_peak(device, torch.bfloat16, True))
        base = None
        for (name, _, low), f, t in zip(rows, flops, times):
            secs = statistics.median(t)
            ips = args.batch / secs
            base = base or ips
            gflops = f / secs / 1e9
            peak = peak16 if low else peak32
            print(f"{method:6} {name:18} {ips:8.1f} {ips / base:6.2f}x {gflops:8.1f} {gflops / peak:8.1%}")
        if ref is None and not args.no_lightly:
            print(f"# lightly not importable: 'vs ref' is relative to our first variant ({variants[0].name})")
    print(f"# conv peak (best of the run): fp32 {peak32:.0f} GFLOP/s, bf16 channels-last {peak16:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
