"""The pretrain stage on tiny set files in a temp dir: outputs, resume, bad params."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import make_scenes, write_scenes
from oacl.config import ConfigError, MocoConfig, Params, parse_section
from oacl.io import load_encoder_projector
from oacl.io.results import read_results
from oacl.train.pretrain import PretrainPaths, run_pretrain

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "pretrain": {
        "dataset": "both",
        "batch_size": 8,
        "knn_every": 1,
        "moco": {"epochs": 2, "queue_size": 16, "proj_hidden": 32},
        "byol": {"epochs": 2, "proj_hidden": 32, "pred_hidden": 32},
    }
}


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i, (rel, kind) in enumerate(
        [
            ("multi/train.h5", "multi"),
            ("multi/crops_train.h5", "crops"),
            ("multi/crops_val.h5", "crops"),
            ("single/train.h5", "single"),
            ("single/val.h5", "single"),
        ]
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_scenes(root / rel, make_scenes(n=16, size=32, seed=i), kind=kind, name=rel)
    return root


def _params_file(tmp_path: Path, data_root: Path, extra: dict | None = None) -> Path:
    raw = json.loads(json.dumps(TINY))
    raw["data"] = {"root": str(data_root)}
    for key, value in (extra or {}).items():
        raw["pretrain"].update(value) if key == "pretrain" else raw.update({key: value})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run_stage(params: Path, out: Path, method: str = "moco", *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "pretrain.py"),
            "--method",
            method,
            "--params",
            str(params),
            "--out-dir",
            str(out),
            *extra,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_stage_writes_everything(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "artifacts"
    proc = _run_stage(_params_file(tmp_path, data_root), out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    paths = PretrainPaths.under(out, "moco")
    assert set(json.loads(paths.metrics.read_text())) == {"final_loss", "knn/crops", "knn/single"}  # the headline
    metrics = read_results(paths.metrics)  # + eval/pretrain-moco/details.json
    assert metrics["epochs"] == 2 and metrics["steps"] == 8  # 32 images (both sets) / batch 8 x 2 epochs
    base_lr = MocoConfig().base_lr  # TINY leaves the default
    assert metrics["global_batch"] == 8 and metrics["effective_lr"] == pytest.approx(base_lr * 8 / 256)
    assert {"knn/crops", "knn/single", "final_loss", "images_per_s", "seconds"} <= set(metrics)
    encoder, projector = load_encoder_projector(paths.model_dir / "backbone.pt", method="moco", arch="resnet18")
    with torch.no_grad():
        assert projector(encoder(torch.randn(2, 3, 32, 32))).shape == (2, 128)
    ckpt = torch.load(paths.model_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and "queue" in ckpt["model"] and ckpt["params"]["moco"]["queue_size"] == 16
    loss_rows = (paths.live_dir / "plots" / "metrics" / "train" / "loss.tsv").read_text().strip().splitlines()
    assert len(loss_rows) == 1 + 2  # header + one row per epoch
    assert (paths.plots_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not (paths.cache_dir / "last.pt").exists()  # removed once the outputs are written


def test_seed_flag_trains_as_the_seed_param_does(tmp_path: Path, data_root: Path) -> None:
    """``--seed 3`` (an ``extra_seeds`` stage) gives the weights that ``pretrain.seed: 3`` gives, not seed 0's."""

    def weights(out: Path) -> dict:
        return torch.load(PretrainPaths.under(out, "byol").model_dir / "checkpoint.pt", weights_only=True)["model"]

    for d in "abc":
        (tmp_path / d).mkdir()
    runs = {
        "flag": (_params_file(tmp_path / "a", data_root, {"extra_seeds": [3]}), ("--seed", "3")),
        "param": (_params_file(tmp_path / "b", data_root, {"pretrain": {"seed": 3}}), ()),
        "seed0": (_params_file(tmp_path / "c", data_root), ()),
    }
    for name, (params, extra) in runs.items():
        proc = _run_stage(params, tmp_path / name, "byol", *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
    flag, param, seed0 = (weights(tmp_path / name) for name in runs)
    assert flag.keys() == param.keys()
    assert all(torch.equal(flag[k], param[k]) for k in flag)
    assert not all(torch.equal(flag[k], seed0[k]) for k in flag)


def test_killed_run_resumes(tmp_path: Path, data_root: Path) -> None:
    raw = yaml.safe_load(_params_file(tmp_path, data_root).read_text())
    params = parse_section(Params, raw)
    paths = PretrainPaths.under(tmp_path / "art", "byol")

    def kill(record, result):
        if record.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pretrain(params, "byol", paths, on_epoch_end=kill)
    assert (paths.cache_dir / "last.pt").exists() and not paths.metrics.exists()
    metrics = run_pretrain(params, "byol", paths)
    assert metrics["resumed_from_epoch"] == 1 and metrics["epochs"] == 2
    rows = (paths.live_dir / "plots" / "metrics" / "train" / "loss.tsv").read_text().strip().splitlines()
    assert len(rows) == 3  # the replayed first epoch and the second


def test_queue_larger_than_half_the_data_is_refused(tmp_path: Path, data_root: Path) -> None:
    proc = _run_stage(
        _params_file(tmp_path, data_root, {"pretrain": {"moco": {"epochs": 1, "queue_size": 17}}}), tmp_path / "a"
    )
    assert proc.returncode == 2
    assert "'pretrain.moco.queue_size' = 17 is more than half of the 32 training images" in proc.stderr


@pytest.mark.parametrize(
    "section,message",
    [
        ({"stem": "huge"}, "'pretrain.stem' = 'huge' is not one of"),
        ({"moco": {"temperature": 0}}, "'pretrain.moco.temperature' = 0.0 is out of range"),
        ({"batch_size": 1}, "'pretrain.batch_size' = 1 is out of range"),
        ({"nosuch": 1}, "unknown key 'pretrain.nosuch'"),
    ],
)
def test_bad_params_are_rejected(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_section(Params, {"pretrain": section})


def test_bad_params_stop_the_stage_before_work(tmp_path: Path, data_root: Path) -> None:
    proc = _run_stage(_params_file(tmp_path, data_root, {"pmix": 1.5}), tmp_path / "a")
    assert proc.returncode == 2 and "'pmix' = 1.5 is out of range" in proc.stderr
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_stage_under_torchrun(tmp_path: Path, data_root: Path) -> None:
    params = _params_file(
        tmp_path,
        data_root,
        {"pretrain": {"nproc": 2, "knn_every": 0, "moco": {"epochs": 1, "queue_size": 16, "proj_hidden": 32}}},
    )
    proc = _run_stage(params, tmp_path / "art")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_results(tmp_path / "art" / "metrics" / "pretrain-moco.json")
    assert metrics["processes"] == 2 and metrics["steps"] == 4


def test_view_settings_carry_the_crop_scale_and_blur_probability() -> None:
    from oacl.config import PretrainConfig
    from oacl.train.pretrain import view_settings

    paper = view_settings(PretrainConfig(), 64)
    assert (paper.size, paper.crop_scale, paper.blur_p) == (64, (0.08, 1.0), 0.5)  # appendix B.1
    short = view_settings(parse_section(PretrainConfig, {"blur_p": 0.0, "crop_scale": [0.2, 1.0]}), 32)
    assert (short.size, short.crop_scale, short.blur_p) == (32, (0.2, 1.0), 0.0)
    with pytest.raises(ConfigError, match="pretrain.blur_p"):
        parse_section(Params, {"pretrain": {"blur_p": 1.5}})
