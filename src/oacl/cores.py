"""How many CPU cores this process may use, without importing torch (``generate`` does not)."""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity masks
        return os.cpu_count() or 1
