"""Contextual-bias analysis (oacl.eval.bias): Eq. 5 against a loop, 1-shot error on known cases, pair parsing, t-SNE."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from oacl.errors import ConfigError, DataError
from oacl.eval.bias import (
    avg_min_distance,
    benchmark_pairs,
    contextual_bias,
    cooccurring_pairs,
    one_shot_error,
    pair_key,
    parse_pairs,
    tsne_figure,
)

torch.set_num_threads(1)
CLASSES = ["disk", "square", "triangle", "star", "cross"]


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def eq5_loop(x: np.ndarray, y: np.ndarray) -> float:
    """Eq. 5 written out: 1/|X| Σ_x min_y ‖x − y‖ + 1/|Y| Σ_y min_x ‖x − y‖."""
    from_x = sum(min(math.sqrt(sum((a - b) ** 2 for a, b in zip(xi, yj))) for yj in y) for xi in x) / len(x)
    from_y = sum(min(math.sqrt(sum((a - b) ** 2 for a, b in zip(xi, yj))) for xi in x) for yj in y) / len(y)
    return from_x + from_y


# ----------------------------------------------------------------------------- Eq. 5


@pytest.mark.parametrize(("n", "m", "d", "seed"), [(1, 1, 2, 0), (5, 3, 4, 1), (7, 11, 8, 2), (12, 2, 16, 3)])
def test_avg_min_distance_matches_a_loop(n: int, m: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = unit(rng, n, d), unit(rng, m, d)
    got = avg_min_distance(torch.from_numpy(x), torch.from_numpy(y))
    assert got == pytest.approx(eq5_loop(x, y), rel=1e-12)
    assert 0.0 <= got <= 4.0  # each directed average of unit vectors lies in [0, 2]
    assert avg_min_distance(torch.from_numpy(y), torch.from_numpy(x)) == pytest.approx(got, rel=1e-12)  # symmetric
    # float32 inputs are computed in float64 too
    assert avg_min_distance(torch.from_numpy(x).float(), torch.from_numpy(y).float()) == pytest.approx(got, rel=1e-6)


def test_avg_min_distance_by_hand() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(unit(rng, 6, 5))
    assert avg_min_distance(x, x) == 0.0  # identical sets
    assert avg_min_distance(x, x.flip(0)) == 0.0  # order does not matter
    for degrees in (30, 90, 180):
        t = math.radians(degrees)
        a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[math.cos(t), math.sin(t)]])
        assert avg_min_distance(a, b) == pytest.approx(2 * 2 * math.sin(t / 2), rel=1e-6)  # chord twice
    # X = {e1, e2}, Y = {e1}: from X's side (0 + √2) / 2, from Y's side 0
    x2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert avg_min_distance(x2, torch.tensor([[1.0, 0.0]])) == pytest.approx(math.sqrt(2) / 2)


def test_avg_min_distance_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"x must be .* got shape \(0, 3\)"):
        avg_min_distance(torch.zeros(0, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"share D.*\(2, 3\).*\(2, 4\)"):
        avg_min_distance(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"y must be"):
        avg_min_distance(torch.zeros(2, 3), torch.zeros(3))


# ----------------------------------------------------------------------------- 1-shot error


def test_one_shot_error_is_zero_on_separated_clusters() -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(20, 8)) * 0.1 + 5.0)
    y = torch.from_numpy(rng.normal(size=(15, 8)) * 0.1 - 5.0)
    assert one_shot_error(x, y, seeds=10) == 0.0
    assert one_shot_error(y, x, seeds=3, seed=7) == 0.0


def test_one_shot_error_is_half_on_identical_distributions() -> None:
    errors = []
    for s in range(40):
        rng = np.random.default_rng(100 + s)
        x, y = torch.from_numpy(rng.normal(size=(12, 6))), torch.from_numpy(rng.normal(size=(12, 6)))
        e = one_shot_error(x, y, seeds=5, seed=s)
        assert 0.0 <= e <= 100.0
        errors.append(e)
    assert 43.0 < float(np.mean(errors)) < 57.0, np.mean(errors)  # chance; the exact mean is 50 by symmetry


def test_one_shot_error_ties_count_half_and_draws_are_seeded() -> None:
    same = torch.ones(4, 3)
    assert one_shot_error(same, same.clone(), seeds=3) == 50.0  # every query is equidistant from both supports
    rng = np.random.default_rng(5)
    x, y = torch.from_numpy(rng.normal(size=(9, 4))), torch.from_numpy(rng.normal(size=(7, 4)) + 0.5)
    assert one_shot_error(x, y, seeds=4, seed=3) == one_shot_error(x, y, seeds=4, seed=3)
    # the mean over seeds s..s+k-1 is the mean of the single draws
    singles = [one_shot_error(x, y, seeds=1, seed=s) for s in range(3, 7)]
    assert one_shot_error(x, y, seeds=4, seed=3) == pytest.approx(np.mean(singles))


def test_one_shot_error_rejects_too_few_rows() -> None:
    with pytest.raises(ValueError, match=r"got 1 and 3"):
        one_shot_error(torch.zeros(1, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"seeds must be >= 1, got 0"):
        one_shot_error(torch.zeros(2, 2), torch.zeros(2, 2), seeds=0)


# ----------------------------------------------------------------------------- pairs


def test_cooccurring_pairs_within_groups() -> None:
    assert cooccurring_pairs([["square", "disk"], ["cross", "triangle", "star"]], CLASSES) == [
        (0, 1),
        (2, 3),
        (2, 4),
        (3, 4),
    ]
    with pytest.raises(DataError, match=r"\['heart'\]"):
        cooccurring_pairs([["disk", "heart"]], CLASSES)


def test_parse_pairs_and_errors_name_the_culprit() -> None:
    assert parse_pairs(["star+triangle", "disk+cross"], CLASSES) == [(2, 3), (0, 4)]
    assert pair_key(CLASSES, (2, 3)) == "triangle_vs_star"
    with pytest.raises(ConfigError, match=r"'disk\+zebra': no class 'zebra'"):
        parse_pairs(["disk+square", "disk+zebra"], CLASSES)
    with pytest.raises(ConfigError, match=r"'disk' must name two different classes"):
        parse_pairs(["disk"], CLASSES)
    with pytest.raises(ConfigError, match=r"'star\+star'"):
        parse_pairs(["star+star"], CLASSES)
    with pytest.raises(ConfigError, match=r"'a\+b\+c'"):
        parse_pairs(["a+b+c"], CLASSES)


def test_benchmark_pairs_reads_the_groups(tmp_path: Path) -> None:
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps({"groups": [["disk", "square"], ["triangle", "star"]]}))
    assert benchmark_pairs(path, CLASSES) == [(0, 1), (2, 3)]
    with pytest.raises(DataError, match=str(tmp_path / "missing.json")):
        benchmark_pairs(tmp_path / "missing.json", CLASSES)
    path.write_text(json.dumps({"classes": CLASSES}))
    with pytest.raises(DataError, match="no 'groups' list"):
        benchmark_pairs(path, CLASSES)
    path.write_text("{broken")
    with pytest.raises(DataError, match="cannot be read"):
        benchmark_pairs(path, CLASSES)


# ----------------------------------------------------------------------------- contextual_bias


def test_contextual_bias_keys_values_and_skipped_pairs() -> None:
    rng = np.random.default_rng(3)
    d = 8
    # classes 0, 1 far apart; classes 2, 3 drawn from one distribution; class 4 has one crop only
    centres = {0: np.eye(d)[0] * 10, 1: np.eye(d)[1] * 10, 2: np.eye(d)[2] * 10, 3: np.eye(d)[2] * 10}
    rows, labels = [], []
    for c, centre in centres.items():
        rows.append(centre + rng.normal(size=(10, d)))
        labels += [c] * 10
    rows.append(rng.normal(size=(1, d)))
    labels.append(4)
    feats = torch.from_numpy(np.concatenate(rows)).float() * 3.0  # the scale must not matter (L2-normalised)
    y = torch.tensor(labels)
    out = contextual_bias(feats, y, [(0, 1), (2, 3), (3, 4)], CLASSES, seeds=5, seed=0)
    # star_vs_cross is skipped: one cross crop only
    assert set(out) == {
        "bias/disk_vs_square/min_dist",
        "bias/disk_vs_square/oneshot_error",
        "bias/triangle_vs_star/min_dist",
        "bias/triangle_vs_star/oneshot_error",
        "bias/mean/min_dist",
        "bias/mean/oneshot_error",
    }
    z = feats.double() / feats.double().norm(dim=1, keepdim=True)
    assert out["bias/disk_vs_square/min_dist"] == pytest.approx(avg_min_distance(z[y == 0], z[y == 1]), abs=1e-4)
    assert out["bias/disk_vs_square/oneshot_error"] == 0.0
    assert out["bias/disk_vs_square/min_dist"] > out["bias/triangle_vs_star/min_dist"]  # separated > entangled
    assert out["bias/mean/min_dist"] == pytest.approx(
        (out["bias/disk_vs_square/min_dist"] + out["bias/triangle_vs_star/min_dist"]) / 2, abs=1e-4
    )
    assert contextual_bias(feats / 3.0, y, [(0, 1), (2, 3)], CLASSES) == {
        k: v for k, v in out.items() if "cross" not in k
    }
    assert contextual_bias(feats, y, [], CLASSES) == {}
    with pytest.raises(ValueError, match=r"\(41, 8\) and \(3,\)"):
        contextual_bias(feats, y[:3], [(0, 1)], CLASSES)


# ----------------------------------------------------------------------------- t-SNE


def test_tsne_figure_on_tiny_data() -> None:
    rng = np.random.default_rng(0)
    feats = torch.from_numpy(rng.normal(size=(24, 6))).float()
    labels = torch.arange(24) % 4
    fig = tsne_figure(feats, labels, [(0, 1), (2, 3)], CLASSES, per_class=4, perplexity=3.0, seed=0, title="tiny")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.collections) == 4  # one scatter per paired class
    assert [c.get_offsets().shape[0] for c in ax.collections] == [4, 4, 4, 4]  # per_class caps each class
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["disk (4)", "square (4)", "triangle (4)", "star (4)"]
    assert ax.get_title() == "tiny"
    empty = tsne_figure(feats, labels, [], CLASSES)
    assert isinstance(empty, Figure) and empty.axes[0].texts[0].get_text().startswith("no co-occurring")
