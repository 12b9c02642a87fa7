"""benchmarks/screen.py: --donor-fill stretch, the diagnostic stand-in for BG-HardMix's tiled donor backgrounds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from oacl.augment import bgmix

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "screen.py"
spec = importlib.util.spec_from_file_location("screen", SCRIPT)
screen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(screen)


def test_stretch_fills_the_view_without_the_tiling_seams():
    ramp = torch.arange(0, 200, 25, dtype=torch.uint8).repeat(3, 5, 1)  # (3, 5, 8): 0, 25, ..., 175 left to right
    tiled = bgmix.tile_patch(ramp, (10, 24))
    stretched = screen.stretch_patch(ramp, (10, 24))
    assert stretched.shape == tiled.shape == (3, 10, 24) and stretched.dtype == torch.uint8
    # tiling restarts the ramp twice (two seams per row); stretching keeps it one ramp, end to end
    assert (tiled[0, 0].int().diff() < 0).sum() == 2
    assert (stretched[0, 0].int().diff() >= 0).all()
    assert stretched[0, 0, 0] == 0 and stretched[0, 0, -1] == 175


def test_donor_fill_needs_the_hardmix_oracle(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["screen.py", "--tag", "t", "--what", "moco", "--donor-fill", "stretch"])
    with pytest.raises(SystemExit) as exit_:
        screen.main()
    assert exit_.value.code == 2
    assert "--donor-fill stretch changes hardmix_gt's donor backgrounds" in capsys.readouterr().err
    assert bgmix.tile_patch is not screen.stretch_patch  # refused before anything was patched
