"""Image tensors as every network of the project sees them: uint8 RGB in, normalised float out.

Shared by training (views, kNN monitor), ContraCAM and evaluation, so it lives below all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["normalize"]


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(x − mean) / std per channel; x (B, 3, H, W) uint8 (scaled by 1/255 first) or float in [0, 1]."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
