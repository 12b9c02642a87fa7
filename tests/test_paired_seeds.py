"""benchmarks/paired_seeds.py: the seed set in a copy's params.yaml, comments kept; what a copy leaves out."""

from __future__ import annotations

import importlib.util
import json
import re
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


DVC_YAML = Path(__file__).resolve().parents[1] / "dvc.yaml"


def test_enable_uncomments_the_comparisons_and_adds_them_to_eval_models(tmp_path):
    """On the project's own dvc.yaml: two retrain entries and two eval models more, nothing else changed."""
    f = tmp_path / "dvc.yaml"
    shutil.copy(DVC_YAML, f)
    before = yaml.safe_load(f.read_text())
    paired_seeds.enable_variants(f, ["moco-mixup", "moco-hardmix"])
    after = yaml.safe_load(f.read_text())
    retrain = after["stages"]["retrain"]["foreach"]
    assert set(retrain) - set(before["stages"]["retrain"]["foreach"]) == {"moco-mixup", "moco-hardmix"}
    assert retrain["moco-mixup"] == {
        "method": "moco",
        "debias": "mixup",
        "extra": "retrain.mixup",
        "cam_multi": "stages/retrain.py",
        "cam_single": "stages/retrain.py",
    }
    models = after["vars"][0]["eval_models"]
    assert list(models)[-2:] == ["moco-mixup", "moco-hardmix"]
    assert models["moco-hardmix"] == {"backbone": "artifacts/models/retrain-moco-hardmix/backbone.pt"}
    for doc in (before, after):
        del doc["stages"]["retrain"]["foreach"]
        del doc["vars"][0]["eval_models"]
    assert after == before


def test_enable_refuses_a_variant_not_offered_and_writes_nothing(tmp_path):
    f = tmp_path / "dvc.yaml"
    shutil.copy(DVC_YAML, f)
    text = f.read_text()
    for name in ("moco-oacrop", "moco-mix-up", "moco-oacrop_gt"):  # enabled already; a typo; params `oracles`
        with pytest.raises(ValueError, match=f"no commented retrain variant '{name}'.*moco-mixup"):
            paired_seeds.enable_variants(f, ["moco-hardmix", name])
        assert f.read_text() == text


def test_models_stand_for_their_probe_and_shift_targets():
    assert paired_seeds.model_targets(["random", "moco-bgmix"]) == [
        "lineval@random",
        "shift@random",
        "lineval@moco-bgmix",
        "shift@moco-bgmix",
    ]


def test_dvc_reads_the_enabled_variants_as_stages(tmp_path):
    shutil.copy(DVC_YAML, tmp_path / "dvc.yaml")
    shutil.copy(DVC_YAML.parent / "params.yaml", tmp_path / "params.yaml")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    paired_seeds.enable_variants(tmp_path / "dvc.yaml", ["moco-hardmix"])
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    stages = set(out.stdout.split())
    assert {"retrain@moco-hardmix", "lineval@moco-hardmix", "shift@moco-hardmix"} <= stages
    assert "retrain@moco-mixup" not in stages and "lineval@moco-mixup" not in stages


def test_a_variant_not_offered_stops_the_run_before_any_copy(tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(DVC_YAML, project / "dvc.yaml")
    root = tmp_path / "copies"
    argv = ["--seeds", "1", "--root", str(root), "--project", str(project), "--models", "moco", "--enable", "moco-gt"]
    with pytest.raises(SystemExit) as stop:
        paired_seeds.main(argv)
    assert stop.value.code == 2
    assert "no commented retrain variant 'moco-gt'" in capsys.readouterr().err
    assert not root.exists()


MAKE_METRICS = """\
import json, pathlib, sys
import yaml
p = yaml.safe_load(open("params.yaml"))
seed, test = p["pretrain"]["seed"], p["data"]["benchmark"]["single"]["test"]
top1 = {"random": 30.0, "moco": 50.0 + seed, "moco-oacrop": 52.0 + 1.5 * seed}[sys.argv[1]]
out = pathlib.Path(f"artifacts/metrics/lineval-{sys.argv[1]}.json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"crops": {"top1": top1, "test_images": test}}))
"""


def _probe_project(root: Path) -> Path:
    """A DVC project with the real params.yaml whose `lineval@M` writes a crops top-1 known per seed."""
    project = root / "project"
    project.mkdir()
    shutil.copy(DVC_YAML.parent / "params.yaml", project / "params.yaml")
    (project / "make.py").write_text(MAKE_METRICS)
    (project / "dvc.yaml").write_text(
        "stages:\n  lineval:\n    foreach: [random, moco, moco-oacrop]\n    do:\n"
        f"      cmd: {sys.executable} make.py ${{item}}\n      deps: [make.py]\n"
        "      params: [pretrain.seed, data.benchmark.single.test]\n"
        "      metrics:\n        - artifacts/metrics/lineval-${item}.json: {cache: false}\n"
    )
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True)
    return project


def test_the_profile_in_one_command_overlay_seeds_and_claims(tmp_path):
    """The overlay lands in every copy (comments kept), each seed runs, and the claims come out of the copies:
    OA-Crop − vanilla is 2.0 / 2.5 / 3.0 on seeds 0 / 1 / 2, so +2.5 with s.e. 0.29 — it holds."""
    project = _probe_project(tmp_path)
    overlay = tmp_path / "params.claims.yaml"
    overlay.write_text("data:\n  benchmark:\n    single: {test: 4000}\n")
    root, out, md = tmp_path / "copies", tmp_path / "claims.json", tmp_path / "claims.md"
    argv = ["--seeds", "0", "1", "2", "--root", str(root), "--project", str(project), "--overlay", str(overlay)]
    argv += ["--targets", "lineval@random", "lineval@moco", "lineval@moco-oacrop", "--claims", str(out)]
    assert paired_seeds.main([*argv, "--claims-md", str(md)]) == 0
    for seed in (0, 1, 2):
        params = (root / f"seed{seed}" / "params.yaml").read_text()
        assert "      test: 4000          # per Background Challenge variant" in params
        assert yaml.safe_load(params)["pretrain"]["seed"] == seed
        metrics = json.loads((root / f"seed{seed}" / "artifacts/metrics/lineval-moco.json").read_text())
        assert metrics == {"crops": {"top1": 50.0 + seed, "test_images": 4000}}
    doc = json.loads(out.read_text())
    assert doc["seeds"] == [0, 1, 2] and doc["wall_s"] > 0 and "--overlay" in doc["command"]
    claims = {c["text"]: c for c in doc["claims"]}
    oacrop = claims["OA-Crop (ContraCAM boxes) improves the object-crop probe (moco)"]
    assert oacrop["verdict"] == "holds"
    assert "mean +2.5, s.e. 0.3, n = 3 (per seed +2.0 / +2.5 / +3.0)" in oacrop["measured"]
    above = claims["moco-oacrop is above the random-init control on object crops"]
    assert above["verdict"] == "holds" and "mean +23.5" in above["measured"]
    assert "| OA-Crop (ContraCAM boxes) improves the object-crop probe (moco) |" in md.read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pretrain: {seed: 3}\n", "sets 'pretrain.seed', the param each copy sets"),
        ("extra_seeds: [1, 2]\n", "sets 'extra_seeds', but each copy is one seed"),
        ("data: {benchmark: {single: {tset: 3}}}\n", "has no 'data.benchmark.single.tset'"),
        ("pmix: 1.5\n", "'pmix' = 1.5 is out of range"),
        ("- pmix\n", "not a mapping of params"),
    ],
)
def test_a_bad_overlay_stops_the_run_before_any_copy(tmp_path, capsys, text, message):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(DVC_YAML, project / "dvc.yaml")
    shutil.copy(DVC_YAML.parent / "params.yaml", project / "params.yaml")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(text)
    root = tmp_path / "copies"
    argv = ["--seeds", "1", "--root", str(root), "--project", str(project), "--models", "moco"]
    with pytest.raises(SystemExit) as stop:
        paired_seeds.main([*argv, "--overlay", str(overlay)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "overlay.yaml" in err
    assert not root.exists()


def test_the_claims_overlay_adds_seeds_oracles_test_images_and_detection_steps_only():
    """params.claims.yaml: valid against params.yaml; seeds, oracles, test-split sizes and detection, no
    param of the default's training (whose models it reuses)."""
    leaves = paired_seeds.overlay_leaves(
        DVC_YAML.parent / "params.yaml", DVC_YAML.parent / "params.claims.yaml", "pmix"
    )
    assert dict(leaves) == {
        "extra_seeds": [1, 2],
        "oracles": ["moco"],
        "data.benchmark.multi.test": 2400,
        "data.benchmark.single.test": 4000,
        "detect.steps": 400,
        "detect.lr": 0.03,
    }


def test_claims_need_paired_training_seeds(tmp_path, capsys):
    argv = ["--param", "pmix", "--values", "0", "--root", str(tmp_path / "c"), "--models", "moco"]
    with pytest.raises(SystemExit):
        paired_seeds.main([*argv, "--claims", str(tmp_path / "claims.json")])
    assert "--claims judges paired training seeds" in capsys.readouterr().err


def test_the_readme_claims_command_sets_exactly_the_claims_overlay():
    """The README's `dvc exp run` for the claims profile and params.claims.yaml say the same."""
    text = (DVC_YAML.parent / "README.md").read_text()
    start = text.index("dvc exp run -n claims ")
    command = text[start : text.index("\n", text.index("\n", start) + 1)].replace("\\\n", " ")
    settings = dict(f.split("=", 1) for f in re.findall(r"-S '?([^' ]+)'?", command))
    leaves = paired_seeds.overlay_leaves(
        DVC_YAML.parent / "params.yaml", DVC_YAML.parent / "params.claims.yaml", "pmix"
    )
    assert {k: yaml.safe_load(v) for k, v in settings.items()} == dict(leaves)
