"""Background / distribution-shift metrics (oacl.eval.shift): key arithmetic by hand, trials, the details split."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from oacl.errors import DataError
from oacl.eval.linear import LinearHead
from oacl.eval.shift import (
    ShiftPaths,
    accuracies,
    bg_metrics,
    check_classes,
    fit_trial_heads,
    parse_shift_name,
    shift_metrics,
    summarize_trials,
    trial_subsets,
)
from oacl.io.results import HEADLINE, merge, split_headline

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- keys by hand


def test_bg_metrics_gap_arithmetic() -> None:
    acc = {"original": 90.0, "only_fg": 70.25, "mixed_same": 80.0, "mixed_rand": 60.5, "mixed_next": 55.0}
    out = bg_metrics(acc)
    assert out == {
        "bg/original/top1": 90.0,
        "bg/only_fg/top1": 70.25,
        "bg/mixed_same/top1": 80.0,
        "bg/mixed_rand/top1": 60.5,
        "bg/mixed_next/top1": 55.0,
        "bg_gap": 19.5,
    }
    assert bg_metrics({"mixed_same": 40.0, "mixed_rand": 52.5})["bg_gap"] == -12.5  # a negative gap is kept
    assert "bg_gap" not in bg_metrics({"original": 90.0, "mixed_same": 80.0})  # needs both mixed variants
    assert bg_metrics({}) == {}


def test_parse_shift_name() -> None:
    assert parse_shift_name("fog-3") == ("fog", 3)
    assert parse_shift_name("jpeg_compression-5") == ("jpeg_compression", 5)
    assert parse_shift_name("gaussian-noise-2") == ("gaussian-noise", 2)
    assert parse_shift_name("sketch") == ("sketch", None)
    assert parse_shift_name("fog-x") == ("fog-x", None)


def test_shift_metrics_keys_and_family_means() -> None:
    acc = {"fog-1": 50.0, "fog-3": 70.0, "fog-5": 30.0, "defocus_blur-2": 10.0, "sketch": 20.0, "rendition": 33.0}
    assert shift_metrics(acc) == {
        "shift/fog/1/top1": 50.0,
        "shift/fog/3/top1": 70.0,
        "shift/fog/5/top1": 30.0,
        "shift/fog/mean/top1": 50.0,
        "shift/defocus_blur/2/top1": 10.0,
        "shift/defocus_blur/mean/top1": 10.0,
        "shift/sketch/top1": 20.0,
        "shift/rendition/top1": 33.0,
    }
    assert shift_metrics({}) == {}


def test_summarize_trials_mean_and_sample_std_by_hand() -> None:
    trials = [{"a": 1.0, "b": 2.0}, {"a": 2.0, "b": 4.0}, {"a": 6.0, "b": 0.0}]
    out = summarize_trials(trials)
    # a: mean 3, squares 4 + 1 + 9 = 14, / (3 - 1) -> sqrt(7); b: mean 2, squares 0 + 4 + 4 = 8, / 2 -> 2
    assert out == {"a": 3.0, "a_std": round(math.sqrt(7.0), 2), "b": 2.0, "b_std": 2.0}
    assert list(out) == ["a", "a_std", "b", "b_std"]  # each _std beside its key
    assert summarize_trials([{"a": 1.23456}], digits=3) == {"a": 1.235}  # one trial: no _std
    assert summarize_trials([{"x": 1.0}, {"x": 2.0}], digits=4) == {"x": 1.5, "x_std": round(math.sqrt(0.5), 4)}
    with pytest.raises(ValueError, match="at least one trial"):
        summarize_trials([])
    with pytest.raises(ValueError, match=r"disagree.*'c'"):
        summarize_trials([{"a": 1.0}, {"a": 1.0, "c": 2.0}])


def test_trial_subsets_sizes_determinism_and_seeds() -> None:
    subsets = trial_subsets(50, 4, 0.8, seed=7)
    assert len(subsets) == 4
    for idx in subsets:
        assert idx.shape == (40,) and idx.dtype.kind == "i"
        assert np.all(np.diff(idx) > 0)  # sorted, no repeats (drawn without replacement)
        assert idx.min() >= 0 and idx.max() < 50
    again = trial_subsets(50, 4, 0.8, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(subsets, again))
    assert len({tuple(s) for s in subsets}) == 4  # each trial its own subsample
    # trial t uses seed + t: trial 2 of seed 7 is trial 0 of seed 9, and the first three of seed 8 shift by one
    assert np.array_equal(subsets[2], trial_subsets(50, 1, 0.8, seed=9)[0])
    assert all(np.array_equal(a, b) for a, b in zip(subsets[1:], trial_subsets(50, 3, 0.8, seed=8)))
    assert not np.array_equal(subsets[0], trial_subsets(50, 1, 0.8, seed=0)[0])
    assert [s.size for s in trial_subsets(10, 2, 0.25, 0)] == [2, 2]  # round(2.5) -> 2
    assert trial_subsets(3, 1, 0.01, 0)[0].size == 1  # at least one row
    assert np.array_equal(trial_subsets(6, 1, 1.0, 0)[0], np.arange(6))
    with pytest.raises(ValueError, match=r"0, 0.5"):
        trial_subsets(10, 0, 0.5, 0)
    with pytest.raises(ValueError, match=r"1, 1.5"):
        trial_subsets(10, 1, 1.5, 0)


def test_the_headline_keeps_bg_gap_and_mixed_rand_and_details_keep_the_rest() -> None:
    everything = {
        "bg/original/top1": 90.0,
        "bg/original/top1_std": 1.0,
        "bg/mixed_rand/top1": 60.0,
        "bg/mixed_rand/top1_std": 6.0,
        "bg_gap": 20.0,
        "bg_gap_std": 2.0,
        "shift/fog/3/top1": 40.0,
        "shift/fog/mean/top1": 35.0,
        "shift/sketch/top1": 20.0,
        "bias/disk_vs_square/oneshot_error": 10.0,
        "bias/mean/oneshot_error": 10.0,
        "trials": 3,
        "bg_test_images": 16,
    }
    metrics, details = split_headline(everything, HEADLINE["shift"])
    assert set(metrics) == {"bg_gap", "bg_gap_std", "bg/mixed_rand/top1", "bg/mixed_rand/top1_std"}
    assert set(details) == set(everything) - set(metrics)
    assert merge(metrics, details) == everything  # nothing lost, values untouched


def test_shift_paths_layout(tmp_path) -> None:
    p = ShiftPaths.under(tmp_path, "moco-bgmix")
    assert p.heads == tmp_path / "eval" / "lineval-moco-bgmix" / "heads.pt"
    assert p.metrics == tmp_path / "metrics" / "shift-moco-bgmix.json"
    assert p.details == tmp_path / "eval" / "shift-moco-bgmix" / "details.json"
    assert p.plots_dir == tmp_path / "plots" / "shift-moco-bgmix"


# ----------------------------------------------------------------------------- heads


def clusters(n_per: int, k: int = 3, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k tight, far-apart Gaussian clusters (linearly separable), shifted and scaled unevenly."""
    centres = np.random.default_rng(42).normal(size=(k, d)) * 6.0
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per)
    x = (centres[y] + rng.normal(size=(y.size, d))) * np.linspace(0.5, 4.0, d) + 3.0
    return torch.from_numpy(x).float(), torch.from_numpy(y)


def test_fit_trial_heads_on_separable_features() -> None:
    train, val, test = clusters(20, seed=1), clusters(6, seed=2), clusters(30, seed=3)
    heads = fit_trial_heads(train, val, num_classes=3, trials=3, fraction=0.5, seed=0, num_l2=3, max_iter=30)
    assert len(heads) == 3 and all(isinstance(h, LinearHead) for h in heads)
    assert all(h.num_classes == 3 and h.feature_dim == 16 for h in heads)
    for h in heads:
        assert accuracies(h, {"test": test, "val": val}) == {"test": 100.0, "val": 100.0}
    # each head standardizes with its own subsample's statistics
    subsets = trial_subsets(60, 3, 0.5, 0)
    for h, idx in zip(heads, subsets):
        torch.testing.assert_close(h.mean, train[0][torch.from_numpy(idx)].mean(0))
    assert not torch.equal(heads[0].mean, heads[1].mean)
    one = fit_trial_heads(train, val, num_classes=3, trials=1, fraction=1.0, seed=5, num_l2=3, max_iter=30)
    assert len(one) == 1 and torch.allclose(one[0].mean, train[0].mean(0))


def test_accuracies_and_class_checks() -> None:
    head = LinearHead(weight=torch.eye(2), bias=torch.zeros(2), mean=torch.zeros(2), std=torch.ones(2), l2=1.0)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert accuracies(head, {"a": (x, torch.tensor([0, 1, 0, 0])), "b": (x[:2], torch.tensor([1, 0]))}) == {
        "a": 75.0,
        "b": 0.0,
    }
    with pytest.raises(ValueError, match=r"'bad' has label 2, the head has 2 classes"):
        accuracies(head, {"bad": (x[:1], torch.tensor([2]))})
    ok = SimpleNamespace(name="ok.h5", classes=["a", "b"])
    other = SimpleNamespace(name="other.h5", classes=["a", "c"])
    check_classes({"ok": ok}, ["a", "b"], "heads.pt")
    with pytest.raises(DataError, match=r"other.h5 has 2 classes .*heads.pt"):
        check_classes({"ok": ok, "other": other}, ["a", "b"], "heads.pt")
