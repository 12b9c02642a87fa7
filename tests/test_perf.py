"""Machine-level settings: malloc tuning and thread sizing."""

from __future__ import annotations

import platform

import pytest
import torch

from oacl import perf


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_malloc_on_glibc() -> None:
    assert perf.tune_malloc() is True


def test_tune_malloc_rejects_negative_values() -> None:
    with pytest.raises(ValueError, match="-1"):
        perf.tune_malloc(trim_threshold=-1)


def test_configure_threads_splits_cores() -> None:
    before = torch.get_num_threads()
    try:
        assert perf.configure_threads(2, cores=8) == 4
        assert torch.get_num_threads() == 4
        assert perf.configure_threads(4, cores=2) == 1  # never below one thread
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        perf.configure_threads(0)
    assert perf.usable_cores() >= 1
