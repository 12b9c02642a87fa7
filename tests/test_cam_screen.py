"""benchmarks/cam_screen.py: the optimistic Gaussian null, the table of a rows file, the levers, kept models."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from oacl.config import PretrainConfig
from oacl.io.checkpoint import export_backbone
from oacl.localization import centered_gaussian, pxap
from oacl.train.pretrain import build_method

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cam_screen.py"
spec = importlib.util.spec_from_file_location("cam_screen", SCRIPT)
cam_screen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cam_screen)


def _centred_disks(radius: float, n: int = 3, s: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s]
    disk = (yy - (s - 1) / 2) ** 2 + (xx - (s - 1) / 2) ** 2 <= radius**2
    return np.repeat(disk[None], n, axis=0).astype(np.uint8)


def test_best_gaussian_is_the_grid_maximum_and_follows_the_object_size():
    small, large = _centred_disks(4.0), _centred_disks(14.0)
    got, sigma = cam_screen.best_gaussian(small)
    assert sigma in cam_screen.SIGMAS
    assert got == max(pxap(small, centered_gaussian(32, 32, s)) for s in cam_screen.SIGMAS)
    # a centred disk is found perfectly by a centred, radially decreasing map, whatever its width
    assert got > 99.9
    # off-centre objects: the best Gaussian is well below perfect, the all-ones map at the object fraction
    shifted = np.roll(small, 9, axis=2)
    off, _ = cam_screen.best_gaussian(shifted)
    assert off < 60
    assert abs(pxap(shifted, np.ones((32, 32), np.float32)) - 100 * shifted.mean()) < 1e-6
    assert cam_screen.best_gaussian(large)[0] > 99.9


def test_table_prints_one_line_per_set_with_the_gain_over_random_init():
    pxap_row = {"trained_T1": 30.0, "trained_T5": 25.5, "random_T1": 33.3, "gaussian": 35.0, "ones": 12.0}
    row = {
        "tag": "t",
        "steps": 552,
        "moco": {"crops": 45.0, "original": 50.0},
        "random": {"crops": 36.4, "original": 32.3},
        "supervised": {"original": 82.0, "crop_scale": [0.8, 1.0]},
        "pxap": {
            "single": {
                **pxap_row,
                **{"trained_T1_inverted": 70.0, "trained_channel_sum": 41.0, "random_channel_sum": 38.0},
                **{"supervised_gradcam": 40.1, "gt_at_map_side": 71.9},
            },
            "multi": pxap_row,
        },
    }
    lines = cam_screen.table([row]).splitlines()
    assert len(lines) == 4
    assert lines[2] == (
        "| t | 552 | 45.0 (+8.6) | 50.0 (+17.7) | single | 30.0 / 25.5 | 70.0 | 33.3 | 41.0 / 38.0 | 35.0 | 12.0 | "
        "82.0 (0.8–1) | 40.1 | 71.9 |"
    )
    # a row without the supervised model or the later columns: dashes
    assert lines[3].endswith("| multi | 30.0 / 25.5 | – | 33.3 | – / – | 35.0 | 12.0 | 82.0 (0.8–1) | – | – |")
    # another expansion scored beside the pipeline's x2: its own lines, after the x2 ones
    lines = cam_screen.table(
        [{**row, "pxap_x1": {"single": pxap_row, "multi": {**pxap_row, "trained_T1": 9.0}}}]
    ).splitlines()
    assert len(lines) == 6 and lines[2].startswith("| t | 552 |")
    assert lines[5].startswith("| t x1 | 552 |") and "| multi | 9.0 / 25.5 |" in lines[5]


def test_the_maps_resolution_ceiling_falls_with_the_maps_side():
    # one object, a 20 x 20 square off the 16 px grid, in 64 px images
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[0, 6:26, 30:50] = 1
    masks[1, 37:57, 9:29] = 1
    ceiling = {side: pxap(masks, cam_screen.mask_at_side(masks, side)) for side in (2, 4, 8, 16)}
    assert ceiling[16] > 99 and ceiling[2] < ceiling[4] < ceiling[8] <= ceiling[16]
    assert ceiling[2] < 50  # a 2 x 2 map cannot draw a 20 px object
    up = cam_screen.mask_at_side(masks, 4)
    assert up.shape == masks.shape and up.min() == 0.0 and abs(up.max() - 1.0) < 1e-6


def test_cam_side_is_the_layer4_side_times_the_expansion():
    class Cfg:  # the one attribute cam_side reads: pretrain.stem
        class pretrain:
            stem = "standard"

    assert cam_screen.cam_side(Cfg, 64) == 2 * cam_screen.EXPAND
    Cfg.pretrain.stem = "s1"
    assert cam_screen.cam_side(Cfg, 64) == 4 * cam_screen.EXPAND
    assert cam_screen.cam_side(Cfg, 64, expand=1) == 4


def test_vflip_lever_flips_views_upside_down_as_often_as_left_right(monkeypatch):
    from oacl.augment import views

    monkeypatch.setattr(views, "VERTICAL_FLIPS", False)  # restored after the test: the lever sets it
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    image[:, :4, :2] = 255  # a bright block in the top-left corner
    corner = {}
    for lever in (False, True):
        if lever:
            cam_screen.flip_both_ways()
        crops = views.TwoCrops(8, crop_scale=(1.0, 1.0))  # the whole image: only the flips move the block
        torch.manual_seed(0)
        seen = [crops({"image": image})[0] for _ in range(200)]
        # (block at the bottom, block at the right) of each view
        corner[lever] = {(int(v[0, 0].max() == 0), int(v[0, :, 0].max() == 0)) for v in seen}
    assert corner[False] == {(0, 0), (0, 1)}  # left-right flips only
    assert corner[True] == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_circular_padding_makes_the_backbone_shift_with_the_image_and_groupnorm_replaces_batchnorm(monkeypatch):
    from torch import nn

    from oacl.models import backbones

    monkeypatch.setattr(backbones, "STEMS", dict(backbones.STEMS))  # the lever rewrites this registry
    x = torch.randn(1, 3, 64, 64)
    shift = ((16, 32), (2, 3))  # 1 and 2 layer4 cells at the s1 stem's stride 16

    def shifted_gap(net: nn.Module) -> float:
        a = cam_screen.activations_upto(net.eval(), x, "layer4")
        b = cam_screen.activations_upto(net, torch.roll(x, *shift), "layer4")
        return float((torch.roll(a, (1, 2), (2, 3)) - b).abs().max() / a.abs().max())

    torch.manual_seed(0)
    plain = backbones.build_backbone("resnet18", "s1")
    assert shifted_gap(plain) > 0.05  # zero padding: the frame is visible, a roll is not a shift
    cam_screen.patch_backbones("circular", "group")
    torch.manual_seed(0)
    net = backbones.build_backbone("resnet18", "s1")
    assert shifted_gap(net) < 1e-5
    assert net.conv1.stride == (1, 1)  # the stem itself is still applied
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in net.modules()) == 20  # bn1 + 2 x 2 x 4 in blocks + 3 downsamples
    assert net(x).shape == (1, 512)


def test_norm_lever_normalises_each_image_over_its_groups():
    from torch import nn

    torch.manual_seed(0)
    x = torch.randn(2, 64, 4, 4) * torch.arange(1.0, 65.0).view(1, 64, 1, 1) + 3.0
    for norm, groups, inner in (("group", 32, 16), ("instance", 64, 16), ("layer", 1, 1)):
        net = nn.Sequential(nn.BatchNorm2d(64), nn.Sequential(nn.BatchNorm2d(16)))  # nested: swapped too
        cam_screen.swap_batchnorm(net, norm)
        gn = net[0]
        assert isinstance(gn, nn.GroupNorm) and gn.num_groups == groups and gn.num_channels == 64
        assert isinstance(net[1][0], nn.GroupNorm) and net[1][0].num_groups == inner
        y = gn(x)
        # each image's groups of 64 / groups channels have mean 0 and variance 1, whatever the other image holds
        g = y.reshape(2, groups, -1)
        torch.testing.assert_close(g.mean(-1), torch.zeros(2, groups), atol=1e-5, rtol=0)
        torch.testing.assert_close(g.var(-1, unbiased=False), torch.ones(2, groups), atol=1e-3, rtol=0)
        torch.testing.assert_close(gn(x[:1]), y[:1])
    ref = nn.InstanceNorm2d(64, affine=True)  # instance is InstanceNorm with an affine, in eval mode too
    net = nn.Sequential(nn.BatchNorm2d(64))
    cam_screen.swap_batchnorm(net, "instance")
    torch.testing.assert_close(net[0].eval()(x), ref.eval()(x), atol=1e-5, rtol=1e-5)
    args = cam_screen.parser().parse_args(["--tag", "t", "--norm", "layer"])
    assert args.norm == "layer"


def test_shuffle_bn_normalises_each_sub_batch_on_its_own_and_permutes_the_keys():
    from torch import nn

    from oacl.models import moco as moco_module
    from oacl.models.moco import MoCo

    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) * torch.arange(1.0, 9.0).view(8, 1, 1, 1)  # sub-batches with unlike statistics
    bn = nn.BatchNorm2d(3).train()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    ref = [nn.BatchNorm2d(3).train() for _ in range(3)]  # two sub-batches, one whole batch
    for r in ref:
        r.load_state_dict(bn.state_dict())
    model = nn.Sequential(bn)
    before = moco_module.shuffle_across_ranks
    with cam_screen.shuffle_bn(model, 2):
        y = model(x)
        # sample i is normalised with the samples of its own residue i mod 2, and with no others
        torch.testing.assert_close(y[0::2], ref[0](x[0::2]))
        torch.testing.assert_close(y[1::2], ref[1](x[1::2]))
        assert (y - ref[2](x)).abs().max() > 0.1  # unlike one whole batch
        mean_ref = (ref[0].running_mean + ref[1].running_mean) / 2
        torch.testing.assert_close(bn.running_mean, mean_ref)
        torch.testing.assert_close(bn.running_var, (ref[0].running_var + ref[1].running_var) / 2)
        with torch.no_grad():
            model.eval()
            torch.testing.assert_close(
                model(x),
                nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps),
            )
            model.train()
        keys, inverse = moco_module.shuffle_across_ranks(torch.arange(64))
        assert not torch.equal(keys, torch.arange(64))  # a real permutation (p of identity 1/64!)
        assert torch.equal(moco_module.unshuffle_across_ranks(keys, inverse), torch.arange(64))
        with pytest.raises(ValueError, match="--shuffle-bn 2"):
            model(x[:3])
    assert type(bn) is nn.BatchNorm2d and moco_module.shuffle_across_ranks is before  # all restored
    # a MoCo step runs through it (backbone and projector BatchNorms split, keys shuffled)
    net = MoCo("resnet18", "s1", queue_size=16, proj_hidden=32, proj_dim=8)
    with cam_screen.shuffle_bn(net, 4):
        assert sum(type(m).__name__.startswith("Split") for m in net.modules()) == 2 * (20 + 1)
        out = net(torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32), torch.arange(8))
    assert torch.isfinite(out["loss"]) and not any(type(m).__name__.startswith("Split") for m in net.modules())


def test_every_flag_main_reads_is_parsed():
    args = cam_screen.parser().parse_args(
        "--tag t --variant one-scene --set pretrain.stem=s1 --steps 46 --seed 1 --images 8 --supervised-steps 9 "
        "--supervised-crop-scale 0.8 1 --vflip --keep /tmp/m.pt --also-expand 1 4 --out /tmp/rows.jsonl "
        "--padding circular --norm group --shuffle-bn 4 --device cuda --train-only".split()
    )
    assert args.also_expand == [1, 4] and (args.padding, args.norm) == ("circular", "group")
    assert args.device == "cuda" and args.train_only and cam_screen.parser().parse_args(["--load", "m.pt"]).load
    assert args.shuffle_bn == 4
    assert args.vflip and args.supervised_crop_scale == [0.8, 1.0] and args.sets == ["pretrain.stem=s1"]
    # the attributes main() reads, by name, all exist on a parse of no flags at all
    plain = cam_screen.parser().parse_args([])
    source = Path(cam_screen.__file__).read_text()
    read = set(__import__("re").findall(r"args\.(\w+)", source))
    assert read <= set(vars(plain)), read - set(vars(plain))


def test_the_gpu_checks_calls_parse(monkeypatch):
    """benchmarks/gpu_check.sh runs on a lent GPU only: its cam_screen.py and bench_pretrain.py flags must exist."""
    import re
    import shlex

    text = (SCRIPT.parent / "gpu_check.sh").read_text().replace("\\\n", " ")
    shell = {"steps": "552", "seed": "0", "workers": "6"}  # the loop's variables; the rest are free text

    def argv(line: str) -> list[str]:
        words = [w for w in shlex.split(line) if w != "2>&1"]
        return [re.sub(r"\$(\w+)", lambda m: shell.get(m.group(1), "x"), w) for w in words]

    calls = {m.group(1): argv(m.group(2)) for m in re.finditer(r"python3 benchmarks/(\w+)\.py ([^|]+)\|", text)}
    assert set(calls) == {"cam_screen", "bench_pretrain"}
    spec = importlib.util.spec_from_file_location("bench_pretrain", SCRIPT.parent / "bench_pretrain.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_pretrain", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    args = cam_screen.parser().parse_args(calls["cam_screen"])
    assert args.train_only and args.device == "cuda" and args.keep and args.steps == 552
    paper = bench.parser().parse_args(calls["bench_pretrain"])
    assert (paper.device, paper.arch, paper.stem, paper.size, paper.batch) == ("cuda", "resnet50", "standard", 224, 256)
    assert set(paper.variants.split(",")) <= set(bench.VARIANTS)


def test_a_kept_model_loads_with_its_run_only_on_the_benchmark_and_levers_it_trained_with(tmp_path):
    cfg = PretrainConfig(arch="resnet18_w32", moco=replace(PretrainConfig().moco, queue_size=16, proj_dim=8))
    torch.manual_seed(0)
    moco = build_method("moco", cfg)
    row = {
        "tag": "t",
        "benchmark": "bench-abc",
        "norm": "group",
        "seed": 1,
        "steps": 46,
        "seconds": 9,
        "device": "cuda",
    }
    run = {k: row[k] for k in cam_screen.RUN_KEYS if k in row}
    assert set(run) == {"benchmark", "norm", "seed", "steps", "seconds", "device"}
    path = tmp_path / "m.pt"
    export_backbone(path, moco, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, params=run)
    enc, proj, got = cam_screen.load_kept(path, {"benchmark": "bench-abc", "norm": "group"}, "resnet18_w32")
    assert got == run
    x = torch.randn(2, 3, 32, 32)
    moco.eval()
    assert torch.equal(proj(enc(x)), moco.projector(moco.encoder(x)))
    for other in ({"benchmark": "bench-xyz", "norm": "group"}, {"benchmark": "bench-abc"}):
        with pytest.raises(SystemExit, match="benchmark|norm"):
            cam_screen.load_kept(path, other, "resnet18_w32")


def test_channel_sum_upto_layer4_is_the_pipelines_channel_sum_and_layer3_is_finer():
    from oacl.cam.contracam import channel_sum_cam, prepare_cam_model
    from oacl.models.backbones import build_backbone

    torch.manual_seed(0)
    enc = build_backbone("resnet18", "standard").eval()
    x = torch.randn(2, 3, 64, 64)
    model = prepare_cam_model(enc, torch.nn.Identity(), expand_res=2)
    ours = cam_screen.channel_sum_upto(model.encoder, x, "layer4")
    assert torch.allclose(ours, channel_sum_cam(model, x), atol=1e-6)
    # layer3 is a different, earlier map of the same image (4 x 4 here, like the expanded layer4, but not equal)
    early = cam_screen.channel_sum_upto(model.encoder, x, "layer3")
    assert early.shape == ours.shape and not torch.allclose(early, ours, atol=1e-3)


def test_contracam_at_layer4_is_the_pipelines_first_iteration():
    from oacl.cam.contracam import contracam_prepared, prepare_cam_model
    from oacl.models.backbones import build_backbone

    torch.manual_seed(0)
    enc = build_backbone("resnet18", "standard").eval()
    proj = torch.nn.Sequential(torch.nn.Linear(512, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16)).eval()
    model = prepare_cam_model(enc, proj, expand_res=2)
    x = torch.randn(6, 3, 64, 64)
    ours = cam_screen.contracam_at(model, x, "layer4")
    assert torch.allclose(ours, contracam_prepared(model, x, iters=1), atol=1e-5)
    early = cam_screen.contracam_at(model, x, "layer3")
    assert early.shape == ours.shape and early.min() >= 0 and early.max() <= 1
    assert not torch.allclose(early, ours, atol=1e-2)
    # centred on the batch: a batch of one image copied has nothing that differs, so no map at all
    same = cam_screen.contracam_at(model, x[:1].expand(4, -1, -1, -1).contiguous(), "layer4", centred=True)
    assert float(same.abs().max()) == 0.0


def test_layer_table_prints_rows_that_have_the_layer_diagnostics_only():
    keys = ("T1_layer2", "T1_layer3", "T1", "channel_sum_layer2", "channel_sum_layer3", "channel_sum")
    with_layers = {
        **{f"trained_{k}": 10.0 + i for i, k in enumerate(keys)},
        **{f"random_{k}": 20.0 + i for i, k in enumerate(keys)},
        "trained_T1_centred": 16.0,
        "gaussian": 35.0,
        "ones": 12.0,
    }
    old = {"trained_T1": 1.0, "random_T1": 2.0, "gaussian": 35.0, "ones": 12.0}
    rows = [
        {"tag": "new", "steps": 46, "pxap": {"single": with_layers}},
        {"tag": "old", "steps": 9, "pxap": {"single": old}},
    ]
    lines = cam_screen.layer_table(rows).splitlines()
    assert lines[2:] == [
        "| new | 46 | single | MoCo | 10.0 / 11.0 / 12.0 | 13.0 / 14.0 / 15.0 | 16.0 | 35.0 | 12.0 |",
        "| new | 46 | single | random | 20.0 / 21.0 / 22.0 | 23.0 / 24.0 / 25.0 | – | 35.0 | 12.0 |",
    ]


def test_frame_table_prints_the_frame_and_cell_diagnostics_where_a_row_has_them():
    single = {
        "trained_channel_sum": 9.4,
        "trained_channel_sum_blind": 8.0,
        "trained_channel_sum_border_over_centre": 1.8,
        "trained_cells_object": 60.0,
        "trained_cells_background": 55.5,
        "trained_cells_object_over_background": 0.7,
        "random_channel_sum": 46.9,
        "gaussian": 35.0,
    }
    multi = {k: v for k, v in single.items() if "cells" not in k}  # the cell probe runs on single only
    rows = [
        {"tag": "new", "steps": 138, "pxap": {"single": single, "multi": multi}},
        {"tag": "old", "steps": 9, "pxap": {"single": {"trained_channel_sum": 1.0}}},
    ]
    assert cam_screen.frame_table(rows).splitlines()[2:] == [
        "| new | 138 | single | MoCo | 9.4 | 8.0 | 1.80 | 60.0 / 55.5 | 0.70 |",
        "| new | 138 | multi | MoCo | 9.4 | 8.0 | 1.80 | – | – |",
    ]


def test_cell_probe_finds_the_class_where_the_activations_carry_it():
    from torch import nn

    # a "ResNet" whose layer4 activations are the input itself: 8 x 8 cells of 4 channels
    encoder = nn.Module()
    for name in ("conv1", "bn1", "relu", "maxpool", *cam_screen.LAYERS):
        setattr(encoder, name, nn.Identity())
    rng = np.random.default_rng(0)
    n, classes = 96, 4
    labels = np.arange(n) % classes
    masks = np.zeros((n, 32, 32), np.uint8)
    x = rng.normal(1.0, 1.0, size=(n, 4, 8, 8)).astype(np.float32)  # noise everywhere, one channel per class
    for i, c in enumerate(labels):
        r, col = rng.integers(0, 6, size=2)
        masks[i, 4 * r : 4 * r + 8, 4 * col : 4 * col + 8] = 1  # a 2 x 2-cell object
        x[i, c, r : r + 2, col : col + 2] += 5.0  # which carries its class on its own cells only
    got = cam_screen.cell_probe(SimpleNamespace(encoder=encoder), torch.from_numpy(x), masks, labels)
    assert got["cells_object"] == 100.0
    assert got["cells_background"] < 50  # chance is 25
    # per cell the object's channels sum to 4 + 5 on average, the background's to 4
    assert abs(got["cells_object_over_background"] - 9 / 4) < 0.1
    obj_sum = x.sum(1)[masks[:, ::4, ::4] == 1].mean()
    bg_sum = x.sum(1)[masks[:, ::4, ::4] == 0].mean()
    assert got["cells_object_over_background"] == round(float(obj_sum / bg_sum), 2)


def test_frame_stats_score_the_position_alone_and_weigh_the_frame_against_the_centre():
    s, n = 32, 6
    masks = _centred_disks(6.0, n, s)
    frame = np.full((s, s), 0.7, np.float32)
    frame[4:-4, 4:-4] = 0.35  # the band of 4 px (1/8 of 32) along the frame at twice the centre
    rng = np.random.default_rng(0)
    maps = frame + rng.uniform(-0.25, 0.25, size=(n, s, s)).astype(np.float32)  # within [0, 1]
    got = cam_screen.frame_stats(masks, maps)
    assert got["blind"] == round(pxap(masks, maps.mean(0)), 1)
    assert got["blind"] < 100 * masks.mean() + 5  # a frame-heavy map is worth no more than all-ones here
    assert abs(got["border_over_centre"] - 2.0) < 0.05
    centred = cam_screen.frame_stats(masks, np.repeat(centered_gaussian(s, s, 0.2)[None], n, axis=0))
    assert centred["blind"] > 99.9 and centred["border_over_centre"] < 0.2
