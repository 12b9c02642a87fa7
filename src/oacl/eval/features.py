"""Frozen-backbone features for the evaluation stages: the model variants' encoders, extraction.

- **Variants** (:func:`oacl.vocab.variant_names`): ``random`` — a randomly initialised control,
  ``build_backbone(pretrain.arch, pretrain.stem)`` under ``torch.manual_seed(lineval.seed)``;
  ``moco`` / ``byol`` — ``<models>/pretrain-<m>/backbone.pt``; ``<method>-<debias>`` —
  ``<models>/retrain-<method>-<debias>/backbone.pt``. :func:`load_variant` returns a
  :class:`FrozenBackbone`: the encoder (eval mode, CPU), its input normalisation, the state
  dict as read from disk (the sanity-check reference) and its digest.
- The labelled images come from :mod:`oacl.data.source` (which files, embedded or real).
- **Extraction** (:func:`extract_features`): eval mode, no grad, batches, the pooled layer4
  output (the encoder's ``fc`` is ``Identity``), optional bf16 autocast.
  :func:`frozen` checks afterwards, like MoCo's ``sanity_check``, that every tensor of the
  state dict is bit-identical to the reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from oacl.config import Params
from oacl.data.source import ImageSource
from oacl.errors import CheckpointError, DataError
from oacl.imaging import encode
from oacl.io.checkpoint import clean_state_dict, encoder_of, read_backbone
from oacl.models.backbones import build_backbone
from oacl.vocab import IMAGENET_MEAN, IMAGENET_STD, parse_variant, variant_backbone_path

__all__ = [
    "FrozenBackbone",
    "assert_unchanged",
    "extract_features",
    "frozen",
    "load_variant",
    "state_digest",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- backbones


def state_digest(state: Mapping[str, Tensor]) -> str:
    """sha256 over the sorted keys, dtypes, shapes and bytes of a state dict (CPU copies)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class FrozenBackbone:
    """A model variant ready for feature extraction (see :func:`load_variant`).

    encoder: (B, 3, H, W) normalized images → (B, C) pooled features, eval mode, CPU.
    mean / std: per-channel input normalisation (of [0, 1] images). image_size: the side the
    backbone was trained on (0 = unknown; only real data needs it). reference: the state
    dict as read from disk (or as built, for ``random``); digest: :func:`state_digest` of it.
    """

    variant: str
    encoder: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    arch: str
    stem: str
    source: str
    reference: dict[str, Tensor]
    digest: str

    def feature_settings(self, amp: bool) -> dict[str, Any]:
        """What a heads file records about how its features were made."""
        return {
            "image_size": int(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "amp": bool(amp),
            "arch": self.arch,
            "stem": self.stem,
            "source": self.source,
        }


def load_variant(
    variant: str, params: Params, *, seed: int | None = None, models_dir: str | Path = "artifacts/models"
) -> FrozenBackbone:
    """Load (or, for ``random``, build) the frozen encoder of ``variant``: the one backbone loader
    of the evaluation stages.

    ``random`` reads ``pretrain.arch``, ``pretrain.stem``, ``pretrain.image_size`` and is built
    under ``torch.manual_seed(seed)`` (default ``lineval.seed``; the global RNG state is left
    untouched) with ImageNet's mean / std like the pretraining views. Other variants read their exported backbone; a missing or
    foreign file (unreadable, or of another method than the variant's, another architecture
    or stem than ``pretrain.arch`` / ``pretrain.stem``) is a :class:`CheckpointError` naming it.
    """
    path = variant_backbone_path(variant, models_dir)
    if path is None:
        arch, stem = params.pretrain.arch, params.pretrain.stem
        seed = params.lineval.seed if seed is None else seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = build_backbone(arch, stem)
        encoder.eval()
        reference = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        return FrozenBackbone(
            variant,
            encoder,
            tuple(IMAGENET_MEAN),
            tuple(IMAGENET_STD),
            int(params.pretrain.image_size),
            arch,
            stem,
            f"random init {arch}/{stem} (seed {seed})",
            reference,
            state_digest(reference),
        )
    cfg = params.pretrain
    obj = read_backbone(path, method=parse_variant(variant)[0], arch=cfg.arch, stem=cfg.stem)
    encoder = encoder_of(obj, path)
    reference = clean_state_dict(obj["encoder"])
    mean, std = obj.get("mean", IMAGENET_MEAN), obj.get("std", IMAGENET_STD)
    if len(mean) != 3 or len(std) != 3:
        raise CheckpointError(
            f"backbone file {path} records a mean / std of {len(mean)} / {len(std)} channels, expected 3"
        )
    return FrozenBackbone(
        variant,
        encoder,
        tuple(float(m) for m in mean),
        tuple(float(s) for s in std),
        int(obj.get("image_size", 0)),
        str(obj["arch"]),
        str(obj["stem"]),
        str(path),
        reference,
        state_digest(reference),
    )


def assert_unchanged(module: nn.Module, reference: Mapping[str, Tensor], where: str = "backbone") -> None:
    """MoCo's ``sanity_check``: every tensor of ``module.state_dict()`` equals ``reference`` bit for bit.

    Raises RuntimeError naming the first key that differs (or is missing / extra).
    """
    state = clean_state_dict(module.state_dict())
    if set(state) != set(reference):
        extra = sorted(set(state) ^ set(reference))
        raise RuntimeError(f"sanity check failed for {where}: state dict keys differ from the reference ({extra[:3]})")
    for key in sorted(state):
        a, b = state[key].detach().cpu(), reference[key].detach().cpu()
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            raise RuntimeError(f"sanity check failed for {where}: {key!r} changed during feature extraction")


@contextlib.contextmanager
def frozen(backbone: FrozenBackbone, device: torch.device | str = "cpu") -> Iterator[nn.Module]:
    """Yield the encoder in eval mode without gradients on ``device``; check it is unchanged on exit.

    The check (:func:`assert_unchanged` against the weights read from disk) runs when the
    block ends without an exception.
    """
    enc = backbone.encoder
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    enc.to(device)
    yield enc
    assert_unchanged(enc, backbone.reference, backbone.source)
    log.info("sanity check passed: %s is bit-identical to %s", backbone.variant, backbone.source)


# ----------------------------------------------------------------------------- extraction


def extract_features(
    encoder: nn.Module,
    source: ImageSource,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int = 256,
    amp: bool = False,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Features (N, C) float32 and labels (N,) int64 (both CPU) of every image of ``source``.

    The encoder runs in eval mode (its mode is restored afterwards) under ``torch.no_grad``;
    ``device`` defaults to the encoder's. Batches of ``batch_size`` images.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if device is not None:
        encoder.to(device)
    was_training = encoder.training
    encoder.eval()
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    try:
        for images, y in source.batches(batch_size):
            feats.append(encode(encoder, images, mean, std, amp=amp).cpu())
            labels.append(y.long().cpu())
    finally:
        encoder.train(was_training)
    if not feats:
        raise DataError(f"{source.name} holds no images")
    return torch.cat(feats), torch.cat(labels)
