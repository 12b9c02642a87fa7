"""The learning-rate schedule every optimiser of the project follows: linear warm-up, then cosine to 0.

Pretraining, retraining and the detection fine-tune share it, so it lives below ``train/`` and
``eval/``.
"""

from __future__ import annotations

import math

__all__ = ["effective_lr", "lr_at"]


def effective_lr(base_lr: float, global_batch: int) -> float:
    """The linear scaling rule: base_lr × global_batch / 256."""
    return base_lr * global_batch / 256.0


def lr_at(step: int, total_steps: int, peak: float, warmup_steps: int = 0, warmup_start: float | None = None) -> float:
    """Learning rate at 0-based ``step`` of ``total_steps``: linear warm-up to ``peak``, then cosine decay to 0.

    Warm-up (``step < warmup_steps``): with ``warmup_start`` None, ``peak × (step + 1) / warmup_steps``
    (the SSL recipe: peak on the last warm-up step); with a fraction f, ``peak × (f + (1 − f) ×
    step / warmup_steps)`` (Detectron's linear warm-up factor: f × peak at step 0). Then
    ``peak × (1 + cos(π × progress)) / 2`` over the remaining steps; ``step == total_steps`` gives 0.
    """
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise ValueError(f"step {step!r} outside [0, {total_steps!r}]")
    if warmup_start is not None and not 0.0 <= warmup_start <= 1.0:
        raise ValueError(f"warmup_start must be in [0, 1], got {warmup_start!r}")
    if step < warmup_steps:
        if warmup_start is None:
            return peak * (step + 1) / warmup_steps
        return peak * (warmup_start + (1.0 - warmup_start) * step / warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
