"""The bad-input catalogue: each bad input gives one clear error (or its documented fallback), never a traceback.

Bad inputs are fed to the real stage scripts, run as ``dvc repro`` runs them
(``PYTHONPATH=src python stages/<stage>.py ...``, a subprocess; see :mod:`stagekit`) on tiny data
made once per module: the embedded benchmark at the smoke sizes, its real-format copies (a COCO
instances JSON over a folder of PNG files, an ImageFolder tree), randomly initialised MoCo / BYOL
backbones and CAM stores made from the ground truth. Every case asserts a non-zero exit, exactly
one ``error: ...`` line on stderr — the last thing printed — that names the culprit (file, key
or id), no Python traceback, and no file at any output path of the failing stage.

Degenerate data that the pipeline handles by a documented fallback (an image without a box, a
constant CAM, all-foreground / all-background masks, a truncated or foreign resume checkpoint)
runs the stages' library entry points in-process (the stage script is a thin shell around them)
and asserts the fallback's effect on the metrics.

The message each case produces is listed in ``CASES`` (``expect``: a fixed part of it).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from stagekit import (
    REPO,
    SMOKE,
    assert_one_clear_error,
    deep_update,
    export_real,
    export_tiny_backbone,
    generate_tiny,
    params_file,
    run_script,
    truncate,
    write_gt_cam_store,
)


@dataclass(frozen=True)
class Kit:
    """The tiny inputs every case starts from (never modified: cases copy what they break)."""

    root: Path  # scratch folder of the module
    data: Path  # embedded benchmark, smoke sizes
    real: dict[str, str]  # data.real block of the real-format copies
    models: Path  # pretrain-<method>/backbone.pt for moco and byol
    cam: Path  # multi.h5, single.h5 from the ground truth


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("catalogue")
    data = generate_tiny(root / "data")
    real = export_real(data, root / "real")
    for method in ("moco", "byol"):
        export_tiny_backbone(root / "models" / f"pretrain-{method}" / "backbone.pt", method)
    for name in ("multi", "single"):
        write_gt_cam_store(root / "cam" / f"{name}.h5", data / name / "train.h5")
    return Kit(root, data, real, root / "models", root / "cam")


@pytest.fixture
def one_thread():
    """In-process stage runs use one intra-op thread (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ bad input


@dataclass(frozen=True)
class Case:
    """One bad input: how to run the stage on it and what its one error line must say.

    stage / args: the script and its arguments (besides ``--params`` and ``--out-dir``);
    params: overrides of the smoke params; culprit: the path / key / id the message must name;
    expect: a fixed part of the message.
    """

    stage: str
    args: tuple[Any, ...]
    params: dict[str, Any]
    culprit: str
    expect: str


def _real(kit: Kit, dataset: str, **extra: Any) -> dict[str, Any]:
    """Params for pretraining MoCo on the real-format copies (one batch of all 24 images: a bad file is met at once)."""
    return deep_update(
        {
            "data": {"source": "real", "real": {**kit.real, "root": str(kit.root.parent)}},  # holds every test's folder
            "pretrain": {"dataset": dataset, "image_size": 32, "batch_size": 24, "moco": {"queue_size": 8}},
        },
        extra,
    )


def _copy_real(kit: Kit, work: Path, part: str) -> Path:
    """A private copy of the real-format ``part`` (``coco`` or ``folder``) to break."""
    dst = work / part
    shutil.copytree(kit.root / "real" / part, dst)
    return dst


def coco_image(kit: Kit, work: Path, *, workers: int = 0, delete: bool = False) -> Case:
    coco = _copy_real(kit, work, "coco")
    image = coco / "images" / "multi-train-00003.png"
    if delete:
        image.unlink()
    else:
        image.write_bytes(image.read_bytes()[:60])  # a PNG cut short
    real = {"multi_images": str(coco / "images"), "multi_train_json": str(coco / "instances_train.json")}
    what = "does not exist" if delete else "cannot be decoded (corrupt or truncated?)"
    return Case(
        "pretrain",
        ("--method", "moco"),
        _real(kit, "multi", data={"real": real}, pretrain={"workers": workers}),
        str(image),
        f"error: image file {image} {what}",
    )


def folder_image(kit: Kit, work: Path) -> Case:
    folder = _copy_real(kit, work, "folder")
    image = sorted(folder.rglob("single-train-*.png"))[5]
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # the PNG signature, then garbage
    for other in folder.rglob("*.png"):  # keep the 24 training images: one batch
        if not other.name.startswith("single-train-"):
            other.unlink()
    return Case(
        "pretrain",
        ("--method", "moco"),
        _real(kit, "single", data={"real": {"single_root": str(folder)}}),
        str(image),
        f"error: image file {image} cannot be decoded",
    )


def folder_missing(kit: Kit, work: Path) -> Case:
    missing = work / "no-such-folder"
    return Case(
        "pretrain",
        ("--method", "moco"),
        _real(kit, "single", data={"real": {"single_root": str(missing)}}),
        str(missing),
        f"error: image folder {missing} does not exist",
    )


def coco_json(kit: Kit, work: Path, how: str) -> Case:
    coco = _copy_real(kit, work, "coco")
    path = coco / "instances_train.json"
    text = path.read_text()
    raw = json.loads(text)
    if how == "unparsable":
        path.write_text(text[: len(text) // 2])
        culprit, expect = str(path), "is not valid JSON: "
    elif how == "box_outside":
        ann = raw["annotations"][2]
        ann["bbox"] = [20.0, 20.0, 30.0, 8.0]  # x + w = 50 on a 32 px image
        path.write_text(json.dumps(raw))
        culprit, expect = (
            f"annotation {ann['id']} (image {ann['image_id']})",
            "bbox [20.0, 20.0, 30.0, 8.0] (x, y, w, h) lies outside the 32x32 image",
        )
    elif how == "file_name_escapes":
        raw["images"][1]["file_name"] = "../../secret.png"
        path.write_text(json.dumps(raw))
        culprit, expect = "'../../secret.png'", "points outside the image folder"
    else:  # an annotation's category id is not among the file's categories
        ann = raw["annotations"][4]
        ann["category_id"] = 99
        path.write_text(json.dumps(raw))
        culprit, expect = (
            f"annotation {ann['id']} (image {ann['image_id']})",
            "has category_id 99, not among the categories [1, 2, 3, 4, 5, 6, 7, 8]",
        )
    real = {"multi_images": str(coco / "images"), "multi_train_json": str(path)}
    return Case("pretrain", ("--method", "moco"), _real(kit, "multi", data={"real": real}), culprit, expect)


def coco_test_categories(kit: Kit, work: Path) -> Case:
    """The test split's JSON names other categories than the train split's: the linear probe cannot compare them."""
    coco = _copy_real(kit, work, "coco")
    path = coco / "instances_test.json"
    raw = json.loads(path.read_text())
    raw["categories"] = [c for c in raw["categories"] if c["id"] != 8]
    raw["annotations"] = [a for a in raw["annotations"] if a["category_id"] != 8]
    path.write_text(json.dumps(raw))
    real = {
        "multi_images": str(coco / "images"),
        "multi_train_json": str(coco / "instances_train.json"),
        "multi_test_json": str(path),
    }
    return Case(
        "lineval",
        ("--model", "random"),
        _real(kit, "multi", data={"real": real}),
        f"{path} (crops) has 7 classes",
        "the splits of a linear probe must share one class list",
    )


def cam_store(kit: Kit, work: Path, how: str) -> Case:
    cam = work / "cam"
    shutil.copytree(kit.cam, cam)
    store = cam / "single.h5"
    if how == "schema":
        with h5py.File(store, "r+") as f:
            f.attrs["schema"] = "oacl.cam/0"
        expect = "schema is 'oacl.cam/0', expected 'oacl.cam/1'"
    elif how == "ids":  # made for the other data set
        write_gt_cam_store(store, kit.data / "single" / "train.h5", ids_from=kit.data / "multi" / "train.h5")
        expect = "24 of the data set's 24 image ids are not in the CAM store (first: 'single-train-00000')"
    else:
        truncate(kit.cam / "single.h5", store)
        expect = "not a readable CAM store (Unable to synchronously open file (truncated file"
    return Case("retrain", ("--method", "moco", "--debias", "bgmix", "--cam-dir", cam), {}, str(store), expect)


def backbone(kit: Kit, work: Path, stage: str, how: str) -> Case:
    """A broken ``pretrain-moco/backbone.pt`` for contracam (``--model``) or lineval@moco (``--models-dir``)."""
    good = kit.models / "pretrain-moco" / "backbone.pt"
    path = work / "models" / "pretrain-moco" / "backbone.pt"
    path.parent.mkdir(parents=True)
    if how == "truncated":
        truncate(good, path)
        expect = "cannot be read (truncated, corrupt or not a checkpoint): PytorchStreamReader failed"
    elif how == "arch":  # says ResNet-50 (the params say ResNet-18)
        obj = torch.load(good, weights_only=True)
        torch.save({**obj, "arch": "resnet50"}, path)
        # contracam builds what the file says and the weights do not fit; lineval checks pretrain.arch first
        expect = (
            "do not fit: Error(s) in loading state_dict for ResNet"
            if stage == "contracam"
            else "holds architecture 'resnet50', expected 'resnet18'"
        )
    else:  # a BYOL model where the MoCo model belongs
        shutil.copy(kit.models / "pretrain-byol" / "backbone.pt", path)
        expect = "was trained with method 'byol', expected 'moco'"
    args = (
        ("--dataset", "single", "--model", path)
        if stage == "contracam"
        else ("--model", "moco", "--models-dir", work / "models")
    )
    return Case(stage, args, {}, str(path), expect)


def path_escape(kit: Kit, work: Path) -> Case:
    """A params path that climbs out of ``data.real.root`` (here: the folder above every test's) is refused before any read."""
    escape = "../../../etc/instances.json"
    real = {"multi_images": str(kit.root / "real" / "coco" / "images"), "multi_train_json": escape}
    return Case(
        "pretrain",
        ("--method", "moco"),
        _real(kit, "multi", data={"real": real}),
        f"'data.real.multi_train_json' = {escape!r}",
        "points outside 'data.real.root' = ",
    )


def params_case(
    stage: str, args: tuple[Any, ...], overrides: dict[str, Any], culprit: str, expect: str
) -> Callable[[Kit, Path], Case]:
    return lambda kit, work: Case(stage, args, overrides, culprit, expect)


CASES: dict[str, Callable[[Kit, Path], Case]] = {
    # data sets (pretrain on real-format data)
    "coco-corrupt-image": coco_image,
    "coco-corrupt-image-in-a-loader-worker": lambda kit, work: coco_image(kit, work, workers=1),
    "coco-missing-image": lambda kit, work: coco_image(kit, work, delete=True),
    "imagefolder-corrupt-image": folder_image,
    "imagefolder-missing-folder": folder_missing,
    "coco-json-unparsable": lambda kit, work: coco_json(kit, work, "unparsable"),
    "coco-box-outside-the-image": lambda kit, work: coco_json(kit, work, "box_outside"),
    "coco-unknown-category-id": lambda kit, work: coco_json(kit, work, "category"),
    "coco-file-name-outside-the-image-folder": lambda kit, work: coco_json(kit, work, "file_name_escapes"),
    "params-real-path-outside-the-data-root": path_escape,
    "coco-test-categories-differ": coco_test_categories,  # lineval@random on real data
    # CAM stores (retrain@moco-bgmix)
    "cam-wrong-schema": lambda kit, work: cam_store(kit, work, "schema"),
    "cam-ids-of-another-set": lambda kit, work: cam_store(kit, work, "ids"),
    "cam-truncated": lambda kit, work: cam_store(kit, work, "truncated"),
    # checkpoints
    **{
        f"{stage}-backbone-{how}": (lambda s, h: lambda kit, work: backbone(kit, work, s, h))(stage, how)
        for stage in ("contracam", "lineval")
        for how in ("truncated", "arch", "method")
    },
    # params: every stage validates the whole file first
    "params-unknown-key": params_case(
        "contracam",
        ("--dataset", "single"),
        {"lineval": {"l2_weights": 5}},
        "'lineval.l2_weights'",
        "error: params: unknown key 'lineval.l2_weights' (known keys here:",
    ),
    "params-wrong-type": params_case(
        "retrain",
        ("--method", "moco", "--debias", "oacrop"),
        {"pretrain": {"batch_size": "eight"}},
        "'pretrain.batch_size'",
        "error: params: 'pretrain.batch_size' must be an integer, got 'eight'",
    ),
    "params-pmix-above-1": params_case(
        "contracam",
        ("--dataset", "multi"),
        {"pmix": 1.5},
        "'pmix'",
        "error: params: 'pmix' = 1.5 is out of range (must be <= 1.0)",
    ),
    "params-iters-0": params_case(
        "contracam",
        ("--dataset", "multi"),
        {"contracam": {"multi": {"iters": 0}}},
        "'contracam.multi.iters'",
        "error: params: 'contracam.multi.iters' = 0 is out of range (must be >= 1)",
    ),
    "params-image-size-below-the-stem": params_case(
        "pretrain",
        ("--method", "moco"),
        {"pretrain": {"image_size": 16}},
        "'pretrain.image_size' = 16",
        "is too small for 'pretrain.stem' = 'standard', which downsamples 32x to layer4",
    ),
    "params-negative-group-larger-than-the-batch": params_case(
        "contracam",
        ("--dataset", "single"),
        {"contracam": {"single": {"batch_size": 8, "neg_batch": 16}}},
        "'contracam.single.neg_batch' = 16",
        "is larger than 'contracam.single.batch_size' = 8",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_error(name: str, kit: Kit, tmp_path: Path) -> None:
    case = CASES[name](kit, tmp_path)
    params = params_file(tmp_path / "params.yaml", kit.data, case.params)
    out = tmp_path / "artifacts"
    proc = run_script(case.stage, *case.args, "--params", params, "--out-dir", out)
    line = assert_one_clear_error(proc, case.culprit, out)
    assert case.expect in line, line
    assert proc.returncode == 2


@pytest.mark.parametrize(
    "stage,argv,message",
    [
        ("pretrain", ["--method", "simclr"], "argument --method: invalid choice: 'simclr' (choose from"),
        (
            "retrain",
            ["--method", "moco", "--debias", "nosuch"],
            "argument --debias: invalid choice: 'nosuch' (choose from",
        ),
        ("lineval", ["--model", "moco-nosuch"], "argument --model: invalid choice: 'moco-nosuch' (choose from"),
    ],
)
def test_unknown_method_debias_or_model_name_is_refused_by_the_command_line(
    stage: str, argv: list[str], message: str, capsys
) -> None:
    """The same parser the script runs (argparse exits 2 with its usage line and one error line)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{stage}_stage", REPO / "stages" / f"{stage}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exc:
        module.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: ") and len([ln for ln in err if "error:" in ln]) == 1
    assert message in err[-1]


# --------------------------------------------------------------------------- fallbacks


def _params(kit: Kit, **overrides: Any) -> Any:
    from oacl.config import Params, parse_section

    raw = deep_update(json.loads(json.dumps(SMOKE)), {"data": {"root": str(kit.data)}})
    return parse_section(Params, deep_update(raw, overrides))


def _degenerate_cam(kit: Kit, work: Path, *, masks: int | None = None, boxes_every: int = 1) -> Path:
    """GT CAM stores with every soft mask set to ``masks`` (0..255) and boxes kept on every ``boxes_every``-th image."""
    from oacl.io.sets import open_set

    cam = work / "cam"
    for name in ("multi", "single"):
        s = open_set(kit.data / name / "train.h5")
        n, size = len(s), s.info.image_size
        boxes = [s.boxes_of(i)[0] / size if i % boxes_every == 0 else np.zeros((0, 4), np.float32) for i in range(n)]
        extra: dict[str, Any] = {"boxes": boxes}
        if masks is not None:
            extra["masks"] = np.full((n, size, size), masks, np.uint8)
        write_gt_cam_store(cam / f"{name}.h5", kit.data / name / "train.h5", **extra)
    return cam


def test_images_without_a_box_fall_back_to_the_whole_image(kit: Kit, tmp_path: Path, one_thread) -> None:
    """OA-Crop: an image whose CAM store entry has no box is cropped as a whole (``box_rate`` counts the boxed ones)."""
    from oacl.train.retrain import retrain_paths, run_retrain

    cam = _degenerate_cam(kit, tmp_path, boxes_every=2)
    metrics = run_retrain(
        _params(kit), "moco", "oacrop", retrain_paths(tmp_path / "out", "moco", "oacrop"), cam_dir=cam
    )
    assert metrics is not None
    assert metrics["box_rate"] == 0.5  # one epoch over all 48 images, every other one without a box
    assert 0.5 < metrics["box_area"] < 1.0 and np.isfinite(metrics["final_loss"])


@pytest.mark.parametrize("fill,mix", [(255, False), (0, True)])
def test_all_foreground_and_all_background_masks(kit: Kit, tmp_path: Path, one_thread, fill: int, mix: bool) -> None:
    """BG-Mixup: an all-foreground mask leaves no background to donate, so nothing mixes (``mix_rate`` 0);
    an all-background one makes the whole image a donor tile, and patches mix at the rate pmix asks."""
    from oacl.train.retrain import retrain_paths, run_retrain

    cam = _degenerate_cam(kit, tmp_path, masks=fill)
    params = _params(kit, pmix=0.5)
    metrics = run_retrain(params, "moco", "bgmix", retrain_paths(tmp_path / "out", "moco", "bgmix"), cam_dir=cam)
    assert metrics is not None and np.isfinite(metrics["final_loss"])
    if mix:
        assert 0.2 < metrics["mix_rate"] < 0.8  # 96 patches at p = 0.5
    else:
        assert metrics["mix_rate"] == 0.0


def test_constant_cam_gives_empty_masks_and_no_boxes(kit: Kit, tmp_path: Path, one_thread) -> None:
    """ContraCAM with all-zero gradients (a projector whose last layer is zero: every embedding is the same)
    gives a CAM of 0 everywhere, hence empty masks and no box (min-max normalisation with eps: 0, not NaN);
    OA-Crop then takes every whole image."""
    from oacl.cam.pipeline import CamPaths, run_contracam_stage
    from oacl.io.camstore import CamStore
    from oacl.train.retrain import retrain_paths, run_retrain

    obj = torch.load(kit.models / "pretrain-moco" / "backbone.pt", weights_only=True)
    last = max(k for k in obj["projector"] if k.endswith(".weight"))  # the last Linear
    obj["projector"][last] = torch.zeros_like(obj["projector"][last])
    path = tmp_path / "flat.pt"
    torch.save(obj, path)
    cam = tmp_path / "art"
    for name in ("multi", "single"):
        metrics = run_contracam_stage(_params(kit), name, path, CamPaths.under(cam, name))
        store = CamStore(cam / "cam" / f"{name}.h5")
        assert store.read_all("masks").max() == 0 and store.read_all("masks_refined").max() == 0
        assert metrics["boxes_per_image"]["cam"] == 0.0 and metrics["boxes_per_image"]["no_box_pct"] == 100.0
        assert metrics["mask_miou_soft_pct"]["soft_cam"] >= 0.0 and metrics["pxap_pct"]["cam"] >= 0.0
    out = run_retrain(
        _params(kit), "moco", "oacrop", retrain_paths(tmp_path / "out", "moco", "oacrop"), cam_dir=cam / "cam"
    )
    assert out is not None and out["box_rate"] == 0.0 and out["box_area"] == 1.0


def test_truncated_resume_checkpoint_restarts_the_run(kit: Kit, tmp_path: Path, one_thread, caplog) -> None:
    """A resume checkpoint cut short (a kill while the disk was full) is not an error: the run starts afresh."""
    from oacl.train.retrain import retrain_paths, run_retrain

    paths = retrain_paths(tmp_path / "out", "moco", "oacrop")
    truncate(kit.models / "pretrain-moco" / "backbone.pt", paths.cache_dir / "last.pt")
    with caplog.at_level(logging.WARNING, logger="oacl"):
        metrics = run_retrain(_params(kit), "moco", "oacrop", paths, cam_dir=kit.cam)
    assert metrics is not None and metrics["resumed_from_epoch"] == 0 and metrics["epochs"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        w.startswith(f"not resuming: checkpoint {paths.cache_dir / 'last.pt'} cannot be read") for w in warnings
    ), warnings


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("method", "byol", "was trained with method 'byol', expected 'moco'"),
        ("arch", "resnet50", "holds architecture 'resnet50', expected 'resnet18'"),
    ],
)
def test_resume_checkpoint_of_another_model_is_ignored(
    tmp_path: Path, caplog, field: str, value: str, message: str
) -> None:
    """The engine's resume step: a checkpoint of another method or architecture is not loaded (the run starts afresh)."""
    from oacl.io.checkpoint import TRAIN_FORMAT, save_checkpoint
    from oacl.models.moco import MoCo
    from oacl.train.engine import _resume_state

    model = MoCo("resnet18", "standard", proj_hidden=16, proj_dim=8, queue_size=8)
    header = {
        "format": TRAIN_FORMAT,
        "method": "moco",
        "arch": "resnet18",
        "stem": "standard",
        "epoch": 1,
        "model": {},
        "optimizer": {},
        "resume_key": "k",
    }
    path = tmp_path / "last.pt"
    save_checkpoint(path, {**header, field: value})
    with caplog.at_level(logging.WARNING, logger="oacl"):
        assert _resume_state(path, "k", model) is None
    assert f"not resuming: checkpoint {path} {message}" in caplog.text
