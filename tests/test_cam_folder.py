"""``python -m oacl.cam``: ContraCAM on a folder of mixed-size JPEG / PNG images (:mod:`oacl.cam.folder`).

A tiny MoCo exported by the project (and a fabricated facebookresearch/moco checkpoint) over a
folder of discs on dark backgrounds of several sizes and colour modes: the store is valid,
its ids are the file names, its boxes land inside the original images, and every user error
(corrupt image, missing / head-less / mismatched checkpoint) is one line, exit 2, no output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oacl.cam.folder import FolderImages, cam_folder, list_images
from oacl.errors import CheckpointError, DataError
from oacl.io.camstore import CamStore
from oacl.io.checkpoint import export_backbone
from oacl.io.geometry import RESIZE_FULL, boxes_to_image
from oacl.models.moco import MoCo

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
# (file name, width, height, PIL mode): JPEG and PNG, landscape / portrait / square, grey and CMYK too
IMAGES = [
    ("a_wide.jpg", 48, 32, "RGB"),
    ("b_tall.png", 32, 48, "RGB"),
    ("c_square.PNG", 40, 40, "RGB"),
    ("d_grey.png", 36, 28, "L"),
    ("e_cmyk.jpeg", 30, 44, "CMYK"),
]
FAST = {"iters": 2, "expand_res": 2, "crf": True, "batch_size": 4, "workers": 1, "amp": False}


def disc(width: int, height: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8: a bright disc (radius a quarter of the short side) on a dark noisy background."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    r = min(width, height) // 4
    cx, cy = rng.integers(r, width - r), rng.integers(r, height - r)
    yy, xx = np.mgrid[:height, :width]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (230, 220, 60)
    return img


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for i, (name, w, h, mode) in enumerate(IMAGES):
        im = Image.fromarray(disc(w, h, i)).convert(mode)
        im.save(root / name, format="JPEG" if name.lower().endswith((".jpg", ".jpeg")) else "PNG")
    (root / "notes.txt").write_text("not an image")  # ignored: not a JPEG / PNG name
    (root / "sub").mkdir()  # ignored: not searched recursively
    return root


@pytest.fixture
def backbone(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = MoCo("resnet18", "cifar", proj_hidden=32, proj_dim=8, queue_size=16)
    model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.arange(4))  # BN statistics off their init
    path = tmp_path / "backbone.pt"
    export_backbone(path, model, image_size=32, mean=MEAN, std=STD)
    return path


def _check_store(out: Path, folder: Path, side: int) -> None:
    names = sorted(name for name, *_ in IMAGES)
    with CamStore(out, expected_ids=names) as store:
        assert store.ids == tuple(names)
        assert store.image_size == (side, side) and store.mask_geometry == RESIZE_FULL
        assert (store.attrs["iters"], store.attrs["expand_res"], store.attrs["crf"]) == (2, 2, True)
        assert store.read_all("masks").shape == (len(names), side, side)
        assert set(np.unique(store.read_all("masks_refined"))) <= {0, 1}
        n_boxes = 0
        for name in names:
            with Image.open(folder / name) as im:
                w, h = im.size
            px = boxes_to_image(store.boxes(name), (h, w), store.mask_geometry)  # (k, 4) pixels of the original
            np.testing.assert_allclose(px, store.boxes(name) * np.asarray([w, h, w, h], np.float32), rtol=1e-6)
            assert (px[:, 0] >= 0).all() and (px[:, 1] >= 0).all() and (px[:, 2] <= w).all() and (px[:, 3] <= h).all()
            assert (px[:, 2] > px[:, 0]).all() and (px[:, 3] > px[:, 1]).all()
            n_boxes += len(px)
        assert n_boxes > 0


def test_a_folder_of_mixed_images_gives_a_valid_store(tmp_path: Path, folder: Path, backbone: Path) -> None:
    out, sheet = tmp_path / "out" / "masks.h5", tmp_path / "out" / "sheet.png"
    result = cam_folder(backbone, folder, out, sheet=sheet, device="cpu", **FAST)
    assert result.side == 32  # the backbone's recorded image_size
    assert result.ids == sorted(name for name, *_ in IMAGES)
    assert dict(zip(result.ids, result.sizes)) == {name: (h, w) for name, w, h, _ in IMAGES}
    _check_store(out, folder, 32)
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert sorted(p.name for p in out.parent.iterdir()) == ["masks.h5", "sheet.png"]  # no temporaries left


def test_a_published_moco_checkpoint_works_too(tmp_path: Path, folder: Path) -> None:
    from test_published import moco_v2

    ckpt = moco_v2(tmp_path)
    out = tmp_path / "masks.h5"
    result = cam_folder(ckpt.path, folder, out, image_size=32, device="cpu", **FAST)
    assert result.checkpoint_source == "facebookresearch/moco"
    _check_store(out, folder, 32)


def test_images_are_resized_whole(folder: Path) -> None:
    data = FolderImages(list_images(folder), 24)
    item = data[data.ids.index("a_wide.jpg")]
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.uint8
    assert data.sizes[data.ids.index("e_cmyk.jpeg")] == (44, 30)


def test_corrupt_and_truncated_images_and_bad_checkpoints_write_nothing(
    tmp_path: Path, folder: Path, backbone: Path
) -> None:
    out = tmp_path / "masks.h5"
    data = (folder / "a_wide.jpg").read_bytes()
    (folder / "a_wide.jpg").write_bytes(data[: len(data) // 2])  # header intact, pixels cut short
    with pytest.raises(DataError, match=r"a_wide\.jpg cannot be decoded"):
        cam_folder(backbone, folder, out, device="cpu", **FAST)
    (folder / "a_wide.jpg").write_bytes(data)

    obj = torch.load(backbone, weights_only=True)
    torch.save({**obj, "arch": "resnet50"}, tmp_path / "r50.pt")  # says ResNet-50, holds ResNet-18 weights
    with pytest.raises(CheckpointError, match=r"encoder weights in .*r50\.pt do not fit"):
        cam_folder(tmp_path / "r50.pt", folder, out, device="cpu", **FAST)

    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "supervised.pth")
    with pytest.raises(CheckpointError, match="without a projection head, which ContraCAM's contrastive score needs"):
        cam_folder(tmp_path / "supervised.pth", folder, out, device="cpu", **FAST)
    assert not out.exists() and not list(tmp_path.glob(".masks.h5*"))


def _run(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "oacl.cam", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["corrupt-image", "missing-checkpoint"])
def test_command_line_errors_are_one_line_and_exit_2(tmp_path: Path, folder: Path, backbone: Path, case: str) -> None:
    out, sheet = tmp_path / "masks.h5", tmp_path / "sheet.png"
    if case == "corrupt-image":
        (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
        ckpt, culprit, expect = backbone, folder / "broken.jpg", "cannot be decoded (corrupt or not an image)"
    else:
        ckpt = tmp_path / "nope.pt"
        culprit, expect = ckpt, "does not exist"
    proc = _run("--checkpoint", ckpt, "--images", folder, "--out", out, "--sheet", sheet, "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    assert str(culprit) in errors[0] and expect in errors[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not sheet.exists()
