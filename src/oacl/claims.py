"""The debiasing claims judged on paired seeds across experiments (``python -m oacl.claims``).

One experiment per training seed (``dvc exp run -S pretrain.seed=N``, every other param equal):
the vanilla model of a seed and its debiased twins share that seed, so each claim is judged on
the **paired** differences (debiased − vanilla, one per seed). A claim holds when the mean
paired difference lies beyond twice its standard error (s.e. = s.d. / √n, n ≥ 2 seeds) in the
claimed direction, and — for a debiased model — when that model also beats the random-init
control beyond twice the s.e. of its own differences from the control. Detection is judged on
means: the vanilla AP50 must reach :data:`DETECTION_FLOOR` (else the fine-tune does not inform), and
OA-Crop "does not hurt" when its mean paired difference is at least −:data:`DETECTION_MARGIN` AP50
(the measured text gives the s.e. beside it). The report of one run
(``oacl.report``) judges the same claims against binomial test-set noise; this judges them
against seed-to-seed variation, which is what a few-point effect has to clear::

    for s in 0 1 2; do dvc exp run --queue -S pretrain.seed=$s; done && dvc queue start
    # ... when the queue is done:
    PYTHONPATH=src python -m oacl.claims --out docs/results/claims.json --md docs/results/claims.md

or, with runs made in separate project folders (clones, other machines), ``--dirs DIR …``: each
folder's ``params.yaml`` and the metrics its ``dvc.lock`` shows current (:func:`oacl.exps.workspace`:
a folder where only some targets were rerun after a param change contributes those and nothing
stale). A folder whose params list ``extra_seeds`` (the per-seed stages of ``dvc.yaml``) contributes
one run per seed: its base seed and each extra seed's metrics under ``artifacts/seeds/s<seed>/``::

    dvc exp run -S 'extra_seeds=[1,2]'
    PYTHONPATH=src python -m oacl.claims --dirs . --out docs/results/claims.json --md docs/results/claims.md

It reads ``dvc exp show --json`` (or ``--from FILE`` with that output), groups the experiments by
``--seed-param`` (default ``pretrain.seed``), refuses a set whose other params differ (that would
not be a comparison of like with like) and writes ``{"command", "seeds", "wall_s", "claims":
[{"text", "measured", "verdict"}]}``.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oacl.exps import Column, columns, distinct, flatten, headline_keys, load_shown, workspace

__all__ = [
    "PairedClaim",
    "by_seed",
    "seed_column",
    "seed_files",
    "oracle_method",
    "with_extra_seeds",
    "read_metrics_dir",
    "paired_claims",
    "model_table",
    "to_json",
    "to_markdown",
    "judge",
    "main",
]

METHODS = ("moco", "byol")
DEBIASED = ("oacrop", "oacrop_gt", "bgmix", "hardmix", "hardmix_gt")
DETECTION_FLOOR = 20.0  # AP50 the vanilla detector must reach for the detection claim to inform (issue 18)
DETECTION_MARGIN = 2.0  # AP points OA-Crop may lose and still "not hurt"


@dataclass(frozen=True)
class PairedClaim:
    text: str
    measured: str
    verdict: str  # "holds" | "does not hold" | "n/a"

    def as_dict(self) -> dict[str, str]:
        return {"text": self.text, "measured": self.measured, "verdict": self.verdict}


def by_seed(cols: Sequence[Column], seed_param: str = "pretrain.seed") -> dict[int, Column]:
    """One column per seed; ValueError when a seed repeats with other results or other params differ."""
    out: dict[int, Column] = {}
    ref: Column | None = None
    for col in distinct(cols):
        if seed_param not in col.params:
            raise ValueError(f"experiment {col.label!r} has no param {seed_param!r}")
        if not col.metrics:
            continue
        seed = int(col.params[seed_param])
        if seed in out:
            raise ValueError(
                f"experiments {out[seed].label!r} and {col.label!r} share {seed_param} = {seed} with other "
                "results; pass the ones to compare (`dvc exp show` arguments, or --from a file holding them)"
            )
        if ref is not None:
            for key in sorted(set(ref.params) | set(col.params)):
                if key != seed_param and ref.params.get(key) != col.params.get(key):
                    raise ValueError(
                        f"experiments {ref.label!r} and {col.label!r} differ in {key!r} "
                        f"({ref.params.get(key)!r} vs {col.params.get(key)!r}), not only in {seed_param!r}"
                    )
        ref = ref or col
        out[seed] = col
    return dict(sorted(out.items()))


# the random-init control's metrics files: trained by no seed, so every seed's run shares the base run's
CONTROL_FILES = ("lineval-random.json:", "shift-random.json:", "detect-random.json:")
SEEDS_DIR = "artifacts/seeds"  # where the per-seed stages of dvc.yaml write (s<seed>/metrics/...)


def seed_column(base: Column, seed: int, metrics: Mapping[str, Any], seed_param: str = "pretrain.seed") -> Column:
    """An extra seed's run beside ``base``, the run whose params list it in ``extra_seeds``.

    ``base``'s params with ``seed_param`` = ``seed``; the metrics are ``metrics`` (keyed like
    ``lineval-moco.json:crops.top1``) and ``base``'s random-init control, which no training seed
    changes.
    """
    control = {k: v for k, v in base.metrics.items() if k.startswith(CONTROL_FILES)}
    return Column(f"{base.label} seed {seed}", {**base.params, seed_param: seed}, {**control, **metrics})


ORACLE_DEBIAS = ("oacrop_gt", "hardmix_gt")  # what the `*-oracle` stages train (params `oracles`)


def oracle_method(stem: str) -> str | None:
    """The method of an oracle's metrics file (``lineval-moco-oacrop_gt`` → ``moco``), else None."""
    parts = stem.split("-")
    return parts[1] if len(parts) == 3 and parts[2] in ORACLE_DEBIAS else None


def seed_files(metrics: Mapping[str, Any], oracles: Sequence[str], only_oracles: bool = False) -> dict[str, Any]:
    """A seed folder's ``metrics`` (keyed ``<stem>.json:…`` or by stem) less the oracles of methods that
    ``oracles`` no longer lists (DVC leaves a removed stage's outputs in place); ``only_oracles``: the
    listed oracles alone (the base seed's folder holds nothing else of its run)."""

    def keep(key: str) -> bool:
        method = oracle_method(key.split(".json", 1)[0])
        if method is None:
            return not only_oracles
        return method in oracles

    return {k: v for k, v in metrics.items() if keep(k)}


def with_extra_seeds(root: str, seed_param: str = "pretrain.seed") -> list[Column]:
    """The project folder ``root`` as :func:`oacl.exps.workspace` reads it, with its base seed's oracles
    (params ``oracles``), and one column per entry of its ``extra_seeds``, each with the metrics under
    ``artifacts/seeds/s<seed>/metrics``; only metrics the folder's ``dvc.lock`` shows current."""
    base = workspace(root)
    oracles = base.params.get("oracles") or []

    def seed_metrics(seed: Any, only_oracles: bool = False) -> dict[str, Any]:
        ws = workspace(root, metrics_dir=f"{SEEDS_DIR}/s{seed}/metrics")
        return seed_files(ws.metrics, oracles, only_oracles)

    base_seed = base.params.get(seed_param)
    if base_seed is not None:
        base = Column(base.label, base.params, {**base.metrics, **seed_metrics(base_seed, only_oracles=True)})
    return [base] + [
        seed_column(base, int(seed), seed_metrics(seed), seed_param) for seed in base.params.get("extra_seeds") or []
    ]


def read_metrics_dir(metrics_dir: str) -> dict[str, Any]:
    """Every headline ``*.json`` in ``metrics_dir`` flattened like a column's metrics (``file.json:a.b``)."""
    import json
    from pathlib import Path

    out: dict[str, Any] = {}
    for path in sorted(Path(metrics_dir).glob("*.json")):
        out.update({f"{path.name}:{k}": v for k, v in flatten(json.loads(path.read_text()))})
    return out


def _stats(diffs: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (s.d. / √n; NaN for n < 2)."""
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) >= 2 else math.nan
    return mean, se


def _fmt(diffs: Sequence[float], what: str) -> str:
    mean, se = _stats(diffs)
    per_seed = " / ".join(f"{d:+.1f}" for d in diffs)
    return f"{what}: mean {mean:+.1f}, s.e. {se:.1f}, n = {len(diffs)} (per seed {per_seed})"


def _beyond(diffs: Sequence[float], higher: bool) -> bool:
    mean, se = _stats(diffs)
    return not math.isnan(se) and ((mean > 2 * se) if higher else (mean < -2 * se))


def _values(runs: Sequence[Column], key: str) -> list[float] | None:
    vals = [r.metrics.get(key) for r in runs]
    return None if any(not isinstance(v, (int, float)) for v in vals) else [float(v) for v in vals]


def _diffs(runs: Sequence[Column], cur: str, base: str) -> list[float] | None:
    """Per-seed ``cur − base``; None when either is missing in some run."""
    a, b = _values(runs, cur), _values(runs, base)
    return None if a is None or b is None else [x - y for x, y in zip(a, b)]


def _judge(text: str, diffs: list[float] | None, what: str, rule: Callable[[list[float]], bool]) -> PairedClaim:
    """``rule`` on the paired differences; n/a when a metric is missing or there are fewer than 2 seeds."""
    if diffs is None:
        return PairedClaim(text, "metrics missing", "n/a")
    measured = _fmt(diffs, what)
    if len(diffs) < 2:
        return PairedClaim(text, measured, "n/a")
    return PairedClaim(text, measured, "holds" if rule(diffs) else "does not hold")


def _paired(
    text: str, runs: Sequence[Column], cur: str, base: str, *, higher: bool, what: str, control: str | None = None
) -> PairedClaim:
    """``cur`` beats ``base`` beyond 2 s.e. of the paired differences (and, given, ``control`` too)."""
    claim = _judge(text, _diffs(runs, cur, base), what, lambda d: _beyond(d, higher))
    if claim.verdict == "holds" and control is not None:
        vs_control = _diffs(runs, cur, control)
        if vs_control is None or not _beyond(vs_control, higher):
            return PairedClaim(text, claim.measured + "; not beyond the random-init control", "does not hold")
    return claim


def _at_least(
    text: str, runs: Sequence[Column], oracle: str, cam: str, what: str, *, higher: bool = True
) -> PairedClaim:
    """The oracle's effect is at least the ContraCAM variant's: the paired (oracle − ContraCAM) difference is
    not below −2 s.e. (not above +2 s.e. for a quantity that should fall)."""

    def rule(d: list[float]) -> bool:
        mean, se = _stats(d)
        return (mean >= -2 * se) if higher else (mean <= 2 * se)

    return _judge(text, _diffs(runs, oracle, cam), f"{what}, oracle − ContraCAM variant", rule)


def _key(file: str, *path: str) -> str:
    return f"{file}.json:{'.'.join(path)}"


# the two Background Challenge claims of a background-debiased model: (metric key, label, should rise)
BG_METRICS = (("bg_gap", "BG-Gap", False), ("bg/mixed_rand/top1", "MIXED-RAND", True))


def paired_claims(runs: Sequence[Column]) -> list[PairedClaim]:
    """The claims of issue 18 on the runs (one per seed, in seed order); absent models are left out."""
    have = set().union(*(r.metrics for r in runs)) if runs else set()
    out: list[PairedClaim] = []
    crops = ("crops", "top1")
    ctrl_crops = _key("lineval-random", *crops)
    for m in METHODS:
        vanilla = _key(f"lineval-{m}", *crops)
        if vanilla not in have:
            continue
        for debias, label in (("oacrop", "ContraCAM boxes"), ("oacrop_gt", "ground-truth boxes, the oracle")):
            cur = _key(f"lineval-{m}-{debias}", *crops)
            if cur in have:
                out.append(
                    _paired(
                        f"OA-Crop ({label}) improves the object-crop probe ({m})",
                        runs,
                        cur,
                        vanilla,
                        higher=True,
                        what="crops top-1, debiased − vanilla",
                        control=ctrl_crops,
                    )
                )
        gt, cam = _key(f"lineval-{m}-oacrop_gt", *crops), _key(f"lineval-{m}-oacrop", *crops)
        if gt in have and cam in have:
            out.append(_at_least(f"The GT-box oracle's crops gain is at least OA-Crop's ({m})", runs, gt, cam, "crops"))
        for debias, label in (("bgmix", "BG-Mixup"), ("hardmix_gt", "BG-HardMix with ground-truth masks, the oracle")):
            if _key(f"shift-{m}-{debias}", "bg_gap") not in have:
                continue
            for metric, name, rises in BG_METRICS:
                out.append(
                    _paired(
                        f"{label} {'raises' if rises else 'lowers the'} {name} ({m})",
                        runs,
                        _key(f"shift-{m}-{debias}", metric),
                        _key(f"shift-{m}", metric),
                        higher=rises,
                        what=f"{name}, debiased − vanilla",
                        control=_key("shift-random", metric) if rises else None,
                    )
                )
        if _key(f"shift-{m}-hardmix_gt", "bg_gap") in have and _key(f"shift-{m}-bgmix", "bg_gap") in have:
            for metric, name, rises in BG_METRICS:
                out.append(
                    _at_least(
                        f"The GT-mask oracle's {name} {'gain' if rises else 'drop'} is at least BG-Mixup's ({m})",
                        runs,
                        _key(f"shift-{m}-hardmix_gt", metric),
                        _key(f"shift-{m}-bgmix", metric),
                        name,
                        higher=rises,
                    )
                )
        for debias in DEBIASED:
            cur = _key(f"lineval-{m}-{debias}", *crops)
            if cur in have:
                out.append(
                    _paired(
                        f"{m}-{debias} is above the random-init control on object crops",
                        runs,
                        cur,
                        ctrl_crops,
                        higher=True,
                        what="crops top-1, model − random init",
                    )
                )
        det, det_oa = _key(f"detect-{m}", "bbox/ap50"), _key(f"detect-{m}-oacrop", "bbox/ap50")
        if det in have:
            ap = _values(runs, det)
            text = f"Detection informs: the vanilla AP50 is at least {DETECTION_FLOOR:.0f} ({m})"
            if not ap:
                out.append(PairedClaim(text, "metrics missing", "n/a"))
            else:
                mean = statistics.fmean(ap)
                verdict = "holds" if mean >= DETECTION_FLOOR else "does not hold"
                out.append(PairedClaim(text, f"bbox AP50: mean {mean:.1f} over {len(ap)} seeds", verdict))
        if det in have and det_oa in have:
            out.append(
                _judge(
                    f"OA-Crop does not hurt detection, within {DETECTION_MARGIN:.0f} AP50 ({m})",
                    _diffs(runs, det_oa, det),
                    "bbox AP50, OA-Crop − vanilla",
                    lambda d: statistics.fmean(d) >= -DETECTION_MARGIN,
                )
            )
    return out


def to_json(
    runs: Mapping[int, Column], claims: Sequence[PairedClaim], command: str, wall_s: float | None = None
) -> dict[str, Any]:
    """The claims file: the command that produced the runs, the seeds, and ``wall_s`` (default: the
    stages' wall seconds from each run's ``report.json``, its extra seeds' included, summed)."""
    keys = ("report.json:wall_minutes", "report.json:seeds_wall_minutes")
    minutes = [c.metrics.get(k) for c in runs.values() for k in keys]
    wall = wall_s if wall_s is not None else sum(60.0 * m for m in minutes if isinstance(m, (int, float)))
    return {
        "command": command,
        "seeds": list(runs),
        "wall_s": round(wall, 1),
        "claims": [c.as_dict() for c in claims],
    }


# the per-model table of the Markdown: these headline panels of oacl.exps.HEADLINE, in this order;
# the optional ones (detection: fine-tuned for a few models, or none) only when some model has them
MODEL_PANELS = ("probe crops", "probe ORIGINAL", "MIXED-RAND", "BG-Gap", "AP50")
OPTIONAL_PANELS = ("AP50",)


def model_table(runs: Sequence[Column]) -> list[str]:
    """Markdown rows: each model's headline numbers as mean ± s.e. over the runs that have them (n)."""
    by_model: dict[str, dict[str, str]] = {}  # model -> panel -> flat metric key
    for key, label in headline_keys(dict.fromkeys(k for r in runs for k in r.metrics)):
        panel, model = label.rsplit(" ", 1)
        if panel in MODEL_PANELS:
            by_model.setdefault(model, {})[panel] = key
    seen = {panel for keys in by_model.values() for panel in keys}
    panels = [p for p in MODEL_PANELS if p not in OPTIONAL_PANELS or p in seen]
    rows = ["| model | " + " | ".join(panels) + " |", "|---" * (len(panels) + 1) + "|"]
    for model in sorted(by_model, key=lambda m: (m != "random", m.split("-")[0], m)):
        cells = []
        for panel in panels:
            vals = _values_present(runs, by_model[model].get(panel))
            if not vals:
                cells.append("–")
                continue
            mean, se = _stats(vals)
            cells.append(f"{mean:.1f}" + ("" if math.isnan(se) else f" ± {se:.1f}") + f" ({len(vals)})")
        rows.append(f"| {model} | " + " | ".join(cells) + " |")
    return rows


def _values_present(runs: Sequence[Column], key: str | None) -> list[float]:
    """``key``'s numbers in the runs that have it (none for no key)."""
    vals = [r.metrics.get(key) for r in runs] if key else []
    return [float(v) for v in vals if isinstance(v, (int, float))]


def _count(doc: Mapping[str, Any], verdict: str) -> int:
    return sum(c["verdict"] == verdict for c in doc["claims"])


def to_markdown(doc: Mapping[str, Any], runs: Sequence[Column] = ()) -> str:
    """The claims table; with ``runs``, first each model's numbers as mean ± s.e. over the seeds."""
    held = _count(doc, "holds")
    lines = [
        "# Claims on paired seeds",
        "",
        f"Seeds {', '.join(map(str, doc['seeds']))}; wall time "
        f"{doc['wall_s'] / 60:.1f} min. Command: `{doc['command']}`.",
        "",
        f"{held} of {len(doc['claims'])} claims hold"
        + (f" ({na} not judged: a metric missing in some seed, or one seed)" if (na := _count(doc, "n/a")) else "")
        + ". A claim holds when the mean paired difference lies "
        "beyond 2 s.e. over seeds in the claimed direction (debiased models also beyond the random-init control)."
        + (
            f" Detection is judged on means: the vanilla AP50 at least {DETECTION_FLOOR:.0f}, OA-Crop's paired "
            f"difference at least −{DETECTION_MARGIN:.0f} AP50."
            if any("detection" in c["text"] for c in doc["claims"])
            else ""
        ),
        "",
        *(
            [
                "Per model: top-1 % (linear probe, MIXED-RAND), BG-Gap and, where fine-tuned, detection bbox AP50; "
                "mean ± s.e. over seeds (how many seeds have it).",
                "",
                *model_table(runs),
                "",
            ]
            if runs
            else []
        ),
        "| claim | measured | verdict |",
        "|---|---|---|",
        *(f"| {c['text']} | {c['measured']} | {c['verdict']} |" for c in doc["claims"]),
    ]
    return "\n".join(lines) + "\n"


def judge(
    runs: Mapping[int, Column], command: str, wall_s: float | None = None, out: str | None = None, md: str | None = None
) -> str:
    """The claims on ``runs`` (one per seed): the JSON written to ``out``, the Markdown to ``md`` (when
    given); returns the Markdown."""
    from oacl.io.atomic import write_json, write_text

    doc = to_json(runs, paired_claims(list(runs.values())), command, wall_s=wall_s)
    text = to_markdown(doc, list(runs.values()))
    if out:
        write_json(out, doc)
    if md:
        write_text(md, text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m oacl.claims", description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", help="a file with `dvc exp show --json` output (default: run it)")
    p.add_argument(
        "--dirs",
        nargs="+",
        metavar="DIR",
        help="project folders to read instead (one per seed, or one with extra_seeds; see oacl.exps.workspace)",
    )
    p.add_argument("--wall-s", type=float, help="the wall seconds to record (default: the runs' report.json summed)")
    p.add_argument("--seed-param", default="pretrain.seed", help="the param that tells the paired runs apart")
    p.add_argument("--command", default="", help="the command that produced the runs, recorded in the file")
    p.add_argument("--out", help="write the claims JSON here")
    p.add_argument("--md", help="write the Markdown table here")
    args, passthrough = p.parse_known_args(argv)
    if args.dirs and (args.source or passthrough):
        print("oacl.claims: --dirs reads folders; it takes no --from and no `dvc exp show` arguments", file=sys.stderr)
        return 2
    try:
        if args.dirs:
            cols = [c for d in args.dirs for c in with_extra_seeds(d, args.seed_param)]
        else:
            shown = load_shown(args.source, passthrough, "oacl.claims")
            if shown is None:
                return 2
            cols = columns(shown)
        runs = by_seed(cols, args.seed_param)
    except ValueError as err:
        print(f"oacl.claims: {err}", file=sys.stderr)
        return 2
    if not runs:
        print("oacl.claims: no run with metrics (in `dvc exp show`, or in the --dirs folders)", file=sys.stderr)
        return 2
    print(judge(runs, args.command or f"seeds over {args.seed_param}", args.wall_s, args.out, args.md), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
