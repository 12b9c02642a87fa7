"""pretrain@<method> from a checkpoint file: the exported backbone holds the file's weights, bad paths are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from oacl.config import ConfigError, Params, parse_section
from oacl.io.checkpoint import load_encoder_projector
from oacl.train.imported import import_file, run_import
from oacl.train.pretrain import PretrainPaths
from stagekit import SMOKE, deep_update, export_tiny_backbone


def _params(image_size: int = 0, **imports: str) -> Params:
    raw = deep_update(json.loads(json.dumps(SMOKE)), {"pretrain": {"imports": imports, "image_size": image_size}})
    return parse_section(Params, raw)


def test_import_writes_the_stage_outputs_with_the_same_weights(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        source = export_tiny_backbone(tmp_path / "artifacts" / "imported" / "moco" / "mine.pt", "moco", seed=3)
        params = _params(moco="artifacts/imported/moco/mine.pt")
        assert import_file(params, "moco") == Path("artifacts/imported/moco/mine.pt")
        assert import_file(params, "byol") is None
        paths = PretrainPaths.under(tmp_path / "out", "moco")
        metrics = run_import(params, "moco", paths)
    finally:
        os.chdir(cwd)
    enc_a, proj_a = load_encoder_projector(source)
    enc_b, proj_b = load_encoder_projector(paths.model_dir / "backbone.pt", method="moco", arch="resnet18")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(enc_b(x), enc_a(x), rtol=0, atol=0)
    torch.testing.assert_close(proj_b(enc_b(x)), proj_a(enc_a(x)), rtol=0, atol=0)
    assert metrics["epochs"] == 0 and metrics["format"] == "oacl" and len(metrics["sha256"]) == 64
    assert json.loads(paths.metrics.read_text()) == metrics
    assert (paths.plots_dir / "loss.png").is_file() and (paths.live_dir / "metrics.json").is_file()


@pytest.mark.parametrize(
    "value", ["elsewhere/moco.pt", "artifacts/imported/byol/moco.pt", "/abs/moco.pt", "artifacts/imported/moco/../x.pt"]
)
def test_an_import_outside_its_folder_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"pretrain\.imports\.moco"):
        _params(moco=value)


def test_a_stem_other_than_the_params_is_refused(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        export_tiny_backbone(tmp_path / "artifacts" / "imported" / "moco" / "mine.pt", "moco")
        params = parse_section(
            Params,
            deep_update(
                json.loads(json.dumps(SMOKE)),
                {"pretrain": {"stem": "s1", "imports": {"moco": "artifacts/imported/moco/mine.pt"}}},
            ),
        )
        with pytest.raises(ConfigError, match="stem"):
            run_import(params, "moco", PretrainPaths.under(tmp_path / "out", "moco"))
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "out" / "models" / "pretrain-moco" / "backbone.pt").exists()


def test_a_published_moco_v2_checkpoint_becomes_the_vanilla_model(tmp_path: Path) -> None:
    """facebookresearch/moco's layout (head Linear-ReLU-Linear, no BN) is re-exported in the project's format."""
    from test_published import moco_v2

    folder = tmp_path / "artifacts" / "imported" / "moco"
    folder.mkdir(parents=True)
    source = moco_v2(folder)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        params = _params(image_size=32, moco=f"artifacts/imported/moco/{source.path.name}")
        paths = PretrainPaths.under(tmp_path / "out", "moco")
        metrics = run_import(params, "moco", paths)
    finally:
        os.chdir(cwd)
    assert (
        metrics["format"] == "facebookresearch/moco" and metrics["image_size"] == 32
    )  # the file records none: pretrain.image_size
    encoder, projector = load_encoder_projector(paths.model_dir / "backbone.pt", method="moco")
    source.encoder.eval(), source.head.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(encoder(x), source.encoder(x))
    torch.testing.assert_close(projector(encoder(x)), source.head(source.encoder(x)))
