"""The DVC pipeline end to end on tiny params, in a temporary git + DVC repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# The smoke overlay: the whole DAG in about two minutes on 2 cores; every other key keeps the repo's value.
TINY: dict[str, Any] = yaml.safe_load((REPO / "params.smoke.yaml").read_text())


GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def deep_update(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["OMP_NUM_THREADS"] = "1"
    res = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True, text=True, timeout=900
    )
    if check and res.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res


def make_project(tmp_path: Path, overrides: dict) -> Path:
    """Copy what a fresh clone holds (minus outputs) into a new git repo with tiny params."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("stages", "src", "dvc.yaml", ".dvcignore", ".gitignore", "artifacts/imported"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, project / name)
    params = deep_update(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    dvc(project, "init", "-q")
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run([*GIT, "commit", "-qm", "init"], cwd=project, check=True)
    return project


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("pipe"), TINY)
    dvc(project, "repro")
    return project


def test_repro_builds_every_output(project):
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert set(stages) <= {name.split("@")[0] for name in lock["stages"]}
    assert (project / "data" / "single" / "original.h5").is_file()
    metrics = json.loads((project / "artifacts" / "metrics" / "generate.json").read_text())
    assert metrics["images"] > 0


def test_second_repro_is_a_no_op(project):
    res = dvc(project, "repro")
    assert "Data and pipelines are up to date" in res.stdout, res.stdout
    assert "Running stage" not in res.stdout
    assert dvc(project, "status").stdout.strip().endswith("Data and pipelines are up to date.")


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        ("src/oacl/report.py", {"report"}),
        ("src/oacl/eval/linear.py", {"lineval@*", "shift@*"}),
        ("src/oacl/augment/bgmix.py", {"retrain@*"}),
        (
            "src/oacl/models/backbones.py",
            {"pretrain@*", "contracam@*", "retrain@*", "lineval@*", "shift@*", "detect@*"},
        ),
    ],
)
def test_a_code_change_reruns_exactly_the_stages_that_import_it(project, changed, expected):
    """Deps are imports (tests/test_deps.py): DVC sees a library change in the stages that run it, and only there."""
    path = project / changed
    original = path.read_text()
    try:
        path.write_text(original + "\n# touched\n")
        status = json.loads(dvc(project, "status", "--json").stdout)
    finally:
        path.write_text(original)
    families = {name.split("@")[0] + ("@*" if "@" in name else "") for name in status}
    assert families == expected, sorted(status)
    if changed.endswith("bgmix.py"):
        assert {n for n in status} == {f"retrain@{m}-{d}" for m in ("moco", "byol") for d in ("oacrop", "bgmix")}


def test_metrics_show_is_readable(project):
    out = dvc(project, "metrics", "show").stdout
    assert "images" in out and "rates.single_train_bg_corr" in out


def test_bad_param_stops_the_pipeline_before_work(tmp_path):
    project = make_project(tmp_path, deep_update(json.loads(json.dumps(TINY)), {"pmix": 1.5}))
    res = dvc(project, "repro", check=False)
    assert res.returncode != 0
    assert "'pmix' = 1.5 is out of range" in res.stderr + res.stdout
    assert not (project / "data").exists()


def test_push_and_pull_through_a_local_remote(project, tmp_path):
    """Artifacts travel between machines through a DVC remote (here a local directory)."""
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "--local", "-f", "shared", str(remote))
    dvc(project, "push", "-r", "shared")
    assert any(remote.rglob("*")), "nothing was pushed"
    original = (project / "data" / "single" / "original.h5").read_bytes()
    # what a user commits after a run: dvc.lock and the small uncached outputs (metrics, curves)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run([*GIT, "commit", "-qm", "run"], cwd=project, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    dvc(clone, "remote", "add", "--local", "-f", "shared", str(remote))
    dvc(clone, "pull", "-r", "shared")
    assert (clone / "data" / "single" / "original.h5").read_bytes() == original
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout


def test_report_and_eval_outputs(project):
    report = (project / "artifacts" / "report.md").read_text()
    for table in ("## Claims", "## Localization", "## Linear evaluation", "## Background Challenge", "## Detection"):
        assert table in report
    for model in ("random", "moco", "byol", "moco-oacrop", "byol-bgmix"):
        assert f"| `{model}` |" in report
        lineval = json.loads((project / "artifacts" / "metrics" / f"lineval-{model}.json").read_text())
        assert 0.0 <= lineval["crops"]["top1"] <= 100.0 and lineval["original"]["test_images"] == 16
        shift = json.loads((project / "artifacts" / "metrics" / f"shift-{model}.json").read_text())
        assert shift["bg_gap"] == pytest.approx(shift["bg/mixed_same/top1"] - shift["bg/mixed_rand/top1"], abs=0.02)
    summary = json.loads((project / "artifacts" / "metrics" / "report.json").read_text())
    assert 0 <= summary["claims_hold"] <= summary["claims_checked"]


def test_pmix_experiment_reruns_only_the_bgmix_branch(project):
    """`dvc exp run -S pmix=0.3` reruns the bgmix retrains, their evaluations and the report; nothing else moves."""
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run([*GIT, "commit", "-qm", "baseline", "--allow-empty"], cwd=project, check=True)
    res = dvc(project, "exp", "run", "-S", "pmix=0.3")
    ran = {line.split("'")[1] for line in res.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {
        "retrain@moco-bgmix",
        "retrain@byol-bgmix",
        "lineval@moco-bgmix",
        "lineval@byol-bgmix",
        "shift@moco-bgmix",
        "shift@byol-bgmix",
        "report",
    }, ran
    diff = json.loads(dvc(project, "metrics", "diff", "--json").stdout)
    changed = {path for path, keys in diff.items() if any(v.get("diff") not in (None, 0) for v in keys.values())}
    assert any("retrain-moco-bgmix" in p for p in changed), diff
    assert all("bgmix" in p or p.endswith("report.json") for p in changed), changed
    shown = dvc(project, "exp", "show", "--no-pager", "--csv").stdout
    assert "pmix" in shown.splitlines()[0]


def test_importing_our_own_checkpoint_reproduces_its_metrics(project):
    """`pretrain.imports.moco` = the backbone pretrain@moco wrote: the same numbers downstream, BYOL untouched.

    The re-exported backbone file differs in bytes (it records where it came from), so ContraCAM and
    what reads its stores rerun — and land on the same masks, models and metrics.
    """
    metrics = project / "artifacts" / "metrics"

    def numbers(name: str) -> dict:
        d = json.loads((metrics / f"{name}.json").read_text())
        return {k: v for k, v in d.items() if "seconds" not in k}

    evals = sorted(p.stem for p in metrics.glob("*.json") if p.stem.startswith(("lineval-", "shift-")))
    before = {n: numbers(n) for n in evals}
    cams = {s: numbers(f"contracam-{s}") for s in ("multi", "single")}
    target = project / "artifacts" / "imported" / "moco" / "backbone.pt"
    shutil.copy2(project / "artifacts" / "models" / "pretrain-moco" / "backbone.pt", target)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run([*GIT, "commit", "-qm", "before import", "--allow-empty"], cwd=project, check=True)
    res = dvc(project, "exp", "run", "-S", "pretrain.imports.moco=artifacts/imported/moco/backbone.pt")
    ran = {line.split("'")[1] for line in res.stdout.splitlines() if line.startswith("Running stage")}
    assert "pretrain@moco" in ran and "pretrain@byol" not in ran and "lineval@byol" not in ran, ran
    imported = json.loads((metrics / "pretrain-moco.json").read_text())
    assert imported["imported_from"] == "artifacts/imported/moco/backbone.pt" and imported["epochs"] == 0
    assert {n: numbers(n) for n in evals} == before
    for s, old in cams.items():
        new = numbers(f"contracam-{s}")
        assert new["mask_miou_pct"] == old["mask_miou_pct"] and new["max_box_acc_v2_pct"] == old["max_box_acc_v2_pct"]
