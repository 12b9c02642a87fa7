"""Null baselines of ContraCAM (oacl.cam.nulls) and how the stage scores them (oacl.cam.pipeline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import make_scenes
from oacl.cam.contracam import CamResult, channel_sum_cam, minmax_normalize, prepare_cam_model
from oacl.cam.nulls import NULL_BASELINES, channel_sum_maps, gaussian_map, random_init_like
from oacl.cam.pipeline import GroundTruth, NullMaps, localization_metrics, null_maps
from oacl.cam.postprocess import PostprocessOptions, refine_batch
from oacl.config import ContraCAMConfig
from oacl.localization import centered_gaussian, ones_baseline
from oacl.models.backbones import build_backbone
from oacl.models.heads import mlp_head

torch.set_num_threads(1)


class Items:
    """The project's item dicts over (n, H, W, 3) images."""

    def __init__(self, images: np.ndarray, ids: list[str]) -> None:
        self.images, self.ids = images, ids

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.from_numpy(self.images[i]).permute(2, 0, 1).contiguous(), "id": self.ids[i]}


def tiny_model() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    enc = build_backbone("resnet18_w32", "standard").eval()
    return enc, mlp_head(256, 64, 16).eval()


def test_channel_sum_cam_by_hand() -> None:
    enc, proj = tiny_model()
    x = torch.randn(3, 3, 32, 32)
    model = prepare_cam_model(enc, proj, expand_res=2, amp=False)
    with torch.no_grad():
        a = model.encoder.layer4(
            model.encoder.layer3(
                model.encoder.layer2(
                    model.encoder.layer1(
                        model.encoder.maxpool(model.encoder.relu(model.encoder.bn1(model.encoder.conv1(x))))
                    )
                )
            )
        )
    assert a.shape[-2:] == (2, 2)  # 32 px, stride 32 expanded x2
    ref = minmax_normalize(F.interpolate(a.sum(1, keepdim=True).relu(), size=(32, 32), mode="bicubic"))
    out = channel_sum_cam(model, x)
    torch.testing.assert_close(out, ref)
    assert out.shape == (3, 1, 32, 32) and float(out.amin()) == 0.0 and float(out.amax()) == pytest.approx(1.0)

    sc = make_scenes(n=5, size=32)
    rgb, maps = channel_sum_maps(
        enc, proj, Items(sc.images, sc.ids), expand_res=2, amp=False, batch_size=2, mean=(0.5,) * 3, std=(0.25,) * 3,
        device=torch.device("cpu"),
    )  # fmt: skip
    np.testing.assert_array_equal(rgb, sc.images)  # dataset order, every batch
    x = (torch.from_numpy(sc.images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    expect = (channel_sum_cam(model, x)[:, 0] * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(maps, expect)


def test_random_init_like_is_seeded_fresh_and_leaves_the_model_alone() -> None:
    enc, proj = tiny_model()
    before = {k: v.clone() for k, v in [*enc.state_dict().items(), *proj.state_dict().items()]}
    rng_state = torch.get_rng_state()
    e1, p1 = random_init_like(enc, proj, arch="resnet18_w32", stem="standard", seed=3)
    e2, p2 = random_init_like(enc, proj, arch="resnet18_w32", stem="standard", seed=3)
    e3, _ = random_init_like(enc, proj, arch="resnet18_w32", stem="standard", seed=4)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is untouched
    after = {k: v for k, v in [*enc.state_dict().items(), *proj.state_dict().items()]}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not e1.training and not p1.training
    for a, b in ((e1, e2), (p1, p2)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(e1.conv1.weight, e3.conv1.weight)
    assert not torch.equal(e1.conv1.weight, enc.conv1.weight)
    assert not torch.equal(p1[0].weight, proj[0].weight)
    assert {k: v.shape for k, v in p1.state_dict().items()} == {k: v.shape for k, v in proj.state_dict().items()}


def test_localization_metrics_score_every_null_like_the_cam() -> None:
    sc = make_scenes(n=8, size=32)
    gt = GroundTruth(sc.masks, np.ones(8, bool), [sc.boxes_of(i) for i in range(8)])
    boxes = [np.zeros((0, 4), np.float32)] * 8
    cam = CamResult(sc.ids, (sc.masks * 128).astype(np.uint8), sc.masks.copy(), boxes)
    nulls = {
        "perfect": NullMaps(sc.masks * 255, sc.masks.copy()),
        "ones": NullMaps(np.full((32, 32), 255, np.uint8), np.ones_like(sc.masks)),
        "empty": NullMaps(np.zeros((32, 32), np.uint8), np.zeros_like(sc.masks)),
    }
    m = localization_metrics(cam, gt, nulls)
    assert m["mask_miou_pct"] == {"refined": 100.0, "perfect": 100.0, "ones": m["mask_miou_pct"]["ones"], "empty": 0.0}
    ones = ones_baseline(sc.masks, [np.asarray(b) - [0, 0, 1, 1] for b in gt.boxes])
    assert m["mask_miou_pct"]["ones"] == round(100 * ones["mask_miou"], 2)
    assert m["mask_miou_soft_pct"] == {
        "soft_cam": 100.0,
        "perfect": 100.0,
        "ones": m["mask_miou_pct"]["ones"],
        "empty": 0.0,
    }
    assert m["pxap_pct"]["cam"] == m["pxap_pct"]["perfect"] == 100.0
    assert m["pxap_pct"]["ones"] == m["pxap_pct"]["empty"] == round(100 * sc.masks.mean(), 2)  # foreground fraction
    assert m["max_box_acc_v2_pct"]["perfect"] == {"iou30": 100.0, "iou50": 100.0, "iou70": 100.0, "mean": 100.0}
    assert m["max_box_acc_v2_pct"]["ones"]["mean"] == round(ones["max_box_acc_v2"]["mean"], 2)
    assert list(m["max_box_acc_v2_pct"]) == ["cam", "perfect", "ones", "empty"]


def test_null_maps_get_contracams_post_processing() -> None:
    sc = make_scenes(n=6, size=32)
    gt = GroundTruth(sc.masks, np.ones(6, bool), [sc.boxes_of(i) for i in range(6)])
    enc, proj = tiny_model()
    cfg = ContraCAMConfig(batch_size=3, iters=2, expand_res=2, amp=False, device="cpu", workers=1)
    cam = CamResult(sc.ids, np.zeros((6, 32, 32), np.uint8), np.zeros((6, 32, 32), np.uint8), [])
    mean, std = (0.5,) * 3, (0.25,) * 3
    maps, details = null_maps(
        cam, gt, Items(sc.images, sc.ids), enc, proj, cfg, arch="resnet18_w32", stem="standard", mean=mean, std=std,
        device=torch.device("cpu"),
    )  # fmt: skip
    assert tuple(maps) == NULL_BASELINES and set(details["seconds"]) == set(NULL_BASELINES)
    opts = PostprocessOptions.from_config(cfg)
    sigma = details["gaussian_sigma"]["miou"]
    g = gaussian_map(32, 32, sigma)
    np.testing.assert_array_equal(maps["gaussian"].soft, g)
    assert np.abs(g / 255.0 - centered_gaussian(32, 32, sigma)).max() <= 0.5 / 255
    np.testing.assert_array_equal(maps["gaussian"].refined, refine_batch(sc.images, np.stack([g] * 6), opts)[0])
    np.testing.assert_array_equal(
        maps["ones"].refined, refine_batch(sc.images, np.full((6, 32, 32), 255, np.uint8), opts)[0]
    )
    for name in ("channel_sum", "random_weights"):
        soft = maps[name].soft
        assert soft.shape == (6, 32, 32) and soft.max() == 255  # min-max normalised per image
        np.testing.assert_array_equal(maps[name].refined, refine_batch(sc.images, soft, opts)[0])
    assert not np.array_equal(maps["channel_sum"].soft, maps["random_weights"].soft)
