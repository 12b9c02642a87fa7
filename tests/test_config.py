"""params.yaml validation: every bad value stops with one message naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from oacl.config import ConfigError, Params, contained_path, for_seed, load_params, parse_section

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(obj))
    return path


def test_repo_params_validate_and_match_defaults_shape():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert 0.0 <= params.pmix <= 1.0


def test_empty_file_gives_defaults(tmp_path):
    params = load_params(write(tmp_path, {}))
    assert params == Params()


def test_values_are_read(tmp_path):
    params = load_params(write(tmp_path, {"pmix": 0.3, "data": {"benchmark": {"seed": 7}}}))
    assert params.pmix == 0.3
    assert params.data.benchmark.seed == 7


def test_int_accepted_where_float_expected(tmp_path):
    params = load_params(write(tmp_path, {"pmix": 1}))
    assert params.pmix == 1.0 and isinstance(params.pmix, float)


@pytest.mark.parametrize(
    ("raw", "culprit"),
    [
        ({"pmix": 1.5}, "'pmix' = 1.5 is out of range"),
        ({"pmix": -0.1}, "'pmix' = -0.1 is out of range"),
        ({"pmix": "high"}, "'pmix' must be a number"),
        ({"pmix": True}, "'pmix' must be a number"),
        ({"nosuch": 1}, "unknown key 'nosuch'"),
        ({"data": {"benchmark": {"sede": 1}}}, "unknown key 'data.benchmark.sede'"),
        ({"data": {"benchmark": {"seed": 1.5}}}, "'data.benchmark.seed' must be an integer"),
        ({"data": {"benchmark": {"image_size": 4}}}, "'data.benchmark.image_size' = 4 is out of range"),
        ({"data": {"source": "imagenet"}}, "'data.source' = 'imagenet' is not one of"),
        ({"data": {"benchmark": {"object_scale": [0.5]}}}, "'data.benchmark.object_scale' must have 2"),
        ({"data": {"benchmark": {"object_scale": [0.0, 0.5]}}}, "'data.benchmark.object_scale[0]' = 0.0"),
        ({"data": 3}, "'data' must be a mapping"),
        ({"pretrain": {"amp": "yes"}}, "'pretrain.amp' = 'yes' is not one of"),
        ({"pretrain": {"amp": 1}}, "'pretrain.amp' = 1 is not one of"),
        ({"contracam": {"multi": {"expand_res": True}}}, "'contracam.multi.expand_res' = True is not one of"),
        ({"extra_seeds": 1}, "'extra_seeds' must be a list"),
        ({"extra_seeds": [1, -2]}, "'extra_seeds[1]' = -2 is out of range"),
        ({"extra_seeds": [0]}, "'extra_seeds' repeats seed 0 (pretrain.seed)"),
        ({"extra_seeds": [1, 2, 1]}, "'extra_seeds' repeats seed 1 (another entry)"),
        ({"extra_seeds": [3], "pretrain": {"seed": 3}}, "'extra_seeds' repeats seed 3 (pretrain.seed)"),
        ({"oracles": ["moco", "simclr"]}, "'oracles[1]' = 'simclr' is not one of ['moco', 'byol']"),
        ({"oracles": ["byol", "byol"]}, "'oracles' lists a method twice: ['byol', 'byol']"),
    ],
)
def test_bad_values_name_the_key(tmp_path, raw, culprit):
    with pytest.raises(ConfigError) as info:
        load_params(write(tmp_path, raw))
    assert culprit in str(info.value)


def test_an_extra_seed_runs_with_its_seed_alone(tmp_path):
    """What ``--seed`` gives a training stage of ``extra_seeds``: that seed, and no extra seeds to clash with it."""
    params = load_params(write(tmp_path, {"extra_seeds": [1, 2]}))
    assert params.extra_seeds == (1, 2) and params.pretrain.seed == 0
    two = for_seed(params, 2)
    assert two.pretrain.seed == 2 and two.extra_seeds == () and two.pretrain.moco == params.pretrain.moco
    assert for_seed(params, None) is params
    with pytest.raises(ConfigError, match="--seed -1"):
        for_seed(params, -1)


def test_not_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("pmix: [0.3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_params(tmp_path / "nope.yaml")


def test_sections_are_frozen():
    params = parse_section(Params, {"pmix": 0.2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.pmix = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    "value,root,expected",
    [
        ("coco/train.json", "", "coco/train.json"),
        ("./coco/../coco/train.json", "", "coco/train.json"),
        ("train2017", "/datasets/coco", "/datasets/coco/train2017"),
        ("/datasets/coco/val2017", "/datasets/coco", "/datasets/coco/val2017"),
        ("a/../b", "/datasets", "/datasets/b"),
    ],
)
def test_real_paths_are_joined_to_the_data_root(value, root, expected):
    assert contained_path(value, root, "data.real.x") == expected


@pytest.mark.parametrize(
    "value,root",
    [
        ("../outside", ""),
        ("/etc/passwd", ""),
        ("../val", "/datasets/coco"),
        ("/datasets/cocoa/x", "/datasets/coco"),
        ("..", "/d"),
    ],
)
def test_real_paths_that_leave_the_data_root_are_refused(value, root):
    with pytest.raises(ConfigError, match=r"'data\.real\.x' = .* points outside"):
        contained_path(value, root, "data.real.x")


def test_params_real_paths_are_resolved_when_loaded(tmp_path):
    raw = {"data": {"real": {"root": "/datasets/coco", "multi_images": "train2017", "multi_train_json": ""}}}
    real = load_params(write(tmp_path, raw)).data.real
    assert (real.multi_images, real.multi_train_json) == ("/datasets/coco/train2017", "")
    with pytest.raises(
        ConfigError, match=r"'data\.real\.single_root' = '\.\./x' points outside 'data\.real\.root' = '/datasets/coco'"
    ):
        load_params(write(tmp_path, {"data": {"real": {"root": "/datasets/coco", "single_root": "../x"}}}))


@pytest.mark.parametrize("name", sorted(p.name for p in Path(__file__).resolve().parents[1].glob("params.*.yaml")))
def test_every_shipped_overlay_gives_valid_params(name: str) -> None:
    from oacl.config import overlay

    root = Path(__file__).resolve().parents[1]
    raw = overlay(yaml.safe_load((root / "params.yaml").read_text()), yaml.safe_load((root / name).read_text()))
    parse_section(Params, raw)  # raises ConfigError naming the key on an unknown key or a bad value
