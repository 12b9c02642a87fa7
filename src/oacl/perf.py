"""Machine-level settings that matter more than model tricks on a small CPU box.

- glibc's malloc returns large freed blocks to the OS after every step (mmap'd blocks and
  heap trimming), so the next step page-faults them in again. :func:`tune_malloc` keeps them
  (``M_MMAP_MAX = 0``, a large ``M_TRIM_THRESHOLD``) through ``mallopt`` via ctypes — the
  same as the environment variables ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<bytes>``.
- Oversubscribed cores (two torch processes, or DataLoader workers each running their own
  OpenMP threads) slow steps several-fold. :func:`configure_threads` splits the cores this
  process may use among the local processes; :func:`worker_init` pins a DataLoader worker
  to one thread.
- :func:`autocast_context`: bf16 autocast (fp16 on GPUs without bf16) for training and
  feature extraction alike; :func:`resolve_amp` turns the params' ``amp: auto`` into on / off:
  on a GPU, or on a CPU whose oneDNN has native bf16 kernels (AVX-512 BF16 / AMX). On an
  AVX2-only CPU bf16 autocast is emulated and slow: a ResNet-18 (width 32) forward + backward
  of 128 images at 64 px took 4.4 s in bf16 against 0.45 s in fp32 here (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging

import torch

from oacl.cores import usable_cores

__all__ = [
    "tune_malloc",
    "usable_cores",
    "configure_threads",
    "worker_init",
    "resolve_device",
    "cpu_has_native_bf16",
    "resolve_amp",
    "autocast_context",
]

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

DEFAULT_TRIM_THRESHOLD = 1 << 30  # 1 GiB: freed memory below this stays in the heap


def tune_malloc(trim_threshold: int = DEFAULT_TRIM_THRESHOLD, mmap_max: int = 0) -> bool:
    """Keep freed memory in the process instead of handing it back to the OS after every step.

    Calls glibc ``mallopt(M_MMAP_MAX, mmap_max)`` and ``mallopt(M_TRIM_THRESHOLD,
    trim_threshold)``. Affects allocations made afterwards. Returns True when both calls
    succeeded, False on a libc without ``mallopt`` (musl, macOS), where it changes nothing.
    """
    if trim_threshold < 0 or mmap_max < 0:
        raise ValueError(f"trim_threshold and mmap_max must be >= 0, got {trim_threshold!r}, {mmap_max!r}")
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("mallopt not available; malloc left as is")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trim = min(trim_threshold, 2**31 - 1)
    ok = mallopt(_M_MMAP_MAX, int(mmap_max)) == 1 and mallopt(_M_TRIM_THRESHOLD, int(trim)) == 1
    if not ok:
        log.warning("mallopt refused M_MMAP_MAX=%d / M_TRIM_THRESHOLD=%d", mmap_max, trim)
    return ok


def configure_threads(local_procs: int = 1, *, cores: int | None = None) -> int:
    """Give this process ``cores // local_procs`` (at least 1) intra-op threads; return that number.

    ``local_procs`` is the number of torch processes sharing the machine (torchrun's
    ``LOCAL_WORLD_SIZE``). Inter-op threads are set to 1 (training is one op stream); that
    call is skipped if torch already started its inter-op pool.
    """
    if local_procs < 1:
        raise ValueError(f"local_procs must be >= 1, got {local_procs!r}")
    n = max(1, (cores if cores is not None else usable_cores()) // local_procs)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return n


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one thread per worker, torch's and OpenCV's (no oversubscription)."""
    import cv2  # imported here: most stages that import this module never start workers

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def resolve_device(device: str, key: str = "device") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a ConfigError naming ``key``."""
    from oacl.errors import ConfigError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"params: {key!r} is 'cuda' but no CUDA device is available")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX-512 BF16 or AMX), per torch."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(amp: bool | str, device: torch.device) -> bool:
    """The params' ``amp`` (``true`` / ``false`` / ``"auto"``) as a bool for ``device``.

    ``"auto"``: on for CUDA, and on a CPU only when :func:`cpu_has_native_bf16`; ``true`` and
    ``false`` force it either way.
    """
    if amp == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    if not isinstance(amp, bool):
        raise ValueError(f"amp must be true, false or 'auto', got {amp!r}")
    return amp


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled`` (fp16 on GPUs without bf16), else a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
