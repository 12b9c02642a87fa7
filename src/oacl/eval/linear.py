"""Linear evaluation: ℓ2-regularised multinomial logistic regression on frozen features.

The protocol of Kornblith et al. (2019) that SimCLR / MoCo transfer results and the paper
(appendix B.2) follow: features of the frozen backbone are standardized with the training
split's per-dimension mean and standard deviation, and for each ℓ2 weight λ of a grid of 45
log-spaced values in [1e-6, 1e5] the objective

    L(W, b) = 1/n Σ_i CE(W x_i + b, y_i) + λ/2 ‖W‖²_F          (the bias is not penalised)

is minimised with full-batch L-BFGS (strong Wolfe line search). The path runs from the
strongest to the weakest regularisation and each fit starts from the previous solution (a
warm start: weakly regularised fits, the slow ones, begin close to their optimum). The λ
with the best validation top-1 among the *converged* fits wins (ties go to the stronger
regularisation); its head is scored on the test split. In scikit-learn's terms the
objective is ``LogisticRegression(C=1 / (n λ))`` with an unpenalised intercept.

Convergence. Under a strong λ the problem is badly conditioned — curvature λ along W, at
most 1/4 along the unpenalised bias — and plain L-BFGS from zero stops after a couple of
iterations with W near zero but the bias not yet moved. Such a head is not the optimum but,
argmax being scale-invariant, it scores like a nearest-centroid classifier and can win the
validation choice (measured on 6-class Gaussian toys: 86-89 % val at λ = 1e5 after 2
iterations, where the optimum predicts the majority class, 12-16 %). Hence (1) the fit runs
in the variable V = √max(λ, 1) · W, whose curvature is about 1 in every direction, with the
bias started at the log class priors (the optimum as λ → ∞), and (2) every point of the path
records the largest entry of the true gradient (in W and b); a point whose gradient exceeds
``conv_tol`` is not eligible for the validation choice.

Percentages are percent. Every function follows the device of its input tensors.

The second half of the module is the ``lineval@<variant>`` stage (:func:`run_lineval`):
linear probes on the object-crop set and on single-object ORIGINAL, a metrics JSON and a
heads file (:func:`save_heads` / :func:`load_heads`) that the ``shift`` stage reads.

Size: the probe (L-BFGS, standardisation, the ℓ2 path, heads files) and the ``lineval`` stage that is its only caller.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from oacl.config import Params
from oacl.data.source import ImageSource, crops_splits, original_splits
from oacl.errors import CheckpointError, DataError
from oacl.eval.features import FrozenBackbone, extract_features, frozen, load_variant
from oacl.io.atomic import atomic_path
from oacl.io.checkpoint import read_torch_file
from oacl.io.results import merge, write_results
from oacl.perf import resolve_device

__all__ = [
    "HEADS_FORMAT",
    "LinearHead",
    "LinevalPaths",
    "as_features",
    "fit_logistic",
    "fit_standardizer",
    "gradient_max",
    "l2_grid",
    "linear_eval",
    "load_heads",
    "per_class_top1",
    "run_lineval",
    "save_heads",
    "top1",
]

log = logging.getLogger(__name__)

HEADS_FORMAT = "oacl.linheads/1"
CONV_TOL = 1e-3  # largest gradient entry of a converged fit (the loss is a mean cross-entropy, O(1))


# ----------------------------------------------------------------------------- the head


@dataclass(frozen=True)
class LinearHead:
    """A fitted linear classifier on raw (unstandardized) features.

    weight (K, C), bias (K,), mean (C,) and std (C,) — the training split's standardization;
    ``l2`` the weight it was fitted with. ``logits(x) = ((x − mean) / std) Wᵀ + b``.
    """

    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor
    l2: float

    def __post_init__(self) -> None:
        k, c = self.weight.shape
        if self.bias.shape != (k,) or self.mean.shape != (c,) or self.std.shape != (c,):
            raise ValueError(
                f"head shapes disagree: weight {tuple(self.weight.shape)}, bias {tuple(self.bias.shape)}, "
                f"mean {tuple(self.mean.shape)}, std {tuple(self.std.shape)}"
            )

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, x: Tensor) -> Tensor:
        """(N, C) raw features → (N, K) logits (on ``x``'s device)."""
        if x.dim() != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(f"features must be (N, {self.feature_dim}), got {tuple(x.shape)}")
        dev, dt = x.device, self.weight.dtype
        z = (x.to(dt) - self.mean.to(dev)) / self.std.to(dev)
        return torch.addmm(self.bias.to(dev), z, self.weight.to(dev).T)

    def predict(self, x: Tensor) -> Tensor:
        """(N, C) raw features → (N,) predicted class indices."""
        return self.logits(x).argmax(dim=1)

    def to_state(self) -> dict[str, Any]:
        """A dict of CPU tensors and floats (``torch.save`` / ``weights_only`` safe)."""
        return {
            "weight": self.weight.detach().cpu().clone(),
            "bias": self.bias.detach().cpu().clone(),
            "mean": self.mean.detach().cpu().clone(),
            "std": self.std.detach().cpu().clone(),
            "l2": float(self.l2),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], where: str = "head") -> LinearHead:
        """Inverse of :meth:`to_state`; :class:`CheckpointError` naming ``where`` when malformed."""
        try:
            return cls(
                weight=state["weight"], bias=state["bias"], mean=state["mean"], std=state["std"], l2=float(state["l2"])
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{where} is not a linear head: {err}") from None


# ----------------------------------------------------------------------------- pieces


def as_features(x: Tensor | np.ndarray, name: str) -> Tensor:
    """A (N, C) float tensor (float64 stays float64, anything else becomes float32)."""
    t = torch.as_tensor(x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be (N, C) features, got shape {tuple(t.shape)}")
    if not t.is_floating_point() or t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds non-finite values")
    return t


def _as_labels(y: Tensor | np.ndarray, n: int, name: str, device: torch.device) -> Tensor:
    t = torch.as_tensor(y).to(device)
    if t.shape != (n,):
        raise ValueError(f"{name} must be ({n},) class indices, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices, got {t.dtype}")
    return t.long()


def l2_grid(num: int = 45, low: float = 1e-6, high: float = 1e5) -> list[float]:
    """``num`` log-spaced ℓ2 weights from ``low`` to ``high`` inclusive, ascending (paper: 45 in [1e-6, 1e5])."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num!r}")
    if not 0.0 < low <= high:
        raise ValueError(f"need 0 < low <= high, got low={low!r}, high={high!r}")
    if num == 1:
        return [float(low)]
    return [float(v) for v in np.logspace(math.log10(low), math.log10(high), num)]


def fit_standardizer(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension mean (C,) and std (C,) of (N, C) training features.

    A (near-)constant dimension (std ≤ 1e-6 × the largest std, e.g. a dead ReLU channel of a
    random network) gets std 1, so it stays 0 after centering instead of blowing up.
    """
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    tiny = std <= 1e-6 * std.max().clamp_min(torch.finfo(std.dtype).tiny)
    return mean, torch.where(tiny, torch.ones_like(std), std)


def _logistic_grad(x: Tensor, y: Tensor, w: Tensor, b: Tensor, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, ∂/∂W, ∂/∂b) of 1/n Σ CE(W x + b, y) + λ/2 ‖W‖², in closed form.

    ~3x faster than autograd here, because both products keep the long N axis in the fast
    BLAS layout (W is (K, C) like nn.Linear's weight).
    """
    n = x.shape[0]
    rows = torch.arange(n, device=x.device)
    logits = torch.addmm(b, x, w.T)  # (N, K)
    lse = torch.logsumexp(logits, dim=1)  # (N,)
    loss = (lse - logits[rows, y]).mean() + 0.5 * lam * (w * w).sum()
    g = (logits - lse[:, None]).exp_()  # softmax (N, K)
    g[rows, y] -= 1.0
    g /= n
    return loss, torch.addmm(w, g.T, x, beta=lam), g.sum(dim=0)  # (K, C) = G^T X + lam W; (K,)


@torch.no_grad()
def gradient_max(x: Tensor, y: Tensor, w: Tensor, b: Tensor, l2: float) -> float:
    """The largest |entry| of the objective's gradient in (W, b) at a fitted head (0 at the optimum)."""
    _, gw, gb = _logistic_grad(x, y, w.to(x), b.to(x), float(l2))
    return float(torch.maximum(gw.abs().max(), gb.abs().max()))


def fit_logistic(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    l2: float,
    *,
    init: tuple[Tensor, Tensor] | None = None,
    max_iter: int = 100,
    tol: float = 1e-5,
) -> tuple[Tensor, Tensor, int]:
    """Minimise 1/n Σ CE(W x + b, y) + λ/2 ‖W‖² by full-batch L-BFGS (preconditioned, see the module docstring).

    Args:
        x: (N, C) standardized features; y: (N,) int64 labels in [0, num_classes).
        l2: λ ≥ 0. init: optional (W (K, C), b (K,)) to start from (a warm start); default
            W = 0 and b = the log class frequencies (classes absent from y: log(0.5 / N)).
        max_iter: L-BFGS iterations; tol: stop when the largest entry of the gradient in
            (√max(λ, 1) W, b) is below it.

    Returns W (K, C), b (K,) (detached, ``x``'s dtype and device) and the iterations used.
    Check the result with :func:`gradient_max`.
    """
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter!r}")
    n, c = x.shape
    lam = float(l2)
    scale = math.sqrt(max(lam, 1.0))  # W = V / scale: curvature ~1 along V under a strong λ
    if init is None:
        v = torch.zeros(num_classes, c, dtype=x.dtype, device=x.device)
        counts = torch.bincount(y, minlength=num_classes).to(x.dtype)
        b = torch.log(counts.clamp(min=0.5) / max(n, 1))
    else:
        v = init[0].detach().to(x).clone(memory_format=torch.contiguous_format) * scale
        b = init[1].detach().to(x).clone()
        if v.shape != (num_classes, c) or b.shape != (num_classes,):
            raise ValueError(
                f"init must be ((K, C), (K,)) = (({num_classes}, {c}), ({num_classes},)), "
                f"got {tuple(init[0].shape)}, {tuple(init[1].shape)}"
            )
    opt = torch.optim.LBFGS(
        [v, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    @torch.no_grad()
    def closure() -> Tensor:
        loss, gw, gb = _logistic_grad(x, y, v / scale, b, lam)
        v.grad = gw.div_(scale)
        b.grad = gb
        return loss

    opt.step(closure)
    iters = int(opt.state[v].get("n_iter", 0))
    return (v / scale).detach(), b.detach(), iters


def top1(pred: Tensor, y: Tensor) -> float:
    """Top-1 accuracy (%) of predictions (N,) against labels (N,); NaN for N = 0."""
    if pred.shape != y.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and labels {tuple(y.shape)} differ in shape")
    if y.numel() == 0:
        return float("nan")
    return 100.0 * float((pred == y).double().mean())


def per_class_top1(pred: Tensor, y: Tensor, num_classes: int) -> list[float]:
    """Top-1 (%) of each class k over the samples labelled k (length K; NaN for an absent class)."""
    out = []
    for k in range(num_classes):
        sel = y == k
        out.append(top1(pred[sel], y[sel]) if bool(sel.any()) else float("nan"))
    return out


# ----------------------------------------------------------------------------- linear_eval


def linear_eval(
    train_x: Tensor | np.ndarray,
    train_y: Tensor | np.ndarray,
    val_x: Tensor | np.ndarray,
    val_y: Tensor | np.ndarray,
    test_x: Tensor | np.ndarray,
    test_y: Tensor | np.ndarray,
    *,
    num_classes: int | None = None,
    l2_values: Sequence[float] | None = None,
    num_l2: int = 45,
    l2_range: tuple[float, float] = (1e-6, 1e5),
    max_iter: int = 100,
    tol: float = 1e-5,
    conv_tol: float = CONV_TOL,
) -> dict[str, Any]:
    """Fit the ℓ2 path on train, pick λ on val among the converged fits, score test (see the module docstring).

    Args:
        train_x (N, C), val_x (V, C), test_x (T, C): raw features (any float dtype; float64
            is kept, the rest computed in float32), all on one device.
        train_y (N,), val_y (V,), test_y (T,): int class indices in [0, K).
        num_classes: K; default 1 + the largest training label. A val / test label ≥ K is a
            ValueError (the sets disagree on the classes).
        l2_values: the λ grid (any order; run strongest first); default :func:`l2_grid`
            (``num_l2``, ``*l2_range``).
        max_iter, tol: per-λ L-BFGS budget (see :func:`fit_logistic`).
        conv_tol: a fit is converged when the largest entry of its gradient in (W, b) is at
            most this; only converged fits are eligible. When none is, every fit is (with a
            warning) and ``converged`` is False.

    Returns a dict: ``top1`` (test, %), ``per_class`` (list of K test top-1 %, NaN for a
    class absent from test), ``l2`` (the chosen λ), ``val_top1`` (%, at that λ),
    ``converged`` (whether the chosen fit is), ``head`` (:class:`LinearHead`,
    standardization included), ``path`` (per λ in fitting order: ``{"l2", "val_top1",
    "iters", "grad_max", "converged"}``), ``seconds``.
    """
    t0 = time.perf_counter()
    xs = [as_features(v, n) for v, n in ((train_x, "train_x"), (val_x, "val_x"), (test_x, "test_x"))]
    dtype = torch.float64 if xs[0].dtype == torch.float64 else torch.float32
    device = xs[0].device
    c = xs[0].shape[1]
    for v, name in zip(xs[1:], ("val_x", "test_x")):
        if v.shape[1] != c:
            raise ValueError(f"{name} has {v.shape[1]} features per row, train_x has {c}")
        if v.device != device:
            raise ValueError(f"{name} is on {v.device}, train_x on {device}")
    tr_x, va_x, te_x = (v.to(dtype) for v in xs)
    tr_y = _as_labels(train_y, tr_x.shape[0], "train_y", device)
    va_y = _as_labels(val_y, va_x.shape[0], "val_y", device)
    te_y = _as_labels(test_y, te_x.shape[0], "test_y", device)
    if tr_x.shape[0] == 0 or va_x.shape[0] == 0:
        raise ValueError(f"train and val need at least one row, got {tr_x.shape[0]} and {va_x.shape[0]}")
    k = int(tr_y.max()) + 1 if num_classes is None else int(num_classes)
    if k < 2:
        raise ValueError(f"need at least 2 classes, got num_classes={k}")
    for y, name in ((tr_y, "train_y"), (va_y, "val_y"), (te_y, "test_y")):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise ValueError(
                f"{name} holds labels in [{int(y.min())}, {int(y.max())}], outside the {k} classes [0, {k})"
            )
    grid = sorted(
        (float(v) for v in (l2_values if l2_values is not None else l2_grid(num_l2, *l2_range))), reverse=True
    )
    if not grid or grid[-1] < 0:
        raise ValueError(f"l2_values must be non-empty and >= 0, got {l2_values!r}")

    mean, std = fit_standardizer(tr_x)
    z_tr, z_va = (tr_x - mean) / std, (va_x - mean) / std

    path = []
    fits: list[tuple[float, float, Tensor, Tensor, bool]] = []  # (val_top1, l2, W, b, converged)
    state: tuple[Tensor, Tensor] | None = None
    for lam in grid:
        w, b, iters = fit_logistic(z_tr, tr_y, k, lam, init=state, max_iter=max_iter, tol=tol)
        state = (w, b)
        acc = top1(torch.addmm(b, z_va, w.T).argmax(1), va_y)
        grad = gradient_max(z_tr, tr_y, w, b, lam)
        ok = grad <= conv_tol
        path.append({"l2": lam, "val_top1": acc, "iters": iters, "grad_max": grad, "converged": ok})
        fits.append((acc, lam, w, b, ok))
    eligible = [f for f in fits if f[4]]
    if not eligible:
        log.warning(
            "no fit of the l2 path converged (largest gradient entry > %g at every l2; smallest %.2g): "
            "choosing among unconverged fits; raise max_iter",
            conv_tol,
            min(p["grad_max"] for p in path),
        )
        eligible = fits
    val_acc, lam, w, b, converged = max(eligible, key=lambda f: f[0])  # first maximum: the stronger λ
    head = LinearHead(weight=w, bias=b, mean=mean, std=std, l2=lam)
    pred = head.predict(te_x)
    return {
        "top1": top1(pred, te_y),
        "per_class": per_class_top1(pred, te_y, k),
        "l2": lam,
        "val_top1": val_acc,
        "converged": converged,
        "head": head,
        "path": path,
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------- heads file


def save_heads(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write a heads file atomically: ``payload`` plus ``format``; heads given as :class:`LinearHead`.

    Expected keys: ``variant``, ``backbone_digest``, ``feature`` (how features were made:
    ``image_size``, ``mean``, ``std``, ``amp``), and per task (``original``, ``crops``) a
    dict ``{"head": LinearHead, "classes": [names]}``.
    """
    out: dict[str, Any] = {"format": HEADS_FORMAT}
    for key, value in payload.items():
        if isinstance(value, Mapping) and isinstance(value.get("head"), LinearHead):
            value = {**value, "head": value["head"].to_state()}
        out[key] = value
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: same payload, same bytes
        torch.save(out, f)


def load_heads(path: str | Path, task: str = "original") -> tuple[LinearHead, dict[str, Any]]:
    """The head of ``task`` in a heads file and the whole file (a dict); CheckpointError naming it."""
    path = Path(path)
    obj = read_torch_file(path, "linear heads file", " (run the lineval stage of this model first)")
    if not isinstance(obj, dict) or obj.get("format") != HEADS_FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a linear heads file (format {found!r}, expected {HEADS_FORMAT!r})")
    entry = obj.get(task)
    if not isinstance(entry, dict) or "head" not in entry or "classes" not in entry:
        raise CheckpointError(f"linear heads file {path} holds no {task!r} head")
    head = LinearHead.from_state(entry["head"], f"the {task!r} head in {path}")
    if len(entry["classes"]) != head.num_classes:
        raise CheckpointError(
            f"the {task!r} head in {path} has {head.num_classes} outputs but {len(entry['classes'])} class names"
        )
    return head, obj


# ----------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class LinevalPaths:
    """Where ``lineval@<variant>`` writes."""

    metrics: Path
    heads: Path
    details: Path

    @classmethod
    def under(cls, root: str | Path, variant: str) -> LinevalPaths:
        root = Path(root)
        out = root / "eval" / f"lineval-{variant}"
        return cls(
            metrics=root / "metrics" / f"lineval-{variant}.json", heads=out / "heads.pt", details=out / "details.json"
        )


def _round(v: float, nd: int = 2) -> float | None:
    return None if v != v else round(float(v), nd)  # NaN → None (null in JSON)


def task_metrics(result: Mapping[str, Any], test_images: int) -> dict[str, Any]:
    """The metrics block of one probe: ``top1``, ``val_top1`` (%) and ``test_images`` (the report's noise estimate needs it)."""
    return {"top1": _round(result["top1"]), "val_top1": _round(result["val_top1"]), "test_images": int(test_images)}


def task_details(result: Mapping[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """The details block of one probe: chosen ``l2``, whether its fit ``converged`` (and how many of the
    path's did not), ``per_class`` {name: %} (absent classes left out), the l2 path."""
    path = result["path"]
    return {
        "l2": float(f"{result['l2']:.4g}"),
        "converged": bool(result["converged"]),
        "unconverged_fits": sum(not p["converged"] for p in path),
        "per_class": {name: _round(v) for name, v in zip(classes, result["per_class"]) if v == v},
        "path": [
            {
                "l2": float(f"{p['l2']:.4g}"),
                "val_top1": _round(p["val_top1"]),
                "grad_max": float(f"{p['grad_max']:.2g}"),
                "converged": bool(p["converged"]),
            }
            for p in path
        ],
    }


def _check_classes(sets: Sequence[ImageSource]) -> list[str]:
    """The class list shared by ``sets`` (ImageSources); DataError naming the one that differs."""
    classes = list(sets[0].classes)
    for s in sets[1:]:
        if list(s.classes) != classes:
            raise DataError(
                f"{s.name} has {len(s.classes)} classes {list(s.classes)[:10]}, but {sets[0].name} has "
                f"{len(classes)} {classes[:10]}: the splits of a linear probe must share one class list"
            )
    return classes


def _probe_backbone(
    backbone: FrozenBackbone, params: Params, device: torch.device
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], FrozenBackbone]:
    """Both probes (object crops, ORIGINAL) of one frozen backbone: metrics, details and heads blocks."""
    cfg = params.lineval
    tasks = {
        "crops": crops_splits(params, backbone.image_size),
        "original": original_splits(params, backbone.image_size),
    }
    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {}
    heads: dict[str, Any] = {}
    with frozen(backbone, device) as enc:
        for task, splits in tasks.items():
            classes = _check_classes(splits)
            xs, ys = [], []
            for source in splits:
                x, y = extract_features(
                    enc, source, backbone.mean, backbone.std, batch_size=cfg.batch_size, amp=cfg.amp, device=device
                )
                xs.append(x)
                ys.append(y)
            res = linear_eval(
                xs[0],
                ys[0],
                xs[1],
                ys[1],
                xs[2],
                ys[2],
                num_classes=len(classes),
                num_l2=cfg.num_l2,
                l2_range=cfg.l2_range,
                max_iter=cfg.max_iter,
            )
            log.info(
                "lineval@%s %s: top-1 %.2f %% (val %.2f %%, l2 %.3g; %d/%d/%d images, fit %.1f s)",
                backbone.variant,
                task,
                res["top1"],
                res["val_top1"],
                res["l2"],
                len(ys[0]),
                len(ys[1]),
                len(ys[2]),
                res["seconds"],
            )
            metrics[task] = task_metrics(res, len(ys[2]))
            details[task] = task_details(res, classes)
            heads[task] = {"head": res["head"], "classes": classes, "val_top1": res["val_top1"], "path": res["path"]}
    return metrics, details, heads, backbone


def run_lineval(
    params: Params, variant: str, paths: LinevalPaths, *, models_dir: str | Path = "artifacts/models"
) -> dict[str, Any]:
    """Stage ``lineval@<variant>``: probes on the object crops and on ORIGINAL; metrics JSON + heads file.

    Loads the variant's frozen backbone (:func:`oacl.eval.features.load_variant`), extracts
    center-crop features of the crops train / val / test splits and of ORIGINAL train / val /
    test, checks that the backbone's weights are bit-identical to the file's afterwards, runs
    :func:`linear_eval` on each task, writes ``paths.metrics`` (``{"crops": {"top1", "test_images"},
    "original": {...}}``, percent), ``paths.details`` (val top-1, chosen l2, per-class top-1, the l2 path,
    seconds) and ``paths.heads`` (both heads with their
    standardization, the class names, the backbone digest and the feature settings).
    ``random`` (the control) is probed once per init seed (``lineval.random_seeds`` seeds from
    ``lineval.seed``): its top-1 is their mean, the per-seed values and their s.d. go to the
    details, and the heads file holds seed ``lineval.seed``'s heads (what ``shift@random`` uses).
    Returns the whole record (the two files merged).
    """
    cfg = params.lineval
    t0 = time.perf_counter()
    device = resolve_device(cfg.device, "lineval.device")
    # the random-init control: one probe per init seed, averaged; every other variant: its one backbone
    seeds = [cfg.seed + i for i in range(cfg.random_seeds)] if variant == "random" else [None]
    runs = [
        _probe_backbone(load_variant(variant, params, seed=s, models_dir=models_dir), params, device) for s in seeds
    ]
    metrics, details, heads, backbone = runs[0]
    if len(runs) > 1:
        for task in metrics:
            top1s = [r[0][task]["top1"] for r in runs]
            val_top1s = [r[0][task]["val_top1"] for r in runs]
            metrics[task]["top1"] = _round(float(np.mean(top1s)))
            metrics[task]["val_top1"] = _round(float(np.mean(val_top1s)))
            details[task]["init_seeds"] = {str(s): v for s, v in zip(seeds, top1s)}
            details[task]["top1_sd"] = _round(float(np.std(top1s, ddof=1)))
            log.info(
                "lineval@random %s: top-1 %.2f %% over init seeds %s (%s)", task, metrics[task]["top1"], seeds, top1s
            )
    save_heads(
        paths.heads,
        {
            "variant": variant,
            "backbone_digest": backbone.digest,
            "feature": backbone.feature_settings(cfg.amp),
            **heads,
        },
    )
    record = merge(metrics, details)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    write_results(paths.metrics, record, "lineval", details=paths.details)
    log.info("lineval@%s done in %.1f s", variant, record["seconds"])
    return record
