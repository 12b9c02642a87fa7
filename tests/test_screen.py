"""benchmarks/screen.py: --donor-fill stretch, the diagnostic stand-in for BG-HardMix's tiled donor backgrounds,
--byol-tau-final, BYOL's target EMA ramp ended below 1, and renderer variants drawn as asked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oacl.augment import bgmix
from oacl.models import byol, ema

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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--what", "moco", "--donor-fill", "stretch"], "--donor-fill stretch changes hardmix_gt's donor backgrounds"),
        (["--what", "byol", "--byol-tau-final", "1.5"], "--byol-tau-final must be in [0, 1], got 1.5"),
    ],
)
def test_bad_flags_are_refused_before_anything_is_patched(monkeypatch, capsys, argv, message):
    monkeypatch.setattr(sys, "argv", ["screen.py", "--tag", "t", *argv])
    with pytest.raises(SystemExit) as exit_:
        screen.main()
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert bgmix.tile_patch is not screen.stretch_patch
    assert byol.cosine_momentum is ema.cosine_momentum


def test_byol_tau_final_ends_the_target_ramp_there(monkeypatch):
    monkeypatch.setattr(byol, "cosine_momentum", byol.cosine_momentum)  # restored after the test
    screen.end_byol_target_at(0.99)
    torch.manual_seed(0)
    model = byol.BYOL("resnet18", proj_hidden=16, proj_dim=8, pred_hidden=16, tau_base=0.9)
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(1.0)
    for progress, tau in ((1.0, 0.99), (0.5, 0.945)):  # BYOL's cosine from 0.9, now to 0.99: 0.945 halfway
        target = [p.clone() for p in model.projector_target.parameters()]
        model.update_target(progress)
        for p, t, o in zip(model.projector_target.parameters(), target, model.projector_online.parameters()):
            torch.testing.assert_close(p, tau * t + (1.0 - tau) * o)


def test_a_variant_benchmark_is_written_in_this_process_where_the_patch_lives(tmp_path, monkeypatch):
    import h5py

    from oacl.data import benchmark

    # with more than one usable core the generator writes its set groups in spawned processes, which
    # start without this process's patched renderer: the variant must be written here
    monkeypatch.setattr(benchmark, "usable_cores", lambda: 3)
    tiny = {
        "seed": 3,
        "image_size": 32,
        "num_classes": 4,
        "num_backgrounds": 4,
        "multi": {"train": 6, "val": 2, "test": 2, "crop_size": 24},
        "single": {"train": 12, "val": 2, "test": 8},
        "shift": {"test": 2, "corruptions": ["fog"], "severities": [1], "styles": ["sketch"]},
    }
    shared_background = {}
    for renderer in (None, "one-scene"):
        root = screen.benchmark_dir({"data": {"benchmark": tiny}}, renderer, base=tmp_path)
        with h5py.File(root / "single" / "train.h5", "r") as f:
            images, masks = f["images"][()], f["masks"][()]
        both_background = (masks == 0) & (masks[:1] == 0)  # (N, H, W): background in image i and in image 0
        shared_background[renderer] = all(
            np.array_equal(images[i][both_background[i]], images[0][both_background[i]]) for i in range(len(images))
        )
    # one-scene: every image shows the same scene around its object; the plain benchmark does not
    assert shared_background == {None: False, "one-scene": True}
