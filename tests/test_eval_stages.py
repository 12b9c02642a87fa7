"""Stages ``lineval@<variant>`` and ``shift@<variant>`` as subprocesses on a tiny generated benchmark.

The benchmark has the smoke sizes of ``params.smoke.yaml`` (32 px, 24 / 16 / 16 single-object
images, 8 per shift set) with fog at severities 2 and 4, so the shift stage has a per-severity key
and a family mean. ``random`` needs no checkpoint; ``moco`` is a tiny exported MoCo backbone.
The numbers mean nothing at this size: the tests check files, keys, ranges and arithmetic.
The refusal of a foreign heads file runs in process (``run_stage`` + ``run_shift``, as the script
calls them): it fails before any work, so a subprocess would only add its start-up.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from oacl.cli import run_stage
from oacl.config import load_params
from oacl.errors import CheckpointError
from oacl.eval.features import load_variant
from oacl.eval.linear import load_heads
from oacl.eval.shift import ShiftPaths, run_shift
from oacl.io.results import read_results
from oacl.vocab import BG_VARIANTS
from stagekit import SMOKE, deep_update

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
FAST = {
    "data": {"benchmark": {"shift": {"severities": [2, 4]}}},
    "lineval": {"num_l2": 3, "max_iter": 10},
    "shift": {"bias_seeds": 2, "tsne_per_class": 5, "tsne_perplexity": 3.0},
}


def write_params(path: Path, data_root: Path, **extra: Any) -> Path:
    raw = deep_update(deep_update(copy.deepcopy(SMOKE), FAST), {"data": {"root": str(data_root)}, **extra})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def stage(name: str, model: str, params: Path, out: Path, models: Path) -> subprocess.CompletedProcess:
    """``PYTHONPATH=src python stages/<name>.py --model ...`` as dvc.yaml runs it."""
    cmd = [
        sys.executable,
        str(REPO / "stages" / f"{name}.py"),
        "--model",
        model,
        "--params",
        str(params),
        "--out-dir",
        str(out),
        "--models-dir",
        str(models),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny benchmark, a models dir holding an exported MoCo backbone, and a params file."""
    from oacl.config import BenchmarkConfig, parse_section
    from oacl.data.benchmark import generate_benchmark
    from oacl.io.checkpoint import export_backbone
    from oacl.models.moco import MoCo

    root = tmp_path_factory.mktemp("evalstages")
    bench = deep_update(copy.deepcopy(SMOKE["data"]["benchmark"]), FAST["data"]["benchmark"])
    generate_benchmark(parse_section(BenchmarkConfig, bench), root / "data")
    torch.manual_seed(1)  # seed 0 would give the random variant's weights (same init order)
    moco = MoCo("resnet18", "standard", proj_hidden=32, proj_dim=8, queue_size=16)
    export_backbone(
        root / "models" / "pretrain-moco" / "backbone.pt", moco, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    return {
        "root": root,
        "data": root / "data",
        "models": root / "models",
        "params": write_params(root / "params.yaml", root / "data"),
    }


@pytest.fixture(scope="module")
def random_run(world: dict[str, Path]) -> Path:
    """lineval@random then shift@random (one trial: the lineval head)."""
    out = world["root"] / "art-random"
    ok(stage("lineval", "random", world["params"], out, world["models"]))
    ok(stage("shift", "random", world["params"], out, world["models"]))
    return out


def in_percent(values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if key.endswith("top1") or key.endswith("/oneshot_error"):
            assert 0.0 <= value <= 100.0, (key, value)


def test_lineval_outputs(world: dict[str, Path], random_run: Path) -> None:
    metrics = json.loads((random_run / "metrics" / "lineval-random.json").read_text())
    assert metrics == {
        task: {"top1": metrics[task]["top1"], "test_images": metrics[task]["test_images"]} for task in metrics
    }
    assert set(metrics) == {"crops", "original"}  # DESIGN's keys, nothing else: the headline
    for task in ("crops", "original"):
        in_percent(metrics[task])
    assert metrics["original"]["test_images"] == SMOKE["data"]["benchmark"]["single"]["test"]
    details = json.loads((random_run / "eval" / "lineval-random" / "details.json").read_text())
    assert details["seconds"] > 0
    for task in ("crops", "original"):
        assert {"per_class", "l2", "val_top1"} <= set(details[task])
        in_percent(details[task])
        assert 1e-6 <= details[task]["l2"] <= 1e5 and len(details[task]["path"]) == FAST["lineval"]["num_l2"]
        in_percent({f"{k}/top1": v for k, v in details[task]["per_class"].items()})
    head, heads = load_heads(random_run / "eval" / "lineval-random" / "heads.pt", "original")
    assert heads["backbone_digest"] == load_variant("random", load_params(world["params"])).digest
    assert head.feature_dim == 512 and heads["original"]["classes"] == heads["crops"]["classes"]


def test_shift_outputs(random_run: Path) -> None:
    headline = json.loads((random_run / "metrics" / "shift-random.json").read_text())
    assert set(headline) == {"bg_gap", "bg/mixed_rand/top1"}  # one trial: no _std
    details = json.loads((random_run / "eval" / "shift-random" / "details.json").read_text())
    assert not set(headline) & set(details)
    metrics = read_results(random_run / "metrics" / "shift-random.json")
    assert {f"bg/{v}/top1" for v in BG_VARIANTS} <= set(metrics)
    assert metrics["bg_gap"] == pytest.approx(metrics["bg/mixed_same/top1"] - metrics["bg/mixed_rand/top1"], abs=0.011)
    assert "shift/fog/mean/top1" in metrics and "shift/sketch/top1" in metrics
    assert {"shift/fog/2/top1", "shift/fog/4/top1"} <= set(details)
    mean = (details["shift/fog/2/top1"] + details["shift/fog/4/top1"]) / 2
    assert metrics["shift/fog/mean/top1"] == pytest.approx(mean, abs=0.011)
    assert "bias/mean/oneshot_error" in details and "seconds" in details
    assert not any(k.endswith("_std") for k in metrics) and metrics["trials"] == 1
    in_percent(metrics)
    in_percent(details)
    assert all(isinstance(v, (int, float)) for v in headline.values())  # dvc metrics: numbers only
    assert (random_run / "plots" / "shift-random" / "tsne.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pretrained_variant_with_trials(world: dict[str, Path]) -> None:
    params = write_params(world["root"] / "params-trials.yaml", world["data"], shift={"trials": 3, "subsample": 0.8})
    out = world["root"] / "art-moco"
    ok(stage("lineval", "moco", params, out, world["models"]))
    ok(stage("shift", "moco", params, out, world["models"]))
    headline = json.loads((out / "metrics" / "shift-moco.json").read_text())
    assert set(headline) == {"bg_gap", "bg_gap_std", "bg/mixed_rand/top1", "bg/mixed_rand/top1_std"}
    details = json.loads((out / "eval" / "shift-moco" / "details.json").read_text())
    metrics = read_results(out / "metrics" / "shift-moco.json")
    assert metrics["trials"] == 3
    for key in [f"bg/{v}/top1" for v in BG_VARIANTS] + ["bg_gap", "shift/fog/mean/top1", "shift/sketch/top1"]:
        assert key in metrics and metrics[f"{key}_std"] >= 0.0, key
    assert {"shift/fog/2/top1_std", "shift/fog/4/top1_std"} <= set(details)
    # the mean of the per-trial gaps is the gap of the means (each rounded to 0.01)
    assert metrics["bg_gap"] == pytest.approx(metrics["bg/mixed_same/top1"] - metrics["bg/mixed_rand/top1"], abs=0.011)
    in_percent({k: v for k, v in metrics.items() if not k.endswith("_std")})


def test_shift_refuses_heads_of_another_backbone(
    world: dict[str, Path], random_run: Path, capsys: pytest.CaptureFixture
) -> None:
    """In process (a subprocess would only add its start-up): the stage's run_stage + run_shift, as stages/shift.py calls them."""
    out = world["root"] / "art-foreign"
    paths = ShiftPaths.under(out, "moco")
    paths.heads.parent.mkdir(parents=True)
    shutil.copy2(random_run / "eval" / "lineval-random" / "heads.pt", paths.heads)  # fitted on the random init
    params = load_params(world["params"])
    assert load_variant("moco", params, models_dir=world["models"]).digest != load_variant("random", params).digest
    with pytest.raises(CheckpointError, match=f"heads in {paths.heads} were fitted on other weights"):
        run_shift(params, "moco", paths, models_dir=world["models"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_stage(lambda p: run_shift(p, "moco", paths, models_dir=world["models"]), str(world["params"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(paths.heads) in err[0], err
    assert not paths.metrics.exists() and not paths.details.exists() and not paths.plots_dir.exists()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "eval/lineval-moco/heads.pt"
    ]


def test_random_control_is_the_mean_over_its_init_seeds(world: dict[str, Path], tmp_path: Path) -> None:
    from oacl.eval.linear import LinevalPaths, run_lineval

    def top1(seed: int, count: int) -> dict[str, Any]:
        params = load_params(
            write_params(
                tmp_path / f"p{seed}{count}.yaml",
                world["data"],
                lineval={**FAST["lineval"], "seed": seed, "random_seeds": count},
            )
        )
        out = tmp_path / f"out{seed}{count}"
        run_lineval(params, "random", LinevalPaths.under(out, "random"), models_dir=world["models"])
        return read_results(out / "metrics" / "lineval-random.json")

    one, two, both = top1(0, 1), top1(1, 1), top1(0, 2)
    for task in ("crops", "original"):
        assert both[task]["init_seeds"] == {"0": one[task]["top1"], "1": two[task]["top1"]}
        assert both[task]["top1"] == pytest.approx((one[task]["top1"] + two[task]["top1"]) / 2, abs=0.006)
        assert "init_seeds" not in one[task]
    # the heads file is seed 0's: what shift@random loads
    _, heads = load_heads(tmp_path / "out02" / "eval" / "lineval-random" / "heads.pt", "original")
    assert heads["backbone_digest"] == load_variant("random", load_params(tmp_path / "p02.yaml")).digest
