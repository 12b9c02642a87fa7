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

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oacl.errors import DataError
from oacl.io.atomic import save_png
from oacl.vocab import BG_VARIANTS_TABLE, DEBIAS, METHODS, SETS

__all__ = ["Claim", "load_metrics", "variants", "claims", "render", "summary", "write_charts"]

MIOU_NOISE = 1.0  # points


# ----------------------------------------------------------------------------------- loading


def load_metrics(metrics_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` under ``metrics_dir`` by stem (``lineval-moco`` → its dict); unreadable files raise."""
    out = {}
    for path in sorted(Path(metrics_dir).glob("*.json")):
        if path.stem == "report":
            continue
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"metrics file {path} is not readable JSON: {err}") from err
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


# ------------------------------------------------------------------------------------ tables


def localization_section(m: Mapping[str, Any]) -> str:
    parts = ["## Localization (paper Tables 1, 9, 10)"]
    sets = [s for s in SETS if f"contracam-{s}" in m]
    if not sets:
        return parts[0] + "\n\n_No ContraCAM metrics (stages contracam@multi / contracam@single have not run)._"
    rows = []
    for s in sets:
        c = m[f"contracam-{s}"]
        rows.append(
            [
                s,
                _num(pick(c, "mask_miou_pct/refined")),
                _num(pick(c, "mask_miou_pct/soft_cam")),
                _num(pick(c, "mask_miou_pct/gaussian")),
                _num(pick(c, "mask_miou_pct/ones")),
                _num(pick(c, "max_box_acc_v2_pct/cam/mean")),
                _num(pick(c, "max_box_acc_v2_pct/gaussian/mean")),
                _num(pick(c, "boxes_per_image/cam"), 2),
                _num(pick(c, "boxes_per_image/gt"), 2),
            ]
        )
    parts.append(
        "Mask mIoU and MaxBoxAccV2 (%) of ContraCAM on each training split, next to image-blind baselines "
        "(a centred Gaussian with its best σ, and the all-ones map).\n\n"
        + _table(
            [
                "set",
                "mIoU CRF",
                "mIoU soft CAM",
                "mIoU Gaussian",
                "mIoU ones",
                "MaxBoxAccV2 CAM",
                "MaxBoxAccV2 Gaussian",
                "boxes / image",
                "GT boxes / image",
            ],
            rows,
        )
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
        for t, r in (a.get("iters") or {}).items():
            rows.append([f"T = {t}", _num(r.get("refined_miou_pct")), _num(r.get("soft_miou_pct"))])
        for b, r in (a.get("neg_batch") or {}).items():
            rows.append([f"negative batch {b}", _num(r.get("refined_miou_pct")), _num(r.get("soft_miou_pct"))])
        base = a.get("baseline_miou_pct", {})
        parts.append(
            f"Ablation on {a['images']} images of `{s}` (mask mIoU %; Gaussian baseline "
            f"{_num(base.get('gaussian'))}, all-ones {_num(base.get('ones'))}):\n\n"
            + _table(["setting", "mIoU CRF", "mIoU soft CAM"], rows)
        )
    return "\n\n".join(parts)


def lineval_section(m: Mapping[str, Any]) -> str:
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
    return (
        head + "\n\nTop-1 accuracy (%) of a linear probe on frozen features; in brackets the change against "
        "the vanilla twin.\n\n" + _table(["model", "object crops", "ORIGINAL"], rows)
    )


def detection_section(m: Mapping[str, Any]) -> str:
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
    return (
        head
        + "\n\nCOCO AP (%) on the multi-object test split after the same fine-tuning budget.\n\n"
        + _table(["model", *keys], rows)
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


def background_section(m: Mapping[str, Any]) -> str:
    names = variants(m, "shift")
    head = "## Background Challenge (paper Table 7)"
    if not names:
        return head + "\n\n_No shift metrics._"
    cols = [b for b in BG_VARIANTS_TABLE if any(_bg(m[f"shift-{v}"], b)[0] is not None for v in names)]
    rows = []
    for v in names:
        s = m[f"shift-{v}"]
        rows.append([f"`{v}`"] + [_pm(*_bg(s, b)) for b in cols] + [_pm(*_gap(s))])
    return (
        head + "\n\nTop-1 (%) of the linear classifier trained on ORIGINAL; BG-Gap = MIXED-SAME − MIXED-RAND "
        "(lower is less background-reliant).\n\n"
        + _table(["model", *[c.upper().replace("_", "-") for c in cols], "BG-Gap"], rows)
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


def training_section(m: Mapping[str, Any]) -> str:
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
    return "## Training\n\n" + _table(
        ["stage", "epochs", "steps", "first-epoch loss", "final loss", "img/s", "seconds"], rows
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
    iters = a.get("iters") or {}
    best_late = max((r["refined_miou_pct"] for t, r in iters.items() if 5 <= int(t) <= 10), default=None)
    out.append(
        _compare(
            "More ContraCAM iterations improve mIoU up to T ≈ 5–10 (multi)",
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
        if c is not None:
            out.append(
                _compare(
                    f"ContraCAM localizes better than an image-blind centred Gaussian ({s})",
                    pick(c, "mask_miou_pct/refined"),
                    pick(c, "mask_miou_pct/gaussian"),
                    None,
                    higher=True,
                    noise=MIOU_NOISE,
                    what="mask mIoU",
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


def render(m: Mapping[str, Any], *, title: str = "Object-aware contrastive learning — report") -> str:
    """The whole report as Markdown."""
    cl = claims(m)
    sections = [
        f"# {title}",
        claims_section(cl),
        localization_section(m),
        lineval_section(m),
        detection_section(m),
        background_section(m),
        shift_section(m),
        training_section(m),
    ]
    return "\n\n".join(sections) + "\n"


def summary(m: Mapping[str, Any]) -> dict[str, Any]:
    """Small JSON for ``dvc metrics``: how many claims hold."""
    cl = claims(m)
    return {
        "claims_hold": sum(c.verdict == "holds" for c in cl),
        "claims_checked": sum(c.verdict != "n/a" for c in cl),
    }


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
        fig = Figure(figsize=(max(6, 1.2 * len(names) * len(keys) / 2), 3.5), dpi=110)
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
