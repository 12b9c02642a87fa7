"""Helpers of the reliability tests (test_catalogue, test_interrupt, test_determinism): run the real stage scripts.

- :func:`generate_tiny` writes the embedded benchmark at the smoke sizes of ``params.smoke.yaml``
  (about 0.3 s); :func:`export_real` turns its training splits into real-format data: a COCO
  instances JSON over a folder of PNG files (multi) and an ImageFolder tree (single).
- :func:`params_file` writes a params file: the smoke overlay plus overrides (every other key
  takes its default, as a stage would read it).
- :func:`run_script` runs ``stages/<name>.py`` in a subprocess exactly as ``dvc repro`` does
  (``PYTHONPATH=src``), pinned to one core (hence one intra-op thread).
- :func:`assert_one_clear_error` is the catalogue's contract for a failing stage.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE: dict[str, Any] = yaml.safe_load((REPO / "params.smoke.yaml").read_text())


def deep_update(base: dict, extra: Mapping) -> dict:
    """``base`` with ``extra`` merged in, section by section (in place; returned)."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def generate_tiny(root: Path, **bench: Any) -> Path:
    """The embedded benchmark at the smoke sizes (plus ``bench`` overrides) under ``root``."""
    from oacl.config import BenchmarkConfig, parse_section
    from oacl.data.benchmark import generate_benchmark

    cfg = deep_update(copy.deepcopy(SMOKE["data"]["benchmark"]), bench)
    generate_benchmark(parse_section(BenchmarkConfig, cfg), root)
    return root


def export_real(data_root: Path, real_root: Path) -> dict[str, str]:
    """Real-format copies of the tiny benchmark; returns the ``data.real`` params block.

    multi: ``<real>/coco/images/<id>.png`` + ``instances_{train,test}.json`` (file_name = ``<id>.png``);
    single: ``<real>/folder/<class>/<id>.png`` (ImageFolder, ORIGINAL train + val + test).
    """
    from PIL import Image

    from oacl.io.sets import open_set

    images = real_root / "coco" / "images"
    images.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        s = open_set(data_root / "multi" / f"{split}.h5")
        for i, image_id in enumerate(s.ids):
            Image.fromarray(s.image(i)).save(images / f"{image_id}.png")
        coco = json.loads((data_root / "multi" / f"instances_{split}.json").read_text())
        for img in coco["images"]:
            img["file_name"] = f"{img['file_name']}.png"
        (real_root / "coco" / f"instances_{split}.json").write_text(json.dumps(coco))
    folder = real_root / "folder"
    for split in ("train", "val", "original"):
        s = open_set(data_root / "single" / f"{split}.h5")
        for i, image_id in enumerate(s.ids):
            (folder / s.classes[int(s.labels[i])]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(s.image(i)).save(folder / s.classes[int(s.labels[i])] / f"{image_id}.png")
    return {
        "multi_format": "coco",
        "multi_images": str(images),
        "multi_train_json": str(real_root / "coco" / "instances_train.json"),
        "multi_test_json": str(real_root / "coco" / "instances_test.json"),
        "single_format": "imagefolder",
        "single_root": str(folder),
    }


def params_file(path: Path, data_root: Path, overrides: Mapping[str, Any] | None = None) -> Path:
    """Write the smoke params (``data.root`` = ``data_root``) with ``overrides`` merged in; returns ``path``."""
    raw = deep_update(copy.deepcopy(SMOKE), {"data": {"root": str(data_root)}})
    deep_update(raw, overrides or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ``python stages/<stage>.py args`` as the child's __main__ (runpy sets sys.argv[0], __file__ and
# __main__ as running the file does), pinned to one core first: a stage sizes its thread pool by
# its CPU affinity, and a tiny run on one thread is deterministic, cheaper in CPU time and does
# not oversubscribe a shared machine (measured: 7 s instead of 48 s of CPU for 3 tiny epochs on
# 2 busy cores). ``hook`` is Python run before the stage (tests use it to kill mid-write).
_LAUNCH = """
import os, runpy, sys
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
sys.argv = sys.argv[1:]
%s
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def stage_cmd(stage: str, *args: str | Path, hook: str = "") -> list[str]:
    """The command line of stage script ``stages/<stage>.py`` with ``args`` (see ``_LAUNCH``)."""
    return [sys.executable, "-c", _LAUNCH % hook, str(REPO / "stages" / f"{stage}.py"), *(str(a) for a in args)]


def stage_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def run_script(
    stage: str, *args: str | Path, hook: str = "", cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``PYTHONPATH=src python stages/<stage>.py args...`` (as dvc.yaml runs it); output captured as text."""
    return subprocess.run(
        stage_cmd(stage, *args, hook=hook),
        cwd=cwd or REPO,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def output_files(out: Path, *, ignore: tuple[str, ...] = ("cache",)) -> list[str]:
    """Every file under ``out`` (relative paths), leaving out the top-level folders in ``ignore``."""
    if not out.exists():
        return []
    files = [p.relative_to(out) for p in out.rglob("*") if p.is_file() or p.is_symlink()]
    return sorted(str(p) for p in files if p.parts[0] not in ignore)


def error_lines(stderr: str) -> list[str]:
    """The lines a stage prints for a user error: ``error: ...`` (ours) or ``<prog>: error: ...`` (argparse)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("error: ") or ".py: error: " in ln]


def assert_one_clear_error(proc: subprocess.CompletedProcess, culprit: str, out: Path) -> str:
    """Non-zero exit, exactly one error line naming ``culprit``, no traceback, no output file; returns the line."""
    tail = proc.stderr[-3000:]
    assert proc.returncode != 0, f"the stage succeeded:\n{tail}"
    assert "Traceback" not in proc.stderr, f"a traceback instead of a message:\n{tail}"
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, f"expected one error line, got {lines}:\n{tail}"
    assert culprit in lines[0], f"{culprit!r} not named in {lines[0]!r}"
    assert proc.stderr.rstrip().endswith(lines[0]), f"the error is not the last thing printed:\n{tail}"
    left = output_files(out)
    assert left == [], f"the failing stage left outputs behind: {left}"
    return lines[0]


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (a file cut short by a full disk or a kill)."""
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def write_gt_cam_store(path: Path, set_path: Path, *, ids_from: Path | None = None, **overrides: Any) -> Path:
    """A CAM store of the set file ``set_path`` made from its ground truth (soft mask = GT x 200, boxes = GT boxes).

    ``ids_from``: take the image ids of another set file (a store made for another data set);
    ``overrides``: replace ``masks`` / ``boxes`` (a list of N normalized (k, 4) arrays).
    """
    from oacl.io.camstore import write_cam_store
    from oacl.io.sets import open_set

    s = open_set(set_path)
    n, size = len(s), s.info.image_size
    ids = open_set(ids_from).ids[:n] if ids_from is not None else s.ids
    masks = np.stack([s.mask(i) for i in range(n)]).astype(np.uint8) * 200
    boxes = [s.boxes_of(i)[0] / size for i in range(n)]
    kw: dict[str, Any] = {"masks": masks, "boxes": boxes}
    kw.update(overrides)
    write_cam_store(
        path,
        image_ids=ids,
        checkpoint_sha256="0" * 64,
        params={"source": "ground truth"},
        image_size=size,
        iters=1,
        expand_res=1,
        crf=False,
        **kw,
    )
    return path


def export_tiny_backbone(path: Path, method: str = "moco", *, seed: int = 0) -> Path:
    """A randomly initialised MoCo / BYOL of the smoke sizes, exported as ``pretrain@<method>`` would (32 px views)."""
    import torch

    from oacl.augment.views import AugmentSettings
    from oacl.config import PretrainConfig, parse_section
    from oacl.io.checkpoint import export_backbone
    from oacl.train.pretrain import build_method

    aug = AugmentSettings(size=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_method(method, parse_section(PretrainConfig, SMOKE["pretrain"]))
    export_backbone(path, model, image_size=32, mean=aug.mean, std=aug.std)
    return path
