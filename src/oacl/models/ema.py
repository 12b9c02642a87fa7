"""Exponential moving averages of weights (MoCo's key encoder, BYOL's target network)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ema_update", "cosine_momentum"]


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target ← momentum · target + (1 − momentum) · online, parameter by parameter (buffers untouched).

    Both modules must have the same parameter names and shapes (``target`` is a deep copy
    of ``online``).
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError(f"target has {len(t_params)} parameters, online has {len(o_params)}")
    torch._foreach_lerp_(t_params, [p.detach() for p in o_params], 1.0 - momentum)


def cosine_momentum(base: float, progress: float, final: float = 1.0) -> float:
    """BYOL's schedule: τ = final − (final − base) · (cos(π · progress) + 1) / 2, progress ∈ [0, 1].

    ``final`` 1 is BYOL's (τ_base → 1); a short MoCo run ramps its key momentum e.g. 0.9 → 0.99.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress!r}")
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
