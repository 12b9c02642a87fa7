"""The experiments view (`python -m oacl.exps`) on `dvc exp show --json` output of known content."""

from __future__ import annotations

import json

import pytest

from oacl import exps


def _state(rev: str, name: str | None, pmix: float, bgmix_crops: float, claims: int, experiments=None) -> dict:
    metrics = {
        "artifacts/metrics/lineval-moco.json": {"data": {"crops": {"top1": 63.91, "test_images": 1402}}},
        "artifacts/metrics/lineval-moco-bgmix.json": {"data": {"crops": {"top1": bgmix_crops, "test_images": 1402}}},
        "artifacts/metrics/shift-moco-bgmix.json": {"data": {"bg_gap": 31.0, "bg/mixed_rand/top1": 17.78}},
        "artifacts/metrics/contracam-multi.json": {
            "data": {"mask_miou_pct": {"refined": 26.14, "gaussian": 74.2}, "pxap_pct": {"cam": 28.4}}
        },
        "artifacts/metrics/retrain-moco-bgmix.json": {"data": {"mix_rate": 0.399, "final_loss": 6.2}},
        "artifacts/metrics/report.json": {"data": {"claims_hold": claims, "claims_checked": 17}},
    }
    params = {"params.yaml": {"data": {"pmix": pmix, "pretrain": {"seed": 0, "moco": {"epochs": 12}}}}}
    return {
        "rev": rev,
        "name": name,
        "data": {"rev": rev, "params": params, "metrics": metrics, "deps": {}, "outs": {}},
        "error": None,
        "experiments": experiments,
    }


def shown() -> list[dict]:
    exp = _state("b" * 40, "bushy-pmix", 0.3, 70.125, 5)
    return [
        _state("workspace", None, 0.4, 68.62, 4),
        _state("a" * 40, "main", 0.4, 68.62, 4, experiments=[{"revs": [exp], "executor": None, "name": "bushy-pmix"}]),
    ]


def test_columns_are_the_commits_then_their_experiments():
    cols = exps.columns(shown())
    assert [c.label for c in cols] == ["workspace", "main", "bushy-pmix"]
    assert cols[2].params["pmix"] == 0.3 and cols[2].params["pretrain.moco.epochs"] == 12
    assert cols[2].metrics["lineval-moco-bgmix.json:crops.top1"] == 70.125
    assert cols[0].metrics["shift-moco-bgmix.json:bg/mixed_rand/top1"] == 17.78


def test_only_what_differs_by_default():
    rows = exps.table(exps.columns(shown()))
    assert rows[0] == ["", "workspace", "main", "bushy-pmix"]
    assert [r[0] for r in rows[1:]] == ["params: pmix", "probe crops moco-bgmix", "claims hold"]
    assert rows[1][1:] == ["0.4", "0.4", "0.3"]
    assert rows[2][1:] == ["68.6", "68.6", "70.1"]
    assert rows[3][1:] == ["4", "4", "5"]


def test_all_lists_every_headline_metric_in_headline_order():
    rows = exps.table(exps.columns(shown()), changed_only=False)
    labels = [r[0] for r in rows[1:]]
    assert labels == [
        "params: pmix",  # params: still only the ones that differ
        "probe crops moco",
        "probe crops moco-bgmix",
        "MIXED-RAND moco-bgmix",
        "BG-Gap moco-bgmix",
        "ContraCAM mIoU multi",
        "PxAP multi",
        "mix rate moco-bgmix",
        "claims hold",
        "claims checked",
    ]
    by_label = {r[0]: r[1:] for r in rows[1:]}
    assert by_label["ContraCAM mIoU multi"] == ["26.1"] * 3  # refined, not a null baseline
    assert by_label["mix rate moco-bgmix"] == ["0.399"] * 3
    assert "final_loss" not in json.dumps(rows)


def test_missing_values_and_rendering():
    cols = exps.columns(shown())
    del cols[2].metrics["report.json:claims_hold"]
    rows = exps.table(cols)
    assert rows[-1] == ["claims hold", "4", "4", "–"]
    text = exps.render(rows).splitlines()
    assert len({len(line) for line in text[1:]}) == 1  # right-aligned values: equal widths
    assert text[0].split() == ["workspace", "main", "bushy-pmix"]


def test_cli_reads_a_file_and_writes_csv(tmp_path, capsys):
    path = tmp_path / "shown.json"
    path.write_text(json.dumps(shown()))
    assert exps.main(["--from", str(path), "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ",workspace,main,bushy-pmix"
    assert lines[1] == "params: pmix,0.4,0.4,0.3"


def test_a_state_without_data_is_skipped():
    states = shown()
    states[0]["data"] = None  # what dvc gives for a failed or queued row
    assert [c.label for c in exps.columns(states)] == ["main", "bushy-pmix"]


def sweep() -> list[dict]:
    """A pmix sweep: 0.4 at the commit (and, unchanged, in the workspace), 0.2 with two seeds, 0.6."""
    exps_ = [
        _state(r * 40, f"exp-{r}", pmix, crops, 4)
        for r, pmix, crops in (("b", 0.2, 66.0), ("c", 0.2, 67.0), ("d", 0.6, 70.0))
    ]
    for state, seed in zip(exps_, (0, 1, 0)):
        state["data"]["params"]["params.yaml"]["data"]["pretrain"]["seed"] = seed
    return [
        _state("workspace", None, 0.4, 68.62, 4),
        _state("a" * 40, "main", 0.4, 68.62, 4, experiments=[{"revs": exps_, "executor": None, "name": None}]),
    ]


def test_curve_means_experiments_with_the_same_value_and_drops_the_repeated_workspace():
    lines = exps.curve(exps.columns(sweep()), "pmix")
    # (value, mean, n, s.e. of the mean): 66 and 67 -> s.d. 0.707, s.e. 0.5
    assert lines["probe crops moco-bgmix"] == [
        (0.2, 66.5, 2, pytest.approx(0.5)),
        (0.4, 68.62, 1, 0.0),
        (0.6, 70.0, 1, 0.0),
    ]
    assert lines["mix rate moco-bgmix"][0] == (0.2, 0.399, 2, 0.0)
    assert list(lines) == [
        "BG-Gap moco-bgmix",
        "MIXED-RAND moco-bgmix",
        "probe crops moco-bgmix",
        "mix rate moco-bgmix",
    ]


def test_curve_names_a_param_it_cannot_find():
    with pytest.raises(ValueError, match="'lr' matches no key"):
        exps.curve(exps.columns(sweep()), "lr")
    states = sweep()
    states[0]["data"]["params"]["params.yaml"]["data"]["lineval"] = {"seed": 0}
    with pytest.raises(ValueError, match=r"'seed' matches \['lineval.seed', 'pretrain.seed'\]"):
        exps.curve(exps.columns(states), "seed")
    with pytest.raises(ValueError, match="headline metric of a 'oacrop' model"):
        exps.curve(exps.columns(sweep()), "pmix", models="oacrop")


def test_curve_cli_prints_and_draws(tmp_path, capsys):
    path = tmp_path / "shown.json"
    path.write_text(json.dumps(sweep()))
    png = tmp_path / "pmix.png"
    assert exps.main(["--from", str(path), "--curve", "pmix", "--out", str(png), "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "pmix,0.2,0.4,0.6"
    assert "probe crops moco-bgmix,66.5 ± 0.5 (n=2),68.6,70.0" in lines
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------- project folders (workspace)


def _md5(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data).hexdigest()


def _project(root, *, seed: int = 0) -> None:
    """generate -> pretrain@moco -> lineval@moco, and lineval@random, as `dvc repro` leaves them."""
    import yaml

    files = {
        "artifacts/models/pretrain-moco/backbone.pt": b"weights of seed 0",
        "artifacts/metrics/pretrain-moco.json": json.dumps({"loss": 5.25}).encode(),
        "artifacts/metrics/lineval-moco.json": json.dumps({"crops": {"top1": 61.5}}).encode(),
        "artifacts/metrics/lineval-random.json": json.dumps({"crops": {"top1": 62.4}}).encode(),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    # a float as PyYAML writes it (1.0e-06) where the lock holds the text DVC wrote ('1e-06')
    params = {"pretrain": {"seed": seed}, "lineval": {"seed": 0, "l2_range": [1e-06, 100000.0]}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    md5 = {rel: _md5(data) for rel, data in files.items()}
    lineval_params = {"params.yaml": {"lineval": {"seed": 0, "l2_range": ["1e-06", 100000.0]}}}
    data_dep = {"path": "data", "md5": "d41d8cd98f00b204e9800998ecf8427e.dir"}
    lock = {
        "schema": "2.0",
        "stages": {
            "generate": {"cmd": "g", "outs": [data_dep]},
            "pretrain@moco": {
                "cmd": "p",
                "deps": [data_dep, {"path": "src/oacl/train/pretrain.py", "md5": "0" * 32}],
                "params": {"params.yaml": {"pretrain.seed": 0}},
                "outs": [
                    {"path": "artifacts/models/pretrain-moco", "md5": "1" * 32 + ".dir"},
                    {
                        "path": "artifacts/metrics/pretrain-moco.json",
                        "md5": md5["artifacts/metrics/pretrain-moco.json"],
                    },
                ],
            },
            "lineval@moco": {
                "cmd": "l",
                "deps": [
                    {"path": "artifacts/models/pretrain-moco/backbone.pt", "md5": _md5(b"weights of seed 0")},
                    data_dep,
                ],
                "params": lineval_params,
                "outs": [
                    {"path": "artifacts/metrics/lineval-moco.json", "md5": md5["artifacts/metrics/lineval-moco.json"]}
                ],
            },
            "lineval@random": {
                "cmd": "l",
                "deps": [data_dep],
                "params": lineval_params,
                "outs": [
                    {
                        "path": "artifacts/metrics/lineval-random.json",
                        "md5": md5["artifacts/metrics/lineval-random.json"],
                    }
                ],
            },
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))


def _files(col: exps.Column) -> set[str]:
    return {k.split(":")[0] for k in col.metrics}


def test_a_reproduced_folder_shows_its_params_and_every_metric(tmp_path):
    _project(tmp_path)
    col = exps.workspace(str(tmp_path))
    assert col.label == str(tmp_path) and col.params["pretrain.seed"] == 0
    assert col.metrics == {
        "pretrain-moco.json:loss": 5.25,
        "lineval-moco.json:crops.top1": 61.5,
        "lineval-random.json:crops.top1": 62.4,
    }


def test_a_changed_param_hides_its_stage_and_everything_downstream(tmp_path):
    import yaml

    _project(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["pretrain"]["seed"] = 1  # `dvc repro` not run since
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    col = exps.workspace(str(tmp_path))
    assert col.params["pretrain.seed"] == 1
    assert _files(col) == {"lineval-random.json"}


def test_an_upstream_file_changed_since_the_stage_ran_hides_it(tmp_path):
    _project(tmp_path)
    (tmp_path / "artifacts/models/pretrain-moco/backbone.pt").write_bytes(b"weights of another run")
    assert _files(exps.workspace(str(tmp_path))) == {"pretrain-moco.json", "lineval-random.json"}


def test_a_metrics_file_edited_by_hand_is_left_out(tmp_path):
    _project(tmp_path)
    (tmp_path / "artifacts/metrics/lineval-random.json").write_text(json.dumps({"crops": {"top1": 99.0}}))
    assert _files(exps.workspace(str(tmp_path))) == {"pretrain-moco.json", "lineval-moco.json"}


def test_a_folder_without_a_lock_is_named(tmp_path):
    _project(tmp_path)
    (tmp_path / "dvc.lock").unlink()
    with pytest.raises(ValueError, match="no dvc.lock"):
        exps.workspace(str(tmp_path))


def test_cli_shows_project_folders_side_by_side(tmp_path, capsys):
    import yaml

    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        _project(root)
    params = yaml.safe_load((b / "params.yaml").read_text())
    params["pretrain"]["seed"] = 1
    (b / "params.yaml").write_text(yaml.safe_dump(params))
    assert exps.main(["--dirs", str(a), str(b), "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["params:", "pretrain.seed", "0", "1"]
    assert lines[2].split() == ["probe", "crops", "moco", "61.5", "–"]  # b's lineval-moco predates its seed
    assert exps.main(["--dirs", str(tmp_path / "nowhere")]) == 2
    assert "no params.yaml" in capsys.readouterr().err
