"""Machine-level settings: malloc tuning and thread sizing."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

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


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity masks off Linux")
def test_core_count_follows_the_affinity_mask_without_torch() -> None:
    # generate counts cores too, and must not import torch: run it in a process pinned to one core
    code = (
        "import os, sys\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from oacl.cores import usable_cores\n"
        "import oacl.data.benchmark\n"
        "torch_free = 'torch' not in sys.modules\n"
        "from oacl.cam.postprocess import resolve_workers\n"
        "print(usable_cores(), resolve_workers(0), resolve_workers(3), torch_free)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "3", "True"]
    assert perf.usable_cores() == len(os.sched_getaffinity(0))


def test_resolve_amp() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert perf.resolve_amp(True, cpu) is True and perf.resolve_amp(False, cuda) is False
    assert perf.resolve_amp("auto", cuda) is True
    assert perf.resolve_amp("auto", cpu) is perf.cpu_has_native_bf16()
    with pytest.raises(ValueError, match="amp"):
        perf.resolve_amp("on", cpu)


def test_cpu_bf16_check_agrees_with_the_cpu_flags() -> None:
    """torch's oneDNN check against /proc/cpuinfo: no AVX-512 at all means no native bf16."""
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if not any(f.startswith("avx512") or f.startswith("amx") for f in flags):
        assert perf.cpu_has_native_bf16() is False
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        assert perf.cpu_has_native_bf16() is True
