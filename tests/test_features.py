"""Frozen-backbone features (oacl.eval.features): variants, the weight sanity check, crops, splits, sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from conftest import make_scenes, write_scenes
from oacl.config import Params, parse_section
from oacl.data.source import SetSource, TensorSource, crop_box, holdout_split
from oacl.errors import CheckpointError, DataError
from oacl.eval.features import assert_unchanged, extract_features, frozen, load_variant, state_digest
from oacl.imaging import encode
from oacl.io.checkpoint import export_backbone
from oacl.models.moco import MoCo
from oacl.vocab import DEBIAS, METHODS, parse_variant, variant_backbone_path, variant_names

torch.set_num_threads(1)


def make_params(**sections: Any) -> Params:
    return parse_section(Params, {"pretrain": {"arch": "resnet18", "stem": "standard", "image_size": 32}, **sections})


@pytest.fixture(scope="module")
def random_backbone():
    return load_variant("random", make_params())


# ----------------------------------------------------------------------------- variants


def test_variant_names_and_parsing() -> None:
    names = variant_names()
    assert names[:3] == ["random", "moco", "byol"]
    assert len(names) == 3 + len(METHODS) * len(DEBIAS) == len(set(names))
    assert "moco-bgmix" in names and "byol-oacrop_gt" in names
    assert parse_variant("random") == (None, None)
    assert parse_variant("byol") == ("byol", None)
    assert parse_variant("moco-oacrop") == ("moco", "oacrop")
    assert parse_variant("byol-hardmix_gt") == ("byol", "hardmix_gt")
    assert all(parse_variant(n) is not None for n in names)
    for bad in ("simclr", "moco-foo", "moco-", "moco-bgmix-x", "MOCO", ""):
        with pytest.raises(ValueError, match=f"unknown model variant {bad!r}"):
            parse_variant(bad)


def test_variant_backbone_path(tmp_path: Path) -> None:
    assert variant_backbone_path("random", tmp_path) is None
    assert variant_backbone_path("moco", tmp_path) == tmp_path / "pretrain-moco" / "backbone.pt"
    assert variant_backbone_path("byol-bgmix", tmp_path) == tmp_path / "retrain-byol-bgmix" / "backbone.pt"
    assert variant_backbone_path("moco-cutmix") == Path("artifacts/models/retrain-moco-cutmix/backbone.pt")


def test_random_variant_is_seeded_and_leaves_the_global_rng_alone(random_backbone) -> None:
    state = torch.get_rng_state()
    again = load_variant("random", make_params())
    assert torch.equal(torch.get_rng_state(), state)
    assert again.digest == random_backbone.digest
    assert load_variant("random", make_params(lineval={"seed": 1})).digest != random_backbone.digest
    assert random_backbone.image_size == 32 and random_backbone.arch == "resnet18"
    assert random_backbone.digest == state_digest(random_backbone.encoder.state_dict())
    assert random_backbone.encoder(torch.zeros(2, 3, 32, 32)).shape == (2, 512)  # fc = Identity
    assert "seed 0" in random_backbone.source


def test_pretrained_variant_reads_the_exported_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    moco = MoCo("resnet18", "standard", proj_hidden=32, proj_dim=8, queue_size=16)
    path = tmp_path / "pretrain-moco" / "backbone.pt"
    export_backbone(path, moco, image_size=32, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.1))
    fb = load_variant("moco", make_params(), models_dir=tmp_path)
    assert fb.mean == (0.5, 0.4, 0.3) and fb.std == (0.25, 0.2, 0.1) and fb.image_size == 32
    assert fb.source == str(path)
    assert fb.digest == state_digest(moco.encoder.state_dict())
    assert_unchanged(fb.encoder, fb.reference)
    with pytest.raises(CheckpointError, match=str(tmp_path / "pretrain-byol" / "backbone.pt")):
        load_variant("byol", make_params(), models_dir=tmp_path)


def test_state_digest_sees_every_byte_but_not_key_order() -> None:
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    b = {"b": torch.zeros(3), "w": torch.arange(6.0).reshape(2, 3)}
    assert state_digest(a) == state_digest(b)
    c = {"b": torch.zeros(3), "w": torch.arange(6.0).reshape(2, 3)}
    c["w"][1, 2] = torch.nextafter(c["w"][1, 2], torch.tensor(10.0))  # one ulp
    assert state_digest(c) != state_digest(a)
    assert state_digest({"w": torch.arange(6.0)}) != state_digest(a)  # reshaped / missing keys
    assert state_digest({"w": torch.arange(6.0).reshape(2, 3).double(), "b": torch.zeros(3)}) != state_digest(a)


# ----------------------------------------------------------------------------- extraction and the sanity check


def test_extract_features_leaves_the_backbone_bit_identical(random_backbone) -> None:
    enc = random_backbone.encoder
    enc.train()  # train mode would update the BN running stats: extraction must switch to eval
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, size=(7, 3, 32, 32), dtype=np.uint8))
    source = TensorSource(images, torch.arange(7) % 3, ["a", "b", "c"])
    x, y = extract_features(enc, source, random_backbone.mean, random_backbone.std, batch_size=3)
    assert x.shape == (7, 512) and x.dtype == torch.float32 and torch.equal(y, torch.arange(7) % 3)
    assert enc.training  # the mode is restored
    assert_unchanged(enc, random_backbone.reference)
    assert random_backbone.digest == state_digest(enc.state_dict())
    x_whole, _ = extract_features(enc, source, random_backbone.mean, random_backbone.std, batch_size=16)
    torch.testing.assert_close(x, x_whole, rtol=1e-4, atol=1e-5)  # eval mode: batch composition does not matter
    ref = encode(enc.eval(), images[:2], random_backbone.mean, random_backbone.std)
    torch.testing.assert_close(x[:2], ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        encode(enc, images.float(), random_backbone.mean, random_backbone.std)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        extract_features(enc, source, random_backbone.mean, random_backbone.std, batch_size=0)


def test_assert_unchanged_raises_when_a_weight_moves() -> None:
    fb = load_variant("random", make_params())
    with frozen(fb) as enc:
        assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    with torch.no_grad():
        fb.encoder.layer3[0].conv1.weight[0, 0, 0, 0] += 1e-6
    with pytest.raises(RuntimeError, match=r"'layer3.0.conv1.weight' changed"):
        assert_unchanged(fb.encoder, fb.reference)
    with pytest.raises(RuntimeError, match="sanity check failed"):
        with frozen(fb):
            pass
    fb2 = load_variant("random", make_params())
    fb2.encoder.bn1.running_mean.add_(1.0)  # a buffer counts too
    with pytest.raises(RuntimeError, match=r"'bn1.running_mean'"):
        assert_unchanged(fb2.encoder, fb2.reference)
    with pytest.raises(RuntimeError, match="keys differ"):
        assert_unchanged(fb2.encoder, {k: v for k, v in fb2.reference.items() if k != "bn1.running_mean"})


# ----------------------------------------------------------------------------- crops and splits


def test_crop_box_has_the_asked_size_and_stays_in_the_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 40, 3), dtype=np.uint8)  # H 32, W 40
    image[8:16, 10:20] = (255, 0, 0)  # an object exactly at box (10, 8, 20, 16)
    assert np.all(crop_box(image, (10, 8, 20, 16), 0.0, 12) == (255, 0, 0))  # no margin: only the object
    # a 20 % margin: x 10 - 2 .. 20 + 2, y 8 - 1.6 -> 6 .. 16 + 1.6 -> 18 (floor / ceil)
    expect = cv2.resize(np.ascontiguousarray(image[6:18, 8:22]), (24, 24), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop_box(image, (10, 8, 20, 16), 0.2, 24), expect)
    # boxes at the corners: the margin is clipped to the image
    for box, rows, cols in (((0, 0, 10, 10), (0, 15), (0, 15)), ((30, 22, 40, 32), (17, 32), (25, 40))):
        out = crop_box(image, box, 0.5, 16)
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8
        patch = np.ascontiguousarray(image[rows[0] : rows[1], cols[0] : cols[1]])
        np.testing.assert_array_equal(out, cv2.resize(patch, (16, 16), interpolation=cv2.INTER_LINEAR))
    big = crop_box(image, (0, 0, 40, 32), 0.3, 8)  # shrinking uses area interpolation
    np.testing.assert_array_equal(big, cv2.resize(image, (8, 8), interpolation=cv2.INTER_AREA))
    with pytest.raises(ValueError, match=r"box \[50, 0, 60, 10\] is empty inside the 40x32 image"):
        crop_box(image, (50, 0, 60, 10), 0.0, 8)


def test_holdout_split_is_a_deterministic_partition() -> None:
    kept, held = holdout_split(20, 0.1, seed=3)
    assert held.size == 2 and kept.size == 18
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(20))
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)
    k2, h2 = holdout_split(20, 0.1, seed=3)
    assert np.array_equal(kept, k2) and np.array_equal(held, h2)
    assert any(not np.array_equal(held, holdout_split(20, 0.1, seed=s)[1]) for s in range(4, 8))
    assert holdout_split(10, 0.25, 0)[1].size == 3  # ceil(2.5)
    assert holdout_split(10, 0.01, 0)[1].size == 1  # at least one
    assert [a.size for a in holdout_split(2, 0.9, 0)] == [1, 1]  # at least one kept
    with pytest.raises(DataError, match="from 1 image"):
        holdout_split(1, 0.1, 0)
    with pytest.raises(ValueError, match="got 1.0"):
        holdout_split(10, 1.0, 0)


# ----------------------------------------------------------------------------- sources


def test_set_source_reads_rows_in_the_asked_order(tmp_path: Path) -> None:
    scenes = make_scenes(n=8)
    path = write_scenes(tmp_path / "tiny.h5", scenes)
    whole = SetSource(path)
    images, labels = zip(*whole.batches(3))
    assert [im.shape[0] for im in images] == [3, 3, 2]
    np.testing.assert_array_equal(torch.cat(images).permute(0, 2, 3, 1).numpy(), scenes.images)
    np.testing.assert_array_equal(torch.cat(labels).numpy(), scenes.labels)
    rows = [5, 1, 2, 3, 7]  # one shuffled, one contiguous batch
    part = SetSource(path, indices=rows)
    assert len(part) == 5 and part.classes == list(scenes.classes)
    images, labels = zip(*part.batches(2))
    np.testing.assert_array_equal(torch.cat(images).permute(0, 2, 3, 1).numpy(), scenes.images[rows])
    np.testing.assert_array_equal(torch.cat(labels).numpy(), scenes.labels[rows])


def test_tensor_source_validates() -> None:
    with pytest.raises(ValueError, match="uint8"):
        TensorSource(torch.zeros(2, 3, 4, 4), [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match=r"labels must be \(2,\), got \(3,\)"):
        TensorSource(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [0, 1, 0], ["a", "b"])
    empty = TensorSource(torch.zeros(0, 3, 4, 4, dtype=torch.uint8), [], ["a"], name="nothing")
    with pytest.raises(DataError, match="nothing holds no images"):
        extract_features(torch.nn.Flatten(), empty, (0.5,) * 3, (0.5,) * 3)
