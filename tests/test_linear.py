"""Linear evaluation (oacl.eval.linear): against scikit-learn, known answers, the heads file."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from oacl.errors import CheckpointError
from oacl.eval.linear import (
    LinearHead,
    fit_logistic,
    fit_standardizer,
    gradient_max,
    l2_grid,
    linear_eval,
    load_heads,
    per_class_top1,
    save_heads,
    top1,
)

torch.set_num_threads(1)


def blobs(
    n: int, k: int = 5, d: int = 24, spread: float = 3.0, seed: int = 0, scale: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """k overlapping Gaussian classes in d dims (centres fixed by seed 99), features shifted and scaled unevenly."""
    centres = np.random.default_rng(99).normal(size=(k, d))
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = centres[y] + spread * rng.normal(size=(n, d)) / math.sqrt(d) * 3
    x = x * np.linspace(0.1, scale, d) + 5.0  # standardization must undo this
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {"train": blobs(400, seed=1), "val": blobs(300, seed=2), "test": blobs(600, seed=3)}


def sklearn_eval(splits, grid: list[float]) -> tuple[float, float]:
    """The same protocol with scikit-learn: C = 1 / (n λ), C chosen on val (ties to the stronger λ); test top-1 %."""
    (xtr, ytr), (xva, yva), (xte, yte) = splits["train"], splits["val"], splits["test"]
    mean, std = xtr.mean(0), xtr.std(0)
    z = lambda x: (x - mean) / std  # noqa: E731
    best = (-1.0, None, None)
    for lam in sorted(grid, reverse=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=1.0 / (len(ytr) * lam), max_iter=5000, tol=1e-8).fit(z(xtr), ytr)
        acc = 100 * clf.score(z(xva), yva)
        if acc > best[0]:
            best = (acc, lam, clf)
    return 100 * best[2].score(z(xte), yte), best[1]


def test_l2_grid_is_the_papers() -> None:
    grid = l2_grid()
    assert len(grid) == 45 and grid[0] == pytest.approx(1e-6) and grid[-1] == pytest.approx(1e5)
    ratios = np.diff(np.log10(grid))
    np.testing.assert_allclose(ratios, 11 / 44, rtol=1e-9)
    assert l2_grid(1, 0.5, 2.0) == [0.5]
    with pytest.raises(ValueError, match="low"):
        l2_grid(5, 1.0, 0.1)


def test_linear_eval_within_one_point_of_sklearn(splits) -> None:
    grid = l2_grid(45)
    res = linear_eval(*splits["train"], *splits["val"], *splits["test"], max_iter=200)
    ref_top1, ref_l2 = sklearn_eval(splits, grid)
    assert 40.0 < ref_top1 < 95.0  # the task is neither trivial nor hopeless
    assert abs(res["top1"] - ref_top1) <= 1.0, (res["top1"], ref_top1, res["l2"], ref_l2)
    assert res["l2"] in grid and len(res["path"]) == 45
    assert [p["l2"] for p in res["path"]] == sorted(grid, reverse=True)  # strongest first (warm-started path)
    best = max(p["val_top1"] for p in res["path"])
    first_best = next(p for p in res["path"] if p["val_top1"] == best)
    assert res["val_top1"] == best and res["l2"] == first_best["l2"]  # ties go to the stronger regularisation


@pytest.mark.parametrize("lam", [1e-3, 0.1, 3.0])
def test_fit_matches_sklearn_solution(splits, lam: float) -> None:
    x, y = splits["train"]
    xt = torch.from_numpy(x).double()
    mean, std = fit_standardizer(xt)
    z = (xt - mean) / std
    w, b, iters = fit_logistic(z, torch.from_numpy(y), 5, lam, max_iter=2000, tol=1e-10)
    clf = LogisticRegression(C=1.0 / (len(y) * lam), max_iter=10000, tol=1e-10).fit(z.numpy(), y)
    # W is identifiable (the penalty fixes the softmax shift); b only up to a common constant.
    np.testing.assert_allclose(w.numpy(), clf.coef_, atol=2e-4 * max(1.0, np.abs(clf.coef_).max()))
    np.testing.assert_allclose(
        (b - b.mean()).numpy(),
        clf.intercept_ - clf.intercept_.mean(),
        atol=2e-4 * max(1.0, np.abs(clf.intercept_).max()),
    )
    assert 0 < iters <= 2000


def gaussian_toy(seed: int, n: int, k: int = 6, d: int = 64, sep: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """k classes with random means (seed 1000 + seed) and unit noise, drawn anew per call (the issue's toy)."""
    centres = np.random.default_rng(1000 + seed).normal(size=(k, d)) * sep
    rng = np.random.default_rng([seed, n])
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_probe_matches_sklearn_along_the_path(seed: int) -> None:
    # At every λ of a 12-point path the head predicts what scikit-learn's optimum at C = 1/(nλ)
    # predicts. Before the preconditioning, λ >= 1e4 stopped after ~2 iterations with the bias
    # unmoved and scored like a nearest-centroid classifier (86-89 % val), where the optimum
    # predicts the majority class (12-16 %); on seed 2 the validation choice landed there.
    # The reference is newton-cg: scikit-learn's own lbfgs solver has the same trap (at λ = 1e5
    # it stops after 2 iterations with the intercepts at 0, gradient 2e-2; newton-cg: 1e-7).
    (xtr, ytr), (xva, yva) = gaussian_toy(seed, 600), gaussian_toy(seed, 300)
    grid = l2_grid(12)
    res = linear_eval(xtr, ytr, xva, yva, xva, yva, l2_values=grid, max_iter=30)
    mean, std = xtr.mean(0), xtr.std(0)
    for p in res["path"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=1.0 / (len(ytr) * p["l2"]), solver="newton-cg", max_iter=5000, tol=1e-10)
            clf.fit((xtr - mean) / std, ytr)
        ref = 100 * clf.score((xva - mean) / std, yva)
        assert p["converged"] and p["grad_max"] <= 1e-3, p
        # under the weakest λ the objective is nearly flat (the classes almost separate in 64 dims):
        # a small gradient leaves W farther from the optimum
        assert abs(p["val_top1"] - ref) <= (1.0 if p["l2"] >= 1e-3 else 2.0), (p, ref)
    # λ = 1e5: the optimum (nearly) ignores x and predicts the most frequent training class(es)
    assert res["path"][0]["val_top1"] < 35.0
    assert res["converged"] and res["l2"] < 1e3 and res["val_top1"] > 70.0


def test_unconverged_fits_are_not_chosen(splits, monkeypatch: pytest.MonkeyPatch) -> None:
    import oacl.eval.linear as linear

    grid = l2_grid(9)
    args = (*splits["train"], *splits["val"], *splits["test"])
    first = linear_eval(*args, l2_values=grid)
    assert first["converged"] and all(p["converged"] for p in first["path"])
    real = linear.gradient_max
    # declare the winner unconverged: the choice moves to the best of the other fits
    monkeypatch.setattr(
        linear, "gradient_max", lambda x, y, w, b, l2: 1.0 if l2 == first["l2"] else real(x, y, w, b, l2)
    )
    second = linear_eval(*args, l2_values=grid)
    rest = [p for p in second["path"] if p["l2"] != first["l2"]]
    assert second["l2"] != first["l2"] and second["converged"]
    assert second["val_top1"] == max(p["val_top1"] for p in rest)
    assert next(p for p in second["path"] if p["l2"] == first["l2"])["converged"] is False


def test_no_converged_fit_warns_and_says_so(splits, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="oacl.eval.linear"):
        res = linear_eval(*splits["train"], *splits["val"], *splits["test"], num_l2=3, conv_tol=0.0)
    assert res["converged"] is False and not any(p["converged"] for p in res["path"])
    assert "no fit of the l2 path converged" in caplog.text


def test_gradient_max_is_zero_at_sklearns_optimum(splits) -> None:
    x, y = splits["train"]
    z = (x - x.mean(0)) / x.std(0)
    lam = 0.05
    clf = LogisticRegression(C=1.0 / (len(y) * lam), solver="newton-cg", max_iter=10000, tol=1e-12).fit(z, y)
    at = gradient_max(
        torch.from_numpy(z).double(),
        torch.from_numpy(y),
        torch.from_numpy(clf.coef_),
        torch.from_numpy(clf.intercept_),
        lam,
    )
    zero = gradient_max(torch.from_numpy(z).double(), torch.from_numpy(y), torch.zeros(5, 24), torch.zeros(5), lam)
    assert at < 1e-6 < 1e-2 < zero


def test_separable_data_known_answer() -> None:
    # Class k lives at +4 on axis k: a linear head must get everything right.
    rng = np.random.default_rng(0)

    def make(n):
        y = np.arange(n) % 3
        return (np.eye(3)[y] * 4 + 0.3 * rng.normal(size=(n, 3))).astype(np.float32), y

    res = linear_eval(*make(60), *make(30), *make(30), num_l2=9)
    assert res["top1"] == 100.0 and res["val_top1"] == 100.0 and res["per_class"] == [100.0] * 3
    head = res["head"]
    assert isinstance(head, LinearHead) and (head.num_classes, head.feature_dim) == (3, 3)
    x, y = make(12)
    assert top1(head.predict(torch.from_numpy(x)), torch.from_numpy(y)) == 100.0


def test_per_class_and_top1_by_hand() -> None:
    pred = torch.tensor([0, 0, 1, 1, 2, 0])
    y = torch.tensor([0, 1, 1, 1, 2, 2])
    assert top1(pred, y) == pytest.approx(100 * 4 / 6)
    pc = per_class_top1(pred, y, 4)
    assert pc[:3] == pytest.approx([100.0, 100 * 2 / 3, 50.0]) and math.isnan(pc[3])  # class 3 absent


def test_standardizer_leaves_dead_dimensions_at_zero() -> None:
    x = torch.tensor([[1.0, 0.0, 3.0], [3.0, 0.0, 3.0], [5.0, 0.0, 3.0]])
    mean, std = fit_standardizer(x)
    torch.testing.assert_close(mean, torch.tensor([3.0, 0.0, 3.0]))
    torch.testing.assert_close(std, torch.tensor([math.sqrt(8 / 3), 1.0, 1.0]))
    assert torch.isfinite((x - mean) / std).all()


def test_linear_eval_rejects_bad_inputs(splits) -> None:
    (xtr, ytr), (xva, yva), (xte, yte) = splits["train"], splits["val"], splits["test"]
    with pytest.raises(ValueError, match=r"test_y holds labels in \[0, 7\], outside the 5 classes"):
        linear_eval(xtr, ytr, xva, yva, xte, np.where(yte == 4, 7, yte), num_l2=2)
    with pytest.raises(ValueError, match="val_x has 23 features per row, train_x has 24"):
        linear_eval(xtr, ytr, xva[:, :23], yva, xte, yte, num_l2=2)
    with pytest.raises(ValueError, match=r"train_y must be \(400,\)"):
        linear_eval(xtr, ytr[:10], xva, yva, xte, yte, num_l2=2)
    bad = xtr.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="train_x holds non-finite"):
        linear_eval(bad, ytr, xva, yva, xte, yte, num_l2=2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_eval(xtr, np.zeros_like(ytr), xva, np.zeros_like(yva), xte, np.zeros_like(yte), num_l2=2)


def test_float64_is_kept_and_results_agree(splits) -> None:
    r32 = linear_eval(*splits["train"], *splits["val"], *splits["test"], l2_values=[0.01], max_iter=300)
    x64 = [torch.from_numpy(splits[s][0]).double() for s in ("train", "val", "test")]
    r64 = linear_eval(
        x64[0], splits["train"][1], x64[1], splits["val"][1], x64[2], splits["test"][1], l2_values=[0.01], max_iter=300
    )
    assert r64["head"].weight.dtype == torch.float64 and r32["head"].weight.dtype == torch.float32
    assert abs(r32["top1"] - r64["top1"]) <= 0.5


def test_heads_file_round_trip_and_errors(tmp_path: Path, splits) -> None:
    res = linear_eval(*splits["train"], *splits["val"], *splits["test"], num_l2=3)
    path = tmp_path / "eval" / "heads.pt"
    classes = [f"c{i}" for i in range(5)]
    save_heads(
        path, {"variant": "moco", "backbone_digest": "abc", "original": {"head": res["head"], "classes": classes}}
    )
    head, obj = load_heads(path)
    assert obj["variant"] == "moco" and obj["original"]["classes"] == classes
    x = torch.from_numpy(splits["test"][0])
    torch.testing.assert_close(head.logits(x), res["head"].logits(x))
    with pytest.raises(CheckpointError, match=r"holds no 'crops' head"):
        load_heads(path, "crops")
    with pytest.raises(CheckpointError, match=r"nosuch\.pt does not exist"):
        load_heads(tmp_path / "nosuch.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"junk\.pt cannot be read"):
        load_heads(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt is not a linear heads file"):
        load_heads(tmp_path / "other.pt")
    save_heads(tmp_path / "bad.pt", {"original": {"head": res["head"], "classes": classes[:4]}})
    with pytest.raises(CheckpointError, match=r"5 outputs but 4 class names"):
        load_heads(tmp_path / "bad.pt")
