"""benchmarks/cam_diagnostics.py: the screened score temperature, the grid-aligned upsampling, the bands."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oacl.cam.contracam import contrastive_score

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cam_diagnostics.py"
spec = importlib.util.spec_from_file_location("cam_diagnostics", SCRIPT)
diag = importlib.util.module_from_spec(spec)
spec.loader.exec_module(diag)


def test_temperature_divides_every_logit_of_the_score():
    torch.manual_seed(0)
    q, k, n = (F.normalize(torch.randn(5, 8), dim=1) for _ in range(3))
    tau = 0.2
    got = diag.with_temperature(contrastive_score, tau)(q, k, [n])
    # by hand: log sum_i exp(q_i . k_i / tau) - log sum_j exp(q_b . n_j / tau), the diagonal logit set to 0
    pos = torch.exp((q * k).sum(1) / tau).sum()
    logits = (q @ n.T / tau) * (1 - torch.eye(5))
    want = torch.log(pos) - torch.log(torch.exp(logits).sum(1))
    torch.testing.assert_close(got, want)
    assert diag.with_temperature(contrastive_score, 1.0) is contrastive_score


@pytest.mark.parametrize(("row", "col"), [(0, 0), (2, 1), (3, 3)])
def test_aligned_upsampling_puts_cell_j_on_pixel_s_j(row, col):
    cam = torch.zeros(1, 1, 4, 4)
    cam[0, 0, row, col] = 1.0
    up = diag.aligned_upsample(cam, (64, 64))[0, 0]
    assert up.shape == (64, 64) and float(up.min()) == 0.0 and float(up.max()) == 1.0
    peak = divmod(int(up.argmax()), 64)
    assert peak == (16 * row, 16 * col)


def test_contracams_own_upsampling_centres_an_inner_cell_half_a_cell_further():
    cam = torch.zeros(1, 1, 4, 4)
    cam[0, 0, 2, 1] = 1.0
    own = diag.contracam_module._upsample_normalize(cam, (64, 64))[0, 0]
    r, c = divmod(int(own.argmax()), 64)
    assert r in (39, 40) and c in (23, 24)  # pixel 16 j + 7.5


def test_bands_are_the_means_of_four_horizontal_strips():
    maps = np.broadcast_to(np.arange(8, dtype=float)[None, :, None], (2, 8, 3))  # value = row index
    assert diag.bands(maps) == "0.50 2.50 4.50 6.50"


def test_alignments_move_an_off_centre_map_off_its_mask():
    from oacl.localization import pxap

    masks = np.zeros((2, 16, 16), np.uint8)
    masks[:, 1:5, 9:15] = 1  # top right, wider than tall: every move of the map misses it
    scores = {
        name: pxap(masks, np.ascontiguousarray(f(masks.astype(np.float32)))) for name, f in diag.ALIGNMENTS.items()
    }
    assert scores["as is"] == 100.0
    assert all(v < 40 for name, v in scores.items() if name != "as is")
    assert 0 in diag.SHIFTS
