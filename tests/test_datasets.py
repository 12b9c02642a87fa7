"""Set files and datasets: items equal what the fixtures wrote; bad inputs name the culprit.

Every fixture is written by the test in the real format (HDF5 set file via write_set, COCO
JSON with RLE and polygon segmentations + PNGs, an ImageFolder tree, a Background Challenge
tree with .npy masks), so each assertion compares against known pixels, boxes and masks.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from conftest import COLOURS, Scenes, make_scenes, write_scenes
from oacl.data.datasets import (
    DATASETS,
    BackgroundChallengeSet,
    CocoSet,
    EmbeddedSet,
    ImageFolderSet,
    build_dataset,
    collate_samples,
    load_mask_file,
    make_sample,
    mask_to_box,
)
from oacl.errors import DataError
from oacl.io.sets import SCHEMA, open_set, write_set
from oacl.vocab import DATASET_KINDS

# --------------------------------------------------------------------- helpers


def assert_item(
    item: dict, image: np.ndarray, label: int, boxes: np.ndarray, box_labels: np.ndarray, mask, id: str
) -> None:
    """``item`` is in the common format and holds exactly these values."""
    h, w = image.shape[:2]
    assert set(item) == {"image", "label", "boxes", "box_labels", "mask", "id"}
    assert isinstance(item["image"], tv_tensors.Image) and item["image"].dtype == torch.uint8
    assert torch.equal(item["image"].as_subclass(torch.Tensor), torch.from_numpy(image).permute(2, 0, 1))
    assert item["label"] == label and isinstance(item["label"], int)
    assert isinstance(item["boxes"], tv_tensors.BoundingBoxes)
    assert item["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY and tuple(item["boxes"].canvas_size) == (h, w)
    assert item["boxes"].dtype == torch.float32
    np.testing.assert_array_equal(item["boxes"].numpy(), np.asarray(boxes, np.float32).reshape(-1, 4))
    assert item["box_labels"].dtype == torch.int64
    np.testing.assert_array_equal(item["box_labels"].numpy(), np.asarray(box_labels).reshape(-1))
    if mask is None:
        assert item["mask"] is None
    else:
        assert isinstance(item["mask"], tv_tensors.Mask) and item["mask"].dtype == torch.uint8
        np.testing.assert_array_equal(item["mask"].numpy(), mask)
    assert item["id"] == id


def edit_set(path: Path, name: str, data: np.ndarray | None = None, attrs: dict | None = None) -> None:
    """Replace dataset ``name`` (None: delete it) / set attributes, bypassing write_set's checks."""
    with h5py.File(path, "r+") as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        if name:
            del f[name]
            if data is not None:
                f.create_dataset(name, data=data)


# -------------------------------------------------------------------- set files


def test_set_file_round_trip(set_path: Path, scenes: Scenes) -> None:
    s = open_set(set_path)
    assert len(s) == 8 and s.info.kind == "multi" and s.info.name == "tiny" and s.info.image_size == 32
    assert s.classes == ["red", "green", "blue"] and s.info.num_boxes == len(scenes.boxes)
    assert s.ids == scenes.ids
    np.testing.assert_array_equal(s.images, scenes.images)
    np.testing.assert_array_equal(s.masks, scenes.masks)
    np.testing.assert_array_equal(s.labels, scenes.labels)
    np.testing.assert_array_equal(s.backgrounds, scenes.backgrounds)
    for i in range(len(s)):
        boxes, labels = s.boxes_of(i)
        np.testing.assert_array_equal(boxes, scenes.boxes_of(i))
        np.testing.assert_array_equal(labels, scenes.box_labels_of(i))
    with h5py.File(set_path) as f:
        assert f.attrs["schema"] == SCHEMA


def test_write_set_is_byte_reproducible_without_timestamps(tmp_path: Path, scenes: Scenes) -> None:
    a = write_scenes(tmp_path / "a.h5", scenes)
    b = write_scenes(tmp_path / "b.h5", scenes)
    assert a.read_bytes() == b.read_bytes()
    with h5py.File(a) as f:
        for name in ["/", *f.keys()]:
            info = h5py.h5o.get_info(f[name].id)
            assert (info.ctime, info.mtime, info.atime, info.btime) == (0, 0, 0, 0), name
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary left behind


def test_write_set_extra_attrs_and_empty_boxes(tmp_path: Path, scenes: Scenes) -> None:
    path = tmp_path / "bg.h5"
    n = len(scenes.ids)
    write_set(
        path,
        scenes.images,
        scenes.ids,
        scenes.labels,
        np.zeros_like(scenes.masks),
        np.zeros((0, 4)),
        [],
        np.zeros(n + 1, np.int64),
        -np.ones(n, np.int64),
        "single",
        ["red", "green", "blue"],
        "only_bg_t",
        attrs={"variant": "only_bg_t", "severity": 3, "meta": {"a": 1}},
    )
    s = open_set(path)
    assert s.info.extra == {"variant": "only_bg_t", "severity": 3, "meta": '{"a": 1}'}
    assert s.boxes.shape == (0, 4) and s.boxes_of(5)[0].shape == (0, 4)
    item = EmbeddedSet(path)[5]
    assert item["boxes"].shape == (0, 4) and item["mask"].sum() == 0


@pytest.mark.parametrize("in_memory", [True, False])
def test_embedded_items_equal_written(set_path: Path, scenes: Scenes, in_memory: bool) -> None:
    ds = EmbeddedSet(set_path, in_memory=in_memory)
    assert len(ds) == 8 and ds.classes == ["red", "green", "blue"] and ds.ids == scenes.ids and ds.kind == "multi"
    np.testing.assert_array_equal(ds.labels, scenes.labels)
    for i in range(len(ds)):
        assert_item(
            ds[i],
            scenes.images[i],
            int(scenes.labels[i]),
            scenes.boxes_of(i),
            scenes.box_labels_of(i),
            scenes.masks[i],
            scenes.ids[i],
        )
    assert_item(
        ds[-1],
        scenes.images[7],
        int(scenes.labels[7]),
        scenes.boxes_of(7),
        scenes.box_labels_of(7),
        scenes.masks[7],
        scenes.ids[7],
    )
    with pytest.raises(IndexError, match="8"):
        ds[8]


def test_items_do_not_alias_the_cache(set_path: Path, scenes: Scenes) -> None:
    ds = EmbeddedSet(set_path)
    item = ds[0]
    item["image"].zero_()
    item["mask"].fill_(1)
    np.testing.assert_array_equal(ds[0]["image"].permute(1, 2, 0).numpy(), scenes.images[0])
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), scenes.masks[0])


@pytest.mark.parametrize("in_memory", [True, False])
def test_dataloader_workers_read_the_set_themselves(set_path: Path, scenes: Scenes, in_memory: bool) -> None:
    ds = EmbeddedSet(set_path, in_memory=in_memory)
    ds[0]  # the parent opens / loads first; forked workers must not reuse its HDF5 handle
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_samples, multiprocessing_context="fork")
    batches = list(loader)
    images = torch.cat([b["image"] for b in batches])
    np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), scenes.images)
    assert sum((b["id"] for b in batches), []) == scenes.ids


def test_pickled_set_reloads_in_the_new_process(set_path: Path, scenes: Scenes) -> None:
    ds = EmbeddedSet(set_path)
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))  # what a "spawn" DataLoader worker receives
    assert clone.set._cache == {} and ds.set._cache  # arrays are not shipped, they are re-read
    assert torch.equal(clone[4]["image"], ds[4]["image"]) and clone.ids == ds.ids


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_SETS = {
    "wrong schema": (lambda p: edit_set(p, "", attrs={"schema": "oacl.set/0"}), "schema is 'oacl.set/0'"),
    "missing dataset": (lambda p: edit_set(p, "masks"), "missing dataset"),
    "N mismatch": (
        lambda p: edit_set(p, "labels", np.zeros(7, np.int64)),
        r"/labels has shape \(7,\), expected \(8,\)",
    ),
    "masks N mismatch": (lambda p: edit_set(p, "masks", np.zeros((7, 32, 32), np.uint8)), "/masks shape"),
    "box_index end": (lambda p: edit_set(p, "box_index", np.arange(9, dtype=np.int64)), "end at M"),
    "box_index decreasing": (
        lambda p: edit_set(p, "box_index", np.array([0, 2, 1, 3, 4, 6, 7, 10, 12])),
        "decreases at image 1",
    ),
    "box outside image": (
        lambda p: edit_set(p, "boxes", np.tile(np.float32([[2, 2, 33, 9]]), (12, 1))),
        r"/boxes\[0\].*outside the 32x32",
    ),
    "empty box": (lambda p: edit_set(p, "boxes", np.tile(np.float32([[5, 2, 5, 9]]), (12, 1))), "empty or outside"),
    "duplicate ids": (lambda p: edit_set(p, "ids", np.array(["a"] * 8, dtype=h5py.string_dtype())), "'a' appears more"),
    "label out of range": (lambda p: edit_set(p, "labels", np.full(8, 3, np.int64)), r"/labels\[0\] = 3"),
    "bad classes attr": (lambda p: edit_set(p, "", attrs={"classes": "red,green"}), "not a JSON list"),
    "image_size attr": (lambda p: edit_set(p, "", attrs={"image_size": 64}), "image_size = 64"),
    "truncated": (_truncate, "truncated or corrupt"),
    "not hdf5": (lambda p: p.write_text("hello"), "not a readable HDF5 file"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETS))
def test_bad_set_files_raise_data_error_naming_file_and_problem(set_path: Path, case: str) -> None:
    spoil, message = BAD_SETS[case]
    spoil(set_path)
    with pytest.raises(DataError, match=message) as err:
        open_set(set_path)
    assert str(set_path) in str(err.value)


def test_missing_set_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nosuch.h5 does not exist"):
        EmbeddedSet(tmp_path / "nosuch.h5")


def test_mask_values_checked_on_load(set_path: Path) -> None:
    bad = np.zeros((8, 32, 32), np.uint8)
    bad[3, 4, 5] = 255
    edit_set(set_path, "masks", bad)
    ds = EmbeddedSet(set_path)
    with pytest.raises(DataError, match=r"0 or 1, found 255 at index \[3, 4, 5\]"):
        ds[0]
    with pytest.raises(DataError, match=r"masks\[3\]"):
        EmbeddedSet(set_path, in_memory=False)[3]


def test_write_set_refuses_bad_arrays_and_writes_nothing(tmp_path: Path, scenes: Scenes) -> None:
    path = tmp_path / "bad.h5"
    boxes = scenes.boxes.copy()
    boxes[4, 2] = 40
    with pytest.raises(DataError, match=r"write_set .*bad.h5: /boxes\[4\]"):
        write_set(
            path,
            scenes.images,
            scenes.ids,
            scenes.labels,
            scenes.masks,
            boxes,
            scenes.box_labels,
            scenes.box_index,
            scenes.backgrounds,
            "multi",
            list(scenes.classes),
            "x",
        )
    with pytest.raises(DataError, match="kind 'scenes'"):
        write_set(
            path,
            scenes.images,
            scenes.ids,
            scenes.labels,
            scenes.masks,
            scenes.boxes,
            scenes.box_labels,
            scenes.box_index,
            scenes.backgrounds,
            "scenes",
            list(scenes.classes),
            "x",
        )
    with pytest.raises(DataError, match="0 or 1"):
        write_set(
            path,
            scenes.images,
            scenes.ids,
            scenes.labels,
            scenes.masks * 255,
            scenes.boxes,
            scenes.box_labels,
            scenes.box_index,
            scenes.backgrounds,
            "multi",
            list(scenes.classes),
            "x",
        )
    assert not path.exists() and not list(tmp_path.iterdir())


# ------------------------------------------------------------------------ COCO

CATEGORY_IDS = (1, 5, 3)  # class index -> COCO id; sorted ids [1, 3, 5] give classes red, blue, green
COCO_INDEX = {1: 0, 3: 1, 5: 2}


def write_coco(root: Path, scenes: Scenes, *, segmentation: bool = True) -> tuple[Path, Path]:
    """PNG per scene + instances JSON; odd annotations as polygons, even ones as compressed RLE."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for i, sid in enumerate(scenes.ids):
        Image.fromarray(scenes.images[i]).save(image_dir / f"{sid}.png")
        images.append({"id": 100 + i, "file_name": f"{sid}.png", "height": 32, "width": 32})
        for j in range(scenes.box_index[i], scenes.box_index[i + 1]):
            x0, y0, x1, y1 = scenes.boxes[j].tolist()
            ann = {
                "id": 1000 + j,
                "image_id": 100 + i,
                "category_id": CATEGORY_IDS[scenes.box_labels[j]],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(scenes.object_masks[j].sum()),
                "iscrowd": 0,
            }
            if segmentation and j % 2:
                ann["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
            elif segmentation:
                rle = mask_utils.encode(np.asfortranarray(scenes.object_masks[j]))
                ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            annotations.append(ann)
    categories = [{"id": CATEGORY_IDS[k], "name": name, "supercategory": "g"} for k, name in enumerate(scenes.classes)]
    ann_path = root / "instances.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann_path, image_dir


def coco_expected(scenes: Scenes, i: int) -> tuple[np.ndarray, np.ndarray]:
    return scenes.boxes_of(i), np.array([COCO_INDEX[CATEGORY_IDS[c]] for c in scenes.box_labels_of(i)])


def test_coco_items_equal_written(tmp_path: Path, scenes: Scenes) -> None:
    ann, images = write_coco(tmp_path, scenes)
    ds = CocoSet(ann, images)
    assert ds.classes == ["red", "blue", "green"] and ds.category_ids == [1, 3, 5]
    assert ds.ids == [f"{s}.png" for s in scenes.ids] and ds.image_ids == list(range(100, 108))
    np.testing.assert_array_equal(ds.labels, [COCO_INDEX[CATEGORY_IDS[c]] for c in scenes.labels])
    for i in range(len(ds)):
        boxes, labels = coco_expected(scenes, i)
        assert_item(ds[i], scenes.images[i], int(ds.labels[i]), boxes, labels, scenes.masks[i], f"{scenes.ids[i]}.png")
    assert len(ds.coco.getAnnIds()) == len(scenes.boxes)  # the pycocotools index is there for COCOeval


def test_coco_over_a_set_file_matches_embedded(tmp_path: Path, scenes: Scenes, set_path: Path) -> None:
    ann, _ = write_coco(tmp_path, scenes)
    raw = json.loads(ann.read_text())
    for img in raw["images"]:
        img["file_name"] = img["file_name"].removesuffix(".png")  # the embedded convention: file_name = set id
    ann.write_text(json.dumps(raw))
    coco, emb = CocoSet(ann, set_path), EmbeddedSet(set_path)
    assert coco.ids == emb.ids
    for i in range(len(emb)):
        a, b = coco[i], emb[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert torch.equal(a["boxes"], b["boxes"])


def test_coco_boxes_only_no_annotations_and_crowd(tmp_path: Path, scenes: Scenes) -> None:
    # "your own images with sidecar boxes": bbox-only JSON -> boxes, no mask
    ann, images = write_coco(tmp_path / "a", scenes, segmentation=False)
    ds = CocoSet(ann, images)
    boxes, labels = coco_expected(scenes, 3)
    assert_item(ds[3], scenes.images[3], int(ds.labels[3]), boxes, labels, None, f"{scenes.ids[3]}.png")
    # an image without annotations: label -1, no boxes, an empty mask; crowd annotations dropped by default
    ann, images = write_coco(tmp_path / "b", scenes)
    raw = json.loads(ann.read_text())
    raw["annotations"] = [a for a in raw["annotations"] if a["image_id"] != 100]
    crowd = next(a for a in raw["annotations"] if a["image_id"] == 102)
    crowd["iscrowd"] = 1
    ann.write_text(json.dumps(raw))
    ds = CocoSet(ann, images)
    assert_item(ds[0], scenes.images[0], -1, np.zeros((0, 4)), [], np.zeros((32, 32), np.uint8), f"{scenes.ids[0]}.png")
    assert len(ds[2]["boxes"]) == 0 and ds.labels[2] == -1
    assert len(CocoSet(ann, images, include_crowd=True)[2]["boxes"]) == 1


def _edit_json(key: str, fn):
    def spoil(ann: Path, images: Path) -> None:
        raw = json.loads(ann.read_text())
        fn(raw[key] if key else raw)
        ann.write_text(json.dumps(raw))

    return spoil


BAD_COCO = {
    "bad json": (lambda ann, images: ann.write_text(ann.read_text()[:-7]), "not valid JSON", "instances.json"),
    "missing key": (
        _edit_json("", lambda raw: raw.pop("categories")),
        r"lacks key\(s\) \['categories'\]",
        "instances.json",
    ),
    "annotation without bbox": (
        _edit_json("annotations", lambda a: a[2].pop("bbox")),
        r"annotations\[2\] lacks",
        "instances.json",
    ),
    "box outside image": (
        _edit_json("annotations", lambda a: a[1].update(bbox=[20, 3, 15, 4])),
        "outside the 32x32 image",
        "annotation 1001 (image 101)",
    ),
    "negative box": (
        _edit_json("annotations", lambda a: a[0].update(bbox=[2, 3, -1, 4])),
        "negative",
        "annotation 1000",
    ),
    "unknown category": (
        _edit_json("annotations", lambda a: a[4].update(category_id=9)),
        "category_id 9",
        "annotation 1004 (image 103)",
    ),
    "unknown image": (_edit_json("annotations", lambda a: a[0].update(image_id=77)), "image id not in", "image 77"),
    "duplicate file_name": (
        _edit_json("images", lambda im: im[1].update(file_name=im[0]["file_name"])),
        "used by more than one",
        "scene-000",
    ),
    "images not a list": (
        _edit_json("", lambda raw: raw.update(images={})),
        "'images' must be a list",
        "instances.json",
    ),
    "rle size": (
        _edit_json("annotations", lambda a: a[0]["segmentation"].update(size=[16, 32])),
        "RLE size",
        "annotation 1000",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_COCO))
def test_bad_coco_annotations_name_file_and_culprit(tmp_path: Path, scenes: Scenes, case: str) -> None:
    ann, images = write_coco(tmp_path, scenes)
    spoil, message, culprit = BAD_COCO[case]
    spoil(ann, images)
    with pytest.raises(DataError, match=message) as err:
        CocoSet(ann, images)
    assert str(ann) in str(err.value) and culprit in str(err.value)


def test_coco_bad_image_files_named_at_access(tmp_path: Path, scenes: Scenes) -> None:
    ann, images = write_coco(tmp_path, scenes)
    (images / "scene-001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (images / "scene-002.png").unlink()
    Image.fromarray(scenes.images[3][:, :20]).save(images / "scene-003.png")
    png = (images / "scene-004.png").read_bytes()
    (images / "scene-004.png").write_bytes(png[: len(png) // 2])
    ds = CocoSet(ann, images)
    assert ds[0]["id"] == "scene-000.png"
    with pytest.raises(DataError, match=r"scene-001\.png cannot be decoded"):
        ds[1]
    with pytest.raises(DataError, match=r"scene-002\.png does not exist"):
        ds[2]
    with pytest.raises(DataError, match=r"scene-003\.png is 20x32 but .*instances\.json says 32x32"):
        ds[3]
    with pytest.raises(DataError, match=r"scene-004\.png cannot be decoded"):
        ds[4]
    with pytest.raises(DataError, match="annotation file .*nosuch.json does not exist"):
        CocoSet(tmp_path / "nosuch.json", images)


# ----------------------------------------------------------------- image folder


def write_folder(root: Path, scenes: Scenes, masks_root: Path | None = None) -> list[tuple[str, int, int]]:
    """Scenes 0..5 as <root>/<class>/<id>.png (class = label); masks as PNG 0/255 (even) or .npy bool (odd),
    none for scene 5. Returns (id, label, scene index) in the expected dataset order."""
    expected = []
    for i in range(6):
        cls = scenes.classes[scenes.labels[i]]
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(scenes.images[i]).save(root / cls / f"{scenes.ids[i]}.png")
        if masks_root is not None and i < 5:
            (masks_root / cls).mkdir(parents=True, exist_ok=True)
            if i % 2 == 0:
                Image.fromarray(scenes.masks[i] * 255).save(masks_root / cls / f"{scenes.ids[i]}.png")
            else:
                np.save(masks_root / cls / f"{scenes.ids[i]}.npy", scenes.masks[i].astype(bool))
        expected.append((f"{cls}/{scenes.ids[i]}", sorted(scenes.classes).index(cls), i))
    return sorted(expected, key=lambda e: (e[1], e[0]))


def test_image_folder_items_with_sidecar_masks(tmp_path: Path, scenes: Scenes) -> None:
    expected = write_folder(tmp_path / "img", scenes, tmp_path / "masks")
    (tmp_path / "img" / "red" / "notes.txt").write_text("not an image")
    ds = ImageFolderSet(tmp_path / "img", masks_root=tmp_path / "masks")
    assert ds.classes == sorted({scenes.classes[c] for c in scenes.labels[:6]})
    assert ds.ids == [e[0] for e in expected]
    for k, (id, label, i) in enumerate(expected):
        mask = scenes.masks[i] if i < 5 else None
        ys, xs = np.nonzero(scenes.masks[i])
        boxes = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] if i < 5 else np.zeros((0, 4))
        assert_item(ds[k], scenes.images[i], label, boxes, [label] * len(boxes), mask, id)


def test_image_folder_flat_masks_extensions_and_fixed_classes(tmp_path: Path, scenes: Scenes) -> None:
    root = tmp_path / "img"
    (root / "b").mkdir(parents=True)
    Image.fromarray(scenes.images[0]).save(root / "b" / "x.PNG")
    Image.fromarray(scenes.images[1]).save(root / "b" / "y.JPEG", quality=100, subsampling=0)
    (tmp_path / "m").mkdir()
    Image.fromarray(scenes.masks[0]).save(tmp_path / "m" / "x.png")  # flat <masks_root>/<stem>.png, values 0/1
    ds = ImageFolderSet(root, masks_root=tmp_path / "m", classes=["a", "b", "c"])
    assert ds.ids == ["b/x", "b/y"] and list(ds.labels) == [1, 1]
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), scenes.masks[0])
    jpeg = ds[1]
    assert jpeg["mask"] is None and jpeg["image"].shape == (3, 32, 32)
    assert np.abs(jpeg["image"].permute(1, 2, 0).numpy().astype(int) - scenes.images[1]).mean() < 3


def test_image_folder_errors_name_the_file(tmp_path: Path, scenes: Scenes) -> None:
    root = tmp_path / "img"
    write_folder(root, scenes, tmp_path / "masks")
    cls = scenes.classes[scenes.labels[0]]
    bad_png = root / cls / f"{scenes.ids[0]}.png"
    bad_png.write_bytes(b"garbage")
    mask_file = tmp_path / "masks" / cls / f"{scenes.ids[0]}.png"
    ds = ImageFolderSet(root, masks_root=tmp_path / "masks")
    k = ds.ids.index(f"{cls}/{scenes.ids[0]}")
    with pytest.raises(DataError, match=f"{bad_png} cannot be decoded"):
        ds[k]
    Image.fromarray(scenes.images[0]).save(bad_png)
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(mask_file)
    with pytest.raises(DataError, match=f"mask {mask_file} is 32x16 but image {bad_png} is 32x32"):
        ds[k]
    Image.fromarray(scenes.images[0]).save(root / cls / f"{scenes.ids[0]}.jpg")
    with pytest.raises(DataError, match="share the id"):
        ImageFolderSet(root)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderSet(tmp_path / "nosuch")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no"):
        ImageFolderSet(tmp_path / "empty")
    with pytest.raises(DataError, match="not among the given classes"):
        ImageFolderSet(root, classes=["zzz"])


def test_load_mask_file_and_mask_to_box(tmp_path: Path) -> None:
    m = np.zeros((6, 7), np.uint8)
    m[1:4, 2:6] = 1
    Image.fromarray(m * 255).convert("RGB").save(tmp_path / "rgb.png")
    np.save(tmp_path / "hw1.npy", m[..., None].astype(np.float32))
    for name in ("rgb.png", "hw1.npy"):
        np.testing.assert_array_equal(load_mask_file(tmp_path / name), m)
    np.testing.assert_array_equal(mask_to_box(m), [[2, 1, 6, 4]])
    assert mask_to_box(np.zeros((4, 4))).shape == (0, 4)
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(DataError, match=r"bad\.npy has shape"):
        load_mask_file(tmp_path / "bad.npy")


# --------------------------------------------------------- Background Challenge


def write_bgchallenge(root: Path, scenes: Scenes) -> None:
    """original/val and only_bg_t/val with classes 00_red, 01_green, 02_blue; fg_mask/val/<class>/<stem>.npy."""
    for variant in ("original", "only_bg_t"):
        for i in range(6):
            cls = f"{scenes.labels[i]:02d}_{scenes.classes[scenes.labels[i]]}"
            folder = root / variant / "val" / cls
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scenes.images[i]).save(folder / f"n0000_{i}.JPEG", quality=100, subsampling=0)
            mask_dir = root / "fg_mask" / "val" / cls
            mask_dir.mkdir(parents=True, exist_ok=True)
            np.save(mask_dir / f"n0000_{i}.npy", scenes.masks[i].astype(bool))


def test_background_challenge_layout(tmp_path: Path, scenes: Scenes) -> None:
    write_bgchallenge(tmp_path, scenes)
    ds = BackgroundChallengeSet(tmp_path, "original")
    present = sorted({int(c) for c in scenes.labels[:6]})
    assert ds.classes == [f"{c:02d}_{scenes.classes[c]}" for c in present]
    assert ds.class_names == [scenes.classes[c] for c in present]
    assert len(ds) == 6
    for k in range(len(ds)):
        i = int(ds.ids[k].rsplit("_", 1)[1])
        item = ds[k]
        assert ds.classes[item["label"]].endswith(scenes.classes[scenes.labels[i]])
        np.testing.assert_array_equal(item["mask"].numpy(), scenes.masks[i])
        np.testing.assert_array_equal(item["boxes"].numpy(), mask_to_box(scenes.masks[i]))
        assert np.abs(item["image"].permute(1, 2, 0).numpy().astype(int) - scenes.images[i]).mean() < 3
    no_fg = BackgroundChallengeSet(tmp_path, "only_bg_t")
    assert no_fg.ids == ds.ids and no_fg[0]["mask"] is None and len(no_fg[0]["boxes"]) == 0
    with pytest.raises(ValueError, match="'mixed_random'"):
        BackgroundChallengeSet(tmp_path, "mixed_random")
    with pytest.raises(DataError, match="mixed_rand/val does not exist"):
        BackgroundChallengeSet(tmp_path, "mixed_rand")


# --------------------------------------------------------------- transforms


@pytest.mark.parametrize("seed", range(6))
def test_v2_transforms_keep_mask_image_and_boxes_aligned(set_path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    tf = v2.Compose(
        [
            v2.RandomResizedCrop(24, scale=(0.3, 1.0), interpolation=InterpolationMode.NEAREST),
            v2.RandomHorizontalFlip(0.5),
        ]
    )
    ds = EmbeddedSet(set_path, transform=tf)
    for i in range(len(ds)):
        item = ds[i]
        img, mask = item["image"].numpy(), item["mask"].numpy()
        assert img.shape == (3, 24, 24) and mask.shape == (24, 24)
        # objects are pure red / green / blue, backgrounds never reach 0 or 255: colour == mask exactly
        is_object = np.zeros((24, 24), bool)
        for colour in COLOURS:
            is_object |= (img == colour[:, None, None]).all(0)
        np.testing.assert_array_equal(is_object, mask.astype(bool))
        # every object pixel lies inside a transformed box (1 px slack for rounding)
        inside = np.zeros((24, 24), bool)
        for x0, y0, x1, y1 in item["boxes"].tolist():
            inside[
                max(int(np.floor(y0)) - 1, 0) : int(np.ceil(y1)) + 1,
                max(int(np.floor(x0)) - 1, 0) : int(np.ceil(x1)) + 1,
            ] = True
        assert not (mask.astype(bool) & ~inside).any()
        assert item["label"] == int(ds.labels[i]) and item["id"] == ds.ids[i]
        assert tuple(item["boxes"].canvas_size) == (24, 24)


def test_transform_with_mask_none_passes_through(tmp_path: Path, scenes: Scenes) -> None:
    ann, images = write_coco(tmp_path, scenes, segmentation=False)
    tf = v2.Compose([v2.RandomResizedCrop(16), v2.RandomHorizontalFlip()])
    item = CocoSet(ann, images, transform=tf)[1]
    assert item["mask"] is None and item["image"].shape == (3, 16, 16) and item["id"] == "scene-001.png"


# ------------------------------------------------------------------ collate


def test_collate_samples(set_path: Path, scenes: Scenes) -> None:
    ds = EmbeddedSet(set_path)
    batch = collate_samples([ds[i] for i in (0, 3, 5)])
    assert batch["image"].shape == (3, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert type(batch["image"]) is torch.Tensor
    np.testing.assert_array_equal(batch["image"].permute(0, 2, 3, 1).numpy(), scenes.images[[0, 3, 5]])
    assert batch["label"].tolist() == scenes.labels[[0, 3, 5]].tolist() and batch["label"].dtype == torch.int64
    assert batch["id"] == [scenes.ids[i] for i in (0, 3, 5)]
    assert [len(b) for b in batch["boxes"]] == [1, 2, 2] and len(batch["box_labels"]) == 3 and len(batch["mask"]) == 3
    # different sizes -> a list; several views -> one stack per view; float images are fine
    small = make_sample(np.zeros((8, 8, 3), np.uint8), 0, None, None, None, "s")
    mixed = collate_samples([ds[0], small])
    assert isinstance(mixed["image"], list) and [tuple(t.shape) for t in mixed["image"]] == [(3, 32, 32), (3, 8, 8)]
    assert mixed["mask"][1] is None
    views = collate_samples([{"image": (torch.zeros(3, 4, 4), torch.ones(3, 2, 2)), "label": 1}] * 5)
    assert [tuple(v.shape) for v in views["image"]] == [(5, 3, 4, 4), (5, 3, 2, 2)]
    with pytest.raises(ValueError, match="empty batch"):
        collate_samples([])


def test_make_sample_validates() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        make_sample(np.zeros((3, 8, 8), np.uint8), 0, None, None, None, "x")
    with pytest.raises(ValueError, match="uint8"):
        make_sample(np.zeros((8, 8, 3), np.float32), 0, None, None, None, "x")
    with pytest.raises(ValueError, match="2 boxes but 1 box labels"):
        make_sample(np.zeros((8, 8, 3), np.uint8), 0, np.zeros((2, 4)), [1], None, "x")
    with pytest.raises(ValueError, match="mask of 'x' has shape"):
        make_sample(np.zeros((8, 8, 3), np.uint8), 0, None, None, np.zeros((4, 8)), "x")
    with pytest.raises(ValueError, match="0 or 1, found 255"):
        make_sample(np.zeros((8, 8, 3), np.uint8), 0, None, None, np.full((8, 8), 255), "x")
    item = make_sample(torch.zeros(3, 8, 8, dtype=torch.uint8), 2, [[1, 2, 3, 4]], [0], np.ones((8, 8)), "t")
    assert_item(item, np.zeros((8, 8, 3), np.uint8), 2, [[1, 2, 3, 4]], [0], np.ones((8, 8)), "t")


# ------------------------------------------------------------------ registry


def test_registry_builds_each_format(tmp_path: Path, scenes: Scenes, set_path: Path) -> None:
    assert set(DATASETS) == set(DATASET_KINDS) == {"embedded", "coco", "imagefolder", "bgchallenge"}
    assert len(build_dataset("embedded", path=set_path)) == 8
    ann, images = write_coco(tmp_path / "c", scenes)
    assert len(build_dataset("coco", annotation_json=ann, image_dir=images)) == 8
    write_folder(tmp_path / "f", scenes)
    assert len(build_dataset("imagefolder", root=tmp_path / "f")) == 6
    write_bgchallenge(tmp_path / "bg", scenes)
    assert len(build_dataset("bgchallenge", root=tmp_path / "bg", variant="original")) == 6
    with pytest.raises(ValueError, match="unknown dataset kind 'voc'"):
        build_dataset("voc")


def test_fixture_scenes_are_what_they_claim() -> None:
    s = make_scenes()
    for i in range(8):
        for j in range(s.box_index[i], s.box_index[i + 1]):
            x0, y0, x1, y1 = s.boxes[j].astype(int)
            assert (s.images[i, y0:y1, x0:x1] == COLOURS[s.box_labels[j]]).all()
            assert s.object_masks[j].sum() == (x1 - x0) * (y1 - y0)
        union = np.max(s.object_masks[s.box_index[i] : s.box_index[i + 1]], axis=0)
        np.testing.assert_array_equal(s.masks[i], union)


# ------------------------------------------------------- real files: decoding and crowd


def write_awkward_files(folder: Path) -> dict[str, tuple[np.ndarray, float]]:
    """Real-world files that are not plain RGB: {file name: (expected RGB (H, W, 3) uint8, mean |error| allowed)}.

    Greyscale JPEG, CMYK JPEG (Adobe APP14, inverted, as PIL and Photoshop write it), a PNG named
    ``.JPEG`` and a 16-bit greyscale PNG; 20 x 12 (W x H), smooth so JPEG keeps them close.
    """
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:12, 0:20]
    rgb = np.stack([xx * 12, yy * 20, 255 - xx * 12], axis=2).astype(np.uint8)
    grey = (xx * 12 + yy * 2).astype(np.uint8)
    Image.fromarray(grey, "L").save(folder / "grey.jpg", quality=95)
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(rgb).save(folder / "png_inside.JPEG", format="PNG")
    Image.fromarray(grey.astype(np.uint16) * 257 + 100).save(folder / "grey16.png")  # mode I;16
    with (
        Image.open(folder / "cmyk.jpg") as im,
        Image.open(folder / "png_inside.JPEG") as png,
        Image.open(folder / "grey16.png") as g16,
    ):
        assert im.mode == "CMYK" and "adobe" in im.info and png.format == "PNG" and g16.mode.startswith("I;16")
    as_rgb = np.repeat(grey[..., None], 3, axis=2)
    return {
        "grey.jpg": (as_rgb, 3.0),
        "cmyk.jpg": (rgb, 3.0),
        "png_inside.JPEG": (rgb, 0.0),
        "grey16.png": (as_rgb, 0.0),
    }


@pytest.mark.parametrize("kind", ["imagefolder", "bgchallenge", "coco"])
def test_real_files_of_any_colour_mode_decode_to_rgb_uint8(tmp_path: Path, kind: str) -> None:
    if kind == "imagefolder":
        files = write_awkward_files(tmp_path / "img" / "thing")
        ds = ImageFolderSet(tmp_path / "img")
    elif kind == "bgchallenge":
        files = write_awkward_files(tmp_path / "original" / "train" / "00_thing")
        ds = BackgroundChallengeSet(tmp_path, "original", "train")
    else:
        files = write_awkward_files(tmp_path / "images")
        raw = {"images": [{"id": k, "file_name": name, "height": 12, "width": 20} for k, name in enumerate(sorted(files))],
               "annotations": [], "categories": [{"id": 1, "name": "thing"}]}  # fmt: skip
        (tmp_path / "train.json").write_text(json.dumps(raw))
        ds = CocoSet(tmp_path / "train.json", tmp_path / "images")
    assert len(ds) == len(files)
    for k in range(len(ds)):
        item = ds[k]
        name = next(n for n in files if Path(n).stem == Path(item["id"]).stem)
        expected, tol = files[name]
        image = item["image"]
        assert (
            isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and tuple(image.shape) == (3, 12, 20)
        ), name
        got = image.permute(1, 2, 0).numpy().astype(int)
        assert np.abs(got - expected).mean() <= tol, name
        if name.startswith("grey"):
            assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_load_image_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    from oacl.data.datasets import load_image

    ramp = np.linspace(0, 65535, 64 * 4).reshape(4, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    got = load_image(tmp_path / "ramp.png")
    assert got.shape == (4, 64, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 0], np.rint(ramp / 257.0).astype(np.uint8))  # PIL's convert: 99 % at 255


def test_coco_crowd_annotations_are_ignored_for_boxes_labels_and_crops(tmp_path: Path) -> None:
    """As COCO does: ``iscrowd`` regions are neither objects to crop nor boxes (nor the image's label)."""
    from oacl.data.source import CocoCropSource

    (tmp_path / "images").mkdir()
    h, w = 30, 40
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(tmp_path / "images" / name)
    crowd_mask = np.zeros((h, w), np.uint8)
    crowd_mask[2:28, 15:39] = 1
    flat = crowd_mask.flatten(order="F")  # COCO writes crowd masks as uncompressed RLE, column-major runs
    runs, prev, n = [], 0, 0
    for v in flat:
        if v != prev:
            runs.append(n)
            prev, n = v, 0
        n += 1
    runs.append(n)
    crowd = {"size": [h, w], "counts": [int(r) for r in runs]}
    raw = {
        "images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}, {"id": 2, "file_name": "b.png", "height": h, "width": w}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 8, 6], "area": 48.0, "iscrowd": 0,
             "segmentation": [[2, 3, 10, 3, 10, 9, 2, 9]]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [15, 2, 24, 26], "area": 624.0, "iscrowd": 1, "segmentation": crowd},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [15, 2, 24, 26], "area": 624.0, "iscrowd": 1, "segmentation": crowd},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "crowd of people"}],
    }  # fmt: skip
    (tmp_path / "train.json").write_text(json.dumps(raw))
    ds = CocoSet(tmp_path / "train.json", tmp_path / "images")
    a, b = ds[0], ds[1]
    np.testing.assert_array_equal(a["boxes"].numpy(), [[2, 3, 10, 9]])  # the crowd box is not a box
    assert a["box_labels"].tolist() == [0] and a["label"] == 0  # the larger crowd does not label the image
    assert len(b["boxes"]) == 0 and b["label"] == -1  # crowd only: no object
    crops = list(CocoCropSource(ds, 8, "t").batches(16))
    assert len(crops) == 1 and crops[0][0].shape == (1, 3, 8, 8) and crops[0][1].tolist() == [0]
    # kept on request (COCO's own evaluation marks them "ignore" rather than dropping them)
    with_crowd = CocoSet(tmp_path / "train.json", tmp_path / "images", include_crowd=True)
    assert len(with_crowd[0]["boxes"]) == 2 and with_crowd[0]["label"] == 1 and len(with_crowd[1]["boxes"]) == 1
    assert int(with_crowd[0]["mask"].numpy()[crowd_mask == 1].min()) == 1  # its uncompressed RLE decodes in place
