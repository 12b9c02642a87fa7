"""The CAM store's geometry contract: stored masks / boxes land on the right pixels of real images of any size.

Scenes are drawn at their original size (a rectangle and a disc, off-centre, on grey noise), the
stored mask is made the way ``contracam@<set>`` makes it (the whole image resized to S × S by the
pipeline's own transform, the CAM aligned with that resized image), then laid back onto the
original with :mod:`oacl.io.geometry` and compared with the true object.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision import tv_tensors
from torchvision.transforms import v2

from oacl.io.geometry import RESIZE_FULL, boxes_to_image, mask_to_image, rect_to_image

SIZES = [(72, 72), (90, 120), (120, 90)]  # (H, W): square, landscape 120 x 90 (W x H), portrait 90 x 120


def true_object(h: int, w: int) -> np.ndarray:
    """(H, W) uint8 {0, 1}: a rectangle (upper left) and a disc (lower right), at fixed fractions of the image."""
    yy, xx = np.mgrid[0:h, 0:w]
    rect = (xx >= int(0.15 * w)) & (xx < int(0.55 * w)) & (yy >= int(0.2 * h)) & (yy < int(0.6 * h))
    disc = (xx + 0.5 - 0.72 * w) ** 2 + (yy + 0.5 - 0.7 * h) ** 2 <= (0.15 * min(h, w)) ** 2
    return (rect | disc).astype(np.uint8)


def scene(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8, object (H, W) {0, 1}): grey noise in [40, 200] (R = G = B), the object pure red.

    R − G is then 255 × the object indicator, before and after any linear resampling.
    """
    obj = true_object(h, w)
    grey = np.random.default_rng(seed).integers(40, 201, size=(h, w), dtype=np.uint8)
    image = np.repeat(grey[..., None], 3, axis=2)
    image[obj == 1] = (255, 0, 0)
    return image, obj


def cam_of_resized(resized: np.ndarray) -> np.ndarray:
    """A perfect ContraCAM of a pipeline-resized scene (S, S, 3): R − G, the object indicator × 255 as resampled."""
    return np.clip(resized[..., 0].astype(np.int16) - resized[..., 1].astype(np.int16), 0, 255).astype(np.uint8)


def pipeline_resize(image: np.ndarray, side: int) -> np.ndarray:
    """The resize ``contracam@<set>`` applies to a real image (:func:`oacl.cam.pipeline.open_cam_set`): (S, S, 3)."""
    chw = tv_tensors.Image(torch.from_numpy(image.transpose(2, 0, 1).copy()))
    return v2.Resize((side, side), antialias=True)(chw).permute(1, 2, 0).numpy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max((a | b).sum(), 1))


def _erode(m: np.ndarray, r: int) -> np.ndarray:
    """Binary erosion by a (2r+1)² square (numpy only)."""
    m = m.astype(bool)
    out = m.copy()
    p = np.pad(m, r, constant_values=False)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out &= p[r + dy : r + dy + m.shape[0], r + dx : r + dx + m.shape[1]]
    return out


# ----------------------------------------------------------------------------- the mapping itself


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("side", [32, 64])
def test_stored_masks_land_on_the_object(size: tuple[int, int], side: int) -> None:
    h, w = size
    image, obj = scene(h, w)
    soft = cam_of_resized(pipeline_resize(image, side))  # what the store holds: (S, S) uint8 x 255
    refined = (soft >= 128).astype(np.uint8)  # a binary stored mask (/masks_refined)
    soft_back = mask_to_image(soft, (h, w), "soft")
    bin_back = mask_to_image(refined, (h, w), "binary")
    assert soft_back.shape == bin_back.shape == (h, w) and soft_back.dtype == bin_back.dtype == np.uint8
    assert set(np.unique(bin_back).tolist()) <= {0, 1}
    assert iou(soft_back >= 128, obj) >= 0.95
    if side == 64:  # at 32 px the binary store itself is too coarse for 0.9 on these small objects
        assert iou(bin_back, obj) >= 0.9
    # object pixels (away from the edge by more than one stored pixel) inside, background outside
    margin = int(np.ceil(max(h, w) / side)) + 1
    assert (soft_back[_erode(obj, margin)] >= 128).all() and bin_back[_erode(obj, margin)].all()
    assert (soft_back[_erode(1 - obj, margin)] < 128).all() and not bin_back[_erode(1 - obj, margin)].any()
    # control: assuming another mapping (shorter side + centre crop) misplaces the object on non-square images
    if h != w:
        s = min(h, w)
        wrong = np.zeros((h, w), np.uint8)
        top, left = (h - s) // 2, (w - s) // 2
        wrong[top : top + s, left : left + s] = mask_to_image(refined, (s, s), "binary")
        assert iou(wrong, obj) < 0.8


def test_the_contract_is_the_pipeline_s_own_resize(tmp_path: Path) -> None:
    """Real COCO files through :func:`oacl.cam.pipeline.open_cam_set`: its items are what the store is aligned with."""
    from oacl.cam.pipeline import open_cam_set
    from oacl.config import Params, parse_section

    side = 64
    folder = tmp_path / "images"
    folder.mkdir()
    images, annotations, truth = [], [], {}
    for i, (h, w) in enumerate(SIZES):
        image, obj = scene(h, w, seed=i)
        name = f"train_{i:05d}.png"
        Image.fromarray(image).save(folder / name)
        rle = mask_utils.encode(np.asfortranarray(obj))
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        annotations.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "iscrowd": 0,
                "area": float(obj.sum()),
                "bbox": [0.15 * w, 0.2 * h, 0.4 * w, 0.4 * h],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            }
        )
        truth[name] = obj
    (tmp_path / "train.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]})
    )
    params = parse_section(
        Params,
        {
            "data": {
                "source": "real",
                "real": {"root": str(tmp_path), "multi_images": "images", "multi_train_json": "train.json"},
            }
        },
    )
    data = open_cam_set(params, "multi", side)
    for k in range(len(data)):
        item = data[k]
        assert tuple(item["image"].shape) == (3, side, side)  # resized whole: one size for the CAM batches
        soft = cam_of_resized(item["image"].permute(1, 2, 0).numpy())
        obj = truth[item["id"]]
        back = mask_to_image(soft, obj.shape, "soft")
        assert iou(back >= 128, obj) >= 0.95, item["id"]
        # the GT mask the stage scores the CAM against is resized the same way
        assert iou(item["mask"].numpy(), (soft >= 128)) >= 0.9


def test_soft_masks_stay_in_range_and_smooth() -> None:
    rng = np.random.default_rng(0)
    soft = rng.integers(0, 256, size=(16, 16), dtype=np.uint8)
    for h, w in [(90, 120), (120, 90), (16, 16), (8, 12), (5, 40)]:
        out = mask_to_image(soft, (h, w), "soft")
        assert out.shape == (h, w) and out.dtype == np.uint8
        assert soft.min() <= out.min() and out.max() <= soft.max()  # no overshoot (bilinear / area)
    up = mask_to_image(soft, (160, 160), "soft").astype(
        int
    )  # 10x: each step is at most a tenth of a stored step (+ rounding)
    step = max(np.abs(np.diff(soft.astype(int), axis=a)).max() for a in (0, 1))
    assert max(np.abs(np.diff(up, axis=a)).max() for a in (0, 1)) <= step / 10 + 1
    np.testing.assert_array_equal(mask_to_image(soft, (16, 16), "soft"), soft)  # same size: unchanged
    # a constant mask stays constant at any size
    assert (mask_to_image(np.full((32, 32), 77, np.uint8), (90, 120), "soft") == 77).all()


def test_binary_masks_stay_binary() -> None:
    rng = np.random.default_rng(1)
    binary = (rng.random((32, 32)) < 0.4).astype(np.uint8)
    for size in [(72, 72), (90, 120), (120, 90), (20, 20), (7, 50)]:
        out = mask_to_image(binary, size, "binary")
        assert out.dtype == np.uint8 and set(np.unique(out).tolist()) <= {0, 1}
    big = np.zeros((32, 32), np.uint8)
    big[8:24, 4:20] = 1
    out = mask_to_image(big, (96, 64), "binary")  # 3x rows, 2x columns
    assert iou(out, np.kron(big, np.ones((3, 2), np.uint8))) >= 0.97  # nearest-neighbour up to rounded corners
    with pytest.raises(ValueError, match="0 / 1"):
        mask_to_image(big * 255, (64, 64), "binary")


def test_bad_arguments_name_the_value() -> None:
    m = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="'center-crop'"):
        mask_to_image(m, (4, 4), "soft", "center-crop")
    with pytest.raises(ValueError, match="'hard'"):
        mask_to_image(m, (4, 4), "hard")
    with pytest.raises(ValueError, match=r"\(0, 4\)"):
        mask_to_image(m, (0, 4), "soft")
    with pytest.raises(ValueError, match="float32"):
        mask_to_image(m.astype(np.float32), (4, 4), "soft")
    with pytest.raises(ValueError, match="outside"):
        rect_to_image((0, 0, 9, 8), (8, 8), (16, 16))


def test_rectangles_map_inwards() -> None:
    # 8 x 8 mask onto a 24 (H) x 16 (W) image: columns x2, rows x3, exact
    assert rect_to_image((2, 3, 5, 7), (8, 8), (24, 16)) == (4, 9, 10, 21)
    # onto 20 (H) x 12 (W): column j of the image covers mask columns [j·8/12, (j+1)·8/12)
    x0, y0, x1, y1 = rect_to_image((1, 1, 4, 4), (8, 8), (20, 12))
    assert (x0, x1) == (2, 6) and (y0, y1) == (3, 10)
    assert rect_to_image((0, 0, 0, 0), (8, 8), (24, 16)) == (0, 0, 0, 0)
    assert rect_to_image((1, 0, 2, 8), (8, 8), (4, 4)) == (0, 0, 0, 0)  # half an image pixel wide: collapses
    assert rect_to_image((1, 2, 3, 4), (8, 8), (8, 8)) == (1, 2, 3, 4)


@pytest.mark.parametrize("size", SIZES)
def test_background_rectangle_of_a_stored_mask_is_background_on_the_image(size: tuple[int, int]) -> None:
    from oacl.augment.bgmix import binarize, largest_empty_rectangle

    h, w = size
    image, obj = scene(h, w)
    soft = cam_of_resized(pipeline_resize(image, 32))
    rect = largest_empty_rectangle(binarize(soft, 0.2))
    x0, y0, x1, y1 = rect_to_image(rect, soft.shape, (h, w))
    assert x1 > x0 and y1 > y0 and (x1 - x0) * (y1 - y0) >= 0.05 * h * w
    assert not obj[y0:y1, x0:x1].any()


@pytest.mark.parametrize("size", SIZES)
def test_stored_boxes_land_on_the_object(size: tuple[int, int]) -> None:
    from oacl.augment.oacrop import item_boxes
    from oacl.cam.postprocess import mask_to_boxes
    from oacl.data.datasets import make_sample, mask_to_box

    h, w = size
    image, obj = scene(h, w)
    soft = cam_of_resized(pipeline_resize(image, 64))
    boxes = mask_to_boxes((soft >= 128).astype(np.uint8), margin=0.0, min_box_area=0.0)  # normalized, as stored
    assert len(boxes) == 2
    pixels = boxes_to_image(boxes, (h, w))
    # each object's tight box, within one stored pixel of the original's
    count, labels = cv2.connectedComponents(obj, connectivity=8)
    assert count == 3  # background, rectangle, disc
    parts = [(labels == k).astype(np.uint8) for k in (1, 2)]
    tol = max(h, w) / 64 + 0.5
    for part in parts:
        want = mask_to_box(part)[0]
        assert np.abs(pixels - want).max(axis=1).min() <= tol
    # OA-Crop's reading of the same boxes on the real-size item
    item = make_sample(image, 0, None, None, None, "x")
    item["cam_boxes"] = torch.from_numpy(boxes)
    item["cam_geometry"] = RESIZE_FULL
    torch.testing.assert_close(item_boxes(item, "cam"), torch.from_numpy(pixels))
    assert boxes_to_image(np.zeros((0, 4), np.float32), (h, w)).shape == (0, 4)


# ------------------------------------------------------------------ BG-Mixup on real-size images


def _store_for(tmp_path: Path, names: list[str], images: list[np.ndarray], side: int) -> Path:
    from oacl.cam.postprocess import mask_to_boxes
    from oacl.io.camstore import write_cam_store

    soft = np.stack([cam_of_resized(pipeline_resize(im, side)) for im in images])
    refined = (soft >= 128).astype(np.uint8)
    path = tmp_path / "cam.h5"
    write_cam_store(
        path,
        image_ids=names,
        masks=soft,
        masks_refined=refined,
        boxes=[mask_to_boxes(r) for r in refined],
        checkpoint_sha256="00" * 32,
        params={},
        image_size=side,
        iters=1,
        expand_res=1,
        crf=True,
    )
    return path


def test_bgmix_runs_on_real_size_images_and_keeps_the_foreground(tmp_path: Path) -> None:
    """The issue: a (32, 32) stored mask and a real image of another size raised "mask of ... is (32, 32), its image ...".

    Real files (PNG) of 72 x 72, 120 x 90 and 90 x 120 through the project's image-folder dataset,
    the store attached by retraining's :class:`RetrainSet`, BG-Mixup with pmix = 1.
    """
    from torch.utils.data import default_collate

    from oacl.augment.bgmix import BackgroundTiles, BatchBgMix, BgMixItem
    from oacl.augment.views import AugmentSettings
    from oacl.data.datasets import ImageFolderSet
    from oacl.io.camstore import CamStore
    from oacl.train.retrain import RetrainSet

    side, view = 32, 32
    (tmp_path / "imgs" / "thing").mkdir(parents=True)
    objects = {}
    for i, (h, w) in enumerate(SIZES):
        image, obj = scene(h, w, seed=10 + i)
        Image.fromarray(image).save(tmp_path / "imgs" / "thing" / f"train_{i:05d}.png")
        objects[f"thing/train_{i:05d}"] = (image, obj)
    data = ImageFolderSet(tmp_path / "imgs")
    store = CamStore(_store_for(tmp_path, data.ids, [objects[i][0] for i in data.ids], side), expected_ids=data.ids)
    assert store.image_size == (side, side) and store.mask_geometry == RESIZE_FULL
    part = RetrainSet(data, "multi", store, masks=True)
    tiles = BackgroundTiles(0.2)
    tiles.prefill([("multi", i) for i in store.ids], part.soft)  # the bulk cache works on the stored masks
    per_item = BgMixItem(AugmentSettings(size=view, crop_scale=(0.3, 1.0)), tiles)

    torch.manual_seed(0)
    outs = []
    for k in range(len(part)):
        item = part[k]
        h, w = objects[item["id"]][1].shape
        assert tuple(item["image"].shape) == (3, h, w) and tuple(item["cam_mask"].shape) == (side, side)
        out = per_item(item)  # used to raise DataError: mask ... is (32, 32), its image (h, w)
        assert bool(out["has_bg"])
        # the tile is background only: grey noise (R = G = B), never the red object
        bg = out["bg"].int()
        assert (bg[0] == bg[1]).all() and (bg[1] == bg[2]).all()
        for v, m in zip(out["views"], out["masks"]):
            assert v.shape == (3, view, view) and m.shape == (1, view, view) and m.dtype == torch.uint8
            # mask and view stay aligned: where the mask is sure, the view shows the object, and vice versa
            red = (v[0].int() - v[1].int()).numpy()
            assert (red[m[0].numpy() >= 250] >= 200).all()
            assert (red[m[0].numpy() <= 5] <= 55).all()
        outs.append(out)
    batch = default_collate(outs)
    x = batch["views"][0].float() / 255
    mixed, applied, _ = BatchBgMix(AugmentSettings(size=view), 1.0).mix(
        x, batch["masks"][0], batch["bg"].float() / 255, batch["has_bg"]
    )
    assert applied.all()
    fg = (batch["masks"][0] == 255).expand_as(x)
    assert fg.any() and torch.equal(mixed[fg], x[fg])  # foreground pixels kept exactly
    store.close()


def test_oacrop_crops_real_size_images_to_the_stored_boxes(tmp_path: Path) -> None:
    from oacl.augment.oacrop import ObjectAwareCrops
    from oacl.augment.views import AugmentSettings
    from oacl.data.datasets import ImageFolderSet
    from oacl.io.camstore import CamStore
    from oacl.train.retrain import RetrainSet

    (tmp_path / "imgs" / "thing").mkdir(parents=True)
    objects = {}
    for i, (h, w) in enumerate(SIZES):
        image, obj = scene(h, w, seed=20 + i)
        Image.fromarray(image).save(tmp_path / "imgs" / "thing" / f"img{i}.png")
        objects[f"thing/img{i}"] = (image, obj)
    data = ImageFolderSet(tmp_path / "imgs")
    store = CamStore(_store_for(tmp_path, data.ids, [objects[i][0] for i in data.ids], 64))
    part = RetrainSet(data, "multi", store, boxes=True)
    crops = ObjectAwareCrops(AugmentSettings(size=16), "cam")
    torch.manual_seed(0)
    for k in range(len(part)):
        item = part[k]
        obj = objects[item["id"]][1]
        for _ in range(4):
            cropped, window = crops.crop(item)
            assert window is not None
            top, left, hh, ww = window
            inside = obj[top : top + hh, left : left + ww]
            assert inside.mean() >= 0.3  # the crop holds an object (boxes carry a 20 % margin)
    store.close()
