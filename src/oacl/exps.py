"""Experiments side by side, one headline number per line (``python -m oacl.exps``).

``dvc exp show`` prints a column for every ``params.yaml`` leaf, every file a stage depends on and
every metric (hundreds on the default DAG) and DVC has no setting to hide them. This view turns the
table around: one column per experiment (workspace, commits, ``dvc exp run`` results), one line per
changed parameter and per headline metric, with short names::

    PYTHONPATH=src python -m oacl.exps                 # what differs between the rows
    PYTHONPATH=src python -m oacl.exps --all           # every headline metric
    PYTHONPATH=src python -m oacl.exps --csv -A        # other arguments go to `dvc exp show`
    PYTHONPATH=src python -m oacl.exps --curve pmix --out pmix.png   # headline numbers against a param
    PYTHONPATH=src python -m oacl.exps --dirs . ../seeds/seed1       # project folders (workspace())

Values are rounded to one decimal (numbers below 1 to four significant digits), and "differs"
means differs at that rounding. It reads ``dvc exp show --json`` (or ``--from FILE`` with that
output, or ``--dirs`` project folders) and touches nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# (metrics file name pattern, key path inside the file, line label); {x} is the file's model / set.
HEADLINE: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (r"lineval-(?P<x>.+)\.json", ("crops", "top1"), "probe crops {x}"),
    (r"lineval-(?P<x>.+)\.json", ("original", "top1"), "probe ORIGINAL {x}"),
    (r"shift-(?P<x>.+)\.json", ("bg/mixed_rand/top1",), "MIXED-RAND {x}"),
    (r"shift-(?P<x>.+)\.json", ("bg_gap",), "BG-Gap {x}"),
    (r"contracam-(?P<x>multi|single)\.json", ("mask_miou_pct", "refined"), "ContraCAM mIoU {x}"),
    (r"contracam-(?P<x>multi|single)\.json", ("max_box_acc_v2_pct", "cam", "mean"), "MaxBoxAccV2 {x}"),
    (r"contracam-(?P<x>multi|single)\.json", ("pxap_pct", "cam"), "PxAP {x}"),
    (r"detect-(?P<x>.+)\.json", ("bbox/ap50",), "AP50 {x}"),
    (r"retrain-(?P<x>.+)\.json", ("mix_rate",), "mix rate {x}"),
    (r"report\.json", ("claims_hold",), "claims hold"),
    (r"report\.json", ("claims_checked",), "claims checked"),
    (r"report\.json", ("wall_minutes",), "minutes (stages)"),
)


@dataclass(frozen=True)
class Column:
    """One experiment: its label, params and metrics, flattened.

    Params are keyed like ``pretrain.seed``, metrics like ``lineval-moco.json:crops.top1``.
    """

    label: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]


def flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """A nested mapping's leaves as (dotted key, value): ``crops.top1``, ``pretrain.seed``."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, tree


def _column(state: Mapping[str, Any], label: str) -> Column | None:
    data = state.get("data") or {}
    if not data:
        return None
    params = {}
    for source in (data.get("params") or {}).values():
        params.update(flatten((source or {}).get("data") or {}))
    metrics = {}
    for path, source in (data.get("metrics") or {}).items():
        tree = (source or {}).get("data") or {}
        metrics.update({f"{path.rsplit('/', 1)[-1]}:{k}": v for k, v in flatten(tree, "")})
    return Column(label, params, metrics)


def columns(shown: Sequence[Mapping[str, Any]]) -> list[Column]:
    """The experiments of ``dvc exp show --json`` output in its order: each commit, then its experiments."""
    out = []
    for commit in shown:
        rev = str(commit.get("rev", ""))
        label = commit.get("name") or ("workspace" if rev == "workspace" else rev[:7])
        col = _column(commit, label)
        if col is not None:
            out.append(col)
        for exp_range in commit.get("experiments") or []:
            for state in exp_range.get("revs") or []:
                name = state.get("name") or exp_range.get("name") or str(state.get("rev", ""))[:7]
                col = _column(state, name)
                if col is not None:
                    out.append(col)
    return out


def headline_keys(names: Iterable[str]) -> list[tuple[str, str]]:
    """(flat metric key, label) of every headline number among ``names``, grouped as :data:`HEADLINE`."""
    names = list(names)
    keys = []
    for pattern, path, label in HEADLINE:
        want = ".".join(path)
        for name in names:
            file, _, key = name.partition(":")
            match = re.fullmatch(pattern, file)
            if match and key == want:
                keys.append((name, label.format(**match.groupdict())))
    return keys


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.1f}"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)


def _se_text(se: float, mean: float) -> str:
    """A standard error to the precision :func:`_text` gives its mean (one decimal from 1 up)."""
    return f"{se:.1f}" if abs(mean) >= 1 else f"{se:.2g}"


def table(cols: Sequence[Column], *, changed_only: bool = True) -> list[list[str]]:
    """Rows of the view: a header, the params that differ between the columns, the headline metrics.

    With ``changed_only`` (and more than one column) only the metrics whose values differ are kept.
    """
    header = ["", *(c.label for c in cols)]
    param_keys = list(dict.fromkeys(k for c in cols for k in c.params))
    metric_names = list(dict.fromkeys(k for c in cols for k in c.metrics))
    # params: only the ones that differ, always (every leaf is what makes `dvc exp show` unreadable)
    lines = [(f"params: {k}", [c.params.get(k) for c in cols]) for k in param_keys]
    lines = [line for line in lines if len(set(map(_text, line[1]))) > 1]
    metric_lines = [(label, [c.metrics.get(key) for c in cols]) for key, label in headline_keys(metric_names)]
    if changed_only and len(cols) > 1:
        metric_lines = [line for line in metric_lines if len(set(map(_text, line[1]))) > 1]
    return [header, *([label, *map(_text, values)] for label, values in [*lines, *metric_lines])]


def render(rows: Sequence[Sequence[str]]) -> str:
    """An aligned plain-text table (labels left, values right)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _same(a: Column, b: Column) -> bool:
    return dict(a.params) == dict(b.params) and dict(a.metrics) == dict(b.metrics)


def distinct(cols: Sequence[Column]) -> list[Column]:
    """``cols`` without repeats: the workspace after ``dvc exp run`` equals the experiment it ran."""
    out: list[Column] = []
    for c in cols:
        if not any(_same(c, o) for o in out):
            out.append(c)
    return out


# what a curve against a param shows: one panel per quantity (the labels of HEADLINE without the model)
CURVE_PANELS = ("BG-Gap", "MIXED-RAND", "probe crops", "mix rate")


Point = tuple[float, float, int, float]  # param value, mean, how many experiments, s.e. of the mean (0 for one)


def _point(x: float, ys: Sequence[float]) -> Point:
    se = statistics.stdev(ys) / math.sqrt(len(ys)) if len(ys) > 1 else 0.0
    return (x, sum(ys) / len(ys), len(ys), se)


def curve(cols: Sequence[Column], param: str, *, models: str = "bgmix") -> dict[str, list[Point]]:
    """Headline numbers against ``param`` over the distinct experiments, for models whose name has ``models``.

    ``param`` is a key of ``params.yaml`` (dotted) or its last part (``pmix``). Returns label ->
    [(param value, mean over the experiments with that value, how many, the mean's standard error)]
    sorted by the value: with paired seeds the mean and s.e. are over seeds. Experiments without the
    param or the metric are skipped.
    """
    cols = distinct(cols)
    keys = {k for c in cols for k in c.params}
    matches = sorted(k for k in keys if k == param or k.endswith("." + param))
    if len(matches) != 1:
        raise ValueError(f"param {param!r} matches {matches or 'no key'} of params.yaml; give the dotted key")
    (key,) = matches
    names = list(dict.fromkeys(k for c in cols for k in c.metrics))
    out: dict[str, list[Point]] = {}
    for metric, label in headline_keys(names):
        panel, model = label.rsplit(" ", 1)
        if panel not in CURVE_PANELS or models not in model:
            continue
        by_x: dict[float, list[float]] = {}
        for c in cols:
            x, y = c.params.get(key), c.metrics.get(metric)
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                by_x.setdefault(float(x), []).append(float(y))
        if by_x:
            out[label] = [_point(x, ys) for x, ys in sorted(by_x.items())]
    if not out:
        raise ValueError(f"no experiment has both {key!r} and a headline metric of a {models!r} model")
    order = sorted(out, key=lambda label: CURVE_PANELS.index(label.rsplit(" ", 1)[0]))  # stable: models keep theirs
    return {label: out[label] for label in order}


def plot_curve(lines: Mapping[str, Sequence[Point]], param: str, path: str) -> None:
    """One panel per quantity (BG-Gap, MIXED-RAND, ...), one line per model, ± 1 s.e. bars where a
    value has several experiments; a PNG written atomically."""
    from matplotlib.figure import Figure

    from oacl.io.atomic import save_png

    groups = list(dict.fromkeys(label.rsplit(" ", 1)[0] for label in lines))
    fig = Figure(figsize=(3.2 * len(groups), 3.0), dpi=110)
    for i, group in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), i + 1)
        for label, points in lines.items():
            if label.rsplit(" ", 1)[0] == group:
                ax.errorbar(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    yerr=[p[3] for p in points],
                    marker="o",
                    capsize=3,
                    label=label.rsplit(" ", 1)[1],
                )
        ax.set_xlabel(param)
        ax.set_title(group, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


MISSING = object()  # what `lookup` returns for a key the tree lacks


def _as_text(value: Any) -> Any:
    """A params tree with every leaf as text: DVC's lock and PyYAML may read a leaf differently
    (``'1e-06'`` vs ``1e-06``), the text is the same."""
    if isinstance(value, Mapping):
        return {str(k): _as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    return str(value)


def lookup(tree: Any, dotted: str) -> Any:
    """The value at the dotted key of a nested mapping (``pretrain.seed``), or :data:`MISSING`."""
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return MISSING
        tree = tree[part]
    return tree


def _md5(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data).hexdigest()


def workspace(path: str, metrics_dir: str = "artifacts/metrics") -> Column:
    """A project folder as one column: its ``params.yaml`` and the metrics its ``dvc.lock`` vouches for.

    A metrics file (a ``.json`` output of a stage, in ``metrics_dir``) counts only when its content
    matches the lock, and the lock entries of its stage and of every stage upstream were made with
    the folder's current params, each dependency's recorded hash equal to the one its producing
    stage recorded. So a folder in which ``dvc repro`` ran some targets after a param change shows
    what those targets made and nothing left over from the earlier value. Source files are not
    hashed (an edited module shows in ``dvc status``, not here). ValueError names a folder without
    ``params.yaml`` or ``dvc.lock``.
    """
    from pathlib import Path

    import yaml

    root = Path(path)
    for name in ("params.yaml", "dvc.lock"):
        if not (root / name).is_file():
            raise ValueError(f"{path}: no {name} (a project folder after `dvc repro` has both)")
    stages = (yaml.safe_load((root / "dvc.lock").read_text()) or {}).get("stages") or {}
    producer = {o["path"]: (name, o.get("md5")) for name, e in stages.items() for o in e.get("outs") or []}
    files: dict[str, Any] = {}  # param files, each read once

    def param_file(name: str) -> Any:
        if name not in files:
            files[name] = yaml.safe_load((root / name).read_text()) if (root / name).is_file() else {}
        return files[name]

    memo: dict[str, bool] = {}

    def current(stage: str) -> bool:
        if stage not in memo:
            memo[stage] = False  # a cycle is not a valid lock
            entry = stages[stage]
            memo[stage] = all(
                _as_text(lookup(param_file(file), k)) == _as_text(v)
                for file, keys in (entry.get("params") or {}).items()
                for k, v in keys.items()
            ) and all(dep_current(dep) for dep in entry.get("deps") or [])
        return memo[stage]

    def dep_current(dep: Mapping[str, Any]) -> bool:
        dep_path = dep["path"]
        if dep_path in producer:  # an output itself (a file or a folder): the hash the producer recorded
            stage, md5 = producer[dep_path]
            return dep.get("md5") == md5 and current(stage)
        for out, (stage, _) in producer.items():  # a file inside an output folder: its hash now
            if dep_path.startswith(out + "/"):
                file = root / dep_path
                return file.is_file() and _md5(file.read_bytes()) == dep.get("md5") and current(stage)
        return True  # a source file or a param file: not made by a stage

    params = dict(flatten(param_file("params.yaml") or {}))
    metrics: dict[str, Any] = {}
    prefix = metrics_dir.rstrip("/") + "/"
    for out, (stage, md5) in sorted(producer.items()):
        file = root / out
        if not (out.startswith(prefix) and out.endswith(".json") and file.is_file()):
            continue
        data = file.read_bytes()
        if _md5(data) == md5 and current(stage):
            metrics.update({f"{file.name}:{k}": v for k, v in flatten(json.loads(data))})
    return Column(str(path), params, metrics)


def load_shown(source: str | None, passthrough: Sequence[str], prog: str) -> list[Any] | None:
    """``dvc exp show --json`` output: read from ``source``, else run it with ``passthrough``; None
    (after one message on stderr, prefixed ``prog``) when that command fails."""
    if source:
        with open(source) as f:
            return json.load(f)
    res = subprocess.run(["dvc", "exp", "show", "--json", *passthrough], capture_output=True, text=True)
    if res.returncode != 0:
        print(f"{prog}: `dvc exp show --json` failed: {res.stderr.strip()}", file=sys.stderr)
        return None
    return json.loads(res.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m oacl.exps", description=__doc__.splitlines()[0])
    p.add_argument("--all", action="store_true", help="every headline metric, not only the ones that differ")
    p.add_argument("--csv", action="store_true", help="comma-separated instead of aligned text")
    p.add_argument("--from", dest="source", help="a file with `dvc exp show --json` output (default: run it)")
    p.add_argument("--dirs", nargs="+", metavar="DIR", help="project folders instead, one column each (workspace())")
    p.add_argument("--curve", metavar="PARAM", help="BG-Gap, MIXED-RAND, crops and mix rate against this param")
    p.add_argument("--models", default="bgmix", help="with --curve: models whose name contains this (default bgmix)")
    p.add_argument("--out", help="with --curve: also draw it to this PNG")
    args, passthrough = p.parse_known_args(argv)
    if args.dirs:
        try:
            cols = [workspace(d) for d in args.dirs]
        except ValueError as err:
            print(f"oacl.exps: {err}", file=sys.stderr)
            return 2
    else:
        shown = load_shown(args.source, passthrough, "oacl.exps")
        if shown is None:
            return 2
        cols = columns(shown)
    if not cols:
        print("oacl.exps: no experiment with data in `dvc exp show`", file=sys.stderr)
        return 2
    if args.curve:
        try:
            lines = curve(cols, args.curve, models=args.models)
        except ValueError as err:
            print(f"oacl.exps: {err}", file=sys.stderr)
            return 2
        xs = sorted({p[0] for points in lines.values() for p in points})
        rows = [[args.curve, *(_text(x) for x in xs)]]
        for label, points in lines.items():
            at = {p[0]: p for p in points}
            rows.append(
                [
                    label,
                    *(
                        _text(at[x][1]) + (f" ± {_se_text(at[x][3], at[x][1])} (n={at[x][2]})" if at[x][2] > 1 else "")
                        if x in at
                        else "–"
                        for x in xs
                    ),
                ]
            )
        if args.out:
            plot_curve(lines, args.curve, args.out)
    else:
        rows = table(cols, changed_only=not args.all)
    if args.csv:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        print(render(rows))
        if len(rows) == 1 and not args.curve:
            print("(no headline metric and no param differs between these columns; --all shows the metrics)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
