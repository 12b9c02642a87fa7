"""Null baselines of ContraCAM's maps (DESIGN.md, "Metrics the checks read").

A localization map means something only next to maps that cannot know the object. Each null
map here is a soft map in [0, 1] on the image's grid, so that ``contracam@<set>`` gives it
exactly the post-processing ContraCAM's map gets (dense CRF, cleaning) and the same metrics:

* ``gaussian`` — a centred Gaussian whose σ (a fraction of the side) is chosen on the evaluated
  data itself: image-blind, and optimistic;
* ``ones`` — the all-ones map ("everything is the object"): image-blind;
* ``channel_sum`` — Σ_k A_k, the channel sum of the same backbone's layer4 activations (same
  expansion, same upsampling): it sees the image but not the contrastive score;
* ``random_weights`` — ContraCAM with the same settings on randomly initialised weights of the
  same architecture and projection head: the weight-randomisation check of saliency methods
  (Adebayo et al., NeurIPS 2018). A map that survives it reflects the image, not the model.

The image-blind maps are one map for every image; the CRF still sees each image.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from oacl.cam.contracam import channel_sum_cam, prepare_cam_model
from oacl.errors import DataError
from oacl.imaging import normalize
from oacl.localization import centered_gaussian
from oacl.models.backbones import build_backbone

__all__ = ["NULL_BASELINES", "channel_sum_maps", "gaussian_map", "random_init_like"]

NULL_BASELINES = ("gaussian", "ones", "channel_sum", "random_weights")


def gaussian_map(height: int, width: int, sigma: float) -> np.ndarray:
    """The centred Gaussian null map as stored masks are: (H, W) uint8, map x 255 rounded."""
    return np.round(centered_gaussian(height, width, sigma) * 255.0).astype(np.uint8)


def random_init_like(
    encoder: nn.Module, projector: nn.Module, *, arch: str, stem: str, seed: int
) -> tuple[nn.Module, nn.Module]:
    """A randomly initialised encoder (``build_backbone(arch, stem)``) and projector of ``projector``'s shape.

    Built under ``torch.manual_seed(seed)`` without touching the global RNG state; the
    projector is a copy whose every module is re-initialised (``reset_parameters``, BatchNorm
    statistics included). Both in eval mode, on ``encoder``'s device; the inputs are untouched.
    """
    device = next(encoder.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = build_backbone(arch, stem)
        proj = copy.deepcopy(projector)
        for m in proj.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    return enc.eval().to(device), proj.eval().to(device)


def channel_sum_maps(
    encoder: nn.Module,
    projector: nn.Module,
    dataset: Any,
    *,
    expand_res: int,
    amp: bool,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """The images of ``dataset`` and their channel-sum maps, in dataset order.

    ``dataset[i]`` is the project's item dict (``image``: uint8 (3, H, W), one size for all).
    Returns ``(rgb (N, H, W, 3) uint8, maps (N, H, W) uint8 map x 255)``.
    """
    n = len(dataset)
    if n == 0:
        raise DataError("channel_sum_maps: the data set is empty")
    if next(encoder.parameters()).device != device:
        encoder, projector = copy.deepcopy(encoder).to(device), copy.deepcopy(projector).to(device)
    model = prepare_cam_model(encoder, projector, expand_res=expand_res, amp=amp)
    rgb: np.ndarray | None = None
    maps: np.ndarray | None = None
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        batch = torch.stack([torch.as_tensor(dataset[i]["image"]) for i in idx])  # (b, 3, H, W) uint8
        if rgb is None or maps is None:
            rgb = np.zeros((n, *batch.shape[2:], 3), np.uint8)
            maps = np.zeros((n, *batch.shape[2:]), np.uint8)
        elif tuple(batch.shape[2:]) != rgb.shape[1:3]:
            raise DataError(f"all images must share one size: {tuple(batch.shape[2:])} vs {rgb.shape[1:3]}")
        cam = channel_sum_cam(model, normalize(batch.to(device), mean, std))
        rgb[idx.start : idx.stop] = batch.permute(0, 2, 3, 1).numpy()
        maps[idx.start : idx.stop] = (cam[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    assert rgb is not None and maps is not None
    return rgb, maps
