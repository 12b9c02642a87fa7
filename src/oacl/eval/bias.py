"""Contextual-bias analysis of co-occurring classes (paper appendix D.2, Eq. 5, Tables 13-14, Fig. 14).

For a pair of classes that co-occur in the multi-object scenes (giraffe and zebra in COCO;
a co-occurrence group of the embedded benchmark), with X and Y the L2-normalised embeddings
of their object crops:

- :func:`avg_min_distance` — Eq. 5 as printed:
  ``1/|X| Σ_{x∈X} min_{y∈Y} d(x, y) + 1/|Y| Σ_{y∈Y} min_{x∈X} d(x, y)``, d the ℓ2 distance
  (the sum of the two directed averages, each in [0, 2] for unit vectors; larger = the two
  classes are further apart, less entangled).
- :func:`one_shot_error` — the 1-shot binary classification error (%): one random labelled
  crop per class is the support, every other crop of the two classes is classified by its
  nearest support (ℓ2), averaged over ``seeds`` draws (paper: 5).
- :func:`tsne_figure` — a t-SNE map (scikit-learn) of the crops of every paired class, the
  two classes of a pair in a light and a dark shade of one hue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import Tensor

from oacl.errors import ConfigError, DataError

__all__ = [
    "avg_min_distance",
    "benchmark_pairs",
    "contextual_bias",
    "cooccurring_pairs",
    "one_shot_error",
    "pair_key",
    "parse_pairs",
    "tsne_figure",
]

log = logging.getLogger(__name__)


def _check_2d(x: Tensor, name: str) -> None:
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be (n >= 1, D) embeddings, got shape {tuple(x.shape)}")


def avg_min_distance(x: Tensor, y: Tensor) -> float:
    """Eq. 5: mean over x of min over y of ‖x − y‖ plus the same from y's side. x (n, D), y (m, D)."""
    _check_2d(x, "x")
    _check_2d(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must share D, got {tuple(x.shape)} and {tuple(y.shape)}")
    d = torch.cdist(x.double(), y.double())  # (n, m)
    return float(d.min(dim=1).values.mean() + d.min(dim=0).values.mean())


def one_shot_error(x: Tensor, y: Tensor, *, seeds: int = 5, seed: int = 0) -> float:
    """1-shot nearest-support binary classification error (%) between x (n, D) and y (m, D), n, m ≥ 2.

    Draw s (s = seed … seed + seeds − 1): one support per class chosen uniformly (a numpy
    Generator seeded by s); the queries are all other rows of both classes; a query is
    assigned the class of its nearer support (ℓ2; a tie counts as half an error). Returns
    the mean error over the draws.
    """
    _check_2d(x, "x")
    _check_2d(y, "y")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(
            f"each class needs >= 2 embeddings (one support, one query), got {x.shape[0]} and {y.shape[0]}"
        )
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds!r}")
    x, y = x.double(), y.double()
    errors = []
    for s in range(seed, seed + seeds):
        rng = np.random.default_rng(s)
        i, j = int(rng.integers(x.shape[0])), int(rng.integers(y.shape[0]))
        support = torch.stack([x[i], y[j]])  # (2, D)
        qx = torch.cat([x[:i], x[i + 1 :]])
        qy = torch.cat([y[:j], y[j + 1 :]])
        dx, dy = torch.cdist(qx, support), torch.cdist(qy, support)  # (n-1, 2), (m-1, 2)
        wrong = (dx[:, 1] < dx[:, 0]).double() + 0.5 * (dx[:, 1] == dx[:, 0]).double()
        wrong_y = (dy[:, 0] < dy[:, 1]).double() + 0.5 * (dy[:, 0] == dy[:, 1]).double()
        errors.append(100.0 * float(torch.cat([wrong, wrong_y]).mean()))
    return float(np.mean(errors))


def cooccurring_pairs(groups: Sequence[Sequence[str]], classes: Sequence[str]) -> list[tuple[int, int]]:
    """Every pair (i < j) of class indices within each co-occurrence group (groups of names)."""
    index = {c: i for i, c in enumerate(classes)}
    pairs = []
    for group in groups:
        missing = [g for g in group if g not in index]
        if missing:
            raise DataError(f"co-occurrence group {list(group)} names class(es) {missing} not among {list(classes)}")
        ids = sorted(index[g] for g in group)
        pairs += [(a, b) for k, a in enumerate(ids) for b in ids[k + 1 :]]
    return pairs


def parse_pairs(specs: Sequence[str], classes: Sequence[str]) -> list[tuple[int, int]]:
    """``["giraffe+zebra", ...]`` → index pairs; ConfigError naming an unknown class."""
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for spec in specs:
        names = [p for p in spec.split("+") if p]
        if len(names) != 2 or names[0] == names[1]:
            raise ConfigError(f"params: 'shift.bias_pairs' entry {spec!r} must name two different classes as 'a+b'")
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ConfigError(
                f"params: 'shift.bias_pairs' entry {spec!r}: no class {unknown[0]!r} among {list(classes)}"
            )
        out.append(tuple(sorted((index[names[0]], index[names[1]]))))
    return out  # type: ignore[return-value]


def benchmark_pairs(benchmark_json: str | Path, classes: Sequence[str]) -> list[tuple[int, int]]:
    """Co-occurring pairs from the ``groups`` of the embedded benchmark's ``benchmark.json``."""
    path = Path(benchmark_json)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"benchmark description {path} does not exist (written by the generate stage)") from None
    except (OSError, ValueError) as err:
        raise DataError(f"benchmark description {path} cannot be read: {err}") from None
    groups = meta.get("groups") if isinstance(meta, dict) else None
    if not isinstance(groups, list):
        raise DataError(f"benchmark description {path} has no 'groups' list")
    return cooccurring_pairs(groups, classes)


def pair_key(classes: Sequence[str], pair: tuple[int, int]) -> str:
    """``"<a>_vs_<b>"``: a readable metric-key part for a pair."""
    return f"{classes[pair[0]]}_vs_{classes[pair[1]]}"


def contextual_bias(
    features: Tensor,
    labels: Tensor,
    pairs: Sequence[tuple[int, int]],
    classes: Sequence[str],
    *,
    seeds: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Eq. 5 distance and 1-shot error for each pair, plus their means over the pairs.

    features (N, D) raw embeddings (L2-normalised here), labels (N,). Flat keys
    ``bias/<a>_vs_<b>/min_dist``, ``bias/<a>_vs_<b>/oneshot_error`` (%), ``bias/mean/...``.
    A pair with fewer than 2 crops in a class is skipped with a warning.
    """
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"features (N, D) and labels (N,) expected, got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    z = F.normalize(features.double(), dim=1)
    out: dict[str, float] = {}
    dists, errs = [], []
    for a, b in pairs:
        xa, xb = z[labels == a], z[labels == b]
        key = pair_key(classes, (a, b))
        if xa.shape[0] < 2 or xb.shape[0] < 2:
            log.warning("contextual bias: pair %s skipped (%d and %d crops)", key, xa.shape[0], xb.shape[0])
            continue
        d, e = avg_min_distance(xa, xb), one_shot_error(xa, xb, seeds=seeds, seed=seed)
        out[f"bias/{key}/min_dist"] = round(d, 4)
        out[f"bias/{key}/oneshot_error"] = round(e, 2)
        dists.append(d)
        errs.append(e)
    if dists:
        out["bias/mean/min_dist"] = round(float(np.mean(dists)), 4)
        out["bias/mean/oneshot_error"] = round(float(np.mean(errs)), 2)
    return out


def tsne_figure(
    features: Tensor,
    labels: Tensor,
    pairs: Sequence[tuple[int, int]],
    classes: Sequence[str],
    *,
    per_class: int = 150,
    perplexity: float = 30.0,
    seed: int = 0,
    title: str = "",
) -> Figure:
    """t-SNE (scikit-learn, PCA init) of at most ``per_class`` crops of each paired class, L2-normalised.

    The classes of pair p are drawn in tab20 colours 2p (dark) and 2p + 1 (light). With no
    pair (or too few points) the figure only says so.
    """
    from sklearn.manifold import TSNE

    fig = Figure(figsize=(6.0, 5.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(seed)
    lab = labels.cpu().numpy()
    rows, colours, names = [], [], []
    cmap = colormaps["tab20"]
    for p, pair in enumerate(pairs):
        for shade, c in enumerate(pair):
            idx = np.flatnonzero(lab == c)
            if idx.size > per_class:
                idx = np.sort(rng.choice(idx, per_class, replace=False))
            rows.append(idx)
            colours.append(cmap((2 * p + shade) % 20))
            names.append(str(classes[c]))
    sel = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    if sel.size < 5:
        ax.text(0.5, 0.5, "no co-occurring class pairs with crops", ha="center", va="center")
        ax.set_axis_off()
        return fig
    z = F.normalize(features[torch.as_tensor(sel)].double(), dim=1).numpy()
    emb = TSNE(
        n_components=2, perplexity=min(perplexity, (sel.size - 1) / 3.0), init="pca", random_state=seed
    ).fit_transform(z)
    start = 0
    for idx, colour, name in zip(rows, colours, names):
        pts = emb[start : start + idx.size]
        start += idx.size
        ax.scatter(pts[:, 0], pts[:, 1], s=6, color=colour, label=f"{name} ({idx.size})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc="best", ncol=2 if len(names) > 8 else 1)
    ax.set_title(title or "t-SNE of object-crop embeddings (co-occurring pairs share a hue)", fontsize=9)
    fig.tight_layout()
    return fig
