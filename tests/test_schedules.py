"""The one learning-rate schedule: closed-form values of both warm-up forms and the cosine tail."""

from __future__ import annotations

import math

import pytest

from oacl.schedules import effective_lr, lr_at


def test_linear_scaling_rule() -> None:
    assert effective_lr(0.03, 512) == pytest.approx(0.06)


def test_cosine_without_warmup() -> None:
    assert lr_at(0, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(5, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(9, 10, 1.0) == pytest.approx(0.5 * (1 + math.cos(0.9 * math.pi)))
    assert lr_at(10, 10, 1.0) == pytest.approx(0.0, abs=1e-12)
    for bad in (-1, 11):
        with pytest.raises(ValueError, match="outside"):
            lr_at(bad, 10, 1.0)


def test_ssl_warmup_reaches_the_peak_on_its_last_step() -> None:
    assert [lr_at(i, 10, 1.0, warmup_steps=4) for i in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_at(4, 10, 1.0, warmup_steps=4) == pytest.approx(1.0)


def test_warmup_from_a_fraction_of_the_peak() -> None:
    # Detectron's linear warm-up factor: 0.1 x peak at step 0, the peak at step warmup_steps.
    assert lr_at(0, 100, 0.01, warmup_steps=10, warmup_start=0.1) == pytest.approx(0.001)
    assert lr_at(5, 100, 0.01, warmup_steps=10, warmup_start=0.1) == pytest.approx(0.0055)
    assert lr_at(10, 100, 0.01, warmup_steps=10, warmup_start=0.1) == pytest.approx(0.01)
    assert lr_at(55, 100, 0.01, warmup_steps=10, warmup_start=0.1) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="warmup_start"):
        lr_at(0, 10, 1.0, warmup_steps=2, warmup_start=1.5)
