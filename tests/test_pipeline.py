"""The DVC pipeline end to end on tiny params, in a temporary git + DVC repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from oacl.io.results import read_results

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
    for name in ("stages", "src", "dvc.yaml", ".dvcignore", ".gitignore", "artifacts/imported", "artifacts/seeds"):
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
    """The smoke DAG, reproduced as `dvc repro > repro.log 2>&1` would: output into a file, not a terminal."""
    project = make_project(tmp_path_factory.mktemp("pipe"), TINY)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("OACL_PROGRESS", None)
    with open(project.parent / "repro.log", "wb") as log:
        res = subprocess.run(
            [sys.executable, "-m", "dvc", "repro"],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    assert res.returncode == 0, (project.parent / "repro.log").read_text()[-5000:]
    return project


def test_a_repro_log_in_a_file_has_no_carriage_returns(project):
    """Progress in a file is one log line per ~10 % (rate, ETA), not tqdm's redrawn bar."""
    log = (project.parent / "repro.log").read_bytes()
    assert b"\r" not in log
    lines = log.decode().splitlines()
    progress = [line for line in lines if "oacl.progress:" in line]
    assert any(line.split("oacl.progress: ")[1].startswith(("moco:", "byol:")) for line in progress), progress[:5]
    assert any("contracam:" in line for line in progress) and any("detect fine-tune:" in line for line in progress)
    assert all(" it/s" in line or "/s" in line for line in progress)


def seed_families(project: Path) -> set[str]:
    """The stage families of dvc.yaml that ``extra_seeds`` or ``oracles`` expand (none by default)."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    return {name for name, stage in stages.items() if re.search(r"extra_seeds|oracles", str(stage.get("matrix", "")))}


def test_repro_builds_every_output(project):
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert set(stages) - seed_families(project) <= {name.split("@")[0] for name in lock["stages"]}
    assert not {name for name in lock["stages"] if name.split("@")[0] in seed_families(project)}
    assert (project / "data" / "single" / "original.h5").is_file()
    metrics = json.loads((project / "artifacts" / "metrics" / "generate.json").read_text())
    assert metrics["images"] > 0


def test_second_repro_is_a_no_op(project):
    res = dvc(project, "repro")
    assert "Data and pipelines are up to date" in res.stdout, res.stdout
    assert "Running stage" not in res.stdout
    assert dvc(project, "status").stdout.strip().endswith("Data and pipelines are up to date.")


def _ran(res: subprocess.CompletedProcess) -> set[str]:
    return {line.split("'")[1] for line in res.stdout.splitlines() if line.startswith("Running stage")}


def _set_param(project: Path, key: str, value: Any) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_an_extra_seed_trains_and_evaluates_a_paired_run(project, tmp_path):
    """``extra_seeds: [1]`` and ``oracles: [moco]`` run seed 1's training and evaluation stages, MoCo's
    two oracles for both seeds and the report, nothing else of seed 0; the report judges the claims on
    the two paired seeds; then a pmix change reruns the bgmix branch of each seed and nothing else."""
    copy = tmp_path / "project"
    shutil.copytree(project, copy, symlinks=True)
    _set_param(copy, "extra_seeds", [1])
    _set_param(copy, "oracles", ["moco"])
    ran = _ran(dvc(copy, "repro"))
    per_seed = {
        *(f"pretrain-seed@1-{m}" for m in ("moco", "byol")),
        *(f"contracam-seed@1-{s}" for s in ("multi", "single")),
        *(f"retrain-seed@1-{m}-oacrop" for m in ("moco", "byol")),
        *(f"retrain-seed-pmix@1-{m}-bgmix" for m in ("moco", "byol")),
        *(f"{e}-seed@1-{m}" for e in ("lineval", "shift") for m in ("moco", "byol")),
        *(
            f"{e}-seed-retrain@1-{m}-{d}"
            for e in ("lineval", "shift")
            for m in ("moco", "byol")
            for d in ("oacrop", "bgmix")
        ),
        "detect-seed@1-moco",
        "detect-seed-retrain@1-moco-oacrop",
    }
    oracles = {
        f"{family}{seed}-oracle@{prefix}moco-{d}"
        for family in ("retrain", "lineval", "shift")
        for seed, prefix in (("", ""), ("-seed", "1-"))
        for d in ("oacrop_gt", "hardmix_gt")
    }
    assert ran == per_seed | oracles | {"report"}, sorted(ran ^ (per_seed | oracles | {"report"}))
    s1 = copy / "artifacts" / "seeds" / "s1"
    for model in ("moco", "byol", "moco-oacrop", "byol-bgmix"):  # the same files as the base run, trained anew
        assert json.loads((s1 / "metrics" / f"lineval-{model}.json").read_text())["crops"]["test_images"] > 0
    for name in ("pretrain-moco", "retrain-moco-oacrop"):
        base = (copy / "artifacts" / "models" / name / "backbone.pt").read_bytes()
        assert (s1 / "models" / name / "backbone.pt").read_bytes() != base, name
    summary = json.loads((copy / "artifacts" / "metrics" / "report.json").read_text())
    assert summary["seeds"] == 2 and 0 <= summary["paired_claims_hold"] <= summary["paired_claims_checked"]
    text = (copy / "artifacts" / "report.md").read_text()
    assert "Training seeds 0, 1:" in text
    for seed in (0, 1):  # the oracles of the base seed and of seed 1, paired
        assert (copy / f"artifacts/seeds/s{seed}/metrics/shift-moco-hardmix_gt.json").is_file()
    assert re.search(r"the oracle\) improves the object-crop probe \(moco\) \| crops top-1, .* n = 2 ", text)
    _set_param(copy, "pmix", 0.3)
    ran = _ran(dvc(copy, "repro"))
    bgmix = {f"{s}@{m}-bgmix" for s in ("retrain", "lineval", "shift") for m in ("moco", "byol")}
    bgmix |= {
        f"{s}@1-{m}-bgmix"
        for s in ("retrain-seed-pmix", "lineval-seed-retrain", "shift-seed-retrain")
        for m in ("moco", "byol")
    }
    assert ran == bgmix | {"report"}, sorted(ran ^ (bgmix | {"report"}))


def test_larger_test_splits_rerun_the_evaluations_and_no_training(project, tmp_path):
    """The training stages depend on the training files alone (tests/test_deps.py), which stay byte for
    byte the same when a test split grows: DVC reruns the probes, shift tests, fine-tunes and report only."""
    copy = tmp_path / "project"
    shutil.copytree(project, copy, symlinks=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["data"]["benchmark"]["single"]["test"] += 8
    params["data"]["benchmark"]["multi"]["test"] += 8
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _ran(dvc(copy, "repro", "generate")) == {"generate"}
    status = json.loads(dvc(copy, "status", "--json").stdout)
    # the report reads generate's record, and then the new evaluations
    assert {name.split("@")[0] for name in status} == {"lineval", "shift", "detect", "report"}, sorted(status)


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


def _leaves(d: Any) -> int:
    return sum(_leaves(v) for v in d.values()) if isinstance(d, dict) else 1


def test_metrics_show_is_readable(project):
    """`dvc metrics show` prints the headline of each stage; the rest stays in artifacts/eval/ (oacl.io.results)."""
    out = dvc(project, "metrics", "show").stdout
    assert "images" in out and "crops.top1" in out and "bg_gap" in out and "claims_hold" in out
    assert "rates.single_train_bg_corr" not in out and "val_top1" not in out
    shown = json.loads(dvc(project, "metrics", "show", "--json").stdout)
    per_file = {path: _leaves(d.get("data", {})) for path, d in next(iter(shown.values()))["data"].items()}
    # was 404 before the headline split; 70 of these are the two contracam-<set>.json files
    assert sum(per_file.values()) <= 135, per_file
    # contracam-<set>.json holds DESIGN's blocks: mIoU refined and soft, PxAP (5 maps each: ContraCAM and
    # four null baselines) and MaxBoxAccV2 (5 maps x 4 levels); every other file at most 4
    assert sorted(per_file.values())[-3:] == [4, 35, 35], per_file
    details = project / "artifacts" / "eval" / "generate" / "details.json"
    assert json.loads(details.read_text())["rates"]["single_train_bg_corr"] >= 0.0


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
        shift = read_results(project / "artifacts" / "metrics" / f"shift-{model}.json")
        assert shift["bg_gap"] == pytest.approx(shift["bg/mixed_same/top1"] - shift["bg/mixed_rand/top1"], abs=0.02)
    summary = json.loads((project / "artifacts" / "metrics" / "report.json").read_text())
    assert 0 <= summary["claims_hold"] <= summary["claims_checked"]
    assert set(summary) == {"claims_hold", "claims_checked", "wall_minutes"} and summary["wall_minutes"] > 0


IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def test_every_image_link_of_the_report_resolves(project):
    """report.md embeds the stages' pictures by relative links, and each link leads to a file."""
    report = project / "artifacts" / "report.md"
    text = report.read_text()
    assert text.splitlines()[2].startswith("- **Ran:**") and "- **Do not hold:**" in text.split("## Claims")[0]
    links = IMAGE_LINK.findall(text)
    missing = [link for link in links if not (report.parent / link).is_file()]
    assert not missing, missing
    assert all(not link.startswith(("/", "http:", "https:")) for link in links), links
    expected = {
        "plots/contracam-multi/sheet.png",
        "plots/contracam-single/sheet.png",
        "plots/report/lineval.png",
        "plots/report/background.png",
        "plots/retrain-moco-oacrop/augment.png",
        "plots/retrain-byol-bgmix/augment.png",
        "plots/detect-moco/predictions.png",
    }
    assert expected <= set(links), sorted(expected - set(links))


def test_plots_page_works_offline(project):
    """`dvc plots show` writes dvc_plots/index.html that loads nothing from the network (no vega CDN)."""
    dvc(project, "plots", "show")
    page = project / "dvc_plots" / "index.html"
    html = page.read_text()
    sources = re.findall(r"""<(?:script|img|link)\b[^>]*?(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert sources, "the page shows no pictures"
    assert not [s for s in sources if re.match(r"(?:https?:)?//", s)], sources
    assert "cdn." not in html and "vega" not in html.lower()
    assert all((page.parent / s).is_file() for s in sources), [s for s in sources if not (page.parent / s).is_file()]


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
    table = dvc(project, "metrics", "diff").stdout.splitlines()
    rows = [line for line in table if "artifacts/metrics/" in line]
    assert rows and all("bgmix" in line or "report.json" in line for line in rows), table
    assert all(len(line) <= 200 for line in table), max(table, key=len)  # one line per row in a wide terminal
    shown = dvc(project, "exp", "show", "--no-pager", "--csv").stdout
    assert "pmix" in shown.splitlines()[0]
    # the experiments view: one column per experiment, only the changed param and the bgmix-branch numbers
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": "src"}
    view = subprocess.run(
        [sys.executable, "-m", "oacl.exps", "--csv"], cwd=project, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    header, *lines = view
    assert header.startswith(",workspace,") and len(header.split(",")) == 4, header  # workspace, HEAD, the exp
    assert lines[0].startswith("params: pmix,") and lines[0].endswith(",0.3"), lines
    assert all("bgmix" in line or line.startswith(("params: pmix", "claims", "minutes")) for line in lines), lines


def test_importing_our_own_checkpoint_reproduces_its_metrics(project):
    """`pretrain.imports.moco` = the backbone pretrain@moco wrote: the same numbers downstream, BYOL untouched.

    The re-exported backbone file differs in bytes (it records where it came from), so ContraCAM and
    what reads its stores rerun — and land on the same masks, models and metrics.
    """
    metrics = project / "artifacts" / "metrics"

    def numbers(name: str) -> dict:
        d = read_results(metrics / f"{name}.json")
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
    imported = read_results(metrics / "pretrain-moco.json")
    assert imported["imported_from"] == "artifacts/imported/moco/backbone.pt" and imported["epochs"] == 0
    assert {n: numbers(n) for n in evals} == before
    for s, old in cams.items():
        new = numbers(f"contracam-{s}")
        assert new["mask_miou_pct"] == old["mask_miou_pct"] and new["max_box_acc_v2_pct"] == old["max_box_acc_v2_pct"]
