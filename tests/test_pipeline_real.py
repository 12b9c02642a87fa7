"""The whole DAG on real-format files of real variety (smoke sizes), in a temporary git + DVC repository.

The files are written here from the tiny embedded benchmark, then made to look like what a user
has on disk: COCO instances JSON over a folder of mixed-size JPEG and PNG images (segmentations as
polygons and as RLE, an ``iscrowd`` annotation, an image without annotations, a greyscale and a
CMYK JPEG), the Background Challenge layout (``<variant>/<split>/<class>/*.JPEG``, foreground masks
in ``fg_mask/<split>/<class>/*.npy``, a PNG file named ``.JPEG``) at mixed sizes, and shift sets as
image folders. Every stage must run, both BG-Mixup retrains and the report included.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from oacl.io.results import read_results
from oacl.io.sets import open_set
from oacl.vocab import BG_VARIANTS
from stagekit import generate_tiny
from test_pipeline import TINY, deep_update, dvc, make_project

pytestmark = pytest.mark.slow

SIZES = [(32, 32), (40, 32), (32, 48), (48, 36), (36, 30)]  # (W, H) of the real images, in turn


def _resize(image: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def _save(image: np.ndarray, path: Path, mode: str = "RGB") -> None:
    """Save RGB ``image`` to ``path`` in the format its suffix says, or as ``mode`` ("L", "CMYK") JPEG."""
    pil = Image.fromarray(image)
    if mode != "RGB":
        pil = pil.convert(mode)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    pil.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def _decode(seg: object, height: int, width: int) -> np.ndarray:
    """The (H, W) uint8 mask of a COCO segmentation: polygons, or RLE with str / list counts."""
    if isinstance(seg, dict) and isinstance(seg.get("counts"), str):
        return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode("ascii")})
    rles = mask_utils.frPyObjects(seg, height, width)
    return mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles)


def write_coco(data: Path, out: Path) -> None:
    """``out/images/*`` and ``out/instances_{train,test}.json`` from the embedded multi-object set."""
    images = out / "images"
    images.mkdir(parents=True)
    for split in ("train", "test"):
        s = open_set(data / "multi" / f"{split}.h5")
        coco = json.loads((data / "multi" / f"instances_{split}.json").read_text())
        anns_of: dict[int, list[dict]] = {}
        for ann in coco["annotations"]:
            anns_of.setdefault(ann["image_id"], []).append(ann)
        row = {image_id: i for i, image_id in enumerate(s.ids)}
        new_images, new_anns = [], []
        for k, img in enumerate(coco["images"]):
            w, h = SIZES[k % len(SIZES)]
            name = f"{split}_{k:03d}." + ("png" if k % 2 else "jpg")
            mode = {0: "L", 2: "CMYK"}.get(k, "RGB") if split == "train" else "RGB"
            _save(_resize(s.image(row[img["file_name"]]), (w, h)), images / name, mode)
            new_images.append({**img, "file_name": name, "width": w, "height": h})
            if split == "train" and k == 4:
                continue  # an image without annotations
            for j, ann in enumerate(anns_of.get(img["id"], [])):
                m = _resize(_decode(ann["segmentation"], img["height"], img["width"]), (w, h), True)
                if m.sum() == 0:
                    continue
                rle = mask_utils.encode(np.asfortranarray(m))
                poly = _polygons(m)
                if j % 2 == 0 and poly:  # polygons for some instances, compressed RLE for the others
                    seg: object = poly
                else:
                    seg = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
                box = [float(v) for v in mask_utils.toBbox(rle)]
                new_anns.append({**ann, "segmentation": seg, "bbox": box, "area": float(m.sum())})
                if split == "train" and k == 6 and j == 0:  # a crowd region, which crops and boxes ignore
                    new_anns.append({**new_anns[-1], "id": 10_000 + ann["id"], "iscrowd": 1})
        coco["images"], coco["annotations"] = new_images, new_anns
        (out / f"instances_{split}.json").write_text(json.dumps(coco))


def write_bgchallenge(data: Path, out: Path) -> list[str]:
    """``out/<variant>/<split>/<class>/*.JPEG`` + ``out/fg_mask/<split>/<class>/*.npy``; returns the class folders."""
    train = open_set(data / "single" / "train.h5")
    folders = [f"{i:02d}_{c}" for i, c in enumerate(train.classes)]
    splits = {
        ("original", "train"): "train",
        **{(v, "val"): ("original" if v == "original" else v) for v in BG_VARIANTS},
    }
    for (variant, split), set_name in splits.items():
        s = open_set(data / "single" / f"{set_name}.h5")
        for i, image_id in enumerate(s.ids):
            w, h = SIZES[i % len(SIZES)]
            folder = out / variant / split / folders[int(s.labels[i])]
            folder.mkdir(parents=True, exist_ok=True)
            stem = image_id.replace("/", "_")
            as_png = variant == "original" and split == "train" and i == 1  # a PNG file named .JPEG
            Image.fromarray(_resize(s.image(i), (w, h))).save(
                folder / f"{stem}.JPEG", format="PNG" if as_png else "JPEG"
            )
            if variant == "original":
                masks = out / "fg_mask" / split / folders[int(s.labels[i])]
                masks.mkdir(parents=True, exist_ok=True)
                np.save(masks / f"{stem}.npy", _resize(s.mask(i), (w, h), True).astype(bool))
    return folders


def write_shift(data: Path, out: Path, folders: list[str]) -> None:
    """``out/<set>/<class>/*.png`` from the embedded shift sets, with the Background Challenge's class folders."""
    for path in sorted((data / "shift").glob("*.h5")):
        s = open_set(path)
        for i, image_id in enumerate(s.ids):
            folder = out / path.stem / folders[int(s.labels[i])]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(s.image(i)).save(folder / f"{image_id.replace('/', '_')}.png")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("real")
    data = generate_tiny(base / "embedded")
    real = base / "datasets"
    write_coco(data, real / "coco")
    folders = write_bgchallenge(data, real / "bg")
    write_shift(data, real / "shift", folders)
    shutil.rmtree(data)
    overrides = deep_update(
        json.loads(json.dumps(TINY)),
        {
            "data": {
                "source": "real",
                "real": {
                    "root": str(real),
                    "multi_images": "coco/images",
                    "multi_train_json": "coco/instances_train.json",
                    "multi_test_json": "coco/instances_test.json",
                    "single_format": "bgchallenge",
                    "single_root": "bg",
                    "shift_root": "shift",
                },
            },
            "pretrain": {"image_size": 32},
            "shift": {"bias_pairs": []},
        },
    )
    project = make_project(base, overrides)
    dvc(project, "repro")
    return project


def test_every_stage_runs_on_real_files(project: Path) -> None:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    spec = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    seeded = {name for name, stage in spec.items() if re.search(r"extra_seeds|oracles", str(stage.get("matrix", "")))}
    assert {name.split("@")[0] for name in lock} == set(spec) - seeded
    assert {"retrain@moco-bgmix", "retrain@byol-bgmix", "report"} <= set(lock)
    for variant in ("moco-bgmix", "byol-bgmix"):
        retrain = json.loads((project / "artifacts" / "metrics" / f"retrain-{variant}.json").read_text())
        assert 0.0 <= retrain["mix_rate"] <= 1.0
    assert (project / "artifacts" / "report.md").is_file()


def test_evaluations_read_the_real_splits(project: Path) -> None:
    lineval = json.loads((project / "artifacts" / "metrics" / "lineval-moco.json").read_text())
    # crops of the COCO test JSON (no crowd there) and the Background Challenge original/val split
    coco_test = json.loads((project.parent / "datasets" / "coco" / "instances_test.json").read_text())
    assert lineval["crops"]["test_images"] == len(coco_test["annotations"])
    assert lineval["original"]["test_images"] == TINY["data"]["benchmark"]["single"]["test"]
    shift = read_results(project / "artifacts" / "metrics" / "shift-moco.json")
    assert {f"bg/{v}/top1" for v in BG_VARIANTS} <= set(shift)


def test_cam_store_keeps_the_training_size_and_its_geometry(project: Path) -> None:
    from oacl.io.camstore import CamStore

    for name in ("multi", "single"):
        store = CamStore(project / "artifacts" / "cam" / f"{name}.h5")
        assert store.read_all("masks").shape[1:] == (32, 32)
        assert store.mask_geometry == "resize-full"
