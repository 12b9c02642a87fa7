"""The retrain stage on tiny set files and tiny CAM stores: outputs load, bad inputs give one clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import make_scenes, write_scenes
from oacl.config import ConfigError, Params, parse_section
from oacl.errors import DataError
from oacl.io import load_backbone
from oacl.io.camstore import write_cam_store
from oacl.io.results import read_results
from oacl.train.pretrain import open_train_set
from oacl.train.retrain import DEBIAS, build_views, open_cam_store, retrain_paths, run_retrain, variant_settings

REPO = Path(__file__).resolve().parents[1]
N, SIZE = 16, 32

TINY = {
    "pretrain": {
        "dataset": "both",
        "batch_size": 8,
        "knn_every": 0,
        "amp": False,
        "moco": {"epochs": 1, "queue_size": 16, "proj_hidden": 32},
        "byol": {"epochs": 1, "proj_hidden": 32, "pred_hidden": 32},
    }
}


def _write_cam(path: Path, scenes, *, drop: int = 0) -> None:
    """A CAM store whose soft mask is the GT mask (x 200) and whose boxes are the GT boxes, normalized."""
    keep = len(scenes.ids) - drop
    write_cam_store(
        path,
        image_ids=scenes.ids[:keep],
        masks=(scenes.masks[:keep] * 200).astype(np.uint8),
        boxes=[scenes.boxes_of(i) / SIZE for i in range(keep)],
        checkpoint_sha256="0" * 64,
        params={"iters": 1},
        image_size=SIZE,
        iters=1,
        expand_res=1,
        crf=False,
    )


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """(data root, cam dir); both sets use the ids scene-000..015 — unique within a set only."""
    root, cam = tmp_path / "data", tmp_path / "cam"
    for i, name in enumerate(("multi", "single")):
        (root / name).mkdir(parents=True)
        scenes = make_scenes(n=N, size=SIZE, seed=10 + i)
        write_scenes(root / name / "train.h5", scenes, kind=name, name=f"{name}/train")
        _write_cam(cam / f"{name}.h5", scenes)
    return root, cam


def _params(root: Path, extra: dict | None = None) -> dict:
    raw = json.loads(json.dumps(TINY))
    raw["data"] = {"root": str(root)}
    raw.update(extra or {})
    return raw


def _run_stage(tmp_path: Path, raw: dict, debias: str, cam: Path, out: Path) -> subprocess.CompletedProcess:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(REPO / "stages" / "retrain.py"),
        "--method",
        "moco",
        "--debias",
        debias,
        "--params",
        str(params),
        "--out-dir",
        str(out),
        "--cam-dir",
        str(cam),
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("debias", ["oacrop", "bgmix"])
def test_stage_writes_everything(tmp_path: Path, tiny: tuple[Path, Path], debias: str) -> None:
    root, cam = tiny
    out = tmp_path / "artifacts"
    proc = _run_stage(tmp_path, _params(root), debias, cam, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths = retrain_paths(out, "moco", debias)
    headline = {"oacrop": {"final_loss", "box_rate"}, "bgmix": {"final_loss", "mix_rate"}}[debias]
    assert set(json.loads(paths.metrics.read_text())) == headline
    metrics = read_results(paths.metrics)  # + eval/retrain-moco-<debias>/details.json
    assert metrics["debias"] == debias and metrics["epochs"] == 1 and metrics["steps"] == 4  # 32 images / 8
    assert {"final_loss", "images_per_s", "effective_lr", "seconds"} <= set(metrics)
    if debias == "oacrop":
        assert metrics["box_rate"] == 1.0 and 0 < metrics["box_area"] < 1  # every image has a box
        assert "pmix" not in metrics and "mix_rate" not in metrics
    else:
        assert metrics["pmix"] == 0.4 and 0.1 < metrics["mix_rate"] <= 0.75  # 64 patches at p = 0.4
    encoder = load_backbone(paths.model_dir / "backbone.pt")
    with torch.no_grad():
        assert encoder(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 512)
    ckpt = torch.load(paths.model_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["params"]["retrain"]["debias"] == debias
    assert ("pmix" in ckpt["params"]["retrain"]) == (debias == "bgmix")
    assert set(ckpt["params"]["retrain"]["cam"]) == {"multi", "single"}
    for png in ("loss.png", "augment.png"):
        assert (paths.plots_dir / png).read_bytes()[:4] == b"\x89PNG"
    assert (paths.live_dir / "plots" / "metrics" / "train" / "loss.tsv").exists()
    assert not (paths.cache_dir / "last.pt").exists()


def test_missing_cam_file_stops_before_work(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    root, cam = tiny
    (cam / "single.h5").unlink()
    proc = _run_stage(tmp_path, _params(root), "bgmix", cam, tmp_path / "a")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "single.h5 not found" in lines[0] and "contracam@single" in lines[0]
    assert not (tmp_path / "a").exists()


def test_id_missing_from_the_cam_file_stops_before_work(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    root, cam = tiny
    _write_cam(cam / "multi.h5", make_scenes(n=N, size=SIZE, seed=10), drop=1)
    params = parse_section(Params, _params(root))
    paths = retrain_paths(tmp_path / "a", "moco", "oacrop")
    with pytest.raises(
        DataError, match=r"multi\.h5: 1 of the data set's 16 image ids are not in the CAM store \(first: 'scene-015'\)"
    ):
        run_retrain(params, "moco", "oacrop", paths, cam_dir=cam)
    assert not (tmp_path / "a").exists()


def test_unknown_variant_is_refused(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    root, cam = tiny
    proc = _run_stage(tmp_path, _params(root), "nosuch", cam, tmp_path / "a")
    assert proc.returncode == 2 and "invalid choice: 'nosuch'" in proc.stderr
    params = parse_section(Params, _params(root))
    with pytest.raises(ConfigError, match="unknown debias variant 'nosuch'; known: bgmix, cutmix"):
        run_retrain(params, "moco", "nosuch", retrain_paths(tmp_path, "moco", "nosuch"), cam_dir=cam)


def test_gt_and_mix_variants_need_no_cam_file(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    root, _ = tiny
    params = parse_section(Params, _params(root))
    for debias in ("hardmix_gt", "cutmix"):
        metrics = run_retrain(
            params, "moco", debias, retrain_paths(tmp_path / "a", "moco", debias), cam_dir=tmp_path / "none"
        )
        assert metrics is not None and metrics["debias"] == debias and 0 < metrics["mix_rate"] <= 1


def test_only_bgmix_reads_pmix() -> None:
    params = parse_section(Params, {"pmix": 0.3})
    assert variant_settings(params, "bgmix") == {"debias": "bgmix", "bgmix": {"threshold": 0.2}, "pmix": 0.3}
    for debias in sorted(set(DEBIAS) - {"bgmix"}):
        assert "pmix" not in variant_settings(params, debias)
    assert variant_settings(params, "oacrop_gt") == {"debias": "oacrop_gt", "oacrop_gt": {"prob": 1.0, "margin": 0.2}}


@pytest.mark.parametrize(
    "section,message",
    [
        ({"bgmix": {"threshold": 1.5}}, "'retrain.bgmix.threshold' = 1.5 is out of range"),
        ({"bgmix": {"prob": 0.5}}, "unknown key 'retrain.bgmix.prob'"),  # bgmix's probability is pmix
        ({"mixup": {"alpha": 0}}, "'retrain.mixup.alpha' = 0.0 is out of range"),
        ({"oacrop_gt": {"margin": -0.1}}, "'retrain.oacrop_gt.margin' = -0.1 is out of range"),
        ({"nosuch": {}}, "unknown key 'retrain.nosuch'"),
    ],
)
def test_bad_retrain_params_are_rejected(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_section(Params, {"retrain": section})


def test_items_get_their_own_sets_cam_data(tiny: tuple[Path, Path]) -> None:
    """Ids repeat across the two sets: each item must get the mask of its own set's store."""
    root, cam = tiny
    params = parse_section(Params, _params(root))
    data, size = open_train_set(params)
    stores = {n: open_cam_store(cam, n) for n in ("multi", "single")}
    dataset, views = build_views(params, "bgmix", data, size, stores)
    assert len(dataset) == 2 * N
    for index in (3, N + 3):  # the same id "scene-003" in multi and in single
        item = dataset[index]
        assert item["set"] == ("multi" if index < N else "single")
        assert torch.equal(item["cam_mask"], item["mask"].as_subclass(torch.Tensor) * 200)
        out = views.per_item(item)
        # background pixels are noise in [40, 200]; objects are pure 0 / 255 colours
        assert bool(out["has_bg"]) and 40 <= int(out["bg"].min()) and int(out["bg"].max()) <= 200
