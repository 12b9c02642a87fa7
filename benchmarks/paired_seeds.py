"""Paired training seeds in separate project folders, for the claims on paired seeds (issue 18).

``extra_seeds`` in params.yaml (the per-seed stages of ``dvc.yaml``) is the plain way to get paired
seeds of the whole DAG. When only part of the DAG is worth rerunning per seed (one method), or a
part ``extra_seeds`` does not repeat (the oracle variants), an experiment run on targets
keeps the other stages' metrics of the base seed in its commit, and ``dvc exp show`` cannot tell
them apart. This script makes one copy of the project folder per seed instead — the workspace
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

``--models M …`` stands for the targets ``lineval@M shift@M`` of each model, and ``--enable V …``
switches on, in each copy's ``dvc.yaml`` only, the optional retrain variants that the project's
``dvc.yaml`` leaves commented out (the ``hardmix`` / ``mixup`` / ``cutmix`` comparisons; the oracles
are the params ``oracles``): the retrain entry is uncommented and the model is added to
``eval_models``. ``--overlay F`` sets every key of the params overlay ``F`` in each copy's
``params.yaml`` (comments kept; checked against ``oacl.config`` before any copy is made), and
``--claims J --claims-md M``, once every seed's run has succeeded, judges the claims on the copies as
``python -m oacl.claims --dirs`` does. (The claims profile, ``params.claims.yaml``, runs its seeds in
one project with ``extra_seeds``: README, "The claims profile".)

``--param`` sets another param instead: a curve against ``pmix`` from one seed's folder (copies
``pmix0.2``, ``pmix0.6``, ...), read by ``python -m oacl.exps --dirs … --curve pmix``::

    PYTHONPATH=src python benchmarks/paired_seeds.py --param pmix --values 0 0.2 0.6 0.8 \\
        --root /tmp/pmix/seed0 --targets lineval@moco-bgmix shift@moco-bgmix
"""

from __future__ import annotations

import argparse
import io
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from oacl.io.atomic import write_json, write_text
from oacl.vocab import variant_backbone_path

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


def overlay_leaves(params_file: Path, overlay_file: Path, param: str) -> list[tuple[str, object]]:
    """The values an overlay (``params.claims.yaml``) sets, as (dotted key, value), checked before any copy.

    ValueError names an overlay that is not a mapping, a key ``params_file`` lacks, an overlay that sets
    ``param`` itself (each copy sets its own value), or a value ``oacl.config`` refuses once merged.
    """
    import yaml

    from oacl.config import ConfigError, Params, overlay, parse_section
    from oacl.exps import MISSING, flatten, lookup

    base = yaml.safe_load(params_file.read_text())
    try:
        extra = yaml.safe_load(overlay_file.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{overlay_file}: cannot read it as YAML ({err})") from None
    if not isinstance(extra, dict) or not extra:
        raise ValueError(f"{overlay_file}: not a mapping of params to change")
    leaves = list(flatten(extra))
    for key, _ in leaves:
        if key == param or key.startswith(f"{param}.") or param.startswith(f"{key}."):
            raise ValueError(f"{overlay_file}: sets {key!r}, the param each copy sets to its own value")
        if key == "extra_seeds" and param == "pretrain.seed":
            raise ValueError(f"{overlay_file}: sets 'extra_seeds', but each copy is one seed (run it in one project)")
        if lookup(base, key) is MISSING:
            raise ValueError(f"{overlay_file}: {params_file} has no {key!r}")
    try:
        parse_section(Params, overlay(base, extra))
    except ConfigError as err:
        raise ValueError(f"{overlay_file}: {err}") from None
    return leaves


def number(text: str) -> int | float:
    """A command-line value as YAML would read it: ``2`` an int, ``0.2`` a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def copy_name(param: str, value: int | float) -> str:
    """The copy's folder name: the param's last part and the value (``seed1``, ``pmix0.2``)."""
    return f"{param.rsplit('.', 1)[-1]}{value}"


def model_targets(models: Sequence[str]) -> list[str]:
    """The evaluation targets of each model: its linear probe and its shift tests."""
    return [f"{stage}@{m}" for m in models for stage in ("lineval", "shift")]


def offered_variants(lines: Sequence[str]) -> dict[str, list[int]]:
    """The optional retrain variants of a ``dvc.yaml``: each commented ``# <name>: {method: …}`` line."""
    offered: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        body = line.lstrip()
        if body.startswith("# ") and ": {method: " in body:
            offered.setdefault(body[2:].split(":", 1)[0], []).append(i)
    return offered


def check_variants(dvc_yaml: Path, names: Sequence[str], offered: Mapping[str, list[int]] | None = None) -> None:
    """ValueError naming a variant ``dvc_yaml`` does not offer exactly once (``offered``: its variants,
    when already read)."""
    if offered is None:
        offered = offered_variants(dvc_yaml.read_text().splitlines())
    for name in names:
        if len(offered.get(name, ())) != 1:
            have = ", ".join(sorted(offered)) or "none"
            raise ValueError(f"{dvc_yaml}: no commented retrain variant {name!r} to enable (offered: {have})")


def enable_variants(dvc_yaml: Path, names: Sequence[str]) -> None:
    """Uncomment the optional retrain variants ``names`` in ``dvc_yaml`` and add each to ``eval_models``.

    Each model goes into ``eval_models`` with the backbone path its retrain stage writes.
    """
    lines = dvc_yaml.read_text().splitlines(keepends=True)
    offered = offered_variants(lines)
    check_variants(dvc_yaml, names, offered)
    anchor = next((i for i, line in enumerate(lines) if line.strip() == "- eval_models:"), None)
    if anchor is None:
        raise ValueError(f"{dvc_yaml}: no `eval_models` list in its vars")
    indent = len(lines[anchor + 1]) - len(lines[anchor + 1].lstrip())
    end = anchor + 1  # past the last entry: the run of lines at the first entry's indent
    while end < len(lines) and lines[end].strip() and len(lines[end]) - len(lines[end].lstrip()) == indent:
        end += 1
    for name in names:
        i = offered[name][0]
        lines[i] = lines[i].replace("# ", "", 1)
    lines[end:end] = [f"{' ' * indent}{n}: {{backbone: {variant_backbone_path(n)}}}\n" for n in names]
    write_text(dvc_yaml, "".join(lines))


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
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--targets", nargs="+", help="`dvc repro` targets in each copy")
    what.add_argument("--models", nargs="+", help="models whose lineval@M and shift@M to run in each copy")
    p.add_argument(
        "--enable", nargs="+", default=[], help="optional retrain variants to uncomment in each copy's dvc.yaml"
    )
    p.add_argument("--root", required=True, help="folder for the copies (seed<N>, pmix<x>, ...: copy_name)")
    p.add_argument("--param", default="pretrain.seed", help="the param to set (dotted key of params.yaml)")
    p.add_argument("--project", default=".", help="the project folder to copy (default: here)")
    p.add_argument(
        "--overlay", type=Path, help="a params overlay (e.g. params.claims.yaml) set in each copy's params.yaml"
    )
    p.add_argument("--claims", metavar="JSON", help="when every run succeeded, judge the claims on the copies here")
    p.add_argument("--claims-md", metavar="MD", help="... and write their Markdown table here")
    args = p.parse_args(argv)
    project, root = Path(args.project).resolve(), Path(args.root)
    targets = args.targets or model_targets(args.models)
    judging = bool(args.claims or args.claims_md)
    if judging and args.param != "pretrain.seed":
        p.error("--claims judges paired training seeds: it takes --seeds, not another --param")
    try:
        check_variants(project / "dvc.yaml", args.enable)
        leaves = overlay_leaves(project / "params.yaml", args.overlay, args.param) if args.overlay else []
    except ValueError as e:
        p.error(str(e))
    root.mkdir(parents=True, exist_ok=True)
    status = 0
    dests = []
    t_start = time.perf_counter()
    for value in args.values:
        dest = root / copy_name(args.param, value)
        copy_project(project, dest, root)
        dests.append(dest)
        for key, setting in leaves:
            set_param(dest / "params.yaml", key, setting)
        set_param(dest / "params.yaml", args.param, value)
        if args.enable:
            enable_variants(dest / "dvc.yaml", args.enable)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", "dvc", "repro", *targets], cwd=dest).returncode
        wall = time.perf_counter() - t0
        record = {
            "param": args.param,
            "value": value,
            "overlay": str(args.overlay) if args.overlay else None,
            "enabled": args.enable,
            "targets": targets,
            "wall_s": round(wall, 1),
            "rc": rc,
        }
        write_json(dest / "paired_seeds.json", record)
        print(f"paired_seeds: {args.param} = {value}: `dvc repro` exit {rc} after {wall:.0f} s in {dest}", flush=True)
        status = status or rc
    if not judging:
        return status
    if status:
        print("paired_seeds: a run failed; the claims are not judged", file=sys.stderr)
        return status
    from oacl.claims import main as claims_main

    wall = time.perf_counter() - t_start
    command = shlex.join(["python", "benchmarks/paired_seeds.py", *(sys.argv[1:] if argv is None else argv)])
    outs = [*(["--out", args.claims] if args.claims else []), *(["--md", args.claims_md] if args.claims_md else [])]
    return claims_main(["--dirs", *map(str, dests), "--wall-s", f"{wall:.1f}", "--command", command, *outs])


if __name__ == "__main__":
    sys.exit(main())
