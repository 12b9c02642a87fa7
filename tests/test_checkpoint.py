"""Checkpoints: atomic save, validated load, backbone export round trip, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import oacl.io
from oacl.errors import CheckpointError
from oacl.io.checkpoint import (
    TRAIN_FORMAT,
    clean_state_dict,
    export_backbone,
    load_backbone,
    load_checkpoint,
    load_encoder_projector,
    read_backbone,
    save_checkpoint,
)
from oacl.models.byol import BYOL
from oacl.models.moco import MoCo

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def moco() -> MoCo:
    torch.manual_seed(0)
    model = MoCo("resnet18", "s1", proj_hidden=32, proj_dim=8, queue_size=16)
    model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.arange(4))  # move BN stats off init
    return model


def _train_ckpt(model, path: Path) -> None:
    save_checkpoint(
        path,
        {
            "format": TRAIN_FORMAT,
            "method": model.name,
            "arch": model.arch,
            "stem": model.stem,
            "epoch": 1,
            "model": model.state_dict(),
            "optimizer": {},
            "params": {"seed": 0},
        },
    )


def test_backbone_round_trip(tmp_path: Path, moco: MoCo) -> None:
    path = tmp_path / "backbone.pt"
    export_backbone(path, moco, image_size=32, mean=MEAN, std=STD, params={"k": 1})
    encoder, projector = load_encoder_projector(path, method="moco", arch="resnet18")
    x = torch.randn(3, 3, 32, 32)
    moco.eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), moco.encoder_q(x))
        torch.testing.assert_close(projector(encoder(x)), moco.projector_q(moco.encoder_q(x)))
    assert encoder.conv1.stride == (1, 1)  # the stem came back
    assert not encoder.training and not projector.training
    net = oacl.io.load_backbone(path)
    assert isinstance(net, type(encoder))
    assert set(net.state_dict()) == set(moco.encoder_q.state_dict())
    assert not any(k.startswith(("fc.", "module.", "encoder")) for k in net.state_dict())
    meta = read_backbone(path)
    assert (meta["image_size"], meta["mean"], meta["params"]) == (32, list(MEAN), {"k": 1})


def test_byol_exports_online_networks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BYOL("resnet18", proj_hidden=16, proj_dim=8, pred_hidden=16)
    export_backbone(tmp_path / "b.pt", model, image_size=32, mean=MEAN, std=STD)
    enc, proj = load_encoder_projector(tmp_path / "b.pt", method="byol")
    for a, b in zip(proj.state_dict().values(), model.projector_online.state_dict().values()):
        assert torch.equal(a, b)


def test_training_checkpoint_round_trip(tmp_path: Path, moco: MoCo) -> None:
    path = tmp_path / "c.pt"
    _train_ckpt(moco, path)
    state = load_checkpoint(path, method="moco", arch="resnet18")
    assert torch.equal(state["model"]["queue"], moco.queue)
    assert int(state["model"]["queue_ptr"]) == 4
    assert not list(tmp_path.glob(".*.tmp"))  # nothing left beside it


def test_truncated_file_is_rejected(tmp_path: Path, moco: MoCo) -> None:
    path = tmp_path / "backbone.pt"
    export_backbone(path, moco, image_size=32, mean=MEAN, std=STD)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"backbone\.pt.*(truncated|corrupt)"):
        load_backbone(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_garbage_is_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="x.pt"):
        load_checkpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone(tmp_path / "nope.pt")


def test_other_architecture_and_method_are_rejected(tmp_path: Path, moco: MoCo) -> None:
    b, c = tmp_path / "b.pt", tmp_path / "c.pt"
    export_backbone(b, moco, image_size=32, mean=MEAN, std=STD)
    _train_ckpt(moco, c)
    with pytest.raises(CheckpointError, match="architecture 'resnet18', expected 'resnet50'"):
        load_backbone(b, arch="resnet50")
    with pytest.raises(CheckpointError, match="method 'moco', expected 'byol'"):
        load_checkpoint(c, method="byol")
    with pytest.raises(CheckpointError, match="format 'oacl.train/1'"):
        load_backbone(c)  # a training checkpoint is not an exported backbone


def test_mismatched_weights_are_rejected(tmp_path: Path, moco: MoCo) -> None:
    path = tmp_path / "b.pt"
    export_backbone(path, moco, image_size=32, mean=MEAN, std=STD)
    obj = torch.load(path, weights_only=True)
    obj["arch"] = "resnet50"  # metadata that does not fit the weights
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="encoder weights in .*b.pt do not fit"):
        load_backbone(path)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": TRAIN_FORMAT, "obj": Path("x")}, path)  # needs full unpickling
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)


def test_clean_state_dict() -> None:
    sd = {"module._orig_mod.conv1.weight": 1, "module.fc.bias": 2, "layer1.0.bn1.weight": 3}
    assert clean_state_dict(sd) == {"conv1.weight": 1, "fc.bias": 2, "layer1.0.bn1.weight": 3}
