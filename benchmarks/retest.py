"""The models of paired-seed folders tested again on larger test splits, and the claims judged there.

Issue 18, item 2. The claims read small test splits (900 images per Background Challenge variant,
~1,400 object crops): one accuracy's binomial s.e. is 1.2–1.7 points, the size of the effects. Test
images are cheap, and the benchmark's sets do not depend on each other's sizes (one generator per
set, ``oacl.data.benchmark``), so the models a folder trained can be tested on more images without
training anything again. For each folder (one per seed, as ``benchmarks/paired_seeds.py`` makes):

1. ``params-<name>.yaml``: its ``params.yaml`` with ``data.root: data-<name>`` and the ``--set``
   test sizes (only the test-split keys of :data:`TEST_KEYS` may change);
2. ``data-<name>/``: the benchmark generated with those params (once; a later folder with the same
   benchmark params links to it), after which every file a model was trained or validated on
   (:data:`FIXED`) must be byte-identical to the folder's own ``data/`` — else it stops, naming it;
3. ``stages/lineval.py`` and ``stages/shift.py`` of each model, with the new params, into
   ``out/<name>/``, then a stamp of what they were made from (the md5 of the model's weights and of
   the params file): a model whose stamp and metrics are there is skipped, one retrained since (or
   a copy's stale ``out/``) is tested again. Outside DVC: a measurement on the kept models, not a
   stage of the pipeline.

Then the claims of ``oacl.claims`` on the new metrics, one column per folder::

    PYTHONPATH=src python benchmarks/retest.py --dirs ../claims/seed0 ../claims/seed1 ../claims/seed2 \\
        --set data.benchmark.single.test=4000 data.benchmark.multi.test=2400 --name test4k \\
        --models random moco moco-oacrop moco-bgmix byol byol-oacrop byol-bgmix \\
        --out docs/results/claims-test4k.json --md docs/results/claims-test4k.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_seeds import number, set_param  # noqa: E402

from oacl.claims import by_seed, judge  # noqa: E402
from oacl.exps import Column, flatten  # noqa: E402
from oacl.io.atomic import write_json  # noqa: E402
from oacl.vocab import variant_backbone_path  # noqa: E402

# the only params a retest may change: test-split sizes, which no model was trained or validated on
TEST_KEYS = ("data.benchmark.multi.test", "data.benchmark.single.test", "data.benchmark.shift.test")
# the files a model was trained on, or its probe's ℓ2 chosen on: equal, byte for byte, or no retest
FIXED = (
    "multi/train.h5",
    "multi/instances_train.json",
    "multi/crops_train.h5",
    "multi/crops_val.h5",
    "single/train.h5",
    "single/val.h5",
)


def parse_sets(items: Sequence[str]) -> dict[str, int | float]:
    """``KEY=VALUE`` pairs; ValueError names one that is malformed or not a test-split size."""
    out: dict[str, int | float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        if key not in TEST_KEYS:
            raise ValueError(f"--set {key!r}: only test-split sizes may change ({', '.join(TEST_KEYS)})")
        out[key] = number(value)
    return out


def write_params(folder: Path, name: str, sets: Mapping[str, int | float]) -> Path:
    """``params-<name>.yaml`` in ``folder``: its params.yaml, the new data root and test sizes."""
    dest = folder / f"params-{name}.yaml"
    shutil.copyfile(folder / "params.yaml", dest)
    set_param(dest, "data.root", f"data-{name}")
    for key, value in sets.items():
        set_param(dest, key, value)
    return dest


def benchmark_of(params_file: Path) -> Any:
    """The params the benchmark is generated from (those ``generate`` reads but the root)."""
    return yaml.safe_load(params_file.read_text())["data"]["benchmark"]


def unequal_fixed(old: Path, new: Path) -> list[str]:
    """The :data:`FIXED` files that differ between the data folders ``old`` and ``new`` (or are missing)."""
    bad = []
    for rel in FIXED:
        a, b = old / rel, new / rel
        if not (a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()):
            bad.append(rel)
    return bad


def stamp(folder: Path, name: str, model: str) -> dict[str, str]:
    """What a model's retest is made from: the md5 of its weights (``random``: none) and of the params."""
    weights = variant_backbone_path(model, folder / "artifacts" / "models")
    if weights is not None and not weights.is_file():
        raise RuntimeError(f"{folder}: no {weights.relative_to(folder)} for model {model!r} (run its stages first)")
    digest = hashlib.md5(weights.read_bytes()).hexdigest() if weights else "random"
    return {"backbone": digest, "params": hashlib.md5((folder / f"params-{name}.yaml").read_bytes()).hexdigest()}


def stage(folder: Path, script: str, args: Sequence[str]) -> None:
    env = dict(os.environ, PYTHONPATH="src")
    cmd = [sys.executable, f"stages/{script}", *args]
    if subprocess.run(cmd, cwd=folder, env=env).returncode != 0:
        raise RuntimeError(f"{folder}: `{' '.join(cmd)}` failed")


def retest_column(folder: Path, name: str) -> Column:
    """A folder's retest as one column: the new params and every metrics file in ``out/<name>``."""
    params = dict(flatten(yaml.safe_load((folder / f"params-{name}.yaml").read_text())))
    metrics: dict[str, Any] = {}
    for file in sorted((folder / "out" / name / "metrics").glob("*.json")):
        metrics.update({f"{file.name}:{k}": v for k, v in flatten(json.loads(file.read_text()))})
    return Column(str(folder), params, metrics)


def retest(folders: Sequence[Path], name: str, sets: Mapping[str, int | float], models: Sequence[str]) -> None:
    """Steps 1–3 of the module's docstring for each folder; RuntimeError names what failed."""
    generated: list[tuple[Any, Path]] = []  # (benchmark params, data folder) made so far
    for folder in folders:
        params = write_params(folder, name, sets)
        old = folder / yaml.safe_load((folder / "params.yaml").read_text())["data"]["root"]
        new = folder / f"data-{name}"
        bench = benchmark_of(params)
        if not new.exists():
            same = next((d for b, d in generated if b == bench), None)
            if same is not None:
                new.symlink_to(same.resolve(), target_is_directory=True)
            else:
                gen = ["--params", params.name, "--out-data", new.name]
                gen += [
                    "--out-metrics",
                    f"out/{name}/metrics/generate.json",
                    "--out-plots",
                    f"out/{name}/plots/generate",
                ]
                stage(folder, "generate.py", gen)
        generated.append((bench, new))
        bad = unequal_fixed(old, new)
        if bad:
            raise RuntimeError(f"{new} differs from {old} in {', '.join(bad)}: not the data the models saw")
        out = folder / "out" / name
        for model in models:
            made = stamp(folder, name, model)
            mark = out / "stamps" / f"{model}.json"
            have = all((out / "metrics" / f"{s}-{model}.json").is_file() for s in ("lineval", "shift"))
            if have and mark.is_file() and json.loads(mark.read_text()) == made:
                continue
            mark.unlink(missing_ok=True)
            for script in ("lineval.py", "shift.py"):
                stage(folder, script, ["--model", model, "--params", params.name, "--out-dir", f"out/{name}"])
            write_json(mark, made)
        print(f"retest: {folder} done", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dirs", nargs="+", required=True, help="project folders, one per seed, after `dvc repro`")
    p.add_argument("--set", dest="sets", nargs="+", required=True, metavar="KEY=VALUE", help="new test sizes")
    p.add_argument("--name", required=True, help="names params-<name>.yaml, data-<name>/ and out/<name>/")
    p.add_argument("--models", nargs="+", required=True, help="models to test (each folder must have them)")
    p.add_argument("--out", help="write the claims JSON here")
    p.add_argument("--md", help="write the claims Markdown here")
    args = p.parse_args(argv)
    try:
        sets = parse_sets(args.sets)
    except ValueError as err:
        p.error(str(err))
    t0 = time.perf_counter()
    try:
        retest(list(map(Path, args.dirs)), args.name, sets, args.models)
    except RuntimeError as err:
        print(f"retest: {err}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    runs = by_seed([retest_column(Path(d), args.name) for d in args.dirs])
    command = "PYTHONPATH=src python benchmarks/retest.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(judge(runs, command, wall, args.out, args.md), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
