"""The report: tables from hand-made metrics, the claims rule, the stage on a metrics folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from oacl import claims, report
from oacl.errors import DataError
from oacl.io.results import write_results

REPO = Path(__file__).resolve().parents[1]


def lineval(crops: float, original: float, n: int = 1000) -> dict:
    return {"crops": {"top1": crops, "test_images": n}, "original": {"top1": original, "test_images": n}}


def shift(gap: float, rand: float, corr: float, n: int = 900) -> dict:
    return {
        "bg_test_images": n,
        "shift_test_images": n // 2,
        "bg_gap": gap,
        "bg/mixed_same/top1": rand + gap,
        "bg/mixed_rand/top1": rand,
        "shift/fog/mean/top1": corr,
        "shift/fog/3/top1": corr - 5,  # a per-severity key (the stage keeps these in details.json)
        "shift/sketch/top1": 30.0,
    }


@pytest.fixture
def metrics() -> dict:
    return {
        "lineval-random": lineval(50.0, 30.0),
        "lineval-moco": lineval(60.0, 40.0),
        "lineval-moco-oacrop": lineval(70.0, 41.0),  # +10 on crops: far above noise
        "lineval-byol": lineval(60.0, 40.0),
        "lineval-byol-oacrop": lineval(61.0, 40.0),  # +1: within noise at n = 1000
        "shift-random": shift(5.0, 20.0, 25.0),
        "shift-moco": shift(20.0, 30.0, 40.0),
        "shift-moco-bgmix": shift(10.0, 40.0, 50.0),  # +10 on corruptions: above the noise at n = 450
        "contracam-multi-ablation": {
            "images": 256,
            "base": {"refined_miou_pct": 40.0, "soft_miou_pct": 35.0},
            "without_nsr": {"refined_miou_pct": 30.0, "soft_miou_pct": 28.0},
            "iters": {
                "1": {"refined_miou_pct": 35.0},
                "5": {"refined_miou_pct": 40.5},
                "10": {"refined_miou_pct": 40.0},
            },
            "iters_stop": {"stop_ratio": 0.5, "1": {"refined_miou_pct": 35.0}, "10": {"refined_miou_pct": 35.5}},
        },
        "contracam-multi": {
            "mask_miou_pct": {
                "refined": 40.0,
                "gaussian": 30.0,
                "ones": 17.0,
                "channel_sum": 38.5,
                "random_weights": 25.0,
            },
            "pxap_pct": {"cam": 40.0, "gaussian": 30.0, "ones": 17.0, "channel_sum": 43.0, "random_weights": 25.0},
        },
    }


def verdicts(m: dict) -> dict[str, str]:
    return {c.text: c.verdict for c in report.claims(m)}


def test_noise_is_two_standard_errors_of_a_difference():
    # p = 0.5 on 1000 images each: se of the difference = sqrt(2 * 0.25 / 1000) = 0.02236
    assert report.accuracy_noise(50.0, 1000, 50.0, 1000) == pytest.approx(200 * 0.0223607, rel=1e-4)
    assert report.accuracy_noise(50.0, 1000, 50.0, 1000, std=5.0) == 10.0  # trials dominate


def test_claims_follow_the_rule(metrics):
    v = verdicts(metrics)
    assert v["OA-Crop improves linear evaluation on object crops (moco)"] == "holds"
    assert v["OA-Crop improves linear evaluation on object crops (byol)"] == "does not hold"
    assert v["Negative-signal removal improves mask mIoU (multi)"] == "holds"
    assert v["More ContraCAM iterations improve mIoU up to T ≈ 5–10 (multi)"] == "holds"
    # the extension's row is its own claim, labelled as such (35.5 vs 35: within the 1-point noise)
    rule = "More ContraCAM iterations improve mIoU up to T ≈ 5–10 (multi), with the stopping rule"
    assert v[f"{rule} (an extension beyond the paper)"] == "does not hold"
    # judged against the strongest null, the channel sum: mIoU 40 vs 38.5 (beyond the 1-point noise); PxAP 40 vs 43
    assert v["ContraCAM localizes better than every null baseline after the same CRF (multi)"] == "holds"
    assert v["ContraCAM localizes better than every null baseline as soft maps (multi)"] == "does not hold"
    c = next(c for c in report.claims(metrics) if c.text.endswith("as soft maps (multi)"))
    assert "channel sum" in c.measured and "43.0" in c.measured
    assert v["BG-Mixup raises MIXED-RAND accuracy (moco)"] == "holds"
    assert v["BG-Mixup improves accuracy under corruptions (moco)"] == "holds"
    # the random-init control has a lower gap (5) than the bgmix model (10): not credited
    assert v["BG-Mixup lowers the BG-Gap (moco)"] == "does not hold"


def test_a_control_as_good_as_the_debiased_model_voids_the_claim(metrics):
    metrics["lineval-random"] = lineval(75.0, 30.0)
    c = next(c for c in report.claims(metrics) if c.text.endswith("object crops (moco)"))
    assert c.verdict == "does not hold" and "random-init" in c.why


def test_missing_metrics_give_na_not_a_crash():
    assert {c.verdict for c in report.claims({})} == {"n/a"}
    text = report.render({})
    assert "No linear-evaluation metrics" in text and "## Claims" in text


def test_tables_show_values_and_deltas_against_the_twin(metrics):
    text = report.render(metrics)
    assert "| `moco-oacrop` | 70.0 (+10.0) | 41.0 (+1.0) |" in text
    assert "| `random` | 50.0 | 30.0 |" in text
    lines = [line for line in text.splitlines() if line.startswith("| `")]
    order = [line.split("`")[1] for line in lines if "(" in line or "50.0" in line][:5]
    assert order[0] == "random"


PNG = b"\x89PNG\r\n\x1a\n"
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def test_stage_writes_report_summary_and_charts(tmp_path, metrics):
    mdir = tmp_path / "metrics"
    mdir.mkdir()
    for name, d in metrics.items():
        write_results(mdir / f"{name}.json", d)  # as the stages write them: headline + eval/<stem>/ details
    metrics["retrain-moco-oacrop"] = {"final_loss": 6.5, "seconds": 60.0}
    write_results(mdir / "retrain-moco-oacrop.json", metrics["retrain-moco-oacrop"])
    figures = tmp_path / "figures"
    for rel in ("contracam-multi/sheet.png", "retrain-moco-oacrop/augment.png", "retrain-moco-oacrop/loss.png"):
        (figures / rel).parent.mkdir(parents=True, exist_ok=True)
        (figures / rel).write_bytes(PNG)
    params = tmp_path / "params.yaml"
    params.write_text("pmix: 0.4\n")
    out = tmp_path / "report.md"
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "report.py"),
            "--params",
            str(params),
            "--metrics-dir",
            str(mdir),
            "--out",
            str(out),
            "--summary",
            str(mdir / "report.json"),
            "--plots",
            str(figures / "report"),
            "--figures",
            str(figures),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert "## Claims" in text
    summary = json.loads((mdir / "report.json").read_text())
    assert summary["claims_hold"] == sum(v == "holds" for v in verdicts(metrics).values())
    assert summary["wall_minutes"] == 1.0  # the one stage that recorded seconds
    assert {p.name for p in (figures / "report").iterdir()} == {"lineval.png", "background.png"}
    links = IMAGE_LINK.findall(text)
    assert set(links) == {
        "figures/contracam-multi/sheet.png",
        "figures/report/lineval.png",
        "figures/report/background.png",
        "figures/retrain-moco-oacrop/augment.png",
        "figures/retrain-moco-oacrop/loss.png",
    }  # relative to report.md, and only files that exist
    assert all((out.parent / link).read_bytes()[:8] == PNG for link in links)


def test_report_opens_with_a_five_line_summary(metrics):
    metrics["pretrain-moco"] = {"train_images": 6000, "dataset": "both", "image_size": 64, "epochs": 4, "seconds": 120}
    metrics["contracam-multi"]["seconds"] = {"cam": 20.0, "total": 60.0}
    lines = report.render(metrics, data_source="embedded").split("## Claims")[0].strip().splitlines()
    assert lines[0].startswith("# ") and len([line for line in lines if line.startswith("- **")]) == 5
    ran, data, time, hold, fail = (line for line in lines if line.startswith("- **"))
    assert "contracam@{multi}" in ran and "lineval" in ran and "5 models" in ran
    assert "the embedded benchmark" in data and "6,000 training images" in data and "64 px" in data
    assert time.startswith("- **Time:** 3.0 min") and "pretrain 2.0" in time and "contracam 1.0" in time
    v = verdicts(metrics)
    n_hold = sum(x == "holds" for x in v.values())
    assert hold.startswith(f"- **Claims:** {n_hold} of {sum(x != 'n/a' for x in v.values())} checked hold")
    assert "BG-Mixup lowers the BG-Gap (moco)" in fail and "object crops (moco)" not in fail  # that one holds


def test_status_command_prints_summary_and_claims(tmp_path, metrics):
    for name, d in metrics.items():
        write_results(tmp_path / "metrics" / f"{name}.json", d)
    res = subprocess.run(
        [sys.executable, "-m", "oacl.report", "--status", "--metrics-dir", str(tmp_path / "metrics")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("- **Ran:**") and "## Claims" in res.stdout
    assert "| OA-Crop improves linear evaluation on object crops (moco) |" in res.stdout
    empty = subprocess.run(
        [sys.executable, "-m", "oacl.report", "--status", "--metrics-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert empty.returncode == 1 and "dvc repro" in empty.stdout


def test_unreadable_metrics_file_is_named(tmp_path):
    (tmp_path / "lineval-moco.json").write_text("{not json")
    with pytest.raises(DataError, match="lineval-moco.json"):
        report.load_metrics(tmp_path)


def test_unknown_test_set_size_leaves_a_claim_undecided(metrics):
    for key in ("shift-moco", "shift-moco-bgmix"):
        del metrics[key]["bg_test_images"]
    c = next(c for c in report.claims(metrics) if c.text == "BG-Mixup raises MIXED-RAND accuracy (moco)")
    assert c.verdict == "n/a" and "size unknown" in c.why


def test_distribution_shift_table_reads_the_stage_keys(metrics):
    text = report.render(metrics)
    assert "| model | fog | sketch |" in text  # per-family mean and the style set; the severity key is not a column
    assert "| `moco-bgmix` | 50.0 (+10.0) | 30.0 (+0.0) |" in text


def test_ablation_rows_follow_the_numbers(metrics):
    text = report.render(metrics)
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| T = ")]
    assert rows[:3] == ["T = 1", "T = 5", "T = 10"]  # not "1", "10", "5" as the JSON keys sort
    assert rows[3:] == ["T = 1, stopping rule 0.5 (extension)", "T = 10, stopping rule 0.5 (extension)"]


def test_extra_seeds_are_judged_on_paired_differences(tmp_path, metrics):
    """With ``extra_seeds`` the stage reads each seed's metrics under --seeds-dir and judges the claims on
    the paired (debiased − vanilla) differences; the seeds share the base run's random-init control."""
    mdir, seeds = tmp_path / "metrics", tmp_path / "seeds"
    for name, d in metrics.items():
        write_results(mdir / f"{name}.json", d)
    # crops top-1 per seed (base, 1, 2): MoCo +10 / +8 / +9 with OA-Crop; BYOL +1 / -1 / +2
    per_seed = {1: {"moco": (61.0, 69.0), "byol": (60.0, 59.0)}, 2: {"moco": (59.0, 68.0), "byol": (60.0, 62.0)}}
    for seed, models in per_seed.items():
        write_results(
            seeds / f"s{seed}" / "metrics" / "pretrain-moco.json", {"final_loss": 6.0, "seconds": 60.0 * seed}
        )
        for m, (vanilla, oacrop) in models.items():
            write_results(seeds / f"s{seed}" / "metrics" / f"lineval-{m}.json", lineval(vanilla, 40.0))
            write_results(seeds / f"s{seed}" / "metrics" / f"lineval-{m}-oacrop.json", lineval(oacrop, 40.0))
    params = tmp_path / "params.yaml"
    params.write_text("extra_seeds: [1, 2]\n")
    out, summary = tmp_path / "report.md", tmp_path / "report.json"
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "report.py"),
            *("--params", str(params), "--metrics-dir", str(mdir), "--seeds-dir", str(seeds)),
            *("--out", str(out), "--summary", str(summary), "--plots", str(tmp_path / "plots")),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    paired = out.read_text().split("## Paired seeds")[1].split("\n## ")[0]
    assert "Training seeds 0, 1, 2" in paired
    rows = {r.split(" | ")[0].strip("| "): r for r in paired.splitlines() if r.startswith("| ")}
    moco = rows["OA-Crop (ContraCAM boxes) improves the object-crop probe (moco)"]
    assert "mean +9.0, s.e. 0.6, n = 3 (per seed +10.0 / +8.0 / +9.0)" in moco and "**holds**" in moco
    byol = rows["OA-Crop (ContraCAM boxes) improves the object-crop probe (byol)"]
    assert "mean +0.7, s.e. 0.9" in byol and "**does not hold**" in byol
    # the random-init control (50.0, base run only) serves every seed: +20 / +19 / +18
    assert "mean +19.0" in rows["moco-oacrop is above the random-init control on object crops"]
    assert "metrics missing" in rows["BG-Mixup lowers the BG-Gap (moco)"]  # no seed but the base has shift files
    assert "| moco-oacrop | 69.0 ± 0.6 (3) |" in paired  # the per-model table: mean ± s.e. (seeds)
    s = json.loads(summary.read_text())
    assert (s["seeds"], s["paired_claims_hold"]) == (3, 3)  # moco's gain, and both OA-Crop models above random
    assert s["paired_claims_checked"] == 4
    assert s["seeds_wall_minutes"] == 3.0  # the seeds' stages: 1 + 2 min


def test_the_oracles_of_every_seed_are_paired_and_stale_files_left_out(tmp_path, metrics):
    """``oracles: [moco]``: the base seed's oracle files in ``s<pretrain.seed>/`` join the base run (and
    nothing else there does); an oracle of a method no longer listed, left behind by DVC, is not read."""
    seeds = tmp_path / "seeds"
    base, one = seeds / "s0" / "metrics", seeds / "s1" / "metrics"
    write_results(base / "lineval-moco-oacrop_gt.json", lineval(63.0, 40.0))
    write_results(base / "retrain-moco-oacrop_gt.json", {"final_loss": 6.0, "seconds": 120.0})
    write_results(base / "lineval-moco.json", lineval(10.0, 10.0))  # stale: seed 0 once an extra seed
    write_results(base / "lineval-byol-oacrop_gt.json", lineval(99.0, 40.0))  # stale: byol not listed
    write_results(one / "lineval-moco.json", lineval(58.0, 40.0))
    write_results(one / "lineval-moco-oacrop_gt.json", lineval(62.0, 40.0))
    write_results(one / "lineval-byol-oacrop_gt.json", lineval(99.0, 40.0))
    write_results(one / "retrain-byol-oacrop_gt.json", {"final_loss": 6.0, "seconds": 600.0})
    mdir = tmp_path / "metrics"
    for name, d in metrics.items():
        write_results(mdir / f"{name}.json", d)
    runs = report.seed_runs(mdir, seeds, 0, [1], oracles=["moco"])
    assert runs[0].metrics["lineval-moco.json:crops.top1"] == 60.0
    assert runs[0].metrics["lineval-moco-oacrop_gt.json:crops.top1"] == 63.0
    assert not [k for r in runs for k in r.metrics if k.startswith("lineval-byol-oacrop_gt")]
    rows = {c.text: c for c in claims.paired_claims(runs)}
    gt = rows["OA-Crop (ground-truth boxes, the oracle) improves the object-crop probe (moco)"]
    assert "mean +3.5" in gt.measured and "(per seed +3.0 / +4.0)" in gt.measured
    # stage time under the seeds folder: the base seed's oracle (2 min), not the unlisted byol one
    assert report.seeds_seconds(seeds, [1], 0, ["moco"]) == 120.0
    assert report.seeds_seconds(seeds, [1], 0, ["moco", "byol"]) == 720.0


def test_one_training_seed_says_how_to_add_more(metrics):
    text = report.render(metrics, seeds=[report.seed_runs("nowhere", "nowhere", 0, [])[0]])
    assert "## Paired seeds\n\nOne training seed (0). With `extra_seeds`" in text
    assert report.summary(metrics, report.seed_runs("nowhere", "nowhere", 0, [])).keys() == {
        "claims_hold",
        "claims_checked",
        "wall_minutes",
    }
