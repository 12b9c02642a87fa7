"""Claims on paired seeds (`python -m oacl.claims`) on `dvc exp show --json` output of known content."""

from __future__ import annotations

import json

import pytest

from oacl import claims, exps

# per seed 0, 1, 2: (metrics file stem, key) -> value
VALUES = {
    ("lineval-random", "crops.top1"): [62.4, 62.4, 62.4],
    ("lineval-moco", "crops.top1"): [60.0, 62.0, 61.0],
    ("lineval-moco-oacrop", "crops.top1"): [65.0, 66.0, 66.0],  # +5, +4, +5
    ("lineval-moco-oacrop_gt", "crops.top1"): [64.0, 67.0, 65.0],  # oracle − cam: −1, +1, −1
    ("lineval-byol", "crops.top1"): [62.0, 60.0, 64.0],
    ("lineval-byol-oacrop", "crops.top1"): [63.0, 59.0, 66.0],  # +1, −1, +2: within 2 s.e.
    ("shift-random", "bg/mixed_rand/top1"): [17.0, 17.0, 17.0],
    ("shift-moco", "bg_gap"): [30.0, 32.0, 31.0],
    ("shift-moco-bgmix", "bg_gap"): [27.0, 29.0, 28.5],  # −3, −3, −2.5
    ("shift-moco", "bg/mixed_rand/top1"): [20.0, 21.0, 19.0],
    ("shift-moco-bgmix", "bg/mixed_rand/top1"): [22.0, 22.5, 21.0],  # +2, +1.5, +2; control 17
    ("shift-byol", "bg_gap"): [20.0, 21.0, 22.0],
    ("shift-byol-bgmix", "bg_gap"): [19.0, 22.0, 21.0],
    ("shift-byol", "bg/mixed_rand/top1"): [14.0, 15.0, 13.0],
    ("shift-byol-bgmix", "bg/mixed_rand/top1"): [16.0, 17.0, 15.0],  # +2 each, but at or below the control
    ("shift-moco-hardmix_gt", "bg_gap"): [25.0, 30.0, 27.5],  # oracle − BG-Mixup: −2, +1, −1
    ("shift-moco-hardmix_gt", "bg/mixed_rand/top1"): [20.0, 20.5, 19.0],  # −2, −2, −2: smaller than BG-Mixup's
    ("detect-moco", "bbox/ap50"): [21.0, 19.0, 23.0],
    ("detect-moco-oacrop", "bbox/ap50"): [20.0, 18.0, 21.0],  # −1, −1, −2
    ("report", "wall_minutes"): [40.0, 41.0, 42.0],
}


def _tree(key: str, value: float) -> dict:
    if key.startswith(("bg/", "bbox/")) or key in ("bg_gap", "wall_minutes"):
        return {key: value}
    head, _, tail = key.partition(".")
    return {head: {tail: value}}


def _state(rev: str, seed: int, epochs: int = 60, experiments=None) -> dict:
    metrics: dict[str, dict] = {}
    for (stem, key), vals in VALUES.items():
        data = metrics.setdefault(f"artifacts/metrics/{stem}.json", {"data": {}})["data"]
        for k, v in _tree(key, vals[seed]).items():
            if isinstance(v, dict):
                data.setdefault(k, {}).update(v)
            else:
                data[k] = v
    params = {"params.yaml": {"data": {"pmix": 0.4, "pretrain": {"seed": seed, "moco": {"epochs": epochs}}}}}
    return {
        "rev": rev,
        "name": None,
        "data": {"rev": rev, "params": params, "metrics": metrics, "deps": {}, "outs": {}},
        "error": None,
        "experiments": experiments,
    }


def shown(epochs=(60, 60, 60)) -> list[dict]:
    exp = [
        {"revs": [_state(c * 40, s, epochs[s])], "executor": None, "name": f"seed{s}"} for s, c in ((1, "b"), (2, "c"))
    ]
    return [_state("workspace", 0, epochs[0]), _state("a" * 40, 0, epochs[0], experiments=exp)]


def _by_text() -> dict[str, claims.PairedClaim]:
    runs = claims.by_seed(exps.columns(shown()))
    return {c.text: c for c in claims.paired_claims(list(runs.values()))}


def test_runs_are_grouped_by_seed_and_the_repeated_workspace_is_dropped():
    runs = claims.by_seed(exps.columns(shown()))
    assert list(runs) == [0, 1, 2]


def test_paired_verdicts_on_known_values():
    got = _by_text()
    oa = got["OA-Crop (ContraCAM boxes) improves the object-crop probe (moco)"]
    assert oa.verdict == "holds"
    assert "mean +4.7, s.e. 0.3, n = 3 (per seed +5.0 / +4.0 / +5.0)" in oa.measured
    assert got["OA-Crop (ContraCAM boxes) improves the object-crop probe (byol)"].verdict == "does not hold"
    oracle = got["The GT-box oracle's crops gain is at least OA-Crop's (moco)"]
    assert oracle.verdict == "holds" and "mean -0.3, s.e. 0.7" in oracle.measured
    assert got["BG-Mixup lowers the BG-Gap (moco)"].verdict == "holds"
    assert got["BG-Mixup raises MIXED-RAND (moco)"].verdict == "holds"
    assert got["The GT-mask oracle's BG-Gap drop is at least BG-Mixup's (moco)"].verdict == "holds"
    assert got["The GT-mask oracle's MIXED-RAND gain is at least BG-Mixup's (moco)"].verdict == "does not hold"
    assert (
        got["BG-HardMix with ground-truth masks, the oracle lowers the BG-Gap (moco)"].verdict == "holds"
    )  # −5, −2, −3.5
    assert got["BG-Mixup lowers the BG-Gap (byol)"].verdict == "does not hold"  # 0, +1, −1
    byol_rand = got["BG-Mixup raises MIXED-RAND (byol)"]
    assert byol_rand.verdict == "does not hold" and "not beyond the random-init control" in byol_rand.measured
    assert got["moco-oacrop is above the random-init control on object crops"].verdict == "holds"
    assert got["byol-oacrop is above the random-init control on object crops"].verdict == "does not hold"
    det = got["Detection informs: the vanilla AP50 is at least 20 (moco)"]
    assert det.verdict == "holds" and "mean 21.0 over 3 seeds" in det.measured
    assert got["OA-Crop does not hurt detection, within 2 AP50 (moco)"].verdict == "holds"
    assert not any("(byol)" in t and "etection" in t for t in got)  # no BYOL detection metrics: no claim


def test_one_seed_decides_nothing():
    runs = claims.by_seed(exps.columns(shown()[:1]))
    assert list(runs) == [0]
    assert {c.verdict for c in claims.paired_claims(list(runs.values())) if "AP50 is at least" not in c.text} == {"n/a"}


def test_a_model_missing_in_some_seeds_is_not_judged():
    """Seeds where only part of the DAG reran (BYOL and detection in seed 0 alone): n/a, never a
    verdict from the seeds that happen to have the numbers."""
    data = shown()
    for exp in data[1]["experiments"]:
        metrics = exp["revs"][0]["data"]["metrics"]
        for stem in ("lineval-byol", "lineval-byol-oacrop", "detect-moco", "detect-moco-oacrop"):
            del metrics[f"artifacts/metrics/{stem}.json"]
    got = {c.text: c for c in claims.paired_claims(list(claims.by_seed(exps.columns(data)).values()))}
    for text in (
        "OA-Crop (ContraCAM boxes) improves the object-crop probe (byol)",
        "Detection informs: the vanilla AP50 is at least 20 (moco)",
        "OA-Crop does not hurt detection, within 2 AP50 (moco)",
    ):
        assert (got[text].measured, got[text].verdict) == ("metrics missing", "n/a")
    assert got["OA-Crop (ContraCAM boxes) improves the object-crop probe (moco)"].verdict == "holds"


def test_runs_that_differ_in_another_param_are_refused():
    with pytest.raises(ValueError, match="differ in 'pretrain.moco.epochs'"):
        claims.by_seed(exps.columns(shown(epochs=(60, 12, 60))))


def test_a_seed_with_two_different_results_is_refused():
    data = shown()
    data[1]["experiments"].append({"revs": [_state("d" * 40, 1, 60)], "executor": None, "name": "again"})
    data[1]["experiments"][-1]["revs"][0]["data"]["metrics"]["artifacts/metrics/lineval-moco.json"]["data"]["crops"][
        "top1"
    ] = 50.0
    with pytest.raises(ValueError, match="share pretrain.seed = 1"):
        claims.by_seed(exps.columns(data))


def test_cli_writes_the_claims_file(tmp_path, capsys):
    src = tmp_path / "shown.json"
    src.write_text(json.dumps(shown()))
    out, md = tmp_path / "claims.json", tmp_path / "claims.md"
    cmd = "for s in 0 1 2; do dvc exp run --queue -S pretrain.seed=$s; done"
    assert claims.main(["--from", str(src), "--out", str(out), "--md", str(md), "--command", cmd]) == 0
    doc = json.loads(out.read_text())
    assert doc["command"] == cmd and doc["seeds"] == [0, 1, 2] and doc["wall_s"] == 60.0 * (40 + 41 + 42)
    assert {"text", "measured", "verdict"} == set(doc["claims"][0])
    held = sum(c["verdict"] == "holds" for c in doc["claims"])
    assert f"{held} of {len(doc['claims'])} claims hold" in md.read_text()
    # the per-model table: crops 65 / 66 / 66 -> mean 65.7, s.d. 0.577, s.e. 0.33; files it lacks: –
    # AP50 of the fine-tuned models: moco-oacrop 20 / 18 / 21 -> mean 19.7, s.e. 0.88
    assert "| model | probe crops | probe ORIGINAL | MIXED-RAND | BG-Gap | AP50 |" in md.read_text()
    assert "| moco-oacrop | 65.7 ± 0.3 (3) | – | – | – | 19.7 ± 0.9 (3) |" in md.read_text()
    assert "| moco-bgmix | – | – | 21.8 ± 0.4 (3) | 28.2 ± 0.6 (3) | – |" in md.read_text()
    assert md.read_text().index("| random |") < md.read_text().index("| byol |") < md.read_text().index("| moco |")
    assert "| BG-Mixup lowers the BG-Gap (moco) |" in capsys.readouterr().out
    assert "Detection is judged on means: the vanilla AP50 at least 20, OA-Crop's paired difference" in md.read_text()


def test_the_model_table_has_an_ap50_column_only_when_some_model_was_fine_tuned():
    runs = list(claims.by_seed(exps.columns(shown())).values())
    assert claims.model_table(runs)[0].endswith("| BG-Gap | AP50 |")
    no_detect = [
        exps.Column(r.label, r.params, {k: v for k, v in r.metrics.items() if not k.startswith("detect-")})
        for r in runs
    ]
    rows = claims.model_table(no_detect)
    assert rows[0] == "| model | probe crops | probe ORIGINAL | MIXED-RAND | BG-Gap |"
    assert all(row.count("|") == 6 for row in rows)


def test_cli_names_the_differing_param(tmp_path, capsys):
    src = tmp_path / "shown.json"
    src.write_text(json.dumps(shown(epochs=(60, 60, 12))))
    assert claims.main(["--from", str(src)]) == 2
    assert "differ in 'pretrain.moco.epochs'" in capsys.readouterr().err


def test_cli_reads_project_folders_like_the_experiments(tmp_path, capsys):
    """--dirs: one folder per seed (params.yaml, dvc.lock, metrics) judges as the same runs from `dvc exp show`."""
    import hashlib

    import yaml

    dirs = []
    for seed, state in enumerate([shown()[0], *(e["revs"][0] for e in shown()[1]["experiments"])]):
        root = tmp_path / f"seed{seed}"
        stages = {}
        for path, source in state["data"]["metrics"].items():
            data = json.dumps(source["data"]).encode()
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
            stages[path] = {
                "cmd": "c",
                "params": {"params.yaml": {"pretrain.seed": seed}},
                "outs": [{"path": path, "md5": hashlib.md5(data).hexdigest()}],
            }
        (root / "params.yaml").write_text(yaml.safe_dump(state["data"]["params"]["params.yaml"]["data"]))
        (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))
        dirs.append(str(root))
    out = tmp_path / "claims.json"
    assert claims.main(["--dirs", *dirs, "--out", str(out), "--wall-s", "5400"]) == 0
    doc = json.loads(out.read_text())
    assert doc["seeds"] == [0, 1, 2] and doc["wall_s"] == 5400.0
    runs = claims.by_seed(exps.columns(shown()))
    assert doc["claims"] == [c.as_dict() for c in claims.paired_claims(list(runs.values()))]
    capsys.readouterr()
    assert claims.main(["--dirs", *dirs, "--from", "x.json"]) == 2
    assert "--dirs reads folders" in capsys.readouterr().err


def _write_run(root, rel_dir: str, state: dict, stages: dict, skip=()) -> None:
    """The metrics of one ``shown()`` state under ``root/rel_dir`` with their dvc.lock entries."""
    import hashlib

    for path, source in state["data"]["metrics"].items():
        name = path.rsplit("/", 1)[1]
        if name.startswith(skip):
            continue
        rel = f"{rel_dir}/{name}"
        data = json.dumps(source["data"]).encode()
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        stages[rel] = {"cmd": "c", "outs": [{"path": rel, "md5": hashlib.md5(data).hexdigest()}]}


def test_cli_reads_a_folder_with_extra_seeds_as_paired_runs(tmp_path):
    """One folder with ``extra_seeds: [1, 2]``: the base run and each seed's metrics under
    artifacts/seeds/s<seed>/ judge as three seeds do; the seeds share the base run's random-init control."""
    import yaml

    states = [shown()[0], *(e["revs"][0] for e in shown()[1]["experiments"])]
    stages: dict = {}
    # the report stage records the extra seeds' stage minutes beside the base run's own
    states[0]["data"]["metrics"]["artifacts/metrics/report.json"]["data"]["seeds_wall_minutes"] = 70.0
    _write_run(tmp_path, "artifacts/metrics", states[0], stages)
    for seed in (1, 2):  # no random-init control and no report of their own
        _write_run(
            tmp_path, f"artifacts/seeds/s{seed}/metrics", states[seed], stages, skip=("lineval-random", "report")
        )
    params = dict(states[0]["data"]["params"]["params.yaml"]["data"], extra_seeds=[1, 2], oracles=["moco"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))
    out = tmp_path / "claims.json"
    assert claims.main(["--dirs", str(tmp_path), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["seeds"] == [0, 1, 2]
    assert doc["wall_s"] == 60.0 * (40.0 + 70.0)  # the base run's stages and its extra seeds
    runs = claims.by_seed(exps.columns(shown()))
    assert doc["claims"] == [c.as_dict() for c in claims.paired_claims(list(runs.values()))]
    by_text = {c["text"]: c for c in doc["claims"]}
    assert by_text["OA-Crop (ContraCAM boxes) improves the object-crop probe (moco)"]["verdict"] == "holds"
    # a seed whose metrics file no longer matches the lock contributes nothing for it: not judged
    (tmp_path / "artifacts/seeds/s2/metrics/lineval-moco-oacrop.json").write_text('{"crops": {"top1": 99.0}}')
    assert claims.main(["--dirs", str(tmp_path), "--out", str(out)]) == 0
    by_text = {c["text"]: c for c in json.loads(out.read_text())["claims"]}
    assert by_text["OA-Crop (ContraCAM boxes) improves the object-crop probe (moco)"]["verdict"] == "n/a"
    # the base seed's oracles (params `oracles`) live in artifacts/seeds/s<pretrain.seed>/ and join its run
    oracle = {"data": {"crops": {"top1": 71.0}}}
    _write_run(
        tmp_path, "artifacts/seeds/s0/metrics", {"data": {"metrics": {"x/lineval-moco-oacrop_gt.json": oracle}}}, stages
    )
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))
    key = "lineval-moco-oacrop_gt.json:crops.top1"
    base, *extra = claims.with_extra_seeds(str(tmp_path))
    assert base.metrics[key] == 71.0 and [c.metrics[key] for c in extra] == [
        states[s]["data"]["metrics"]["artifacts/metrics/lineval-moco-oacrop_gt.json"]["data"]["crops"]["top1"]
        for s in (1, 2)
    ]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "oracles": []}))  # left behind: not read
    assert not [key for c in claims.with_extra_seeds(str(tmp_path))[1:] if key in c.metrics]
