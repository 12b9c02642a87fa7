"""oacl.eval.detection: COCO AP against pycocotools and closed forms, data, model, fine-tune, errors.

The fixture is the shared tiny scene set (conftest: 8 images of 32 x 32, solid rectangles in a
colour per class) written as a set file plus a COCO instances JSON with RLE masks.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from conftest import Scenes, make_scenes, write_scenes
from oacl.config import ConfigError, DetectConfig, Params, parse_section
from oacl.errors import CheckpointError, DataError
from oacl.eval.detection import (
    DetectionSet,
    build_detector,
    check_same_categories,
    coco_ap,
    detect_lr,
    detections_to_coco,
    finetune,
    hflip,
    predictions_sheet,
)
from oacl.eval.features import load_variant
from oacl.io.checkpoint import export_backbone
from oacl.models.backbones import build_backbone
from oacl.models.moco import MoCo
from oacl.vocab import variant_backbone_path

torch.set_num_threads(1)

# Small enough for a step in a fraction of a second on 32 px images.
TINY = DetectConfig(
    steps=2,
    batch_size=4,
    warmup_steps=1,
    image_size=64,
    fpn_channels=32,
    box_head_dim=64,
    mask_head_layers=1,
    mask_head_channels=16,
    rois_per_image=32,
    rpn_pre_nms_train=100,
    rpn_post_nms_train=50,
    rpn_pre_nms_test=50,
    rpn_post_nms_test=30,
    detections_per_image=20,
    eval_batch=8,
    plot_images=4,
    threads=1,
)


# ------------------------------------------------------------------------ fixtures


def coco_json(
    scenes: Scenes, *, category_ids: Sequence[int] | None = None, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """COCO instances of ``scenes``: one annotation per object, RLE masks, image ids 1..N."""
    cats = list(category_ids or range(1, len(scenes.classes) + 1))
    names = list(names or scenes.classes)
    h, w = scenes.images.shape[1:3]
    images, anns = [], []
    for i, sid in enumerate(scenes.ids):
        images.append({"id": i + 1, "file_name": sid, "height": h, "width": w})
        for k in range(scenes.box_index[i], scenes.box_index[i + 1]):
            x0, y0, x1, y1 = (float(v) for v in scenes.boxes[k])
            rle = mask_utils.encode(np.asfortranarray(scenes.object_masks[k]))
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cats[int(scenes.box_labels[k])],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": float(scenes.object_masks[k].sum()),
                    "iscrowd": 0,
                    "segmentation": rle,
                }
            )
    categories = [{"id": c, "name": n, "supercategory": "shape"} for c, n in zip(cats, names)]
    return {"images": images, "annotations": anns, "categories": categories}


def write_coco_split(root: Path, split: str, scenes: Scenes, **kw: Any) -> tuple[Path, Path]:
    """``<root>/<split>.h5`` + ``<root>/instances_<split>.json``; returns (json, h5)."""
    root.mkdir(parents=True, exist_ok=True)
    h5 = write_scenes(root / f"{split}.h5", scenes, name=split)
    js = root / f"instances_{split}.json"
    js.write_text(json.dumps(coco_json(scenes, **kw)))
    return js, h5


@pytest.fixture
def coco_split(tmp_path: Path, scenes: Scenes) -> tuple[Path, Path]:
    return write_coco_split(tmp_path / "multi", "train", scenes)


def load_gt(payload: dict[str, Any]) -> COCO:
    gt = COCO()
    gt.dataset = json.loads(json.dumps(payload))
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def direct_cocoeval(gt: COCO, results: list[dict[str, Any]], iou_type: str) -> np.ndarray:
    """pycocotools' own evaluation, written out the way its README does it."""
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(results))), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def oracle_outputs(scenes: Scenes) -> list[dict[str, torch.Tensor]]:
    """Detector-format outputs equal to the ground truth (labels 1..C, masks (D, 1, H, W))."""
    outs = []
    for i in range(len(scenes.ids)):
        lo, hi = scenes.box_index[i], scenes.box_index[i + 1]
        outs.append(
            {
                "boxes": torch.from_numpy(scenes.boxes[lo:hi].copy()),
                "labels": torch.from_numpy(scenes.box_labels[lo:hi] + 1),
                "scores": torch.linspace(0.9, 0.8, hi - lo),
                "masks": torch.from_numpy(np.stack(scenes.object_masks[lo:hi])).float()[:, None],
            }
        )
    return outs


# ------------------------------------------------------------------------- COCO AP


def test_perfect_predictions_score_100_in_bbox_and_segm(scenes: Scenes) -> None:
    cats = [3, 7, 11]  # non-contiguous ids: detector label l must map to cats[l - 1]
    gt = load_gt(coco_json(scenes, category_ids=cats))
    bbox, segm = [], []
    for i, out in enumerate(oracle_outputs(scenes)):
        b, s = detections_to_coco(out, i + 1, cats, masks=True)
        bbox += b
        segm += s
    assert len(bbox) == len(segm) == len(scenes.boxes)
    for iou_type, res in (("bbox", bbox), ("segm", segm)):
        ours = coco_ap(gt, res, iou_type)
        assert ours["ap"] == pytest.approx(100.0) and ours["ap50"] == pytest.approx(100.0)
        assert ours["ap75"] == pytest.approx(100.0) and ours["ar100"] == pytest.approx(100.0)


def test_half_the_objects_found_gives_the_101_point_value(scenes: Scenes) -> None:
    """One class, half its objects found exactly, nothing else: precision 1 up to recall 0.5 → AP = 51/101."""
    payload = coco_json(scenes)
    gt = load_gt(payload)
    anns = [a for a in payload["annotations"] if a["category_id"] == 1]
    assert len(anns) == 4  # class 0 is in scenes 0, 3, 5, 6
    found = anns[:2]
    res = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9} for a in found]
    ours = coco_ap(gt, res, "bbox", image_ids=[img["id"] for img in payload["images"]])
    # COCOeval averages over categories with ground truth: the other classes score 0 here.
    n_cats = len({a["category_id"] for a in payload["annotations"]})
    assert ours["ap50"] == pytest.approx(100.0 * 51 / 101 / n_cats, abs=1e-6)
    assert ours["ap"] == pytest.approx(100.0 * 51 / 101 / n_cats, abs=1e-6)
    assert ours["ar100"] == pytest.approx(100.0 * 0.5 / n_cats, abs=1e-6)


def test_box_at_iou_062_counts_for_ap50_not_ap75() -> None:
    """One 10 x 10 object, one prediction shifted to IoU 0.62: matched at IoU .50, .55, .60 → AP 30."""
    payload = {
        "images": [{"id": 1, "file_name": "a", "height": 32, "width": 32}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 10.0, 10.0], "area": 100.0, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "x"}],
    }
    gt = load_gt(payload)
    # Shift d along x: IoU = (10 - d) / (10 + d) = 0.62 → d = 38 / 16.2.
    d = 10 * (1 - 0.62) / (1 + 0.62)
    res = [{"image_id": 1, "category_id": 1, "bbox": [10.0 + d, 10.0, 10.0, 10.0], "score": 0.5}]
    ours = coco_ap(gt, res, "bbox")
    assert ours["ap50"] == pytest.approx(100.0) and ours["ap75"] == pytest.approx(0.0)
    assert ours["ap"] == pytest.approx(30.0)


def test_coco_ap_equals_pycocotools_on_a_hand_made_prediction_set(scenes: Scenes) -> None:
    """Misses, a wrong class, loose boxes, duplicates, noisy masks: every number as pycocotools says."""
    payload = coco_json(scenes)
    gt = load_gt(payload)
    rng = np.random.default_rng(1)
    bbox, segm = [], []
    for i, out in enumerate(oracle_outputs(scenes)):
        keep = torch.from_numpy(rng.random(len(out["labels"])) < 0.8)  # some misses
        boxes = out["boxes"][keep] + torch.from_numpy(rng.normal(0, 0.6, (int(keep.sum()), 4))).float()
        labels = out["labels"][keep].clone()
        if i == 2 and len(labels):
            labels[0] = labels[0] % 3 + 1  # a wrong class
        masks = out["masks"][keep].clone()
        masks[:, :, ::7, ::7] = 1 - masks[:, :, ::7, ::7]  # a grid of wrong pixels
        scores = torch.from_numpy(rng.random(len(labels))).float()
        dup = {
            "boxes": boxes[:1] + 3,
            "labels": labels[:1],
            "scores": scores[:1] * 0.5,
            "masks": masks[:1],
        }  # a duplicate
        for o in ({"boxes": boxes, "labels": labels, "scores": scores, "masks": masks}, dup):
            b, s = detections_to_coco(o, i + 1, [1, 2, 3], masks=True)
            bbox += b
            segm += s
    for iou_type, res in (("bbox", bbox), ("segm", segm)):
        ours = coco_ap(gt, res, iou_type)
        ref = direct_cocoeval(gt, res, iou_type)
        for key, idx in (("ap", 0), ("ap50", 1), ("ap75", 2), ("ar1", 6), ("ar10", 7), ("ar100", 8)):
            assert ours[key] == pytest.approx(100.0 * ref[idx], abs=1e-9), (iou_type, key)
        assert 0.0 < ours["ap"] < 100.0


def test_no_detections_scores_zero_and_no_ground_truth_is_an_error(scenes: Scenes) -> None:
    gt = load_gt(coco_json(scenes))
    assert coco_ap(gt, [], "bbox")["ap50"] == 0.0
    empty = load_gt({**coco_json(scenes), "annotations": []})
    with pytest.raises(DataError, match="no annotations"):
        coco_ap(empty, [], "bbox")
    with pytest.raises(ValueError, match="iou_type"):
        coco_ap(gt, [], "keypoints")


def test_detections_to_coco_rejects_labels_outside_the_classes() -> None:
    out = {"boxes": torch.zeros(1, 4), "labels": torch.tensor([0]), "scores": torch.ones(1)}
    with pytest.raises(ValueError, match="1..3"):
        detections_to_coco(out, 1, [1, 2, 3], masks=False)


# ---------------------------------------------------------------------------- data


def test_detection_set_items_carry_the_instances(coco_split: tuple[Path, Path], scenes: Scenes) -> None:
    ds = DetectionSet(*coco_split)
    assert len(ds) == 8 and ds.classes == list(scenes.classes) and ds.category_ids == [1, 2, 3]
    for i in (0, 1, 5):
        image, target = ds[i]
        lo, hi = scenes.box_index[i], scenes.box_index[i + 1]
        assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
        np.testing.assert_allclose(image.permute(1, 2, 0).numpy() * 255, scenes.images[i], atol=1e-4)
        np.testing.assert_array_equal(target["boxes"].numpy(), scenes.boxes[lo:hi])
        np.testing.assert_array_equal(target["labels"].numpy(), scenes.box_labels[lo:hi] + 1)
        np.testing.assert_array_equal(target["masks"].numpy(), np.stack(scenes.object_masks[lo:hi]))
        assert target["image_id"] == i + 1


def test_class_count_mismatch_between_json_and_set_file_is_an_error(tmp_path: Path, scenes: Scenes) -> None:
    js, h5 = write_coco_split(
        tmp_path, "train", scenes, category_ids=[1, 2, 3, 4], names=["red", "green", "blue", "pink"]
    )
    with pytest.raises(DataError, match="4 categories .* 3 classes"):
        DetectionSet(js, h5)


def test_train_and_test_categories_must_agree(tmp_path: Path, scenes: Scenes) -> None:
    train = DetectionSet(*write_coco_split(tmp_path / "a", "train", scenes))
    other = make_scenes(n=8, size=32, seed=1)
    test = DetectionSet(*write_coco_split(tmp_path / "b", "test", other, category_ids=[1, 2, 5]))
    with pytest.raises(DataError, match="categories differ"):
        check_same_categories(train, test)


def test_masks_required_for_mask_rcnn(tmp_path: Path, scenes: Scenes) -> None:
    js, h5 = write_coco_split(tmp_path, "train", scenes)
    payload = json.loads(js.read_text())
    for a in payload["annotations"]:
        del a["segmentation"]
    js.write_text(json.dumps(payload))
    with pytest.raises(DataError, match="no segmentation"):
        DetectionSet(js, h5, masks=True)
    _, target = DetectionSet(js, h5, masks=False)[0]
    assert "masks" not in target and len(target["boxes"]) == 1


def test_hflip_moves_boxes_with_masks(coco_split: tuple[Path, Path]) -> None:
    image, target = DetectionSet(*coco_split)[1]
    fimage, ftarget = hflip(image, target)
    assert torch.equal(fimage, image.flip(-1))
    for box, mask in zip(ftarget["boxes"], ftarget["masks"]):  # the box is still the mask's tight box
        ys, xs = np.nonzero(mask.numpy())
        np.testing.assert_array_equal(box.numpy(), [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    back_image, back = hflip(fimage, ftarget)
    assert torch.equal(back_image, image) and torch.equal(back["boxes"], target["boxes"])


# --------------------------------------------------------------------------- model


def test_detector_starts_from_the_backbone_and_trains_all_of_it(coco_split: tuple[Path, Path]) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", "standard")
    conv1 = backbone.conv1.weight.detach().clone()
    model = build_detector(backbone, 3, TINY)
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, conv1)
    assert isinstance(body.bn1, nn.BatchNorm2d) and all(p.requires_grad for p in model.parameters())
    image, target = DetectionSet(*coco_split)[0]
    model.train()
    losses = model([image, image], [target, target])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([image])[0]
    assert out["masks"].shape[1:] == (1, 32, 32)  # outputs in the input's pixels
    assert (out["boxes"] >= 0).all() and (out["boxes"] <= 32).all()


def test_faster_rcnn_without_masks_and_resnet50_widths() -> None:
    model = build_detector(build_backbone("resnet50", "standard"), 4, replace(TINY, masks=False))
    assert not hasattr(model.roi_heads, "mask_head") or model.roi_heads.mask_head is None
    assert model.backbone.fpn.inner_blocks[-1][0].in_channels == 2048
    assert model.roi_heads.box_predictor.cls_score.out_features == 5  # 4 classes + background
    with pytest.raises(ValueError, match="num_classes"):
        build_detector(build_backbone("resnet18"), 0, TINY)


def test_lr_warms_up_then_decays_to_zero() -> None:
    cfg = replace(TINY, steps=100, warmup_steps=10, lr=0.01)
    assert detect_lr(0, cfg) == pytest.approx(0.001)
    assert detect_lr(10, cfg) == pytest.approx(0.01)
    assert detect_lr(55, cfg) == pytest.approx(0.005)
    assert detect_lr(100, cfg) == pytest.approx(0.0, abs=1e-12)
    assert all(detect_lr(s, cfg) >= detect_lr(s + 1, cfg) for s in range(10, 99))


# ------------------------------------------------------------------------ training


def test_two_step_finetune_is_reproducible_and_changes_the_weights(coco_split: tuple[Path, Path]) -> None:
    ds = DetectionSet(*coco_split)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_detector(build_backbone("resnet18"), 3, TINY)
        before = model.backbone.body.layer1[0].conv1.weight.detach().clone()
        result = finetune(model, ds, TINY)
        runs.append(result.losses)
        assert not model.training and result.steps == 2 and result.images == 8
        assert not torch.equal(before, model.backbone.body.layer1[0].conv1.weight)
        assert set(result.terms) >= {"loss_mask", "loss_classifier"} and all(np.isfinite(result.losses))
    assert runs[0] == runs[1]


class _NanModel(nn.Module):
    """Returns a loss that becomes NaN at its second call, like a diverging run."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        self.calls += 1
        bad = float("nan") if self.calls == 2 else 1.0
        return {"loss_box_reg": self.w * bad, "loss_classifier": self.w * 0.5}


def test_a_diverging_run_stops_with_one_clear_error(coco_split: tuple[Path, Path]) -> None:
    with pytest.raises(
        ConfigError, match=r"diverged at step 2 of 2 \(loss_box_reg nan, loss_classifier 0\.\d+\); lower 'detect.lr'"
    ):
        finetune(_NanModel(), DetectionSet(*coco_split), TINY)


def test_batch_larger_than_the_training_set_is_rejected(coco_split: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="'detect.batch_size' = 16 is larger than the 8"):
        finetune(_NanModel(), DetectionSet(*coco_split), replace(TINY, batch_size=16))


def test_predictions_sheet_is_a_picture(coco_split: tuple[Path, Path], scenes: Scenes) -> None:
    sheet = predictions_sheet(DetectionSet(*coco_split), oracle_outputs(scenes)[:3], side=48, title="t")
    assert sheet.size[0] > 3 * 48 and sheet.size[1] > 2 * 48


# ----------------------------------------------------------------------- backbones


def test_variant_paths() -> None:
    assert variant_backbone_path("random") is None
    assert variant_backbone_path("moco", "m") == Path("m/pretrain-moco/backbone.pt")
    assert variant_backbone_path("byol-bgmix", "m") == Path("m/retrain-byol-bgmix/backbone.pt")
    with pytest.raises(ValueError, match="simclr"):
        variant_backbone_path("simclr")


def load_variant_backbone(variant: str, *, models_dir, arch: str, stem: str, seed: int):
    """The detection stage's view of :func:`oacl.eval.features.load_variant`: (encoder, mean, std, source)."""
    params = parse_section(Params, {"pretrain": {"arch": arch, "stem": stem}})
    b = load_variant(variant, params, seed=seed, models_dir=models_dir)
    return b.encoder, b.mean, b.std, b.source


def test_random_backbone_follows_the_seed() -> None:
    a = load_variant_backbone("random", models_dir="x", arch="resnet18", stem="standard", seed=0)[0]
    b = load_variant_backbone("random", models_dir="x", arch="resnet18", stem="standard", seed=0)[0]
    c = load_variant_backbone("random", models_dir="x", arch="resnet18", stem="standard", seed=1)[0]
    assert torch.equal(a.conv1.weight, b.conv1.weight) and not torch.equal(a.conv1.weight, c.conv1.weight)


def test_exported_backbone_loads_with_its_normalisation_and_bad_files_fail(tmp_path: Path) -> None:
    moco = MoCo("resnet18", "standard", proj_hidden=32, proj_dim=8, queue_size=16)
    path = tmp_path / "pretrain-moco" / "backbone.pt"
    export_backbone(path, moco, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    net, mean, std, source = load_variant_backbone(
        "moco", models_dir=tmp_path, arch="resnet18", stem="standard", seed=0
    )
    assert torch.equal(net.layer4[1].conv2.weight, moco.encoder.layer4[1].conv2.weight)
    assert mean == (0.5, 0.5, 0.5) and std == (0.25, 0.25, 0.25) and source == str(path)
    with pytest.raises(CheckpointError, match="architecture 'resnet18', expected 'resnet50'"):
        load_variant_backbone("moco", models_dir=tmp_path, arch="resnet50", stem="standard", seed=0)
    with pytest.raises(CheckpointError, match="'standard'-stem .* 'pretrain.stem' is 's1'"):
        load_variant_backbone("moco", models_dir=tmp_path, arch="resnet18", stem="s1", seed=0)
    with pytest.raises(CheckpointError, match="retrain-moco-bgmix/backbone.pt does not exist"):
        load_variant_backbone("moco-bgmix", models_dir=tmp_path, arch="resnet18", stem="standard", seed=0)
