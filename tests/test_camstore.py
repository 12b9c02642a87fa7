"""The CAM HDF5 store: round trip, deterministic bytes, clear failures."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from oacl.errors import DataError
from oacl.io.camstore import CAM_SCHEMA, CamStore, write_cam_store

N, H, W = 5, 16, 16
IDS = [f"scene_{i:03d}" for i in range(N)]


def example() -> dict:
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 256, size=(N, H, W)).astype(np.uint8)
    refined = (masks > 128).astype(np.uint8)
    boxes = [
        np.array([[0.1, 0.2, 0.5, 0.6]], np.float32),
        np.zeros((0, 4), np.float32),  # an image without a box
        np.array([[0.0, 0.0, 1.0, 1.0], [0.25, 0.25, 0.75, 0.5]], np.float32),
        np.array([[0.3, 0.3, 0.4, 0.4]], np.float32),
        np.zeros((0, 4), np.float32),
    ]
    return dict(
        image_ids=IDS,
        masks=masks,
        masks_refined=refined,
        boxes=boxes,
        checkpoint_sha256="ab" * 32,
        params={"iters": 10, "expand_res": 2, "crf": True},
        image_size=H,
        iters=10,
        expand_res=2,
        crf=True,
    )


def write(path: Path, **over) -> dict:
    kwargs = example()
    kwargs.update(over)
    write_cam_store(path, **kwargs)
    return kwargs


def test_round_trip(tmp_path: Path) -> None:
    data = write(tmp_path / "cam.h5")
    store = CamStore(tmp_path / "cam.h5", expected_ids=IDS)
    assert store.ids == tuple(IDS) and len(store) == N and "scene_002" in store
    for i, image_id in enumerate(IDS):
        np.testing.assert_array_equal(store.mask(image_id), data["masks"][i])
        np.testing.assert_array_equal(store.refined_mask(image_id), data["masks_refined"][i])
        np.testing.assert_array_equal(store.boxes(image_id), data["boxes"][i])
        assert store.boxes(image_id).dtype == np.float32 and store.boxes(image_id).shape[1] == 4
    assert store.boxes("scene_001").shape == (0, 4)
    np.testing.assert_array_equal(store.box_index, [0, 1, 1, 3, 4, 4])
    np.testing.assert_array_equal(store.read_all("masks"), data["masks"])
    assert [len(b) for b in store.boxes_list()] == [1, 0, 2, 1, 0]
    assert store.attrs == {
        "schema": CAM_SCHEMA,
        "checkpoint_sha256": "ab" * 32,
        "params": data["params"],
        "image_size": [H, W],
        "iters": 10,
        "expand_res": 2,
        "crf": True,
        "mask_geometry": "resize-full",
    }
    assert store.mask_geometry == "resize-full"
    store.close()


def test_layout_matches_the_contract(tmp_path: Path) -> None:
    write(tmp_path / "cam.h5")
    with h5py.File(tmp_path / "cam.h5", "r") as f:
        assert set(f) == {"image_ids", "masks", "masks_refined", "boxes", "box_index"}
        assert f["masks"].dtype == np.uint8 and f["masks"].shape == (N, H, W)
        assert f["masks"].compression == "gzip" and f["masks"].chunks is not None
        assert f["boxes"].dtype == np.float32 and f["boxes"].shape == (4, 4)
        assert f["box_index"].dtype == np.int64 and f["box_index"].shape == (N + 1,)
        assert h5py.check_string_dtype(f["image_ids"].dtype).encoding == "utf-8"
        assert f.attrs["schema"] == CAM_SCHEMA and int(f.attrs["image_size"]) == H
        assert f.attrs["mask_geometry"] == "resize-full"


def test_mask_geometry_absent_reads_as_resize_full_unknown_fails(tmp_path: Path) -> None:
    path = tmp_path / "cam.h5"
    write(path)
    with h5py.File(path, "a") as f:  # a store written before the attribute existed
        del f.attrs["mask_geometry"]
    store = CamStore(path)
    assert store.mask_geometry == "resize-full" and store.attrs["mask_geometry"] == "resize-full"
    store.close()
    with h5py.File(path, "a") as f:
        f.attrs["mask_geometry"] = "center-crop"
    with pytest.raises(DataError, match=r"cam\.h5.*mask_geometry is 'center-crop'"):
        CamStore(path)
    with pytest.raises(ValueError, match="mask_geometry.*'pad'"):
        write(tmp_path / "bad.h5", mask_geometry="pad")
    assert not (tmp_path / "bad.h5").exists()


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    write(tmp_path / "a.h5")
    write(tmp_path / "b.h5")
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.h5", "b.h5")]
    assert digest[0] == digest[1]


def test_store_without_crf_and_empty_store(tmp_path: Path) -> None:
    write(tmp_path / "nocrf.h5", masks_refined=None, crf=False)
    store = CamStore(tmp_path / "nocrf.h5")
    assert not store.has_refined and store.attrs["crf"] is False
    with pytest.raises(DataError, match="masks_refined"):
        store.refined_mask("scene_000")
    write_cam_store(
        tmp_path / "empty.h5",
        image_ids=[],
        masks=np.zeros((0, H, W), np.uint8),
        boxes=[],
        checkpoint_sha256="",
        params={},
        image_size=H,
        iters=1,
        expand_res=1,
        crf=False,
    )
    assert len(CamStore(tmp_path / "empty.h5")) == 0


def test_the_store_pickles_without_its_handle(tmp_path: Path) -> None:
    write(tmp_path / "cam.h5")
    store = CamStore(tmp_path / "cam.h5")
    store.mask("scene_000")  # opens the file in this process
    clone = pickle.loads(pickle.dumps(store))
    assert clone._file is None
    np.testing.assert_array_equal(clone.mask("scene_004"), store.mask("scene_004"))
    clone.close()
    store.close()


def test_wrong_schema_fails_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cam.h5"
    write(path)
    with h5py.File(path, "a") as f:
        f.attrs["schema"] = "oacl.set/1"
    with pytest.raises(DataError, match=r"cam\.h5.*schema"):
        CamStore(path)


def test_inconsistent_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "cam.h5"
    write(path)
    with h5py.File(path, "a") as f:
        del f["box_index"]
        f.create_dataset("box_index", data=np.array([0, 1, 2], np.int64))
    with pytest.raises(DataError, match="box_index"):
        CamStore(path)


def test_id_mismatch_fails(tmp_path: Path) -> None:
    path = tmp_path / "cam.h5"
    write(path)
    with pytest.raises(DataError, match=r"cam\.h5.*not in the CAM store.*'other'"):
        CamStore(path, expected_ids=IDS[:4] + ["other"])
    with pytest.raises(DataError, match="another order"):
        CamStore(path, expected_ids=list(reversed(IDS)))
    CamStore(path, expected_ids=IDS[1:3], exact=False)  # a subset is fine when not exact
    with pytest.raises(DataError, match="'missing'"):
        CamStore(path).mask("missing")


def test_truncated_and_missing_files_fail_clearly(tmp_path: Path) -> None:
    path = tmp_path / "cam.h5"
    write(path, masks=np.random.default_rng(1).integers(0, 256, (N, H, W)).astype(np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cam\.h5"):
        CamStore(path)
    with pytest.raises(DataError, match="not found"):
        CamStore(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match=r"text\.h5"):
        CamStore(tmp_path / "text.h5")


def test_writer_validates_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "cam.h5"
    with pytest.raises(ValueError, match="unique"):
        write(path, image_ids=IDS[:4] + [IDS[0]])
    bad = example()["boxes"]
    bad[0] = np.array([[0.1, 0.2, 1.5, 0.6]], np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write(path, boxes=bad)
    with pytest.raises(ValueError, match="masks_refined"):
        write(path, masks_refined=example()["masks"])  # 0..255 is not a binary mask
    with pytest.raises(ValueError, match="image_size"):
        write(path, image_size=32)
    assert not path.exists() and list(tmp_path.iterdir()) == []
