"""Stage ``detect@<variant>`` on a tiny COCO-format multi-object set: outputs, variants, bad inputs.

The data root holds ``multi/{train,test}.h5`` and ``multi/instances_{train,test}.json`` built
from the shared tiny scenes (conftest); the fine-tune runs 2 steps with small heads, so the
numbers are plumbing checks (keys, ranges, counts), not detection quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from conftest import make_scenes
from oacl.cli import run_stage
from oacl.config import ConfigError, Params, parse_section
from oacl.errors import CheckpointError, DataError
from oacl.eval.detection import METRIC_KEYS, DetectPaths, run_detect
from oacl.io.checkpoint import export_backbone
from oacl.io.results import read_results
from oacl.models.moco import MoCo
from test_detection import write_coco_split

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "stages" / "detect.py"

DETECT = {
    "steps": 2,
    "batch_size": 4,
    "warmup_steps": 1,
    "image_size": 64,
    "fpn_channels": 32,
    "box_head_dim": 64,
    "mask_head_layers": 1,
    "mask_head_channels": 16,
    "rois_per_image": 32,
    "rpn_pre_nms_train": 100,
    "rpn_post_nms_train": 50,
    "rpn_pre_nms_test": 50,
    "rpn_post_nms_test": 30,
    "detections_per_image": 20,
    "eval_batch": 8,
    "plot_images": 3,
    "threads": 1,
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("detect") / "data"
    write_coco_split(root / "multi", "train", make_scenes(n=12, size=32, seed=0))
    write_coco_split(root / "multi", "test", make_scenes(n=8, size=32, seed=1))
    return root


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    moco = MoCo("resnet18", "standard", proj_hidden=32, proj_dim=8, queue_size=16)
    export_backbone(root / "pretrain-moco" / "backbone.pt", moco, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    return root


def make_params(data_root: Path, **detect: Any) -> Params:
    return parse_section(Params, {"data": {"root": str(data_root)}, "detect": {**DETECT, **detect}})


def test_random_variant_writes_metrics_and_picture(tmp_path: Path, data_root: Path) -> None:
    paths = DetectPaths.under(tmp_path / "art", "random")
    metrics = run_detect(make_params(data_root), "random", paths, models_dir=tmp_path / "none", progress=False)
    assert set(json.loads(paths.metrics.read_text())) == {"bbox/ap50", "segm/ap50"}  # the headline
    on_disk = read_results(paths.metrics)  # + eval/detect-random/details.json
    assert on_disk == metrics
    for key in (f"{t}/{k}" for t in ("bbox", "segm") for k in METRIC_KEYS):
        assert 0.0 <= on_disk[key] <= 100.0, key
    assert on_disk["steps"] == 2 and on_disk["train_images"] == 12 and on_disk["test_images"] == 8
    assert on_disk["seconds"] > 0 and not any(isinstance(v, str) for v in on_disk.values())  # dvc metrics: numbers only
    assert (paths.plots_dir / "predictions.png").read_bytes()[:4] == b"\x89PNG"


def test_pretrained_variant_faster_rcnn_and_eval_subset(tmp_path: Path, data_root: Path, models_dir: Path) -> None:
    paths = DetectPaths.under(tmp_path / "art", "moco")
    params = make_params(data_root, masks=False, eval_images=5)
    metrics = run_detect(params, "moco", paths, models_dir=models_dir, progress=False)
    assert metrics["test_images"] == 5
    assert "bbox/ap50" in metrics and not any(k.startswith("segm/") for k in metrics)


def test_stage_script_end_to_end(tmp_path: Path, data_root: Path, models_dir: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"root": str(data_root)}, "detect": DETECT}))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--model",
        "moco",
        "--params",
        str(params),
        "--out-dir",
        str(tmp_path / "art"),
        "--models-dir",
        str(models_dir),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_results(tmp_path / "art" / "metrics" / "detect-moco.json")["steps"] == DETECT["steps"]
    assert (tmp_path / "art" / "plots" / "detect-moco" / "predictions.png").is_file()


def test_missing_checkpoint_is_one_line_and_exit_2(
    tmp_path: Path, data_root: Path, models_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"root": str(data_root)}, "detect": DETECT}))
    paths = DetectPaths.under(tmp_path / "art", "byol")
    with pytest.raises(SystemExit) as exit_info:
        run_stage(lambda p: run_detect(p, "byol", paths, models_dir=models_dir, progress=False), str(params))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: checkpoint {models_dir}/pretrain-byol/backbone.pt does not exist"]
    assert not paths.metrics.exists()


def test_backbone_of_another_arch_is_rejected(tmp_path: Path, data_root: Path, models_dir: Path) -> None:
    params = parse_section(
        Params, {"data": {"root": str(data_root)}, "pretrain": {"arch": "resnet50"}, "detect": DETECT}
    )
    with pytest.raises(CheckpointError, match="architecture 'resnet18', expected 'resnet50'"):
        run_detect(params, "moco", DetectPaths.under(tmp_path, "moco"), models_dir=models_dir, progress=False)
    assert not (tmp_path / "metrics").exists()


def test_class_count_mismatch_in_the_json_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_coco_split(root / "multi", "train", make_scenes(n=8, size=32))
    write_coco_split(
        root / "multi",
        "test",
        make_scenes(n=8, size=32, seed=1),
        category_ids=[1, 2, 3, 4],
        names=["red", "green", "blue", "pink"],
    )
    with pytest.raises(DataError, match="instances_test.json has 4 categories"):
        run_detect(make_params(root), "random", DetectPaths.under(tmp_path, "random"), progress=False)


def test_bad_variant_and_bad_params_are_rejected(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(ConfigError, match="'simclr'"):
        run_detect(make_params(data_root), "simclr", DetectPaths.under(tmp_path, "simclr"), progress=False)
    with pytest.raises(ConfigError, match="'detect.anchor_sizes' = \\[8, 16\\] must hold 5 sizes"):
        make_params(data_root, anchor_sizes=[8, 16])
    with pytest.raises(ConfigError, match=r"'detect.lr' = 0(\.0)? is out of range"):
        make_params(data_root, lr=0)
