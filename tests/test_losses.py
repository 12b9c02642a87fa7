"""Losses against hand-written references and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from oacl.losses import byol_loss, info_nce, mean_pairwise_cosine, moco_logits


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _info_nce_loop(q, k, queue, t, mask=None) -> float:
    """Reference: −log(exp(q·k/t) / (exp(q·k/t) + Σ_j exp(q·n_j/t))) averaged, one row at a time."""
    total = 0.0
    for b in range(q.shape[0]):
        pos = math.exp(float(q[b] @ k[b]) / t)
        neg = sum(
            math.exp(float(q[b] @ queue[j]) / t) for j in range(queue.shape[0]) if mask is None or not bool(mask[b, j])
        )
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


@pytest.mark.parametrize("b,k_size,t", [(1, 1, 0.2), (4, 7, 0.2), (8, 32, 0.07), (5, 16, 1.0)])
@pytest.mark.parametrize("masked", [False, True])
def test_info_nce_matches_loop(b: int, k_size: int, t: float, masked: bool) -> None:
    q, k, queue = _unit(b, 6, seed=1), _unit(b, 6, seed=2), _unit(k_size, 6, seed=3)
    mask = None
    if masked:
        mask = torch.zeros(b, k_size, dtype=torch.bool)
        mask[0, 0] = True
        mask[-1, -1] = True
    got = float(info_nce(q, k, queue, t, self_mask=mask))
    assert got == pytest.approx(_info_nce_loop(q, k, queue, t, mask), rel=1e-9)


@pytest.mark.parametrize("k_size,t", [(1, 0.2), (10, 0.2), (1000, 0.07)])
def test_info_nce_closed_form(k_size: int, t: float) -> None:
    # q = k = e0, every negative orthogonal: loss = log(1 + K exp(-1/t)).
    q = torch.zeros(3, 4, dtype=torch.float64)
    q[:, 0] = 1
    queue = torch.zeros(k_size, 4, dtype=torch.float64)
    queue[:, 1] = 1
    assert float(info_nce(q, q, queue, t)) == pytest.approx(math.log1p(k_size * math.exp(-1 / t)), rel=1e-12)


def test_info_nce_fully_masked_queue_is_zero() -> None:
    q = _unit(3, 5)
    queue = _unit(4, 5, seed=9)
    mask = torch.ones(3, 4, dtype=torch.bool)
    assert float(info_nce(q, q, queue, 0.2, self_mask=mask)) == pytest.approx(0.0, abs=1e-12)


def test_moco_logits_layout() -> None:
    q, k, queue = _unit(2, 3), _unit(2, 3, seed=4), _unit(5, 3, seed=5)
    logits = moco_logits(q, k, queue, 0.5)
    assert logits.shape == (2, 6)
    torch.testing.assert_close(logits[:, 0], (q * k).sum(1) / 0.5)
    torch.testing.assert_close(logits[:, 1:], q @ queue.T / 0.5)


def test_info_nce_falls_under_sgd() -> None:
    torch.manual_seed(0)
    raw = torch.randn(8, 16, requires_grad=True)
    k = F.normalize(torch.randn(8, 16), dim=1)
    queue = F.normalize(torch.randn(64, 16), dim=1)
    opt = torch.optim.SGD([raw], lr=5.0)
    losses = []
    for _ in range(20):
        loss = info_nce(F.normalize(raw, dim=1), k, queue, 0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.25 * losses[0]


@pytest.mark.parametrize(
    "p,z,expected",
    [
        ([[1.0, 0.0]], [[3.0, 0.0]], 0.0),  # parallel (scale does not matter)
        ([[1.0, 0.0]], [[0.0, 2.0]], 2.0),  # orthogonal
        ([[1.0, 1.0]], [[-1.0, -1.0]], 4.0),  # opposite
        ([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]], 1.0),  # mean of 0 and 2
    ],
)
def test_byol_loss_closed_form(p, z, expected) -> None:
    assert float(byol_loss(torch.tensor(p), torch.tensor(z))) == pytest.approx(expected, abs=1e-6)


def test_byol_loss_equals_normalised_mse() -> None:
    p, z = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    ref = ((F.normalize(p, dim=1) - F.normalize(z, dim=1)) ** 2).sum(1).mean()
    assert float(byol_loss(p, z)) == pytest.approx(float(ref), rel=1e-12)


def test_byol_loss_falls_under_sgd() -> None:
    torch.manual_seed(0)
    p = torch.randn(8, 16, requires_grad=True)
    z = torch.randn(8, 16)
    opt = torch.optim.SGD([p], lr=5.0)
    first = None
    for _ in range(20):
        loss = byol_loss(p, z)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(byol_loss(p, z).detach()) < 0.2 * first


def test_mean_pairwise_cosine_matches_loop() -> None:
    z = torch.randn(5, 4, dtype=torch.float64)
    zn = F.normalize(z, dim=1)
    ref = sum(float(zn[i] @ zn[j]) for i in range(5) for j in range(5) if i != j) / 20
    assert float(mean_pairwise_cosine(z)) == pytest.approx(ref, rel=1e-6)
    assert float(mean_pairwise_cosine(torch.ones(4, 3))) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda: info_nce(torch.zeros(2, 3), torch.zeros(3, 3), torch.zeros(4, 3), 0.2),
        lambda: info_nce(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4, 5), 0.2),
        lambda: info_nce(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4, 3), 0.0),
        lambda: info_nce(
            torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4, 3), 0.2, self_mask=torch.zeros(2, 3, dtype=torch.bool)
        ),
        lambda: byol_loss(torch.zeros(2, 3), torch.zeros(2, 4)),
        lambda: mean_pairwise_cosine(torch.zeros(1, 3)),
    ],
)
def test_bad_arguments_raise_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()
