"""``pretrain@<method>`` from a checkpoint file instead of training (``pretrain.imports.<method>``).

Researchers start from released weights. With ``pretrain.imports.moco`` (or ``.byol``) set to a
file in ``artifacts/imported/<method>/``, the stage reads it (any format
:func:`oacl.io.published.load_model` reads: the project's own ``backbone.pt``, facebookresearch/moco,
the paper's code, solo-learn, lightly), checks it against ``pretrain.arch`` / ``pretrain.stem``,
and writes the same outputs a training run writes, so everything downstream (ContraCAM, the
evaluations, the report) runs on it unchanged:

- ``<models>/pretrain-<method>/backbone.pt`` — the encoder and projection head in the project's
  format, with the file's input side (else ``pretrain.image_size``, else the data's) and
  normalisation;
- ``<live>/pretrain-<method>/metrics.json`` and ``<plots>/pretrain-<method>/loss.png`` — a note
  that nothing was trained (the stage's declared outputs);
- ``<metrics>/pretrain-<method>.json`` — where the weights came from (path, sha256, format).

The debiased retrains (``retrain@<method>-<debias>``) still train from scratch with the
``pretrain`` recipe: they are the paper's debiased twins, not fine-tunes of the imported model.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from oacl.config import ConfigError, Params
from oacl.data.source import stored_side
from oacl.io.atomic import atomic_dir, save_png, write_json
from oacl.io.checkpoint import export_backbone
from oacl.io.published import load_model
from oacl.train.pretrain import PretrainPaths, train_set_names

__all__ = ["import_file", "run_import"]

log = logging.getLogger(__name__)


def import_file(params: Params, method: str) -> Path | None:
    """The checkpoint ``pretrain@<method>`` imports, or None when it trains."""
    value = getattr(params.pretrain.imports, method)
    return Path(value) if value else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _note_png(path: Path, text: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 1.2), dpi=100)
    fig.text(0.02, 0.5, text, va="center", fontsize=8, wrap=True)
    save_png(fig, path)


def run_import(params: Params, method: str, paths: PretrainPaths) -> dict[str, Any]:
    """Import ``pretrain.imports.<method>`` as the vanilla ``method`` model; write the stage's outputs; return its metrics."""
    t0 = time.perf_counter()
    cfg = params.pretrain
    path = import_file(params, method)
    if path is None:
        raise ValueError(f"pretrain.imports.{method} is empty: pretrain@{method} trains")
    model = load_model(path, method=method, arch=cfg.arch)
    encoder, projector = model.encoder_projector()
    if model.stem != cfg.stem:
        raise ConfigError(
            f"params: {path} holds a {model.stem!r}-stem {model.arch}, but 'pretrain.stem' is {cfg.stem!r}: "
            "set pretrain.stem to match (the random-init control and every loader check it)"
        )
    size = model.image_size or cfg.image_size or stored_side(params.data, train_set_names(cfg)[0])
    if not size:
        raise ConfigError(f"params: {path} records no input side; set 'pretrain.image_size'")
    source = SimpleNamespace(name=method, arch=model.arch, stem=model.stem, encoder=encoder, projector=projector)
    record = {"imported_from": str(path), "sha256": _sha256(path), "format": model.source}
    export_backbone(
        paths.model_dir / "backbone.pt", source, image_size=size, mean=model.mean, std=model.std, params=record
    )
    note = (
        f"pretrain@{method}: imported {path} ({model.source}, {model.arch}/{model.stem}, {size} px); not trained here"
    )
    with atomic_dir(paths.live_dir) as tmp:
        write_json(Path(tmp) / "metrics.json", {"imported": True, "step": 0})
    paths.plots_dir.mkdir(parents=True, exist_ok=True)
    _note_png(paths.plots_dir / "loss.png", note)
    metrics = {
        **record,
        "arch": model.arch,
        "stem": model.stem,
        "image_size": int(size),
        "epochs": 0,
        "steps": 0,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(paths.metrics, metrics)
    log.info(note)
    return metrics
