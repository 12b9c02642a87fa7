"""benchmarks/retest.py: larger test splits leave every training file byte-identical; the models retested there."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from oacl.io.sets import open_set
from stagekit import SMOKE, deep_update, generate_tiny

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "retest.py"
spec = importlib.util.spec_from_file_location("retest", SCRIPT)
retest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(retest)

FAST = {
    "data": {"benchmark": {"shift": {"severities": [2]}}},
    "lineval": {"num_l2": 3, "max_iter": 10},
    "shift": {"bias_seeds": 2, "tsne_per_class": 5, "tsne_perplexity": 3.0},
}


def project(folder: Path, seed: int) -> Path:
    """A project folder as paired_seeds leaves one: params.yaml (seed ``seed``), data/, the code linked."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())  # every key, as in a project
    deep_update(deep_update(deep_update(raw, SMOKE), FAST), {"pretrain": {"seed": seed}})
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text("# the project's params\n" + yaml.safe_dump(raw, sort_keys=False))
    generate_tiny(folder / "data", **raw["data"]["benchmark"])
    for code in ("src", "stages"):
        (folder / code).symlink_to(REPO / code, target_is_directory=True)
    return folder


def test_sets_name_only_test_sizes():
    assert retest.parse_sets(["data.benchmark.single.test=4000", "data.benchmark.multi.test=2400"]) == {
        "data.benchmark.single.test": 4000,
        "data.benchmark.multi.test": 2400,
    }
    with pytest.raises(ValueError, match="'data.benchmark.single.train': only test-split sizes"):
        retest.parse_sets(["data.benchmark.single.train=4000"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        retest.parse_sets(["data.benchmark.single.test"])


def test_another_benchmark_seed_differs_in_every_training_file(tmp_path):
    a = generate_tiny(tmp_path / "a")
    assert retest.unequal_fixed(a, generate_tiny(tmp_path / "b")) == []
    assert retest.unequal_fixed(a, generate_tiny(tmp_path / "c", seed=1)) == list(retest.FIXED)


def test_a_second_seed_shares_the_larger_benchmark_of_the_first(tmp_path):
    folders = [project(tmp_path / f"seed{s}", s) for s in (0, 1)]
    retest.retest(folders, "big", {"data.benchmark.single.test": 32, "data.benchmark.multi.test": 16}, [])
    params = yaml.safe_load((folders[1] / "params-big.yaml").read_text())
    assert params["data"]["root"] == "data-big" and params["pretrain"]["seed"] == 1
    assert params["data"]["benchmark"]["single"]["test"] == 32 and params["data"]["benchmark"]["multi"]["test"] == 16
    assert (folders[1] / "params-big.yaml").read_text().startswith("# the project's params\n")
    assert not (folders[0] / "data-big").is_symlink() and (folders[1] / "data-big").is_symlink()
    assert len(open_set(folders[0] / "data" / "single" / "original.h5").ids) == 16
    assert len(open_set(folders[1] / "data-big" / "single" / "original.h5").ids) == 32
    assert len(open_set(folders[1] / "data-big" / "multi" / "test.h5").ids) == 16


def test_the_probe_and_shift_tests_run_on_the_larger_splits(tmp_path):
    folder = project(tmp_path / "seed0", 0)
    sets = ["data.benchmark.single.test=32", "data.benchmark.multi.test=16"]
    argv = [
        "--dirs",
        str(folder),
        "--set",
        *sets,
        "--name",
        "big",
        "--models",
        "random",
        "--out",
        str(tmp_path / "c.json"),
    ]
    assert retest.main(argv) == 0
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["seeds"] == [0] and doc["command"].startswith("PYTHONPATH=src python benchmarks/retest.py --dirs")
    col = retest.retest_column(folder, "big")
    assert col.params["pretrain.seed"] == 0 and col.params["data.benchmark.single.test"] == 32
    assert col.metrics["lineval-random.json:original.test_images"] == 32
    assert col.metrics["lineval-random.json:crops.test_images"] > 16  # one crop per visible object
    assert 0.0 <= col.metrics["lineval-random.json:crops.top1"] <= 100.0
    assert -100.0 <= col.metrics["shift-random.json:bg_gap"] <= 100.0
    stamp = (folder / "out" / "big" / "metrics" / "shift-random.json").stat().st_mtime_ns
    retest.retest([folder], "big", {"data.benchmark.single.test": 32, "data.benchmark.multi.test": 16}, ["random"])
    assert (folder / "out" / "big" / "metrics" / "shift-random.json").stat().st_mtime_ns == stamp  # done: skipped


def test_a_model_retrained_since_its_retest_is_tested_again(tmp_path):
    folder = project(tmp_path / "seed0", 0)
    weights = folder / "artifacts" / "models" / "retrain-moco-bgmix" / "backbone.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"pmix 0.4")
    retest.write_params(folder, "big", {})
    made = retest.stamp(folder, "big", "moco-bgmix")
    assert made["backbone"] == hashlib.md5(b"pmix 0.4").hexdigest()
    weights.write_bytes(b"pmix 0")  # a copy retrained with another pmix: its old out/ must not count
    assert retest.stamp(folder, "big", "moco-bgmix") != made
    assert retest.stamp(folder, "big", "random")["backbone"] == "random"
    with pytest.raises(RuntimeError, match="no artifacts/models/pretrain-moco/backbone.pt for model 'moco'"):
        retest.stamp(folder, "big", "moco")


def test_a_folder_whose_data_is_another_benchmark_is_refused(tmp_path):
    folder = project(tmp_path / "seed0", 0)
    other = yaml.safe_load((folder / "params.yaml").read_text())
    other["data"]["benchmark"]["seed"] = 3  # params say seed 3, data/ holds seed 0's images
    (folder / "params.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    with pytest.raises(RuntimeError, match=r"differs from .*data in multi/train.h5, .*single/val.h5"):
        retest.retest([folder], "big", {"data.benchmark.single.test": 32}, ["random"])
    assert not (folder / "out" / "big" / "metrics" / "lineval-random.json").exists()


def test_a_bad_set_stops_before_anything_is_written(tmp_path, capsys):
    folder = project(tmp_path / "seed0", 0)
    argv = ["--dirs", str(folder), "--set", "pmix=0.8", "--name", "big", "--models", "random"]
    with pytest.raises(SystemExit) as stop:
        retest.main(argv)
    assert stop.value.code == 2
    assert "'pmix': only test-split sizes may change" in capsys.readouterr().err
    assert not (folder / "params-big.yaml").exists()
