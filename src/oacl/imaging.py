"""Image tensors as every network of the project sees them: uint8 RGB in, normalised float out,
and the pooled features of a frozen encoder on such images.

Shared by training (views, kNN monitor), ContraCAM and evaluation, so it lives below all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from oacl.perf import autocast_context

__all__ = ["encode", "normalize"]


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(x − mean) / std per channel; x (B, 3, H, W) uint8 (scaled by 1/255 first) or float in [0, 1]."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def encode(
    encoder: nn.Module,
    images: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> Tensor:
    """Pooled features (B, C) float32 of uint8 images (B, 3, H, W), on the encoder's device, no grad.

    ``amp``: bf16 autocast (:func:`oacl.perf.autocast_context`); ``channels_last``: that memory
    format for the input. The encoder's train / eval mode is the caller's business.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    device = next(iter(encoder.parameters()), torch.empty(0)).device
    x = normalize(images.to(device), mean, std)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast_context(device, amp):
        out = encoder(x)
    if out.dim() != 2:
        raise ValueError(f"the encoder must return pooled (B, C) features, got shape {tuple(out.shape)}")
    return out.float()
