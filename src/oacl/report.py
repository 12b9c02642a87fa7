"""The paper-style report: tables from the stages' metrics JSON, the claims check, bar charts.

Everything here reads the files under ``artifacts/metrics/`` that the stages wrote (names are the
contract: ``contracam-<set>.json``, ``contracam-<set>-ablation.json``, ``lineval-<variant>.json``,
``shift-<variant>.json``, ``detect-<variant>.json``, ``pretrain-<method>.json``,
``retrain-<method>-<debias>.json``) and lays them out like the paper's tables. A table whose files
are missing is left out with a line saying so, so the report also works on a partial pipeline.

Variants: ``random`` (randomly initialised control), ``<method>`` (vanilla), ``<method>-<debias>``.

A claim *holds* when (a) the measured difference has the paper's sign, (b) it is larger than the
noise — twice the standard error of a difference of two accuracies on the test set
(``2·sqrt(p1(1−p1)/n1 + p2(1−p2)/n2)``), or twice the trials' standard deviation when the stage ran
trials, whichever is larger; 1 point for mIoU, whose per-image spread is not stored — and (c) the
randomly initialised control does not reach the same value, i.e. the effect is not what an untrained
network gives for free. Otherwise the claim is reported as *does not hold* (or *n/a* without data).

Size: the paper's tables and the claims rule read the same metric lookups; one module renders them all.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oacl.io.atomic import save_png
from oacl.io.results import read_results
from oacl.vocab import BG_VARIANTS_TABLE, DEBIAS, METHODS, SETS

__all__ = [
    "Claim",
    "Figures",
    "load_metrics",
    "variants",
    "claims",
    "render",
    "run_summary",
    "seed_runs",
    "seeds_seconds",
    "paired_section",
    "stage_seconds",
    "status",
    "summary",
    "write_charts",
]

MIOU_NOISE = 1.0  # points
# ContraCAM's row and its null baselines (oacl.cam.nulls), as the localization table names them
NULL_ROWS = (
    ("refined", "ContraCAM"),
    ("gaussian", "null: centred Gaussian"),
    ("ones", "null: all-ones"),
    ("channel_sum", "null: channel sum"),
    ("random_weights", "null: random weights"),
)
NULL_LABELS = {k: v.removeprefix("null: ") for k, v in NULL_ROWS[1:]}


# ----------------------------------------------------------------------------------- loading


def load_metrics(metrics_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` under ``metrics_dir`` by stem (``lineval-moco`` → its dict); unreadable files raise.

    Each headline file is merged with its details file (``<metrics_dir>/../eval/<stem>/``,
    :func:`oacl.io.results.read_results`) when that exists, so the tables see every number.
    """
    out = {}
    for path in sorted(Path(metrics_dir).glob("*.json")):
        if path.stem == "report":
            continue
        out[path.stem] = read_results(path)
    return out


def pick(d: Mapping[str, Any] | None, key: str) -> Any:
    """``d[key]`` for a flat ``"a/b/c"`` key, else the nested ``d["a"]["b"]["c"]``; None when absent."""
    if d is None:
        return None
    if key in d:
        return d[key]
    node: Any = d
    for part in key.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _variant_key(name: str) -> tuple[int, int, int]:
    if name == "random":
        return (0, 0, 0)
    method, _, debias = name.partition("-")
    m = METHODS.index(method) if method in METHODS else len(METHODS)
    d = DEBIAS.index(debias) + 1 if debias in DEBIAS else (0 if not debias else len(DEBIAS) + 1)
    return (1, m, d)


def variants(metrics: Mapping[str, Any], prefix: str) -> list[str]:
    """Variant names that have a ``<prefix>-<variant>`` file, random first, each vanilla before its debiased twins."""
    names = [k[len(prefix) + 1 :] for k in metrics if k.startswith(prefix + "-")]
    return sorted(names, key=_variant_key)


def twin(variant: str) -> str | None:
    """The vanilla twin of a debiased variant (``moco-bgmix`` → ``moco``); None for vanilla / random."""
    method, sep, _ = variant.partition("-")
    return method if sep else None


# -------------------------------------------------------------------------------- formatting


def _num(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{nd}f}"


def _pm(mean: Any, std: Any) -> str:
    return _num(mean) if not std else f"{_num(mean)} ± {_num(std)}"


def _delta(v: Any, base: Any) -> str:
    if v is None or base is None:
        return ""
    return f" ({v - base:+.1f})"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Figures:
    """The other stages' pictures under ``plots_root``, linked relative to the report's folder.

    Only files that exist are linked, so every image link of the report resolves (offline, in any
    Markdown viewer) and a partial pipeline gives a report with fewer pictures, not broken ones.
    """

    plots_root: Path
    report_dir: Path

    def image(self, rel: str, alt: str) -> str:
        """``![alt](relative/path)`` of ``<plots_root>/<rel>``; empty when the file is missing."""
        path = Path(self.plots_root) / rel
        if not path.is_file():
            return ""
        link = os.path.relpath(path, self.report_dir).replace(os.sep, "/")
        return f"![{alt}]({link})"

    def block(self, caption: str, items: Iterable[tuple[str, str]]) -> str:
        """A caption line and the images of ``items`` ((rel, alt) pairs) that exist; empty when none does."""
        images = [img for rel, alt in items if (img := self.image(rel, alt))]
        if not images:
            return ""
        return f"{caption}\n\n" + "\n".join(images)


def _with_figures(text: str, fig: Figures | None, caption: str, items: Iterable[tuple[str, str]]) -> str:
    block = fig.block(caption, items) if fig is not None else ""
    return f"{text}\n\n{block}" if block else text


# ------------------------------------------------------------------------------------ tables


def _by_number(block: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """The entries of a ``{"1": ..., "10": ..., "2": ...}`` block in numeric order (other keys left out)."""
    return sorted(((k, v) for k, v in (block or {}).items() if k.isdigit()), key=lambda kv: int(kv[0]))


def localization_section(m: Mapping[str, Any], fig: Figures | None = None) -> str:
    parts = ["## Localization (paper Tables 1, 9, 10)"]
    sets = [s for s in SETS if f"contracam-{s}" in m]
    if not sets:
        return parts[0] + "\n\n_No ContraCAM metrics (stages contracam@multi / contracam@single have not run)._"
    rows = []
    for s in sets:
        c = m[f"contracam-{s}"]
        for key, label in NULL_ROWS:
            soft = "soft_cam" if key == "refined" else key
            cam = "cam" if key == "refined" else key
            rows.append(
                [
                    s,
                    label,
                    _num(pick(c, f"mask_miou_pct/{key}")),
                    _num(pick(c, f"mask_miou_soft_pct/{soft}")),
                    _num(pick(c, f"pxap_pct/{cam}")),
                    _num(pick(c, f"max_box_acc_v2_pct/{cam}/mean")),
                ]
            )
    counts = ", ".join(
        f"{s} {_num(pick(m[f'contracam-{s}'], 'boxes_per_image/cam'), 2)} "
        f"(ground truth {_num(pick(m[f'contracam-{s}'], 'boxes_per_image/gt'), 2)})"
        for s in sets
    )
    parts.append(
        "Mask mIoU, PxAP and MaxBoxAccV2 (%) of ContraCAM on each training split, next to four null "
        "baselines: a centred Gaussian (its best σ, chosen on the data), the all-ones map, the channel sum "
        "of the same backbone's layer4 (no gradient), and ContraCAM on randomly initialised weights. Every "
        "map gets the same dense CRF and cleaning (*mIoU CRF*); the soft maps are compared as they are "
        "(*mIoU soft*: binarised at 0.5; PxAP and MaxBoxAccV2: over all thresholds). "
        f"Boxes per image from ContraCAM: {counts}.\n\n"
        + _table(["set", "map", "mIoU CRF", "mIoU soft", "PxAP", "MaxBoxAccV2"], rows)
    )
    parts[-1] = _with_figures(
        parts[-1],
        fig,
        "ContraCAM on the first training images of each set, three panels per image: the image with its "
        "ground-truth boxes (green), the soft CAM, the refined mask with the boxes cut from it (red); beside "
        "each sheet, boxes per image from ContraCAM against the ground truth.",
        [
            (f"contracam-{s}/{name}", f"ContraCAM {s}: {name[:-4]}")
            for s in sets
            for name in ("sheet.png", "boxes_per_image.png")
        ],
    )
    for s in sets:
        a = m.get(f"contracam-{s}-ablation")
        if not a or not a.get("images"):
            continue
        rows = [["base", _num(pick(a, "base/refined_miou_pct")), _num(pick(a, "base/soft_miou_pct"))]]
        if "without_nsr" in a:
            rows.append(
                [
                    "without NSR",
                    _num(pick(a, "without_nsr/refined_miou_pct")),
                    _num(pick(a, "without_nsr/soft_miou_pct")),
                ]
            )
        for t, r in _by_number(a.get("iters")):
            rows.append([f"T = {t}", _num(r.get("refined_miou_pct")), _num(r.get("soft_miou_pct"))])
        stop = a.get("iters_stop") or {}
        for t, r in _by_number(stop):
            if isinstance(r, Mapping):
                label = f"T = {t}, stopping rule {stop.get('stop_ratio')} (extension)"
                rows.append([label, _num(r.get("refined_miou_pct")), _num(r.get("soft_miou_pct"))])
        for b, r in _by_number(a.get("neg_batch")):
            rows.append([f"negative batch {b}", _num(r.get("refined_miou_pct")), _num(r.get("soft_miou_pct"))])
        base, soft = a.get("baseline_miou_pct", {}), a.get("baseline_soft_miou_pct", {})
        for name, label in (("gaussian", "null: centred Gaussian"), ("ones", "null: all-ones")):
            if name in base:
                rows.append([label, _num(base.get(name)), _num(soft.get(name))])
        parts.append(
            f"Ablation on {a['images']} images of `{s}` (mask mIoU %; the null rows get the same CRF):\n\n"
            + _table(["setting", "mIoU CRF", "mIoU soft"], rows)
        )
    return "\n\n".join(parts)


def lineval_section(m: Mapping[str, Any], fig: Figures | None = None) -> str:
    names = variants(m, "lineval")
    head = "## Linear evaluation (paper Table 4)"
    if not names:
        return head + "\n\n_No linear-evaluation metrics._"
    rows = []
    for v in names:
        cur, base = m[f"lineval-{v}"], m.get(f"lineval-{twin(v)}") if twin(v) else None
        rows.append(
            [
                f"`{v}`",
                _num(pick(cur, "crops/top1")) + _delta(pick(cur, "crops/top1"), pick(base, "crops/top1")),
                _num(pick(cur, "original/top1")) + _delta(pick(cur, "original/top1"), pick(base, "original/top1")),
            ]
        )
    text = (
        head + "\n\nTop-1 accuracy (%) of a linear probe on frozen features; in brackets the change against "
        "the vanilla twin.\n\n" + _table(["model", "object crops", "ORIGINAL"], rows)
    )
    text = _with_figures(text, fig, "The same numbers as bars:", [("report/lineval.png", "linear evaluation top-1")])
    oacrop = [v for v in variants(m, "retrain") if v.endswith("-oacrop")]
    return _with_figures(
        text,
        fig,
        "OA-Crop's inputs: each image with the ContraCAM box it was cropped to (red; none: the whole image), "
        "and the two views cut from it.",
        [(f"retrain-{v}/augment.png", f"OA-Crop inputs, {v}") for v in oacrop],
    )


def detection_section(m: Mapping[str, Any], fig: Figures | None = None) -> str:
    names = variants(m, "detect")
    head = "## Detection and segmentation fine-tune (paper Table 5)"
    if not names:
        return head + "\n\n_No detection metrics._"
    keys = ["bbox/ap", "bbox/ap50", "bbox/ap75", "segm/ap", "segm/ap50", "segm/ap75"]
    keys = [k for k in keys if any(pick(m[f"detect-{v}"], k) is not None for v in names)]
    rows = []
    for v in names:
        cur, base = m[f"detect-{v}"], m.get(f"detect-{twin(v)}") if twin(v) else None
        rows.append([f"`{v}`"] + [_num(pick(cur, k)) + _delta(pick(cur, k), pick(base, k)) for k in keys])
    text = (
        head
        + "\n\nCOCO AP (%) on the multi-object test split after the same fine-tuning budget.\n\n"
        + _table(["model", *keys], rows)
    )
    return _with_figures(
        text,
        fig,
        "The first test images: ground truth (top row) and the top-scoring predictions (bottom row):",
        [(f"detect-{v}/predictions.png", f"detection predictions, {v}") for v in names],
    )


def _bg(shift: Mapping[str, Any], variant: str) -> tuple[Any, Any]:
    for key in (f"bg/{variant}/top1", f"bg/{variant}"):
        v = pick(shift, key)
        if isinstance(v, Mapping):
            return v.get("mean", v.get("top1")), v.get("std")
        if v is not None:
            return v, pick(shift, f"bg/{variant}/top1_std")
    return None, None


def _gap(shift: Mapping[str, Any]) -> tuple[Any, Any]:
    v = pick(shift, "bg_gap")
    if isinstance(v, Mapping):
        return v.get("mean"), v.get("std")
    return v, pick(shift, "bg_gap_std")


def background_section(m: Mapping[str, Any], fig: Figures | None = None) -> str:
    names = variants(m, "shift")
    head = "## Background Challenge (paper Table 7)"
    if not names:
        return head + "\n\n_No shift metrics._"
    cols = [b for b in BG_VARIANTS_TABLE if any(_bg(m[f"shift-{v}"], b)[0] is not None for v in names)]
    rows = []
    for v in names:
        s = m[f"shift-{v}"]
        rows.append([f"`{v}`"] + [_pm(*_bg(s, b)) for b in cols] + [_pm(*_gap(s))])
    text = (
        head + "\n\nTop-1 (%) of the linear classifier trained on ORIGINAL; BG-Gap = MIXED-SAME − MIXED-RAND "
        "(lower is less background-reliant).\n\n"
        + _table(["model", *[c.upper().replace("_", "-") for c in cols], "BG-Gap"], rows)
    )
    text = _with_figures(
        text, fig, "The same numbers as bars:", [("report/background.png", "Background Challenge top-1")]
    )
    bgmix = [v for v in variants(m, "retrain") if v.endswith("-bgmix")]
    return _with_figures(
        text,
        fig,
        "BG-Mixup's inputs: a view, its soft ContraCAM mask, the background cut from another image, and the mix.",
        [(f"retrain-{v}/augment.png", f"BG-Mixup inputs, {v}") for v in bgmix],
    )


def _shift_groups(shift: Mapping[str, Any]) -> dict[str, Any]:
    """{name: top-1} of the distribution-shift groups: mean per corruption, and each style set."""
    out: dict[str, Any] = {}
    node = shift.get("shift") if isinstance(shift.get("shift"), Mapping) else None
    flat = {k: v for k, v in shift.items() if k.startswith("shift/")}
    if node is not None:
        for name, v in node.items():
            if isinstance(v, Mapping):
                out[name] = v.get("mean", v.get("top1"))
            else:
                out[name] = v
    for k, v in flat.items():
        parts = k.split("/")  # shift/<family>/mean/top1 or shift/<style>/top1 (not their _std)
        if parts[-1] == "top1" and (len(parts) == 3 or (len(parts) == 4 and parts[2] == "mean")):
            out[parts[1]] = v
    return {k: (v.get("mean") if isinstance(v, Mapping) else v) for k, v in out.items()}


def shift_section(m: Mapping[str, Any]) -> str:
    names = variants(m, "shift")
    head = "## Distribution shifts (paper Table 8)"
    groups = {v: _shift_groups(m[f"shift-{v}"]) for v in names}
    cols = sorted({c for g in groups.values() for c in g})
    if not cols:
        return head + "\n\n_No distribution-shift metrics._"
    rows = []
    for v in names:
        base = groups.get(twin(v) or "", {})
        rows.append([f"`{v}`"] + [_num(groups[v].get(c)) + _delta(groups[v].get(c), base.get(c)) for c in cols])
    return (
        head
        + "\n\nTop-1 (%) of the ORIGINAL classifier; corruptions averaged over severities.\n\n"
        + _table(["model", *cols], rows)
    )


def training_section(m: Mapping[str, Any], fig: Figures | None = None) -> str:
    names = [k for k in m if k.startswith(("pretrain-", "retrain-"))]
    if not names:
        return "## Training\n\n_No training metrics._"
    rows = []
    for k in sorted(names, key=lambda k: (k.startswith("retrain-"), _variant_key(k.split("-", 1)[1]))):
        d = m[k]
        rows.append(
            [
                f"`{k}`",
                str(d.get("epochs", "–")),
                str(d.get("steps", "–")),
                _num(d.get("first_epoch_loss"), 3),
                _num(d.get("final_loss"), 3),
                _num(d.get("images_per_s"), 0),
                _num(d.get("train_seconds"), 0),
            ]
        )
    order = sorted(names, key=lambda k: (k.startswith("retrain-"), _variant_key(k.split("-", 1)[1])))
    text = "## Training\n\n" + _table(
        ["stage", "epochs", "steps", "first-epoch loss", "final loss", "img/s", "seconds"], rows
    )
    return _with_figures(
        text,
        fig,
        "Loss per step and per epoch, with the learning rate:",
        [(f"{k}/loss.png", f"loss, {k}") for k in order],
    )


# ------------------------------------------------------------------------------------ claims


@dataclass(frozen=True)
class Claim:
    """One qualitative claim of the paper and what this run measured."""

    text: str
    measured: str
    verdict: str  # "holds" | "does not hold" | "n/a"
    why: str = ""


def _n(
    block: Mapping[str, Any] | None, default: int | None = None, keys: Sequence[str] = ("test_images",)
) -> int | None:
    if block is None:
        return default
    for key in keys:
        if isinstance(block.get(key), (int, float)):
            return int(block[key])
    return default


def accuracy_noise(p1: float, n1: int | None, p2: float, n2: int | None, std: float | None = None) -> float:
    """Twice the standard error of p1 − p2 (percent; binomial), or twice the trials' std if larger.

    NaN when neither the test-set sizes nor a trial std are known: no claim can be decided then.
    """
    if not (n1 and n2) and not std:
        return math.nan
    se = 0.0
    for p, n in ((p1, n1), (p2, n2)):
        if n:
            q = min(max(p / 100.0, 0.0), 1.0)
            se += q * (1 - q) / n
    return max(200.0 * math.sqrt(se), 2.0 * (std or 0.0))


def _compare(text: str, cur: Any, base: Any, ctrl: Any, *, higher: bool, noise: float, what: str) -> Claim:
    if cur is None or base is None:
        return Claim(text, "–", "n/a", "metrics missing")
    if math.isnan(noise):
        return Claim(text, f"{what}: {cur:.1f} vs {base:.1f}", "n/a", "test-set size unknown")
    d = cur - base
    ctl = "" if ctrl is None else f"; random-init {ctrl:.1f}"
    measured = f"{what}: {cur:.1f} vs {base:.1f} ({d:+.1f}, noise ±{noise:.1f}{ctl})"
    if (d > noise) if higher else (d < -noise):
        if ctrl is not None and ((ctrl >= cur) if higher else (ctrl <= cur)):
            return Claim(text, measured, "does not hold", "the random-init control is as good")
        return Claim(text, measured, "holds")
    return Claim(text, measured, "does not hold", "difference within noise" if abs(d) <= noise else "opposite sign")


def claims(m: Mapping[str, Any]) -> list[Claim]:
    """The paper's qualitative claims checked on this run (see the module docstring for the rule)."""
    out: list[Claim] = []
    for s in SETS:
        a = m.get(f"contracam-{s}-ablation") or {}
        if a.get("without_nsr"):
            out.append(
                _compare(
                    f"Negative-signal removal improves mask mIoU ({s})",
                    pick(a, "base/refined_miou_pct"),
                    pick(a, "without_nsr/refined_miou_pct"),
                    None,
                    higher=True,
                    noise=MIOU_NOISE,
                    what="mIoU with vs without NSR",
                )
            )
    a = m.get("contracam-multi-ablation") or {}
    for key, suffix in (("iters", ""), ("iters_stop", ", with the stopping rule (an extension beyond the paper)")):
        if key == "iters_stop" and not a.get(key):
            continue
        iters = {t: r for t, r in (a.get(key) or {}).items() if isinstance(r, Mapping)}
        best_late = max((r["refined_miou_pct"] for t, r in iters.items() if 5 <= int(t) <= 10), default=None)
        out.append(
            _compare(
                f"More ContraCAM iterations improve mIoU up to T ≈ 5–10 (multi){suffix}",
                best_late,
                pick(iters, "1/refined_miou_pct"),
                None,
                higher=True,
                noise=MIOU_NOISE,
                what="best mIoU at T in 5..10 vs T = 1",
            )
        )
    for s in SETS:
        c = m.get(f"contracam-{s}")
        if c is None:
            continue
        for block, own, text, what in (
            ("mask_miou_pct", "refined", "after the same CRF", "mask mIoU (CRF)"),
            ("pxap_pct", "cam", "as soft maps", "PxAP"),
        ):
            nulls = {k: v for k, v in (c.get(block) or {}).items() if k != own and v is not None}
            strongest = max(nulls, key=nulls.get) if nulls else None
            out.append(
                _compare(
                    f"ContraCAM localizes better than every null baseline {text} ({s})",
                    pick(c, f"{block}/{own}"),
                    nulls.get(strongest),
                    None,
                    higher=True,
                    noise=MIOU_NOISE,
                    what=f"{what} vs the strongest null, {NULL_LABELS.get(strongest, strongest)}",
                )
            )
    ctrl_lin = m.get("lineval-random")
    ctrl_shift = m.get("shift-random")
    ctrl_det = m.get("detect-random")
    for method in METHODS:
        cur, base = m.get(f"lineval-{method}-oacrop"), m.get(f"lineval-{method}")
        if cur is not None and base is not None:
            p1, p0 = pick(cur, "crops/top1"), pick(base, "crops/top1")
            out.append(
                _compare(
                    f"OA-Crop improves linear evaluation on object crops ({method})",
                    p1,
                    p0,
                    pick(ctrl_lin, "crops/top1"),
                    higher=True,
                    noise=accuracy_noise(p1 or 0, _n(pick(cur, "crops")), p0 or 0, _n(pick(base, "crops"))),
                    what="crops top-1",
                )
            )
        cur, base = m.get(f"shift-{method}-bgmix"), m.get(f"shift-{method}")
        if cur is not None and base is not None:
            (g1, s1), (g0, s0) = _gap(cur), _gap(base)
            n1, n0 = _n(cur, keys=("bg_test_images",)), _n(base, keys=("bg_test_images",))
            # the gap is a difference of two accuracies per model: sqrt(2) x the noise of one at p = 50 %
            noise = math.sqrt(2) * accuracy_noise(50.0, n1, 50.0, n0, max(s1 or 0, s0 or 0))
            out.append(
                _compare(
                    f"BG-Mixup lowers the BG-Gap ({method})",
                    g1,
                    g0,
                    _gap(ctrl_shift)[0] if ctrl_shift else None,
                    higher=False,
                    noise=noise,
                    what="BG-Gap",
                )
            )
            (r1, rs1), (r0, rs0) = _bg(cur, "mixed_rand"), _bg(base, "mixed_rand")
            out.append(
                _compare(
                    f"BG-Mixup raises MIXED-RAND accuracy ({method})",
                    r1,
                    r0,
                    _bg(ctrl_shift, "mixed_rand")[0] if ctrl_shift else None,
                    higher=True,
                    noise=accuracy_noise(r1 or 0, n1, r0 or 0, n0, max(rs1 or 0, rs0 or 0)),
                    what="MIXED-RAND top-1",
                )
            )
            c1, c0 = _corruption_mean(cur), _corruption_mean(base)
            out.append(
                _compare(
                    f"BG-Mixup improves accuracy under corruptions ({method})",
                    c1,
                    c0,
                    _corruption_mean(ctrl_shift) if ctrl_shift else None,
                    higher=True,
                    noise=accuracy_noise(
                        c1 or 0, _n(cur, keys=("shift_test_images",)), c0 or 0, _n(base, keys=("shift_test_images",))
                    ),
                    what="mean corruption top-1",
                )
            )
        cur, base = m.get(f"detect-{method}-oacrop"), m.get(f"detect-{method}")
        if cur is not None and base is not None:
            a1, a0 = pick(cur, "bbox/ap50"), pick(base, "bbox/ap50")
            claim = _compare(
                f"OA-Crop does not hurt detection AP50 ({method})",
                a1,
                a0,
                pick(ctrl_det, "bbox/ap50"),
                higher=True,
                noise=2.0,
                what="bbox AP50",
            )
            if a1 is not None and a0 is not None and claim.verdict == "does not hold" and a1 - a0 >= -2.0:
                claim = Claim(claim.text, claim.measured, "holds", "within 2 AP points")
            out.append(claim)
    return out


def _corruption_mean(shift: Mapping[str, Any] | None) -> float | None:
    if shift is None:
        return None
    styles = {"sketch", "stylized", "rendition"}
    vals = [v for k, v in _shift_groups(shift).items() if k not in styles and v is not None]
    return sum(vals) / len(vals) if vals else None


def claims_section(cl: Sequence[Claim]) -> str:
    rows = [[c.text, c.measured, f"**{c.verdict}**" + (f" ({c.why})" if c.why else "")] for c in cl]
    return (
        "## Claims\n\nA claim holds when the difference has the paper's sign, exceeds the noise (2 standard "
        "errors of the difference on the test set, or 2 trial std; 1 point for mIoU) and the random-init "
        "control does not do as well.\n\n" + _table(["claim (paper)", "measured", "verdict"], rows)
    )


# ------------------------------------------------------------------------------------ output


FAMILIES: tuple[str, ...] = ("generate", "pretrain", "contracam", "retrain", "lineval", "shift", "detect")


def stage_seconds(m: Mapping[str, Any]) -> dict[str, float]:
    """Wall seconds the stages recorded (``seconds``, or ``seconds.total``), summed per stage family."""
    out: dict[str, float] = {}
    for stem, d in m.items():
        family = stem.split("-", 1)[0]
        if stem.endswith("-ablation") or family not in FAMILIES:
            continue
        sec = d.get("seconds")
        if isinstance(sec, Mapping):
            sec = sec.get("total")
        if isinstance(sec, (int, float)):
            out[family] = out.get(family, 0.0) + float(sec)
    return out


def _ran(m: Mapping[str, Any]) -> str:
    """``generate, pretrain@{moco, byol}, …``: the stages whose metrics are here, models grouped."""
    by_family: dict[str, list[str]] = {}
    for stem in m:
        family, _, rest = stem.partition("-")
        if family in FAMILIES and not stem.endswith("-ablation"):
            by_family.setdefault(family, []).append(rest)
    parts: list[str] = []
    done: set[str] = set()
    for family in FAMILIES:
        if family not in by_family or family in done:
            continue
        names = sorted(by_family[family], key=_variant_key) if family != "contracam" else sorted(by_family[family])
        same = [f for f in FAMILIES if f not in done and sorted(by_family.get(f, []), key=_variant_key) == names]
        done.update(same)
        label = " / ".join(same)
        if names == [""]:
            parts.append(label)
        elif len(names) > 3:
            parts.append(f"{label} @ {len(names)} models ({', '.join(names)})")
        else:
            parts.append(f"{label}@{{{', '.join(names)}}}")
    return ", ".join(parts) + (", then this report" if parts else "")


def _data_line(m: Mapping[str, Any], data_source: str | None) -> str:
    pre = {k.split("-", 1)[1]: d for k, d in m.items() if k.startswith("pretrain-")}
    first = next(iter(pre.values()), {})
    bits = []
    if data_source:
        bits.append("the embedded benchmark" if data_source == "embedded" else f"{data_source} data (`data.real`)")
    if first.get("train_images"):
        what = f"pretraining on {first['train_images']:,} training images"
        if first.get("dataset"):
            what += f" (`pretrain.dataset` {first['dataset']})"
        if first.get("image_size"):
            what += f" at {first['image_size']} px"
        if first.get("arch"):
            what += f", {first['arch']}"
        bits.append(what)
    epochs = [f"{k} {d['epochs']} epoch{'s' if d['epochs'] != 1 else ''}" for k, d in pre.items() if "epochs" in d]
    if epochs:
        bits.append(", ".join(epochs))
    lin = next((d for k, d in m.items() if k.startswith("lineval-")), None)
    n_crops, n_orig = pick(lin, "crops/test_images"), pick(lin, "original/test_images")
    if n_crops and n_orig:
        bits.append(f"tested on {n_crops:,} object crops / {n_orig:,} ORIGINAL images")
    gen = m.get("generate") or {}
    if gen.get("images") and (data_source in (None, "embedded")):
        bits.append(f"{gen['images']:,} images generated")
    return "; ".join(bits) if bits else "–"


def run_summary(
    m: Mapping[str, Any], *, data_source: str | None = None, cl: Sequence[Claim] | None = None
) -> list[str]:
    """The report's opening: five lines — what ran, on what data, how long, how many claims hold, which fail."""
    cl = claims(m) if cl is None else cl
    secs = stage_seconds(m)
    total = sum(secs.values())
    per = ", ".join(f"{f} {secs[f] / 60:.1f}" for f in FAMILIES if f in secs)
    hold = [c for c in cl if c.verdict == "holds"]
    fail = [c for c in cl if c.verdict == "does not hold"]
    na = len(cl) - len(hold) - len(fail)
    return [
        f"**Ran:** {_ran(m) or 'no stage has written metrics yet'}.",
        f"**Data:** {_data_line(m, data_source)}.",
        f"**Time:** {total / 60:.1f} min recorded by the stages ({per} min; start-up of each process not counted)."
        if secs
        else "**Time:** –.",
        f"**Claims:** {len(hold)} of {len(hold) + len(fail)} checked hold"
        + (f", {na} could not be checked" if na else "")
        + " — the table below has the measured values.",
        "**Do not hold:** " + ("; ".join(c.text for c in fail) if fail else "none") + ".",
    ]


def seed_runs(
    metrics_dir: str | Path,
    seeds_dir: str | Path,
    base_seed: int,
    extra_seeds: Sequence[int],
    oracles: Sequence[str] = (),
) -> list[Any]:
    """The base run and each extra seed's (params ``extra_seeds``) as :class:`oacl.exps.Column` s, for
    :func:`oacl.claims.paired_claims`: the headline metrics under ``metrics_dir`` and under
    ``<seeds_dir>/s<seed>/metrics``, where the base seed has the oracles of the methods ``oracles``
    lists (params ``oracles``); every seed shares the base run's random-init control."""
    from oacl.claims import read_metrics_dir, seed_column, seed_files
    from oacl.exps import Column

    def seed_dir(seed: int) -> str:
        return str(Path(seeds_dir) / f"s{seed}" / "metrics")

    own = read_metrics_dir(str(metrics_dir))
    base_metrics = {k: v for k, v in own.items() if not k.startswith("report.json:")}  # not this stage's last output
    base_metrics.update(seed_files(read_metrics_dir(seed_dir(base_seed)), oracles, only_oracles=True))
    base = Column(f"seed {base_seed}", {"pretrain.seed": base_seed}, base_metrics)
    return [base] + [seed_column(base, s, seed_files(read_metrics_dir(seed_dir(s)), oracles)) for s in extra_seeds]


def paired_section(runs: Sequence[Any]) -> str:
    """The claims judged on paired training seeds (:mod:`oacl.claims`), with each model's mean ± s.e."""
    from oacl.claims import model_table, paired_claims

    seeds = ", ".join(str(r.params["pretrain.seed"]) for r in runs)
    if len(runs) < 2:
        return (
            f"## Paired seeds\n\nOne training seed ({seeds}). With `extra_seeds` in params.yaml "
            "(`dvc exp run -S 'extra_seeds=[1,2]'`) each claim is also judged on the paired differences "
            "between seeds."
        )
    rows = [[c.text, c.measured, f"**{c.verdict}**"] for c in paired_claims(runs)]
    return (
        f"## Paired seeds\n\nTraining seeds {seeds}: each vanilla model and its debiased twins share a seed. "
        "A claim holds when the mean paired difference (debiased − vanilla) lies beyond 2 s.e. over seeds "
        "in the claimed direction (a debiased model also beyond the random-init control, which every seed "
        "shares).\n\n" + "\n".join(model_table(runs)) + "\n\n" + _table(["claim", "measured", "verdict"], rows)
    )


def render(
    m: Mapping[str, Any],
    *,
    title: str = "Object-aware contrastive learning — report",
    figures: Figures | None = None,
    data_source: str | None = None,
    seeds: Sequence[Any] = (),
) -> str:
    """The whole report as Markdown: the five-line summary, the claims, then one section per paper table.

    ``figures``: where the other stages' pictures are (:class:`Figures`); None leaves them out.
    ``seeds``: the runs of :func:`seed_runs`; given, the claims on paired seeds follow the claims.
    """
    cl = claims(m)
    sections = [
        f"# {title}",
        "\n".join(f"- {line}" for line in run_summary(m, data_source=data_source, cl=cl)),
        claims_section(cl),
        *([paired_section(seeds)] if seeds else []),
        localization_section(m, figures),
        lineval_section(m, figures),
        detection_section(m, figures),
        background_section(m, figures),
        shift_section(m),
        training_section(m, figures),
    ]
    return "\n\n".join(sections) + "\n"


def seeds_seconds(
    seeds_dir: str | Path, extra_seeds: Sequence[int], base_seed: int | None = None, oracles: Sequence[str] = ()
) -> float:
    """Wall seconds the stages under ``seeds_dir`` recorded (:func:`stage_seconds`): each extra seed's, and
    the ``base_seed``'s oracles (params ``oracles``)."""
    from oacl.claims import seed_files

    total = 0.0
    for seed in [*([] if base_seed is None else [base_seed]), *extra_seeds]:
        m = seed_files(load_metrics(Path(seeds_dir) / f"s{seed}" / "metrics"), oracles, only_oracles=seed == base_seed)
        total += sum(stage_seconds(m).values())
    return total


def summary(m: Mapping[str, Any], seeds: Sequence[Any] = (), seeds_seconds: float = 0.0) -> dict[str, Any]:
    """The headline for ``dvc metrics``: how many claims hold, and the stages' recorded wall time; with
    two or more ``seeds`` (:func:`seed_runs`) also how many claims hold on the paired seeds; the stage
    time under ``artifacts/seeds`` (``seeds_seconds``: extra seeds, oracles) as ``seeds_wall_minutes``."""
    cl = claims(m)
    out = {
        "claims_hold": sum(c.verdict == "holds" for c in cl),
        "claims_checked": sum(c.verdict != "n/a" for c in cl),
        "wall_minutes": round(sum(stage_seconds(m).values()) / 60.0, 1),
    }
    if len(seeds) >= 2:
        from oacl.claims import paired_claims

        paired = paired_claims(seeds)
        out["seeds"] = len(seeds)
        out["paired_claims_hold"] = sum(c.verdict == "holds" for c in paired)
        out["paired_claims_checked"] = sum(c.verdict != "n/a" for c in paired)
    if len(seeds) >= 2 or seeds_seconds:
        out["seeds_wall_minutes"] = round(seeds_seconds / 60.0, 1)
    return out


def status(m: Mapping[str, Any], *, data_source: str | None = None) -> str:
    """What ``python -m oacl.report --status`` prints: the summary lines and the claims table."""
    cl = claims(m)
    lines = "\n".join(f"- {line}" for line in run_summary(m, data_source=data_source, cl=cl))
    return lines + "\n\n" + claims_section(cl) + "\n"


def write_charts(m: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Bar charts (PNG, offline-viewable) of linear evaluation and the Background Challenge."""
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    charts = {
        "lineval.png": (
            variants(m, "lineval"),
            "lineval",
            ["crops/top1", "original/top1"],
            "linear evaluation top-1 (%)",
        ),
        "background.png": (
            variants(m, "shift"),
            "shift",
            [f"bg/{b}" for b in BG_VARIANTS_TABLE],
            "Background Challenge top-1 (%)",
        ),
    }
    for fname, (names, prefix, keys, title) in charts.items():
        if not names:
            continue
        # about a quarter inch per bar, within 6-12 inches: legible at 100 % in a Markdown viewer
        fig = Figure(figsize=(min(12.0, max(6.0, 0.22 * len(names) * len(keys) + 2)), 3.5), dpi=110)
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / len(names)
        for i, v in enumerate(names):
            vals = []
            for k in keys:
                val = _bg(m[f"{prefix}-{v}"], k[3:])[0] if k.startswith("bg/") else pick(m[f"{prefix}-{v}"], k)
                vals.append(float("nan") if val is None else val)
            ax.bar([j + i * width for j in range(len(keys))], vals, width, label=v)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
        ax.set_xticklabels([k.split("/")[-2] if k.endswith("/top1") else k.split("/")[-1] for k in keys], fontsize=7)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        save_png(fig, out_dir / fname)
        written.append(out_dir / fname)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m oacl.report --status``: the run summary and the claims from the metrics in the workspace."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m oacl.report", description=main.__doc__)
    p.add_argument("--status", action="store_true", required=True, help="print the summary and the claims table")
    p.add_argument("--metrics-dir", default="artifacts/metrics")
    args = p.parse_args(argv)
    m = load_metrics(args.metrics_dir)
    if not m:
        print(f"no metrics under {args.metrics_dir}: run `dvc repro` (or `dvc pull`) first")
        return 1
    print(status(m), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
