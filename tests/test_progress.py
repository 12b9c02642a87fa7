"""Progress (oacl.progress): tqdm on a terminal, one log line per ~10 % with rate and ETA in a file."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oacl import progress as prog

REPO = Path(__file__).resolve().parents[1]


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_every_tenth_with_rate_eta_and_postfix(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="oacl.progress"):
        bar = prog.LogProgress(50, desc="moco", unit="step")
        for i in range(50):
            bar.set_postfix(loss=f"{1.0 / (i + 1):.3f}")
            bar.update(1)
        bar.close()
        bar.close()  # idempotent
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10, lines  # 5, 10, ..., 50 steps: one line per 10 %
    assert lines[0].startswith("moco: 5/50 step (10 %), ") and "step/s" in lines[0] and "ETA " in lines[0]
    assert lines[-1].startswith("moco: 50/50 step (100 %)") and "ETA" not in lines[-1] and "loss=0.020" in lines[-1]
    assert not any("\r" in line for line in lines)


def test_resumed_counts_short_totals_and_unknown_totals(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="oacl.progress"):
        bar = prog.LogProgress(3, desc="detect", unit="step", initial=1)
        bar.update(1)
        bar.update(1)
        bar.close()
        list(prog.track(iter(range(4)), desc="stream", unit="batch"))  # no len: one line at the end
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("detect: 2/3 step (67 %)") and lines[1].startswith("detect: 3/3 step (100 %)")
    assert lines[2].startswith("stream: 4 batch, ") and len(lines) == 3
    with pytest.raises(ValueError, match="every must be in"):
        prog.LogProgress(10, every=0.0)


def test_bars_on_a_terminal_lines_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OACL_PROGRESS", raising=False)
    assert prog.use_bars(FakeTTY()) and not prog.use_bars(io.StringIO())
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(prog.progress(10, desc="x"), prog.LogProgress)
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    bar = prog.progress(10, desc="x")
    assert type(bar).__name__ == "tqdm"
    bar.close()
    monkeypatch.setenv("OACL_PROGRESS", "log")
    assert not prog.use_bars(FakeTTY())
    monkeypatch.setenv("OACL_PROGRESS", "bar")
    assert prog.use_bars(io.StringIO())


def test_clock() -> None:
    assert prog._clock(65) == "1:05" and prog._clock(3725) == "1:02:05" and prog._clock(float("nan")) == "?"


def test_a_stage_logging_to_a_file_writes_no_carriage_returns(tmp_path: Path) -> None:
    """The contracam loop as a stage runs it (logging set up by oacl.cli), stderr into a file."""
    code = (
        "import logging, time\n"
        "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')\n"
        "from oacl.progress import progress, track\n"
        "for _ in track(range(40), desc='contracam', unit='batch'): pass\n"
        "bar = progress(20, desc='moco', unit='step')\n"
        "for i in range(20):\n"
        "    bar.set_postfix(loss=f'{i:.3f}'); bar.update(1)\n"
        "bar.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("OACL_PROGRESS", None)
    log = tmp_path / "stage.log"
    with open(log, "wb") as f:
        subprocess.run([sys.executable, "-c", code], stderr=f, stdout=f, env=env, check=True, timeout=60)
    data = log.read_bytes()
    assert b"\r" not in data
    lines = data.decode().splitlines()
    assert sum("contracam: " in line for line in lines) == 10 and sum("moco: " in line for line in lines) == 10
