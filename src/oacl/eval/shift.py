"""Background and distribution shift (paper Tables 7, 8, 24) and the ``shift@<variant>`` stage.

A linear head fitted on single-object ORIGINAL features (by ``lineval@<variant>``) is scored
on every Background Challenge variant (Xiao et al. 2020) and on every distribution-shift
set. Metric keys are flat and say what they are (top-1 in percent):

- ``bg/<variant>/top1`` for original, only_fg, only_bg_b, only_bg_t, no_fg, mixed_same,
  mixed_rand, mixed_next; ``bg_gap`` = MIXED-SAME − MIXED-RAND (points);
- ``shift/<corruption>/<severity>/top1`` and ``shift/<corruption>/mean/top1`` (mean over
  the severities present); ``shift/<style>/top1`` for sketch, stylized, rendition;
- ``bias/...`` — the contextual-bias analysis of :mod:`oacl.eval.bias` on the object crops;
- with ``shift.trials`` = n > 1: n heads, each fitted (its ℓ2 weight re-chosen on ORIGINAL
  val over the same path) on a different seeded subsample — ``shift.subsample`` of the
  ORIGINAL training rows drawn without replacement with seed ``shift.seed + t`` — and every
  ``.../top1`` and ``bg_gap`` is the mean over the heads, with ``..._std`` (sample std,
  ddof 1) beside it. Only the head's training rows vary: the backbone, its features and
  the test sets are fixed, and L-BFGS is deterministic.

The stage's metrics JSON keeps the headline (``bg_gap``, ``bg/mixed_rand/top1``, and their
``_std`` with trials); everything else — the other variants, the shift sets, the bias numbers,
``trials``, the test-set sizes, ``seconds`` — goes to ``eval/shift-<variant>/details.json``
(:mod:`oacl.io.results`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from oacl.config import Params
from oacl.data.source import ImageSource, benchmark_record, bg_sources, crops_splits, original_splits, shift_sources
from oacl.errors import CheckpointError, DataError
from oacl.eval.bias import benchmark_pairs, contextual_bias, parse_pairs, tsne_figure
from oacl.eval.features import extract_features, frozen, load_variant
from oacl.eval.linear import LinearHead, linear_eval, load_heads, top1
from oacl.io.atomic import save_png
from oacl.io.results import write_results
from oacl.models.backbones import feature_dim
from oacl.perf import resolve_device

__all__ = [
    "ShiftPaths",
    "accuracies",
    "bg_metrics",
    "check_classes",
    "fit_trial_heads",
    "parse_shift_name",
    "run_shift",
    "shift_metrics",
    "summarize_trials",
    "trial_subsets",
]

log = logging.getLogger(__name__)

_SHIFT_NAME = re.compile(r"^(?P<family>.+)-(?P<severity>\d+)$")


def parse_shift_name(name: str) -> tuple[str, int | None]:
    """``"fog-3"`` → ("fog", 3); ``"sketch"`` → ("sketch", None)."""
    m = _SHIFT_NAME.match(name)
    return (m["family"], int(m["severity"])) if m else (name, None)


def accuracies(head: LinearHead, features: Mapping[str, tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Top-1 (%) of ``head`` on each named set of (features (N, C), labels (N,))."""
    out = {}
    for name, (x, y) in features.items():
        if y.numel() and int(y.max()) >= head.num_classes:
            raise ValueError(f"set {name!r} has label {int(y.max())}, the head has {head.num_classes} classes")
        out[name] = top1(head.predict(x), y.to(x.device))
    return out


def bg_metrics(acc: Mapping[str, float]) -> dict[str, float]:
    """``bg/<variant>/top1`` for each variant in ``acc`` and ``bg_gap`` = mixed_same − mixed_rand (when both exist)."""
    out = {f"bg/{v}/top1": float(a) for v, a in acc.items()}
    if "mixed_same" in acc and "mixed_rand" in acc:
        out["bg_gap"] = float(acc["mixed_same"]) - float(acc["mixed_rand"])
    return out


def shift_metrics(acc: Mapping[str, float]) -> dict[str, float]:
    """``shift/<family>/<severity>/top1``, ``shift/<family>/mean/top1`` and ``shift/<style>/top1`` from set names."""
    out: dict[str, float] = {}
    by_family: dict[str, list[float]] = {}
    for name, a in acc.items():
        family, severity = parse_shift_name(name)
        if severity is None:
            out[f"shift/{family}/top1"] = float(a)
        else:
            out[f"shift/{family}/{severity}/top1"] = float(a)
            by_family.setdefault(family, []).append(float(a))
    for family, values in by_family.items():
        out[f"shift/{family}/mean/top1"] = float(np.mean(values))
    return out


def summarize_trials(trials: Sequence[Mapping[str, float]], *, digits: int = 2) -> dict[str, float]:
    """One trial: its values (rounded). Several: the mean per key and ``<key>_std`` (ddof 1) beside it."""
    if not trials:
        raise ValueError("summarize_trials needs at least one trial")
    keys = list(trials[0])
    for t in trials[1:]:
        if list(t) != keys:
            raise ValueError(f"trials disagree on their keys: {sorted(set(t) ^ set(keys))[:3]}")
    out = {}
    for key in keys:
        values = np.array([t[key] for t in trials], dtype=np.float64)
        out[key] = round(float(values.mean()), digits)
        if len(trials) > 1:
            out[f"{key}_std"] = round(float(values.std(ddof=1)), digits)
    return out


def trial_subsets(n: int, trials: int, fraction: float, seed: int) -> list[np.ndarray]:
    """``trials`` sorted index arrays, each ``round(fraction × n)`` (≥ 1) rows of range(n) drawn without replacement (seed + t)."""
    if trials < 1 or not 0.0 < fraction <= 1.0:
        raise ValueError(f"need trials >= 1 and 0 < fraction <= 1, got {trials!r}, {fraction!r}")
    k = max(1, int(round(fraction * n)))
    return [np.sort(np.random.default_rng(seed + t).permutation(n)[:k]) for t in range(trials)]


def fit_trial_heads(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    *,
    num_classes: int,
    trials: int,
    fraction: float,
    seed: int,
    **lin: Any,
) -> list[LinearHead]:
    """One head per trial, fitted by :func:`linear_eval` on a :func:`trial_subsets` subsample of ``train``.

    ``lin`` goes to :func:`linear_eval` (``num_l2``, ``l2_range``, ``max_iter``); val is the whole val split.
    """
    x, y = train
    heads = []
    for t, idx in enumerate(trial_subsets(x.shape[0], trials, fraction, seed)):
        sel = torch.from_numpy(idx)
        res = linear_eval(x[sel], y[sel], val[0], val[1], val[0][:0], val[1][:0], num_classes=num_classes, **lin)
        log.info(
            "trial %d: head on %d of %d ORIGINAL rows, l2 %.3g, val top-1 %.2f %%",
            t,
            idx.size,
            x.shape[0],
            res["l2"],
            res["val_top1"],
        )
        heads.append(res["head"])
    return heads


def check_classes(sources: Mapping[str, Any], classes: Sequence[str], heads_path: str | Path) -> None:
    """Every source's class list must be the head's; DataError naming the first that differs."""
    for source in sources.values():
        if list(source.classes) != list(classes):
            raise DataError(
                f"{source.name} has {len(source.classes)} classes {list(source.classes)[:10]}, but the ORIGINAL head "
                f"in {heads_path} was fitted on {len(classes)} {list(classes)[:10]}"
            )


# ----------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class ShiftPaths:
    """Where ``shift@<variant>`` reads its head and writes."""

    heads: Path
    metrics: Path
    details: Path
    plots_dir: Path

    @classmethod
    def under(cls, root: str | Path, variant: str) -> ShiftPaths:
        root = Path(root)
        return cls(
            heads=root / "eval" / f"lineval-{variant}" / "heads.pt",
            metrics=root / "metrics" / f"shift-{variant}.json",
            details=root / "eval" / f"shift-{variant}" / "details.json",
            plots_dir=root / "plots" / f"shift-{variant}",
        )


def _bias_pairs(params: Params, classes: Sequence[str]) -> list[tuple[int, int]]:
    if params.shift.bias_pairs:
        return parse_pairs(params.shift.bias_pairs, classes)
    record = benchmark_record(params.data)
    if record is not None:
        return benchmark_pairs(record, classes)
    log.warning("contextual bias: real data and no 'shift.bias_pairs' given; no pairs to analyse")
    return []


def run_shift(
    params: Params, variant: str, paths: ShiftPaths, *, models_dir: str | Path = "artifacts/models"
) -> dict[str, Any]:
    """Stage ``shift@<variant>``: BG variants, shift sets, contextual bias; metrics JSON and t-SNE picture.

    The ORIGINAL head and the feature settings come from ``paths.heads`` (written by
    ``lineval@<variant>``); the backbone must be the one that head was fitted on (same
    weights digest), else :class:`CheckpointError`. Returns the whole record (the two files merged).
    """
    t0 = time.perf_counter()
    lcfg, cfg = params.lineval, params.shift
    head, heads_obj = load_heads(paths.heads, "original")
    classes = list(heads_obj["original"]["classes"])
    backbone = load_variant(variant, params, models_dir=models_dir)
    if heads_obj.get("backbone_digest") != backbone.digest:
        raise CheckpointError(
            f"the heads in {paths.heads} were fitted on other weights than {backbone.source} "
            f"(digest {str(heads_obj.get('backbone_digest'))[:12]} vs {backbone.digest[:12]}); rerun lineval@{variant}"
        )
    if head.feature_dim != feature_dim(backbone.arch):
        raise CheckpointError(
            f"the ORIGINAL head in {paths.heads} takes {head.feature_dim} features, {backbone.source} gives {feature_dim(backbone.arch)}"
        )
    amp = bool(heads_obj.get("feature", {}).get("amp", lcfg.amp))
    device = resolve_device(lcfg.device, "lineval.device")
    bg = bg_sources(params, backbone.image_size)
    shifts = shift_sources(params, backbone.image_size, classes)
    check_classes({**bg, **shifts}, classes, paths.heads)
    crops_test = crops_splits(params, backbone.image_size)[2]

    with frozen(backbone, device) as enc:

        def features(source: ImageSource) -> tuple[Tensor, Tensor]:
            return extract_features(
                enc, source, backbone.mean, backbone.std, batch_size=lcfg.batch_size, amp=amp, device=device
            )

        bg_feats = {name: features(s) for name, s in bg.items()}
        shift_feats = {name: features(s) for name, s in shifts.items()}
        if cfg.trials > 1:
            train, val, _ = original_splits(params, backbone.image_size)
            heads = fit_trial_heads(
                features(train),
                features(val),
                num_classes=len(classes),
                trials=cfg.trials,
                fraction=cfg.subsample,
                seed=cfg.seed,
                num_l2=lcfg.num_l2,
                l2_range=lcfg.l2_range,
                max_iter=lcfg.max_iter,
            )
        else:
            heads = [head]
        crop_x, crop_y = features(crops_test)

    per_trial = [{**bg_metrics(accuracies(h, bg_feats)), **shift_metrics(accuracies(h, shift_feats))} for h in heads]
    everything: dict[str, Any] = summarize_trials(per_trial)
    everything["trials"] = len(heads)
    everything["bg_test_images"] = min((len(y) for _, y in bg_feats.values()), default=0)
    everything["shift_test_images"] = min((len(y) for _, y in shift_feats.values()), default=0)
    pairs = _bias_pairs(params, crops_test.classes)
    everything.update(contextual_bias(crop_x, crop_y, pairs, crops_test.classes, seeds=cfg.bias_seeds, seed=cfg.seed))
    fig = tsne_figure(
        crop_x,
        crop_y,
        pairs,
        crops_test.classes,
        per_class=cfg.tsne_per_class,
        perplexity=cfg.tsne_perplexity,
        seed=cfg.seed,
        title=f"{variant}: t-SNE of object-crop embeddings (co-occurring pairs share a hue)",
    )
    save_png(fig, paths.plots_dir / "tsne.png")
    everything["seconds"] = round(time.perf_counter() - t0, 1)
    write_results(paths.metrics, everything, "shift", details=paths.details)
    log.info(
        "shift@%s: original %.2f, mixed_rand %.2f, bg_gap %.2f (%d trial(s)) in %.1f s",
        variant,
        everything.get("bg/original/top1", float("nan")),
        everything.get("bg/mixed_rand/top1", float("nan")),
        everything.get("bg_gap", float("nan")),
        len(heads),
        everything["seconds"],
    )
    return everything
