"""A cheap representation monitor: weighted k-nearest-neighbour top-1 on frozen features.

Features are the encoder's pooled output, L2-normalised; a query's class is the one with
the largest sum of exp(cos / T) over its k nearest bank features (Wu et al. 2018, as in
the MoCo / InstDisc monitors). No training, a few forward passes: cheap enough to run every
few epochs during pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oacl.imaging import encode

__all__ = ["extract_features", "knn_predict", "knn_top1", "KnnProbe", "KnnMonitor", "stack_images"]


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    images: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int = 256,
    amp: bool = False,
    channels_last: bool = False,
) -> Tensor:
    """L2-normalised features (N, C) float32 of uint8 images (N, 3, H, W), encoder in eval mode.

    The encoder's train/eval mode is restored afterwards; images go to the encoder's device.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        for start in range(0, images.shape[0], batch_size):
            f = encode(encoder, images[start : start + batch_size], mean, std, amp=amp, channels_last=channels_last)
            out.append(F.normalize(f, dim=1))
    finally:
        encoder.train(was_training)
    return torch.cat(out).cpu()


def knn_predict(
    query: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, *, k: int = 20, temperature: float = 0.07
) -> Tensor:
    """Predicted class (Q,) of each query (Q, C) from a labelled bank (N, C), features L2-normalised.

    Votes: Σ over the k most similar bank rows of exp(cos / temperature), per class.
    """
    if query.dim() != 2 or bank.dim() != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(f"query (Q, C) and bank (N, C) must share C, got {tuple(query.shape)} and {tuple(bank.shape)}")
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"bank_labels must be ({bank.shape[0]},), got {tuple(bank_labels.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    k = min(k, bank.shape[0])
    sim = query @ bank.T  # (Q, N)
    top_sim, top_idx = sim.topk(k, dim=1)  # (Q, k)
    weights = (top_sim / temperature).exp()
    votes = torch.zeros(query.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    votes.scatter_add_(1, bank_labels[top_idx], weights)  # (Q, K classes)
    return votes.argmax(dim=1)


def knn_top1(query: Tensor, query_labels: Tensor, bank: Tensor, bank_labels: Tensor, *, k: int = 20) -> float:
    """Top-1 accuracy (%) of :func:`knn_predict` on labelled queries."""
    num_classes = int(max(int(bank_labels.max()), int(query_labels.max()))) + 1
    pred = knn_predict(query, bank, bank_labels, num_classes, k=k)
    return float((pred == query_labels).float().mean()) * 100.0


def stack_images(dataset: object, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """uint8 images (n, 3, H, W) and labels (n,) of ``dataset[indices]`` (item dicts)."""
    items = [dataset[int(i)] for i in indices]  # type: ignore[index]
    images = torch.stack([it["image"].as_subclass(Tensor) for it in items])
    labels = torch.as_tensor([int(it["label"]) for it in items], dtype=torch.long)
    return images, labels


@dataclass(frozen=True)
class KnnProbe:
    """One labelled bank and query set, held in memory as uint8 tensors."""

    name: str
    bank_images: Tensor  # (N, 3, H, W) uint8
    bank_labels: Tensor  # (N,)
    query_images: Tensor  # (Q, 3, H, W) uint8
    query_labels: Tensor  # (Q,)

    @classmethod
    def from_datasets(
        cls, name: str, bank: object, query: object, *, max_bank: int = 1000, max_query: int = 500, seed: int = 0
    ) -> KnnProbe:
        """Seeded random subsets (at most ``max_bank`` / ``max_query`` items) of two datasets."""
        rng = np.random.default_rng(seed)
        nb, nq = len(bank), len(query)  # type: ignore[arg-type]
        bi = np.sort(rng.permutation(nb)[: min(nb, max_bank)])
        qi = np.sort(rng.permutation(nq)[: min(nq, max_query)])
        return cls(name, *stack_images(bank, bi), *stack_images(query, qi))


class KnnMonitor:
    """``monitor(model, epoch) -> {"knn/<probe>": top-1 %}`` every ``every`` epochs and at ``last_epoch``."""

    def __init__(
        self,
        probes: Sequence[KnnProbe],
        *,
        mean: Sequence[float],
        std: Sequence[float],
        every: int,
        last_epoch: int,
        k: int = 20,
        amp: bool = False,
        channels_last: bool = False,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every!r}")
        self.probes, self.mean, self.std = list(probes), tuple(mean), tuple(std)
        self.every, self.last_epoch, self.k = every, last_epoch, k
        self.amp, self.channels_last = amp, channels_last

    def __call__(self, model: nn.Module, epoch: int) -> dict[str, float]:
        if epoch % self.every and epoch != self.last_epoch:
            return {}
        out = {}
        for p in self.probes:
            kw = dict(amp=self.amp, channels_last=self.channels_last)
            bank = extract_features(model.encoder, p.bank_images, self.mean, self.std, **kw)
            query = extract_features(model.encoder, p.query_images, self.mean, self.std, **kw)
            out[f"knn/{p.name}"] = knn_top1(query, p.query_labels, bank, p.bank_labels, k=self.k)
        return out
