"""Headline and details (oacl.io.results): the split partitions a record, the files merge back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oacl.errors import DataError
from oacl.io.results import HEADLINE, details_path, family, merge, read_results, split_headline, write_results

LINEVAL = {
    "crops": {"top1": 53.8, "val_top1": 57.4, "test_images": 1402, "l2": 0.01, "per_class": {"disk": 60.0}},
    "original": {"top1": 27.4, "val_top1": 28.5, "test_images": 900, "l2": 0.1, "per_class": {"disk": 30.0}},
    "seconds": 12.5,
}


def test_nested_patterns_keep_design_keys_and_nothing_else() -> None:
    head, rest = split_headline(LINEVAL, HEADLINE["lineval"])
    assert head == {
        "crops": {"top1": 53.8, "test_images": 1402},
        "original": {"top1": 27.4, "test_images": 900},
    }
    assert rest["crops"] == {"val_top1": 57.4, "l2": 0.01, "per_class": {"disk": 60.0}} and rest["seconds"] == 12.5
    assert merge(rest, head) == LINEVAL and merge(head, rest) == LINEVAL


def test_wildcards_flat_slash_keys_and_whole_blocks() -> None:
    ablation = {
        "images": 8,
        "base": {"refined_miou_pct": 40.0, "soft_miou_pct": 30.0},
        "iters": {"1": {"refined_miou_pct": 35.0, "soft_miou_pct": 20.0}, "3": {"refined_miou_pct": 40.0}},
        "without_nsr": {"refined_miou_pct": 38.0, "soft_miou_pct": 29.0},
    }
    head, rest = split_headline(ablation, HEADLINE["contracam-ablation"])
    assert head == {
        "iters": {"1": {"refined_miou_pct": 35.0}, "3": {"refined_miou_pct": 40.0}},
        "without_nsr": {"refined_miou_pct": 38.0},
    }
    assert rest["iters"] == {"1": {"soft_miou_pct": 20.0}}  # "3" emptied out: no empty block left behind
    assert merge(rest, head) == ablation
    shared = {"refined_miou_pct": 40.0, "soft_miou_pct": 30.0}
    head, rest = split_headline({"base": shared, "iters": {"3": shared}}, HEADLINE["contracam-ablation"])
    assert rest["base"] == shared and head["iters"]["3"] == {"refined_miou_pct": 40.0}  # one block, two places
    cam = {"mask_miou_pct": {"refined": 21.4, "ones": 18.3}, "boxes_per_image": {"cam": 1.1}, "images": 3}
    assert split_headline(cam, HEADLINE["contracam"])[0] == {"mask_miou_pct": {"refined": 21.4, "ones": 18.3}}
    detect = {"bbox/ap": 0.9, "bbox/ap50": 3.1, "seconds": 116.4}
    assert split_headline(detect, HEADLINE["detect"]) == ({"bbox/ap50": 3.1}, {"bbox/ap": 0.9, "seconds": 116.4})
    with pytest.raises(ValueError, match="empty headline pattern"):
        split_headline(detect, ["bbox/ap50", ""])


def test_paths_and_families() -> None:
    root = Path("artifacts")
    assert details_path(root / "metrics" / "lineval-moco.json") == root / "eval" / "lineval-moco" / "details.json"
    assert details_path(root / "metrics" / "contracam-multi-ablation.json") == (
        root / "eval" / "contracam-multi" / "ablation.json"
    )
    assert family("retrain-moco-bgmix") == "retrain" and family("contracam-single-ablation") == "contracam-ablation"
    assert family("generate") == "generate"


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics" / "lineval-moco.json"
    head = write_results(metrics, LINEVAL)
    assert json.loads(metrics.read_text()) == head
    details = json.loads((tmp_path / "eval" / "lineval-moco" / "details.json").read_text())
    assert not {k for k in head if k not in ("crops", "original")} and "seconds" in details
    assert read_results(metrics) == LINEVAL
    (tmp_path / "eval" / "lineval-moco" / "details.json").unlink()
    assert read_results(metrics) == head  # details not pulled: the headline alone
    with pytest.raises(ValueError, match="no headline keys for stage family 'nosuch'"):
        write_results(tmp_path / "metrics" / "nosuch-x.json", {"a": 1})
    (tmp_path / "metrics" / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        read_results(tmp_path / "metrics" / "bad.json")
