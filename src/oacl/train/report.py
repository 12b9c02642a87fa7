"""Offline renderings of a training run (DVC's line charts need a CDN; PNGs do not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oacl.io.atomic import save_png
from oacl.train.engine import TrainResult

__all__ = ["write_loss_plot"]


def write_loss_plot(path: str | Path, result: TrainResult, *, title: str = "") -> None:
    """PNG of the loss per step (light), its epoch means (dots) and the lr per step; monitor values if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.asarray(result.step_losses, dtype=float)
    spe = max(1, result.steps_per_epoch)
    epochs = [r.epoch for r in result.history]
    monitor_keys = sorted({k for r in result.history for k in r.monitor})
    ncols = 2 if monitor_keys else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 3.6), squeeze=False)
    ax = axes[0, 0]
    if steps.size:
        x = np.arange(1, steps.size + 1) / spe
        ax.plot(x, steps, color="tab:blue", alpha=0.3, lw=0.8, label="step")
    ax.plot(epochs, [r.loss for r in result.history], "o-", color="tab:blue", ms=3, label="epoch mean")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right", fontsize=8)
    if result.step_lrs:
        lr_ax = ax.twinx()
        lr_ax.plot(np.arange(1, len(result.step_lrs) + 1) / spe, result.step_lrs, color="tab:orange", lw=1)
        lr_ax.set_ylabel("lr", color="tab:orange")
    if monitor_keys:
        mx = axes[0, 1]
        for k in monitor_keys:
            pts = [(r.epoch, r.monitor[k]) for r in result.history if k in r.monitor]
            mx.plot(*zip(*pts), "o-", ms=3, label=k)
        mx.set_xlabel("epoch")
        mx.set_ylabel("top-1 (%)")
        mx.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path, dpi=100)
    plt.close(fig)
