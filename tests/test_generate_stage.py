"""Smoke tests of stages/generate.py on a tiny benchmark in a temp dir."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from oacl.config import load_params
from oacl.io.results import read_results

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "stages" / "generate.py"
TINY = {
    "data": {
        "benchmark": {
            "seed": 1,
            "image_size": 32,
            "num_classes": 4,
            "num_backgrounds": 4,
            "object_scale": [0.45, 0.7],
            "multi": {"train": 12, "val": 4, "test": 8, "object_scale": [0.3, 0.5], "crop_size": 24},
            "single": {"train": 12, "val": 4, "test": 8},
            "shift": {"test": 8, "corruptions": ["jpeg_compression"], "severities": [2, 4], "styles": ["sketch"]},
        }
    }
}


def _run(tmp: Path, params: dict) -> subprocess.CompletedProcess:
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--params",
        str(tmp / "params.yaml"),
        "--out-data",
        str(tmp / "data"),
        "--out-plots",
        str(tmp / "plots"),
        "--out-metrics",
        str(tmp / "metrics" / "generate.json"),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_stage_writes_data_sheets_and_metrics(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stale.h5").write_text("left over from an older run")
    res = _run(tmp_path, TINY)
    assert res.returncode == 0, res.stderr
    data = tmp_path / "data"
    assert not (data / "stale.h5").exists()  # the whole tree is replaced
    assert (data / "benchmark.json").is_file() and (data / "multi" / "instances_test.json").is_file()
    assert sorted(p.name for p in (data / "shift").iterdir()) == [
        "jpeg_compression-2.h5",
        "jpeg_compression-4.h5",
        "sketch.h5",
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    headline = json.loads((tmp_path / "metrics" / "generate.json").read_text())
    assert set(headline) == {"images", "seconds"}  # the rest is in eval/generate/details.json
    metrics = read_results(tmp_path / "metrics" / "generate.json")
    meta = json.loads((data / "benchmark.json").read_text())
    assert meta["sizes"]["single-original"] == 8 and meta["sizes"]["multi-train"] == 12
    assert metrics["images"] == sum(meta["sizes"].values())
    assert set(metrics["timing"]) == {"generate", "sheets"}
    assert metrics["seconds"] == pytest.approx(sum(metrics["timing"].values()), abs=0.02)
    assert 0.0 <= metrics["rates"]["single_train_bg_corr"] <= 1.0
    sheets = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert "single-only_bg_t.png" in sheets and "multi-train.png" in sheets and "shift-jpeg_compression.png" in sheets
    assert metrics["contact_sheets"] == len(sheets)
    with Image.open(tmp_path / "plots" / "multi-train.png") as img:
        assert img.size[0] > 100 and img.mode == "RGB"


def test_bad_params_stop_before_touching_data(tmp_path):
    (tmp_path / "data").mkdir()
    keep = tmp_path / "data" / "keep.txt"
    keep.write_text("x")
    bad = {"data": {"benchmark": {**TINY["data"]["benchmark"], "num_backgrounds": 3}}}
    res = _run(tmp_path, bad)
    assert res.returncode == 2
    assert "num_backgrounds" in res.stderr and "error:" in res.stderr
    assert keep.read_text() == "x"
    res = _run(tmp_path, {"pmix": 1.5})
    assert res.returncode == 2 and "'pmix' = 1.5 is out of range" in res.stderr


def test_failure_midway_keeps_the_old_data(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("generate_stage", SCRIPT)
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "old.txt").write_text("old")

    def boom(cfg, out):
        (Path(out) / "half.h5").write_text("half")
        raise RuntimeError("killed")

    monkeypatch.setattr(stage, "generate_benchmark", boom)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    args = stage.parse_args(
        [
            "--out-data",
            str(tmp_path / "data"),
            "--out-plots",
            str(tmp_path / "plots"),
            "--out-metrics",
            str(tmp_path / "m.json"),
        ]
    )
    with pytest.raises(RuntimeError, match="killed"):
        stage.main(load_params(tmp_path / "params.yaml"), args)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert not (tmp_path / "m.json").exists()
