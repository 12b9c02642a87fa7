"""Stage ``contracam@<dataset>`` on a tiny generated benchmark, plus its metrics on known answers.

The backbone is a randomly initialised MoCo exported with ``export_backbone``: the stage's
plumbing (store, ids, metrics, ablations, pictures, errors) is what is tested here; the
ContraCAM computation itself is tested in test_contracam.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from conftest import make_scenes
from oacl.cam.contracam import CamResult, contracam_prepared, prepare_cam_model
from oacl.cam.pipeline import (
    CamPaths,
    GroundTruth,
    file_sha256,
    localization_metrics,
    run_contracam_stage,
    soft_masks,
)
from oacl.cam.sheets import boxes_histogram, cam_sheet
from oacl.cli import run_stage
from oacl.config import BenchmarkConfig, ConfigError, ContraCAMSection, PretrainConfig, load_params, parse_section
from oacl.data.benchmark import generate_benchmark
from oacl.data.datasets import EmbeddedSet
from oacl.io.camstore import CamStore
from oacl.io.checkpoint import export_backbone
from oacl.io.results import read_results
from oacl.localization import DEFAULT_SIGMAS
from oacl.train.pretrain import build_method

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "stages" / "contracam.py"
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

BENCH = {
    "seed": 3,
    "image_size": 32,
    "num_classes": 4,
    "num_backgrounds": 4,
    "object_scale": [0.45, 0.7],
    "multi": {"train": 16, "val": 4, "test": 4, "crop_size": 24},
    "single": {"train": 12, "val": 4, "test": 8},
    "shift": {"test": 4, "corruptions": ["fog"], "severities": [1], "styles": ["sketch"]},
}
CAM = {
    "multi": {"batch_size": 8, "iters": 3, "workers": 2},  # 2 CRF processes: the forkserver path and the __main__ guard
    "single": {"batch_size": 6, "crf": False, "workers": 1},
    "ablation": {"images": 8, "iters": [1, 3], "without_nsr": True, "neg_batch": [4]},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny benchmark, a params file, and random MoCo / BYOL backbones (no training)."""
    root = tmp_path_factory.mktemp("contracam")
    generate_benchmark(parse_section(BenchmarkConfig, BENCH), root / "data")
    pre = parse_section(
        PretrainConfig, {"moco": {"proj_hidden": 32, "queue_size": 8}, "byol": {"proj_hidden": 32, "pred_hidden": 32}}
    )
    for method in ("moco", "byol"):
        torch.manual_seed(0)
        export_backbone(root / "models" / f"{method}.pt", build_method(method, pre), image_size=32, mean=MEAN, std=STD)
    (root / "params.yaml").write_text(yaml.safe_dump({"data": {"root": str(root / "data")}, "contracam": CAM}))
    return root


def run(project: Path, dataset: str, model: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--dataset",
        dataset,
        "--params",
        str(project / "params.yaml"),
        "--model",
        str(model),
        "--out-dir",
        str(out),
    ]
    return subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=300)


def flatten(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def check_pct(values: dict[str, float]) -> None:
    for key, v in values.items():
        if key.endswith("_pct") or "_pct." in key:
            assert 0.0 <= v <= 100.0, (key, v)


# ----------------------------------------------------------------------------- the stage


def test_multi_stage_writes_store_metrics_ablation_and_pictures(project: Path) -> None:
    out = project / "artifacts"
    res = run(project, "multi", project / "models" / "moco.pt", out)
    assert res.returncode == 0, res.stderr[-3000:]
    paths = CamPaths.under(out, "multi")
    data = EmbeddedSet(project / "data" / "multi" / "train.h5")

    store = CamStore(paths.store, expected_ids=data.ids)  # validates schema, ids and order
    assert store.attrs["checkpoint_sha256"] == file_sha256(project / "models" / "moco.pt")
    assert (store.attrs["iters"], store.attrs["expand_res"], store.attrs["crf"]) == (3, 2, True)
    assert store.attrs["params"]["dataset"] == "multi" and store.attrs["params"]["batch_size"] == 8
    assert store.image_size == (32, 32) and store.has_refined
    soft, refined = store.read_all("masks"), store.read_all("masks_refined")
    assert soft.shape == (16, 32, 32) and soft.max() == 255  # min-max normalised per image
    assert set(np.unique(refined)) <= {0, 1}
    assert all(((b >= 0) & (b <= 1)).all() and (b[:, 2:] > b[:, :2]).all() for b in store.boxes_list())

    headline = json.loads(paths.metrics.read_text())
    # DESIGN's keys; the rest in eval/
    assert set(headline) == {"mask_miou_pct", "mask_miou_soft_pct", "pxap_pct", "max_box_acc_v2_pct"}
    nulls = {"gaussian", "ones", "channel_sum", "random_weights"}
    assert set(headline["mask_miou_pct"]) == {"refined"} | nulls
    assert set(headline["mask_miou_soft_pct"]) == {"soft_cam"} | nulls
    assert set(headline["pxap_pct"]) == set(headline["max_box_acc_v2_pct"]) == {"cam"} | nulls
    assert all(set(v) == {"iou30", "iou50", "iou70", "mean"} for v in headline["max_box_acc_v2_pct"].values())
    metrics = read_results(paths.metrics)
    flat = flatten(metrics)
    assert metrics["images"] == 16
    # the all-ones map through the CRF stays all ones: its refined mIoU is the soft one
    assert metrics["mask_miou_pct"]["ones"] == metrics["mask_miou_soft_pct"]["ones"]
    assert metrics["gaussian_sigma"]["miou"] in DEFAULT_SIGMAS
    assert set(metrics["seconds"]["null_baselines"]) == nulls
    cam_acc = metrics["max_box_acc_v2_pct"]["cam"]
    assert cam_acc["iou30"] >= cam_acc["iou50"] >= cam_acc["iou70"]
    assert cam_acc["mean"] == pytest.approx((cam_acc["iou30"] + cam_acc["iou50"] + cam_acc["iou70"]) / 3, abs=0.02)
    check_pct(flat)
    n_boxes = np.diff(store.box_index)
    assert metrics["boxes_per_image"]["cam"] == pytest.approx(n_boxes.mean(), abs=1e-3)
    assert metrics["boxes_per_image"]["gt"] == pytest.approx(np.diff(data.set.box_index).mean(), abs=1e-3)
    assert metrics["seconds"]["total"] >= metrics["seconds"]["cam"] > 0

    assert set(flatten(json.loads(paths.ablation.read_text()))) == {
        "iters.1.refined_miou_pct",
        "iters.3.refined_miou_pct",
        "iters_stop.1.refined_miou_pct",
        "iters_stop.3.refined_miou_pct",
        "without_nsr.refined_miou_pct",
    }
    abl = read_results(paths.ablation)  # + eval/contracam-multi/ablation.json
    assert abl["images"] == 8
    assert set(abl["iters"]) == {"1", "3"} and set(abl["neg_batch"]) == {"4"}
    assert abl["iters"]["3"] == abl["base"]  # T = 3 is the block's own setting
    assert abl["iters_stop"]["stop_ratio"] == 0.5  # the ablation's default rule (the block's own is off)
    assert abl["iters_stop"]["1"] == abl["iters"]["1"]  # one iteration: nothing to stop
    assert set(abl["without_nsr"]) == {"refined_miou_pct", "soft_miou_pct"}
    check_pct(flatten(abl))

    for name in ("sheet.png", "boxes_per_image.png"):
        assert (paths.plots_dir / name).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in paths.plots_dir.iterdir()) == ["boxes_per_image.png", "sheet.png"]


def test_single_stage_without_crf_and_ablation(project: Path, tmp_path: Path) -> None:
    params = load_params(project / "params.yaml")
    params = replace(params, contracam=replace(params.contracam, ablation=replace(params.contracam.ablation, images=0)))
    paths = CamPaths.under(tmp_path, "single")
    metrics = run_contracam_stage(params, "single", project / "models" / "moco.pt", paths)
    store = CamStore(paths.store, expected_ids=EmbeddedSet(project / "data" / "single" / "train.h5").ids)
    assert (store.attrs["iters"], store.attrs["expand_res"], store.attrs["crf"]) == (1, 2, False)  # single's defaults
    assert not store.has_refined  # masks_refined only when the CRF ran
    assert metrics["images"] == 12 and metrics["boxes_per_image"]["gt"] == 1.0
    assert read_results(paths.metrics) == metrics
    assert read_results(paths.ablation) == {"images": 0}


def _stage_module():
    spec = importlib.util.spec_from_file_location("contracam_stage", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_or_foreign_backbone_is_one_clear_error(project: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "artifacts"
    res = run(project, "single", tmp_path / "nope.pt", out)  # the real command line, once
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: backbone") and "pretrain@moco" in res.stderr
    assert "Traceback" not in res.stderr
    stage = _stage_module()  # the same entry point in-process (saves a second interpreter start)
    args = stage.parse_args(
        ["--dataset", "single", "--model", str(project / "models" / "byol.pt"), "--out-dir", str(out)]
    )
    try:
        with pytest.raises(SystemExit) as exc:
            run_stage(lambda params: stage.main(params, args), str(project / "params.yaml"))
    finally:
        torch.set_num_threads(1)  # stage.main sized torch's thread pool for a whole stage
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: checkpoint " + str(project / "models" / "byol.pt") + " was trained with method 'byol', expected 'moco'"
    ]
    assert not out.exists()


# ----------------------------------------------------------------------------- known answers


def test_localization_metrics_of_a_perfect_cam_are_100_percent() -> None:
    sc = make_scenes(n=8, size=32)
    gt = GroundTruth(sc.masks, np.ones(8, bool), [sc.boxes_of(i) for i in range(8)])
    # CAM = the GT mask: every rectangle is its own contour, so its box is exact.
    boxes = [np.zeros((0, 4), np.float32)] * 4 + [np.array([[0, 0, 1, 1]], np.float32)] * 4
    result = CamResult(sc.ids, sc.masks * 255, sc.masks.copy(), boxes)
    m = localization_metrics(result, gt)
    assert m["mask_miou_pct"]["refined"] == 100.0 and m["mask_miou_soft_pct"]["soft_cam"] == 100.0
    assert m["pxap_pct"]["cam"] == 100.0
    assert m["max_box_acc_v2_pct"]["cam"] == {"iou30": 100.0, "iou50": 100.0, "iou70": 100.0, "mean": 100.0}
    assert m["boxes_per_image"] == {"cam": 0.5, "gt": 1.5, "no_box_pct": 50.0}  # scenes alternate 1 and 2 objects
    # The complement of the GT: IoU 0 everywhere.
    inverse = CamResult(sc.ids, (1 - sc.masks) * 255, 1 - sc.masks, boxes)
    assert localization_metrics(inverse, gt)["mask_miou_pct"]["refined"] == 0.0


def _tiny_cam_model():
    torch.manual_seed(0)
    enc = ResNet(BasicBlock, [1, 1, 1, 1])
    enc.fc = nn.Identity()
    proj = nn.Sequential(nn.Linear(512, 32), nn.ReLU(), nn.Linear(32, 8))
    return prepare_cam_model(enc.eval(), proj.eval(), expand_res=2, amp=False)


def test_soft_masks_for_several_T_match_separate_runs() -> None:
    model = _tiny_cam_model()
    images = make_scenes(n=6, size=32).images
    many = soft_masks(model, images, iters=[1, 2, 3], batch_size=6, seed=0, mean=MEAN, std=STD)
    x = (
        torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - torch.tensor(MEAN).view(1, 3, 1, 1)
    ) / torch.tensor(STD).view(1, 3, 1, 1)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(0)).numpy()
    for t in (1, 2, 3):
        direct = contracam_prepared(model, x[order], iters=t)[:, 0]
        expect = np.zeros((6, 32, 32), np.uint8)
        expect[order] = (direct * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        assert np.abs(many[t].astype(int) - expect.astype(int)).max() <= 1, t
    assert not np.array_equal(many[1], many[3])  # the later iterations add regions


# ----------------------------------------------------------------------------- params and pictures


def test_contracam_params_blocks_are_self_contained() -> None:
    section = parse_section(
        ContraCAMSection, {"single": {"batch_size": 8}, "ablation": {"iters": [], "neg_batch": []}}, "contracam"
    )
    assert (section.single.iters, section.single.expand_res, section.single.batch_size) == (1, 2, 8)
    assert (section.multi.iters, section.multi.expand_res, section.multi.crf) == (10, 2, True)
    with pytest.raises(ConfigError, match="neg_batch"):
        parse_section(ContraCAMSection, {"multi": {"neg_batch": 1}}, "contracam")
    with pytest.raises(ConfigError, match=r"'contracam.multi.expand_res' = 3"):
        parse_section(ContraCAMSection, {"multi": {"expand_res": 3}}, "contracam")
    with pytest.raises(ConfigError, match=r"'contracam.ablation.neg_batch\[0\]' = 1"):
        parse_section(ContraCAMSection, {"ablation": {"neg_batch": [1]}}, "contracam")
    with pytest.raises(ConfigError, match="unknown key 'contracam.single.T'"):
        parse_section(ContraCAMSection, {"single": {"T": 1}}, "contracam")


def test_pictures_reject_mismatched_inputs() -> None:
    sc = make_scenes(n=4, size=32)
    with pytest.raises(ValueError, match="do not match"):
        cam_sheet(sc.images, sc.masks[:3], sc.masks, [np.zeros((0, 4))] * 4)
    with pytest.raises(ValueError, match="one array per image"):
        cam_sheet(sc.images, sc.masks, sc.masks, [np.zeros((0, 4))] * 3)
    fig = boxes_histogram([0, 1, 1, 3], [1, 2, 2, 2])
    assert [ax.get_title() for ax in fig.axes] == ["ContraCAM boxes (mean 1.25)", "ground-truth boxes (mean 1.75)"]
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [25.0, 50.0, 0.0, 25.0]  # percent of images with 0, 1, 2, 3 boxes
