"""MoCo v2 (Chen et al. 2020): momentum key encoder, MLP projector, InfoNCE against a queue.

The negative queue, its write pointer and the dataset index of every queued key are
registered buffers, so they live in checkpoints and are broadcast by DDP. Keys (and their
indices) are gathered from every rank before they are enqueued, so all ranks hold the
same queue. Under DDP the key encoder sees the global batch shuffled across ranks
(shuffling BatchNorm); in a single process there is nothing to shuffle.

Self-key masking: a queued key of the query's own image (a stale positive from an
earlier epoch) is excluded from the softmax. Without it a queue as large as the dataset
puts every image's own key among its negatives.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oacl.dist import all_gather_cat, shuffle_across_ranks, unshuffle_across_ranks
from oacl.losses import mean_pairwise_cosine, moco_logits
from oacl.models.backbones import build_backbone, feature_dim
from oacl.models.ema import cosine_momentum, ema_update
from oacl.models.heads import mlp_head

__all__ = ["MoCo"]


class MoCo(nn.Module):
    """MoCo v2.

    Args:
        arch, stem: backbone (see :func:`oacl.models.backbones.build_backbone`).
        proj_hidden: hidden width of the projector (MoCo v2: the feature width C).
        proj_dim: embedding width D (128).
        queue_size: K negatives (65,536 in the paper; keep it <= half the training set).
        temperature: τ of InfoNCE (0.2).
        momentum: m of the key encoder EMA (0.999 in the paper).

    Modules: ``encoder_q`` (ResNet, fc = Identity), ``projector_q`` (C → D), their momentum
    copies ``encoder_k`` / ``projector_k``. Buffers: ``queue`` (K, D), ``queue_ptr`` (1,),
    ``queue_index`` (K,) dataset index of each queued key (−1: random initial key).
    """

    name = "moco"

    def __init__(
        self,
        arch: str = "resnet18",
        stem: str = "standard",
        *,
        proj_hidden: int | None = None,
        proj_dim: int = 128,
        queue_size: int = 65536,
        temperature: float = 0.2,
        momentum: float = 0.999,
        momentum_final: float | None = None,
    ) -> None:
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        for name, m in (("momentum", momentum), ("momentum_final", momentum_final)):
            if m is not None and not 0.0 <= m <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {m!r}")
        self.arch, self.stem = arch, stem
        self.momentum_final = None if momentum_final is None else float(momentum_final)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        c = feature_dim(arch)
        self.encoder_q = build_backbone(arch, stem)
        self.projector_q = mlp_head(c, proj_hidden or c, proj_dim)
        self.encoder_k = copy.deepcopy(self.encoder_q).requires_grad_(False)
        self.projector_k = copy.deepcopy(self.projector_q).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("queue_index", torch.full((queue_size,), -1, dtype=torch.long))

    # The names the rest of the pipeline uses (ContraCAM, export, linear eval).
    @property
    def encoder(self) -> nn.Module:
        return self.encoder_q

    @property
    def projector(self) -> nn.Module:
        return self.projector_q

    def online_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates (query encoder and projector)."""
        return [*self.encoder_q.parameters(), *self.projector_q.parameters()]

    def optimizer_groups(self) -> list[dict]:
        """:meth:`online_parameters` as one optimizer group at the scheduled lr (``lr_mult`` 1)."""
        return [{"params": self.online_parameters(), "lr_mult": 1.0}]

    def forward(self, x1: Tensor, x2: Tensor, index: Tensor) -> dict[str, Tensor]:
        """One MoCo step's loss.

        Args:
            x1: (B, 3, H, W) query views; x2: (B, 3, H, W) key views (normalized images).
            index: (B,) int64 dataset index of each image (for self-key masking).

        Returns ``{"loss": scalar with graph, "inst_acc": fraction of rows whose positive
        wins, "pair_cos": mean pairwise cosine of the queries}``; the last two detached.
        Side effect: the batch's keys (gathered over ranks) replace the oldest queue entries.
        """
        q = F.normalize(self.projector_q(self.encoder_q(x1)).float(), dim=1)  # (B, D)
        with torch.no_grad():
            x2s, inverse = shuffle_across_ranks(x2)
            k = F.normalize(self.projector_k(self.encoder_k(x2s)).float(), dim=1)  # (B, D)
            k = unshuffle_across_ranks(k, inverse)
        queue = self.queue.clone().detach()  # (K, D): enqueue below must not touch the graph
        self_mask = self.queue_index.unsqueeze(0) == index.unsqueeze(1)  # (B, K)
        logits = moco_logits(q, k, queue, self.temperature, self_mask=self_mask)  # (B, 1 + K)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, target)
        self._enqueue(k, index)
        with torch.no_grad():
            inst_acc = (logits.argmax(dim=1) == 0).float().mean()
            pair_cos = mean_pairwise_cosine(q)
        return {"loss": loss, "inst_acc": inst_acc, "pair_cos": pair_cos}

    @torch.no_grad()
    def _enqueue(self, keys: Tensor, index: Tensor) -> None:
        """Write the keys of every rank (world·B, D) over the oldest entries (wrapping around)."""
        keys = all_gather_cat(keys.contiguous())  # (world·B, D)
        index = all_gather_cat(index.to(self.queue_index.device).contiguous())  # (world·B,)
        k_size = self.queue.shape[0]
        n = keys.shape[0]
        if n > k_size:  # more keys than slots: keep the newest K
            keys, index, n = keys[-k_size:], index[-k_size:], k_size
        ptr = int(self.queue_ptr)
        slots = (ptr + torch.arange(n, device=keys.device)) % k_size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_index[slots] = index
        self.queue_ptr[0] = (ptr + n) % k_size

    @torch.no_grad()
    def update_target(self, progress: float) -> None:
        """Momentum update of the key encoder and projector after an optimizer step.

        m is ``momentum`` throughout, or with ``momentum_final`` a cosine ramp from ``momentum``
        (progress 0) to ``momentum_final`` (progress 1).
        """
        m = (
            self.momentum
            if self.momentum_final is None
            else cosine_momentum(self.momentum, progress, self.momentum_final)
        )
        ema_update(self.encoder_k, self.encoder_q, m)
        ema_update(self.projector_k, self.projector_q, m)
