"""BYOL (Grill et al. 2020): online encoder + projector + predictor, EMA target, no negatives.

Loss: the symmetric normalised MSE ``byol_loss(p1, z2') + byol_loss(p2, z1')`` where p are
online predictions and z' target projections of the other view. The target's EMA rate
follows BYOL's cosine schedule from ``tau_base`` to 1 over training.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from oacl.losses import byol_loss, mean_pairwise_cosine
from oacl.models.backbones import build_backbone, feature_dim
from oacl.models.ema import cosine_momentum, ema_update
from oacl.models.heads import mlp_head

__all__ = ["BYOL"]


class BYOL(nn.Module):
    """BYOL.

    Args:
        arch, stem: backbone (see :func:`oacl.models.backbones.build_backbone`).
        proj_hidden, proj_dim: projector C → proj_hidden → proj_dim (BYOL: 4096, 256).
        pred_hidden: predictor proj_dim → pred_hidden → proj_dim (BYOL: 4096).
        tau_base: initial EMA rate of the target (BYOL: 0.996), raised to 1 by a cosine.
        pred_lr_mult: the predictor's learning rate as a multiple of the rest's (BYOL: 1; SimSiam and
            Tian et al. 2021 found a faster predictor helps non-contrastive learning).

    Modules: ``encoder_online``, ``projector_online``, ``predictor``; targets
    ``encoder_target``, ``projector_target`` (no gradients).
    """

    name = "byol"

    def __init__(
        self,
        arch: str = "resnet18",
        stem: str = "standard",
        *,
        proj_hidden: int = 4096,
        proj_dim: int = 256,
        pred_hidden: int = 4096,
        tau_base: float = 0.996,
        pred_lr_mult: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= tau_base <= 1.0:
            raise ValueError(f"tau_base must be in [0, 1], got {tau_base!r}")
        if not pred_lr_mult > 0.0:
            raise ValueError(f"pred_lr_mult must be > 0, got {pred_lr_mult!r}")
        self.arch, self.stem = arch, stem
        self.tau_base = float(tau_base)
        self.pred_lr_mult = float(pred_lr_mult)
        self.encoder_online = build_backbone(arch, stem)
        self.projector_online = mlp_head(feature_dim(arch), proj_hidden, proj_dim)
        self.predictor = mlp_head(proj_dim, pred_hidden, proj_dim)
        self.encoder_target = copy.deepcopy(self.encoder_online).requires_grad_(False)
        self.projector_target = copy.deepcopy(self.projector_online).requires_grad_(False)

    @property
    def encoder(self) -> nn.Module:
        return self.encoder_online

    @property
    def projector(self) -> nn.Module:
        return self.projector_online

    def online_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates (online encoder, projector and predictor)."""
        return [*self.encoder_online.parameters(), *self.projector_online.parameters(), *self.predictor.parameters()]

    def optimizer_groups(self) -> list[dict]:
        """:meth:`online_parameters` as optimizer groups, each with its ``lr_mult``: the predictor's is ``pred_lr_mult``."""
        rest = [*self.encoder_online.parameters(), *self.projector_online.parameters()]
        return [
            {"params": rest, "lr_mult": 1.0},
            {"params": list(self.predictor.parameters()), "lr_mult": self.pred_lr_mult},
        ]

    def forward(self, x1: Tensor, x2: Tensor, index: Tensor | None = None) -> dict[str, Tensor]:
        """One BYOL step's loss; x1, x2: (B, 3, H, W) two views of the same images.

        ``index`` is accepted for a uniform interface and unused. Returns ``{"loss": scalar
        with graph, "pair_cos": mean pairwise cosine of the online projections (detached)}``.
        """
        z1 = self.projector_online(self.encoder_online(x1))  # (B, D)
        z2 = self.projector_online(self.encoder_online(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            t1 = self.projector_target(self.encoder_target(x1)).float()  # (B, D)
            t2 = self.projector_target(self.encoder_target(x2)).float()
        loss = byol_loss(p1.float(), t2) + byol_loss(p2.float(), t1)
        with torch.no_grad():
            pair_cos = mean_pairwise_cosine(z1)
        return {"loss": loss, "pair_cos": pair_cos}

    @torch.no_grad()
    def update_target(self, progress: float) -> None:
        """EMA of the online weights into the target with τ(progress), after an optimizer step."""
        tau = cosine_momentum(self.tau_base, min(max(progress, 0.0), 1.0))
        ema_update(self.encoder_target, self.encoder_online, tau)
        ema_update(self.projector_target, self.projector_online, tau)
