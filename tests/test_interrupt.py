"""SIGKILL in the middle of a stage, then rerun: no half-written output, and the same artifacts as a run never killed.

- ``pretrain@moco`` (3 epochs, tiny): killed once the first epoch's resume checkpoint exists,
  rerun, it resumes after that epoch and its ``backbone.pt`` is byte-identical to the one of an
  uninterrupted run with the same seed (and ``checkpoint.pt`` tensor-identical: its history
  also records seconds). ``retrain@<method>-<debias>`` is the same code path —
  :func:`oacl.train.retrain.run_retrain` calls :func:`oacl.train.pretrain.run_pretrain` with
  another augmentation, same engine, same resume checkpoint, same writes — so this one test
  covers it.
- ``contracam@single``: killed (SIGKILL, sent by the stage process to itself through a hook)
  right after ``/masks`` went into the temporary HDF5 file, i.e. mid-export: the store does
  not exist, only a temporary file beside it, which the rerun removes; the rerun's store is
  byte-identical to an uninterrupted run's.

Outputs appear only by atomic rename (:mod:`oacl.io.atomic`), so whatever a kill leaves is
a temporary file (``.<name>.<pid>.<random>.tmp``) or a resume checkpoint under ``cache/``,
never a file at an output's path; DVC, which caches outputs only after the command exits 0,
never sees a half-written one.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from stagekit import (
    REPO,
    export_tiny_backbone,
    generate_tiny,
    output_files,
    params_file,
    run_script,
    stage_cmd,
    stage_env,
)

EPOCHS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_tiny(tmp_path_factory.mktemp("interrupt") / "data")


def _temporaries(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*.tmp"))


def _same(a: Any, b: Any) -> bool:
    """Nested dicts / lists of tensors and plain values, equal bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_pretrain_killed_after_an_epoch_resumes_to_the_same_backbone(tmp_path: Path, data: Path) -> None:
    params = params_file(tmp_path / "params.yaml", data, {"pretrain": {"moco": {"epochs": EPOCHS}}})
    args = ("--method", "moco", "--params", params)
    ref = run_script("pretrain", *args, "--out-dir", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]

    out = tmp_path / "out"
    last = out / "cache" / "pretrain-moco" / "last.pt"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(
            stage_cmd("pretrain", *args, "--out-dir", out), cwd=REPO, env=stage_env(), stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 240
            while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, (
                "the run ended before it could be killed: " + (tmp_path / "killed.log").read_text()[-2000:]
            )
            assert last.exists(), "no epoch checkpoint within the time limit"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = torch.load(last, weights_only=True)["epoch"]  # written atomically: a whole checkpoint or none
    assert 1 <= done < EPOCHS
    # Nothing at an output's path, but dvclive's per-epoch curves of the finished epochs (a
    # `cache: false` output the rerun rewrites from the checkpoint's history).
    assert [f for f in output_files(out) if not f.startswith("live/")] == []

    rerun = run_script("pretrain", *args, "--out-dir", out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming from {last} after epoch {done} of {EPOCHS}" in rerun.stderr
    ref_dir, out_dir = (d / "models" / "pretrain-moco" for d in (tmp_path / "ref", out))
    assert (out_dir / "backbone.pt").read_bytes() == (ref_dir / "backbone.pt").read_bytes()
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (ref_dir, out_dir))
    for key in ("epoch", "model", "optimizer", "step_losses", "step_lrs", "params", "resume_key"):
        assert _same(a[key], b[key]), key
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]  # (their seconds differ)
    assert not last.exists() and _temporaries(out) == []
    loss_rows = (out / "live" / "pretrain-moco" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert len(loss_rows) == 1 + EPOCHS  # whole curves: the replayed epochs and the new ones


# Run before the stage: SIGKILL the process right after /masks reached the temporary HDF5 file.
KILL_MID_EXPORT = """
import signal
import oacl.io.camstore as camstore
write = camstore._dataset
def _dataset(f, name, data, rows):
    write(f, name, data, rows)
    if name == "masks":
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
camstore._dataset = _dataset
"""


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_backbone(tmp_path_factory.mktemp("backbone") / "backbone.pt")


def test_contracam_killed_mid_export_leaves_no_store_and_reruns_identically(
    tmp_path: Path, data: Path, backbone: Path
) -> None:
    params = params_file(tmp_path / "params.yaml", data)
    args = ("--dataset", "single", "--params", params, "--model", backbone)

    ref = run_script("contracam", *args, "--out-dir", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]

    out = tmp_path / "out"
    killed = run_script("contracam", *args, "--out-dir", out, hook=KILL_MID_EXPORT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    store = out / "cam" / "single.h5"
    assert not store.exists()
    assert output_files(out) == _temporaries(out) and len(_temporaries(out)) == 1  # only the half-written temporary
    assert _temporaries(out)[0].startswith("cam/.single.h5.")

    rerun = run_script("contracam", *args, "--out-dir", out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert store.read_bytes() == (tmp_path / "ref" / "cam" / "single.h5").read_bytes()
    assert _temporaries(out) == []  # the killed writer's temporary is gone
