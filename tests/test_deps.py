"""Stage deps are imports: every project file a stage's script runs is a dependency of that stage.

For each stage of ``dvc.yaml`` (``foreach`` templates expanded), the import closure of its script
within ``src/`` and ``stages/`` — every ``import`` statement, at module level or inside a function,
and the package ``__init__`` files each import runs — must be covered by its ``deps`` (a file, or
a folder above it). A file that a stage runs but does not list would leave its outputs stale when
that file changes. Conversely every code dep must hold a file of the closure (no dead deps).
"""

from __future__ import annotations

import ast
import itertools
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = re.compile(r"\b(stages/[\w/]+\.py)\b")


# ------------------------------------------------------------------------- import closure


def module_file(root: Path, dotted: str) -> Path | None:
    """The file a dotted module name runs (``pkg/__init__.py`` for a package), searched in src/ then the root."""
    for base in (root / "src", root):
        p = base.joinpath(*dotted.split("."))
        if p.with_suffix(".py").is_file():
            return p.with_suffix(".py")
        if (p / "__init__.py").is_file():
            return p / "__init__.py"
    return None


def package_of(root: Path, path: Path) -> list[str]:
    """Dotted package parts of ``path`` (for relative imports)."""
    for base in (root / "src", root):
        if base in path.parents:
            return list(path.relative_to(base).parent.parts)
    return []


def imported_files(root: Path, path: Path) -> set[Path]:
    """Project files that importing ``path`` runs directly: imported modules and every package above them."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = package_of(root, path)
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names += [base] + [f"{base}.{a.name}" for a in node.names]  # ``from pkg import module``
    out: set[Path] = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, a/b/c
            f = module_file(root, ".".join(parts[:i]))
            if f is not None:
                out.add(f)
    return out


def closure(root: Path, script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(imported_files(root, f) - seen)
    return seen


# ----------------------------------------------------------------------------- dvc.yaml


def _lookup(context: dict[str, Any], dotted: str) -> Any:
    value: Any = context
    for part in dotted.split("."):
        value = value[part]
    return value


def expand_stages(root: Path, **params: Any) -> dict[str, dict[str, Any]]:
    """Stage name → {"cmd", "deps"} with ``foreach`` and ``matrix`` expanded and ``${...}`` resolved from
    vars, params and the item. ``params`` override params.yaml's top-level values; by default
    ``extra_seeds`` = [1] and ``oracles`` = [moco], so that the per-seed and oracle stages (none by
    default) are checked too."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    context: dict[str, Any] = dict(yaml.safe_load((root / "params.yaml").read_text()))
    context.update({"extra_seeds": [1], "oracles": ["moco"], **params})
    for block in spec.get("vars", []):
        context.update(block)

    def resolve(text: str, local: dict[str, Any]) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(_lookup({**context, **local}, m.group(1).strip())), text)

    out: dict[str, dict[str, Any]] = {}
    for name, stage in spec["stages"].items():
        if "foreach" in stage:
            items = stage["foreach"]
            if isinstance(items, str):
                items = _lookup(context, items.strip()[2:-1])
            pairs = items.items() if isinstance(items, dict) else ((i, i) for i in items)
            body = stage["do"]
        elif "matrix" in stage:  # DVC's names: the values joined by "-", in the matrix's key order
            dims = {
                k: _lookup(context, v.strip()[2:-1]) if isinstance(v, str) else v for k, v in stage["matrix"].items()
            }
            combos = [dict(zip(dims, values)) for values in itertools.product(*dims.values())]
            pairs = [("-".join(str(v) for v in item.values()), item) for item in combos]
            body = stage
        else:
            pairs, body = [(None, None)], stage
        for key, item in pairs:
            local = {} if key is None else {"item": item, "key": key}
            deps = [resolve(d, local) for d in body.get("deps", []) if isinstance(d, str)]
            out[name if key is None else f"{name}@{key}"] = {"cmd": resolve(body["cmd"], local), "deps": deps}
    return out


def uncovered(root: Path) -> dict[str, list[str]]:
    """Stage → project files its script imports that none of its deps covers."""
    short: dict[str, list[str]] = {}
    for name, stage in expand_stages(root).items():
        m = SCRIPT.search(stage["cmd"])
        assert m, f"stage {name}: no stages/*.py script in its cmd {stage['cmd']!r}"
        deps = [d.rstrip("/") for d in stage["deps"]]
        files = sorted(f.relative_to(root).as_posix() for f in closure(root, root / m.group(1)))
        missing = [f for f in files if not any(f == d or f.startswith(d + "/") for d in deps)]
        if missing:
            short[name] = missing
    return short


def dead_code_deps(root: Path) -> dict[str, list[str]]:
    """Stage → deps under src/ or stages/ that hold no file of its script's import closure."""
    dead: dict[str, list[str]] = {}
    for name, stage in expand_stages(root).items():
        script = root / SCRIPT.search(stage["cmd"]).group(1)
        files = {f.relative_to(root).as_posix() for f in closure(root, script)}
        code = [d.rstrip("/") for d in stage["deps"] if d.startswith(("src/", "stages/"))]
        unused = [d for d in code if not any(f == d or f.startswith(d + "/") for f in files)]
        if name.startswith(("lineval@random", "shift@random")):
            # the random-init control depends on the code that builds it (its `backbone` var)
            unused = [d for d in unused if d != "src/oacl/models/backbones.py"]
        if unused:
            dead[name] = unused
    return dead


# ---------------------------------------------------------------------------------- tests


def test_every_stage_lists_the_files_its_script_imports() -> None:
    short = uncovered(REPO)
    assert not short, "imports missing from dvc.yaml deps:\n" + "\n".join(
        f"  {stage}: {', '.join(files)}" for stage, files in short.items()
    )


def test_no_stage_lists_code_it_does_not_import() -> None:
    dead = dead_code_deps(REPO)
    assert not dead, "dvc.yaml deps that no import reaches:\n" + "\n".join(
        f"  {stage}: {', '.join(files)}" for stage, files in dead.items()
    )


def test_closures_are_narrow() -> None:
    """The layers hold: data generation runs no model code, evaluation runs no training code."""
    stages = expand_stages(REPO)

    def files(stage: str) -> set[str]:
        script = REPO / SCRIPT.search(stages[stage]["cmd"]).group(1)
        return {f.relative_to(REPO).as_posix() for f in closure(REPO, script)}

    assert not {f for f in files("generate") if f.startswith(("src/oacl/models/", "src/oacl/train/", "src/oacl/eval/"))}
    for stage in ("lineval@moco", "shift@moco", "detect@moco"):
        ran = files(stage)
        assert not {f for f in ran if f.startswith(("src/oacl/train/", "src/oacl/augment/", "src/oacl/cam/"))}, stage
        assert "src/oacl/models/moco.py" not in ran, stage
    assert files("report") <= {
        "stages/report.py",
        "src/oacl/__init__.py",
        "src/oacl/report.py",
        "src/oacl/claims.py",  # the claims on paired seeds (extra_seeds)
        "src/oacl/exps.py",
        "src/oacl/cli.py",
        "src/oacl/config.py",
        "src/oacl/errors.py",
        "src/oacl/vocab.py",
        "src/oacl/io/__init__.py",
        "src/oacl/io/atomic.py",
        "src/oacl/io/results.py",
    }
    assert not {f for f in files("retrain@moco-bgmix") if f.startswith("src/oacl/eval/")}


def test_each_extra_seed_stage_runs_its_base_stage_with_the_same_code() -> None:
    """``extra_seeds`` stages (``pretrain-seed@1-moco``, ``lineval-seed-retrain@1-moco-bgmix``, ...) run
    the script of their base stage with the same code deps, the seed's own inputs, and no seed twice."""
    stages = expand_stages(REPO, extra_seeds=[1, 2], oracles=[])
    assert not [n for n in expand_stages(REPO, extra_seeds=[]) if "-seed" in n.split("@")[0]]
    seeded = {n: s for n, s in stages.items() if "-seed" in n.split("@")[0]}
    bases = {"pretrain", "contracam", "retrain", "lineval", "shift", "detect"}
    assert {n.split("-seed")[0] for n in seeded} == bases
    # per seed: 2 pretrains, 2 CAM sets, 4 retrains, 6 probes, 6 shift tests, 2 detection fine-tunes
    assert len(seeded) == 2 * 22
    for name, stage in seeded.items():
        base = stages[min(n for n in stages if n.split("@")[0] == name.split("-seed")[0])]
        code = sorted(d for d in stage["deps"] if d.startswith(("src/", "stages/")))
        assert code == sorted(d for d in base["deps"] if d.startswith(("src/", "stages/"))), name
        seed = name.split("@")[1].split("-")[0]
        assert "artifacts/seeds/s" + seed in stage["cmd"], name
        inputs = [d for d in stage["deps"] if d.startswith("artifacts/") and not d.startswith("artifacts/imported")]
        assert all(d.startswith(f"artifacts/seeds/s{seed}/") for d in inputs), (name, inputs)
    assert "--seed 2" in stages["retrain-seed-pmix@2-byol-bgmix"]["cmd"]


def test_the_oracle_stages_run_their_family_with_the_same_code_from_the_data_alone() -> None:
    """``oracles`` adds, per method listed, OA-Crop with true boxes and BG-HardMix with true masks and
    their probes and shift tests: for pretrain.seed (its ``s<seed>/``, no --seed) and for each extra seed."""
    assert not [n for n in expand_stages(REPO, oracles=[]) if "-oracle" in n]
    stages = expand_stages(REPO, extra_seeds=[2], oracles=["moco", "byol"])
    oracle = {n: s for n, s in stages.items() if "-oracle" in n}
    expected = {
        f"{family}{seed}-oracle@{prefix}{m}-{d}"
        for family in ("retrain", "lineval", "shift")
        for seed, prefix in (("", ""), ("-seed", "2-"))
        for m in ("moco", "byol")
        for d in ("oacrop_gt", "hardmix_gt")
    }
    assert set(oracle) == expected
    for name, stage in oracle.items():
        family = name.split("-")[0]
        base = stages[f"{family}@moco-oacrop"]
        code = sorted(d for d in stage["deps"] if d.startswith(("src/", "stages/")))
        assert code == sorted(d for d in base["deps"] if d.startswith(("src/", "stages/"))), name
        seed = "2" if "-seed-" in name else "0"
        assert f"--out-dir artifacts/seeds/s{seed}" in stage["cmd"], name
        assert ("--seed 2" in stage["cmd"]) == (seed == "2" and family == "retrain"), name
        inputs = [d for d in stage["deps"] if d.startswith("artifacts/")]
        assert all(d.startswith(f"artifacts/seeds/s{seed}/") for d in inputs), (name, inputs)
        assert not [d for d in inputs if "/cam/" in d] and (family == "retrain") == (not inputs), name
    assert "--debias hardmix_gt" in stages["retrain-oracle@byol-hardmix_gt"]["cmd"]


# --------------------------------------------------------------------------------- data deps

# What each reader of oacl.data.source opens on the embedded benchmark, relative to data.root; "<set>"
# is the set a stage's cmd names with --dataset, else both. A new reader must be entered here.
READS: dict[str, list[str]] = {
    "train_set": ["<set>/train.h5"],
    "stored_side": ["<set>/train.h5"],
    "knn_files": ["multi/crops_train.h5", "multi/crops_val.h5", "single/train.h5", "single/val.h5"],
    "crops_splits": ["multi/crops_train.h5", "multi/crops_val.h5", "multi/crops_test.h5"],
    "original_splits": ["single/train.h5", "single/val.h5", "single/original.h5"],
    "bg_sources": ["single"],  # every Background Challenge variant file present
    "shift_sources": ["shift"],  # every shift set present
    "detection_files": [
        "multi/instances_train.json",
        "multi/train.h5",
        "multi/instances_test.json",
        "multi/test.h5",
    ],
    "benchmark_record": ["benchmark.json"],
}
NOT_READERS = {"ImageSource"}  # names of oacl.data.source that open no file
TRAINING = ("pretrain", "contracam", "retrain")  # and their -seed / -oracle families


def source_readers(root: Path, script: Path) -> set[str]:
    """Names imported from ``oacl.data.source`` anywhere in the import closure of ``script``."""
    names: set[str] = set()
    for f in closure(root, script):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and node.module == "oacl.data.source":
                names |= {a.name for a in node.names}
    return names - NOT_READERS


def data_reads(root: Path, stage: dict[str, Any], data_root: str) -> set[str]:
    """The data files (or folders) a stage's code opens, from the readers its closure imports."""
    script = root / SCRIPT.search(stage["cmd"]).group(1)
    m = re.search(r"--dataset (\w+)", stage["cmd"])
    sets = [m.group(1)] if m else ["multi", "single"]
    out: set[str] = set()
    for name in source_readers(root, script):
        assert name in READS, f"{script.name} reads data through oacl.data.source.{name}: add it to READS"
        for rel in READS[name]:
            out |= {f"{data_root}/{rel.replace('<set>', s)}" for s in sets}
    return out


def test_the_reader_table_names_the_files_the_readers_resolve() -> None:
    from oacl.config import DataConfig
    from oacl.data.source import benchmark_record, detection_files, knn_files

    data = DataConfig(root="d")
    files = [p for part in ("multi", "single") for p in knn_files(data, part)[1:]]
    assert [p.as_posix() for p in files] == [f"d/{r}" for r in READS["knn_files"]]
    assert [p.as_posix() for p in vars(detection_files(data)).values()] == [f"d/{r}" for r in READS["detection_files"]]
    assert benchmark_record(data).as_posix() == f"d/{READS['benchmark_record'][0]}"


def test_every_stage_depends_on_the_data_it_reads_and_training_on_no_test_split() -> None:
    """A stage's data deps cover every file its code opens; a training stage lists those files and nothing
    else, so that a larger test split (params.claims.yaml) reruns the evaluations and no training."""
    data_root = yaml.safe_load((REPO / "params.yaml").read_text())["data"]["root"]
    stages = expand_stages(REPO)
    for name, stage in stages.items():
        if name == "generate":
            continue
        reads = data_reads(REPO, stage, data_root)
        deps = [d.rstrip("/") for d in stage["deps"] if d == data_root or d.startswith(data_root + "/")]
        missing = sorted(f for f in reads if not any(f == d or f.startswith(d + "/") for d in deps))
        assert not missing, f"{name} reads {missing} without a dep on them"
        if name.split("@")[0].split("-")[0] in TRAINING:
            assert reads and set(deps) == reads, (name, sorted(set(deps) ^ reads))
    assert {f for f in data_reads(REPO, stages["contracam@single"], "d")} == {"d/single/train.h5"}


def _copy_project(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("src", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, root / name)
    return root


def test_a_removed_dep_is_named(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    text = (root / "dvc.yaml").read_text()
    assert "        - src/oacl/eval/linear.py\n" in text
    # drop the first listing of eval/linear.py: the lineval template's
    (root / "dvc.yaml").write_text(text.replace("        - src/oacl/eval/linear.py\n", "", 1))
    short = uncovered(root)
    assert set(short) == {name for name in expand_stages(root) if name.startswith("lineval@")}
    assert all(files == ["src/oacl/eval/linear.py"] for files in short.values()), short


def test_a_new_import_without_its_dep_is_named(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    (root / "src" / "oacl" / "extra_helper.py").write_text("X = 1\n")
    report = root / "src" / "oacl" / "report.py"
    report.write_text(report.read_text() + "\nfrom oacl.extra_helper import X  # noqa: E402\n")
    assert uncovered(root) == {"report": ["src/oacl/extra_helper.py"]}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import oacl.eval.linear", {"src/oacl/__init__.py", "src/oacl/eval/__init__.py", "src/oacl/eval/linear.py"}),
        (
            "from oacl.eval import linear",
            {"src/oacl/__init__.py", "src/oacl/eval/__init__.py", "src/oacl/eval/linear.py"},
        ),
        ("from oacl.vocab import METHODS", {"src/oacl/__init__.py", "src/oacl/vocab.py"}),
        ("def f():\n    from oacl import perf\n", {"src/oacl/__init__.py", "src/oacl/perf.py"}),
        ("import numpy, os", set()),
    ],
)
def test_imported_files_counts_packages_and_local_imports(tmp_path: Path, source: str, expected: set[str]) -> None:
    script = tmp_path / "probe.py"
    script.write_text(source + "\n")
    assert {f.relative_to(REPO).as_posix() for f in imported_files(REPO, script)} == expected


def test_project_code_imports_checkpoint_functions_from_their_module() -> None:
    """``oacl.io`` resolves ``load_backbone`` lazily, out of the closure's sight; the project itself must not use that path."""
    offenders = []
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "stages").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "oacl.io" and node.level == 0:
                offenders.append(
                    f"{path.relative_to(REPO)}: from oacl.io import {', '.join(a.name for a in node.names)}"
                )
            if isinstance(node, ast.Attribute) and node.attr in ("load_backbone", "load_encoder_projector"):
                if isinstance(node.value, ast.Attribute) and node.value.attr == "io":
                    offenders.append(f"{path.relative_to(REPO)}: oacl.io.{node.attr}")
    assert not offenders, offenders
