"""Self-supervised losses as pure functions of tensors.

Inputs are embeddings; nothing here owns state, queues or momentum encoders
(see :mod:`oacl.models.moco` and :mod:`oacl.models.byol` for those).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["moco_logits", "info_nce", "byol_loss", "mean_pairwise_cosine"]


def _check_pair(a: Tensor, b: Tensor, names: str) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{names} must both be (B, D) with the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def moco_logits(q: Tensor, k: Tensor, queue: Tensor, temperature: float, *, self_mask: Tensor | None = None) -> Tensor:
    """MoCo logits: the positive first, then one logit per queued negative.

    Args:
        q: (B, D) L2-normalised queries.
        k: (B, D) L2-normalised keys, the positives of ``q`` row by row (treated as constants
            by the caller: pass ``k.detach()`` or keys computed without a graph).
        queue: (K, D) L2-normalised negative keys (K may be 0).
        temperature: τ > 0.
        self_mask: optional (B, K) bool, True where a queue entry is a stale key of the
            query's own image; those logits are set to −inf (excluded from the softmax).

    Returns:
        (B, 1 + K) float logits / τ; the target class of every row is 0.
    """
    _check_pair(q, k, "q and k")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, {q.shape[1]}), got {tuple(queue.shape)}")
    pos = torch.einsum("bd,bd->b", q, k).unsqueeze(1)  # (B, 1)
    neg = torch.einsum("bd,kd->bk", q, queue)  # (B, K)
    if self_mask is not None:
        if self_mask.shape != neg.shape:
            raise ValueError(f"self_mask must be {tuple(neg.shape)}, got {tuple(self_mask.shape)}")
        neg = neg.masked_fill(self_mask, float("-inf"))
    return torch.cat([pos, neg], dim=1) / temperature  # (B, 1 + K)


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float, *, self_mask: Tensor | None = None) -> Tensor:
    """InfoNCE of MoCo: mean over the batch of −log softmax(logits)[0] (see :func:`moco_logits`).

    Returns a scalar tensor. With q·k = 1 and q ⟂ every queued key it equals
    log(1 + K·exp(−1/τ)).
    """
    logits = moco_logits(q, k, queue, temperature, self_mask=self_mask)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's normalised mean squared error, mean over the batch: 2 − 2·cos(p, z).

    Args:
        p: (B, D) online predictions (not necessarily normalised).
        z: (B, D) target projections (the caller passes them without a graph).

    Returns a scalar in [0, 4]: 0 for parallel, 2 for orthogonal, 4 for opposite vectors.
    """
    _check_pair(p, z, "p and z")
    cos = torch.einsum("bd,bd->b", F.normalize(p, dim=1), F.normalize(z, dim=1))  # (B,)
    return (2.0 - 2.0 * cos).mean()


def mean_pairwise_cosine(z: Tensor) -> Tensor:
    """Mean cosine similarity over the B·(B−1) ordered pairs of distinct rows of z (B, D).

    A collapse monitor: near 1 when every embedding points the same way.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"z must be (B, D) with B >= 2, got {tuple(z.shape)}")
    zn = F.normalize(z.float(), dim=1)
    b = zn.shape[0]
    total = zn.sum(0)
    return (total.dot(total) - b) / (b * (b - 1))
