"""benchmarks/paired_seeds.py: the seed set in a copy's params.yaml, comments kept; what a copy leaves out."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paired_seeds.py"
spec = importlib.util.spec_from_file_location("paired_seeds", SCRIPT)
paired_seeds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paired_seeds)

PARAMS = """\
pmix: 0.4   # probability of background mixup
pretrain:
  seed: 0                 # the training seed
  moco:
    epochs: 12
lineval:
  seed: 0                 # the probe's own seed
"""


def test_set_param_changes_one_value_and_keeps_the_comments(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(PARAMS)
    paired_seeds.set_param(f, "pretrain.seed", 2)
    text = f.read_text()
    assert text == PARAMS.replace(
        "  seed: 0                 # the training seed", "  seed: 2                 # the training seed"
    )
    assert yaml.safe_load(text)["lineval"]["seed"] == 0


def test_set_param_refuses_a_key_the_file_lacks(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(PARAMS)
    with pytest.raises(KeyError, match="'pretrain.sed'"):
        paired_seeds.set_param(f, "pretrain.sed", 1)
    with pytest.raises(KeyError, match="'pretrian'"):
        paired_seeds.set_param(f, "pretrian.seed", 1)
    assert f.read_text() == PARAMS


def test_a_copy_leaves_out_the_cache_the_environment_the_copies_and_their_records(tmp_path):
    project = tmp_path / "project"
    for rel in (
        "params.yaml",
        "data/a.npy",
        ".dvc/config",
        ".dvc/cache/files/md5/ab",
        ".venv/bin/python",
        "src/oacl/__pycache__/x.pyc",
        "src/oacl/x.py",
        "seeds/seed1/params.yaml",
        "paired_seeds.json",
    ):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(rel)
    dest = tmp_path / "copy"
    shutil.copytree(project, dest, ignore=paired_seeds._ignore(project, project / "seeds"))
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == [".dvc/config", "data/a.npy", "params.yaml", "src/oacl/x.py"]


def test_values_read_as_yaml_would_and_copies_named_by_the_param():
    assert [paired_seeds.number(t) for t in ("2", "0", "0.2", "1e-3")] == [2, 0, 0.2, 0.001]
    assert isinstance(paired_seeds.number("2"), int) and isinstance(paired_seeds.number("0.6"), float)
    assert paired_seeds.copy_name("pretrain.seed", 1) == "seed1"
    assert paired_seeds.copy_name("pmix", 0.2) == "pmix0.2"


def test_set_param_writes_a_float_that_yaml_reads_back(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(PARAMS)
    paired_seeds.set_param(f, "pmix", paired_seeds.number("0.6"))
    assert f.read_text().splitlines()[0] == "pmix: 0.6   # probability of background mixup"
    assert yaml.safe_load(f.read_text())["pmix"] == 0.6


def test_a_copy_of_a_copy_shares_the_cache_its_project_uses(tmp_path):
    """A project whose cache is elsewhere (itself a copy) hands that cache on, not its empty .dvc/cache."""
    shared = tmp_path / "shared-cache"
    first = tmp_path / "first"
    first.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=first, check=True)
    assert paired_seeds.cache_dir(first) == (first / ".dvc" / "cache").resolve()
    subprocess.run([sys.executable, "-m", "dvc", "cache", "dir", "--local", str(shared)], cwd=first, check=True)
    second = tmp_path / "copies" / "seed1"
    paired_seeds.copy_project(first, second, tmp_path / "copies")
    assert paired_seeds.cache_dir(second) == shared.resolve()
