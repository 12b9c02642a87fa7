"""Paired training seeds in separate project folders, for the claims on paired seeds (issue 18).

``dvc exp run -S pretrain.seed=N`` of the whole DAG is the plain way to get paired seeds. When only
part of the DAG is worth rerunning per seed (one method, the oracle variants), an experiment run on
targets keeps the other stages' metrics of the base seed in its commit, and ``dvc exp show`` cannot
tell them apart. This script makes one copy of the project folder per seed instead — the workspace
with its outputs, sharing this project's DVC cache, so what a seed has in common with the others is
restored rather than rerun — sets the seed param in the copy's ``params.yaml`` (comments kept) and
runs ``dvc repro`` on the targets there. ``python -m oacl.claims --dirs`` then reads each folder's
metrics that its ``dvc.lock`` shows current, and nothing stale::

    PYTHONPATH=src python benchmarks/paired_seeds.py --seeds 1 2 --root /tmp/seeds \\
        --targets lineval@moco shift@moco lineval@moco-oacrop shift@moco-oacrop
    PYTHONPATH=src python -m oacl.claims --dirs . /tmp/seeds/seed1 /tmp/seeds/seed2 \\
        --out docs/results/claims.json --md docs/results/claims.md

The project folder itself is the base seed's run (``dvc repro`` there first). Each copy gets
``paired_seeds.json`` with the param and its value, the targets, wall seconds and exit status.

``--param`` sets another param instead: a curve against ``pmix`` from one seed's folder (copies
``pmix0.2``, ``pmix0.6``, ...), read by ``python -m oacl.exps --dirs … --curve pmix``::

    PYTHONPATH=src python benchmarks/paired_seeds.py --param pmix --values 0 0.2 0.6 0.8 \\
        --root /tmp/pmix/seed0 --targets lineval@moco-bgmix shift@moco-bgmix
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from oacl.io.atomic import write_json, write_text

# not copied: the shared cache, DVC's scratch space, environments, tool caches, and the project's own
# record if it is itself a copy (a copy's record is written when its run ends; until then it has none)
SKIP = (
    ".dvc/cache",
    ".dvc/tmp",
    ".venv",
    "venv",
    ".ruff_cache",
    ".pytest_cache",
    "__pycache__",
    "paired_seeds.json",
)


def set_param(params_file: Path, key: str, value: object) -> None:
    """Set the dotted ``key`` of a YAML file to ``value``, keeping its comments and layout.

    KeyError names a key the file does not have (a typo would otherwise add a param no stage reads).
    """
    from ruamel.yaml import YAML

    rt = YAML(typ="rt")  # round trip: keeps comments; builds only YAML nodes, no Python objects (safe)
    doc = rt.load(params_file.read_text())
    *parents, leaf = key.split(".")
    node = doc
    for i, part in enumerate(parents):
        if not hasattr(node, "get") or part not in node:
            raise KeyError(f"{params_file}: no {'.'.join(parents[: i + 1])!r}")
        node = node[part]
    if not hasattr(node, "get") or leaf not in node:
        raise KeyError(f"{params_file}: no {key!r}")
    node[leaf] = value
    text = io.StringIO()
    rt.dump(doc, text)
    write_text(params_file, text.getvalue())


def number(text: str) -> int | float:
    """A command-line value as YAML would read it: ``2`` an int, ``0.2`` a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def copy_name(param: str, value: int | float) -> str:
    """The copy's folder name: the param's last part and the value (``seed1``, ``pmix0.2``)."""
    return f"{param.rsplit('.', 1)[-1]}{value}"


def _ignore(project: Path, root: Path):
    skip = {project / s for s in SKIP}

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        return {n for n in names if here / n in skip or n in SKIP or (here / n).resolve() == root.resolve()}

    return ignore


def cache_dir(project: Path) -> Path:
    """The DVC cache ``project`` uses: ``.dvc/cache``, or where its config points (a copy's copy)."""
    out = subprocess.run([sys.executable, "-m", "dvc", "cache", "dir"], cwd=project, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{project}: `dvc cache dir` failed: {out.stderr.strip()}")
    return Path(out.stdout.strip()).resolve()


def copy_project(project: Path, dest: Path, root: Path) -> None:
    """``project`` to ``dest`` without the :data:`SKIP` folders (or ``root``), sharing ``project``'s cache.

    The cache is the one ``project`` uses, not its ``.dvc/cache`` folder: a project that is itself a
    copy has none, and a copy pointed there would find no outputs and rerun the whole DAG.
    """
    if dest.exists():
        raise FileExistsError(f"{dest} exists; remove it or choose another --root")
    cache = cache_dir(project)
    shutil.copytree(project, dest, symlinks=True, ignore=_ignore(project, root))
    subprocess.run([sys.executable, "-m", "dvc", "cache", "dir", "--local", str(cache)], cwd=dest, check=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--seeds",
        "--values",
        dest="values",
        type=number,
        nargs="+",
        required=True,
        help="values of --param to run, one copy each (the project folder is the base value)",
    )
    p.add_argument("--targets", nargs="+", required=True, help="`dvc repro` targets in each copy")
    p.add_argument("--root", required=True, help="folder for the copies (seed<N>, pmix<x>, ...: copy_name)")
    p.add_argument("--param", default="pretrain.seed", help="the param to set (dotted key of params.yaml)")
    p.add_argument("--project", default=".", help="the project folder to copy (default: here)")
    args = p.parse_args(argv)
    project, root = Path(args.project).resolve(), Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    status = 0
    for value in args.values:
        dest = root / copy_name(args.param, value)
        copy_project(project, dest, root)
        set_param(dest / "params.yaml", args.param, value)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", "dvc", "repro", *args.targets], cwd=dest).returncode
        wall = time.perf_counter() - t0
        record = {"param": args.param, "value": value, "targets": args.targets, "wall_s": round(wall, 1), "rc": rc}
        write_json(dest / "paired_seeds.json", record)
        print(f"paired_seeds: {args.param} = {value}: `dvc repro` exit {rc} after {wall:.0f} s in {dest}", flush=True)
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main())
