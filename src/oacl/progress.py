"""Progress of a long loop: a tqdm bar on a terminal, log lines in a file.

tqdm redraws its bar with carriage returns; in a file (``dvc repro > log``, CI logs) that is
thousands of updates glued into one line. :func:`progress` therefore returns a tqdm bar only when
the stream is a terminal, and otherwise a :class:`LogProgress` that writes one ``logging`` line at
every ``every`` fraction of the total (10 % by default) and at the end, with the rate, the ETA
and the last postfix (loss, img/s). Both answer ``update`` / ``set_postfix`` / ``close`` and work
as context managers, so a loop is written once for both.

``OACL_PROGRESS=bar|log`` overrides the choice (say, bars in a ``tmux`` log, or log lines on a
terminal).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Protocol, TypeVar

__all__ = ["Progress", "LogProgress", "progress", "track", "use_bars"]

T = TypeVar("T")

log = logging.getLogger("oacl.progress")


class Progress(Protocol):
    """What the loops call: the part of tqdm's interface both implementations have."""

    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, refresh: bool = True, **kwargs: Any) -> Any: ...

    def close(self) -> Any: ...


def _clock(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour) of a duration; ``?`` when unknown."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LogProgress:
    """Progress as log lines: ``<desc>: 37/184 step (20 %), 12.3 step/s, elapsed 0:03, ETA 0:12, loss=…``.

    A line is written when the count crosses the next multiple of ``every`` × total (and once at
    :meth:`close` if the last count was not logged). ``total`` 0 or None: a line at close only.
    No carriage returns, no terminal codes.
    """

    def __init__(
        self,
        total: int | None,
        *,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        every: float = 0.1,
        logger: logging.Logger | None = None,
    ) -> None:
        if not 0.0 < every <= 1.0:
            raise ValueError(f"every must be in (0, 1], got {every!r}")
        self.total = int(total or 0)
        self.desc = desc
        self.unit = unit
        self.n = int(initial)
        self.initial = int(initial)
        self.every = every
        self.log = logger or log
        self.postfix: dict[str, Any] = {}
        self._t0 = time.perf_counter()
        self._logged = self.n
        self._next = self._next_mark(self.n)
        self._closed = False

    def _next_mark(self, n: int) -> int:
        if not self.total or n >= self.total:
            return -1
        step = max(1, round(self.total * self.every))
        return min(self.total, (n // step + 1) * step)

    def line(self) -> str:
        """The current state as one line (what :meth:`update` logs)."""
        elapsed = time.perf_counter() - self._t0
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 and done > 0 else float("nan")
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f} %)"
        parts.append(f"{rate:.3g} {self.unit}/s" if rate == rate else f"? {self.unit}/s")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.total and self.n < self.total:
            parts.append(f"ETA {_clock((self.total - self.n) / rate if rate == rate and rate > 0 else float('nan'))}")
        line = ", ".join(parts)
        if self.postfix:
            line += ", " + ", ".join(f"{k}={v}" for k, v in self.postfix.items())
        return line

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._next >= 0 and self.n >= self._next:
            self.log.info("%s", self.line())
            self._logged = self.n
            self._next = self._next_mark(self.n)

    def set_postfix(self, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {k: v for k, v in kwargs.items()}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n != self._logged or not self.total:
            self.log.info("%s", self.line())

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def use_bars(stream: IO[str] | None = None) -> bool:
    """True when progress should be a tqdm bar: ``OACL_PROGRESS=bar``, or the stream (stderr) is a terminal."""
    choice = os.environ.get("OACL_PROGRESS", "").strip().lower()
    if choice in ("bar", "bars", "tqdm"):
        return True
    if choice in ("log", "lines", "file"):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def progress(
    total: int | None,
    *,
    desc: str,
    unit: str = "it",
    initial: int = 0,
    every: float = 0.1,
    mininterval: float = 0.1,
) -> Progress:
    """A tqdm bar on a terminal, else a :class:`LogProgress` (see the module docstring)."""
    if use_bars():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, mininterval=mininterval)
    return LogProgress(total, desc=desc, unit=unit, initial=initial, every=every)


def track(items: Iterable[T], *, total: int | None = None, desc: str, unit: str = "it") -> Iterator[T]:
    """Iterate over ``items`` with :func:`progress` (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = progress(total, desc=desc, unit=unit)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
