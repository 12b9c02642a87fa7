"""Checkpoints: atomic save, validated ``weights_only`` load, backbone export.

Two file kinds, both plain dicts of tensors and primitives saved with ``torch.save`` and
read with ``torch.load(weights_only=True)``:

- training checkpoint (``format = "oacl.train/1"``): ``method``, ``arch``, ``stem``,
  ``epoch`` (completed epochs), ``model`` (the method's whole state dict, queue
  included), ``optimizer``, ``history``, ``params`` (what made it), ``resume_key``.
- exported backbone (``format = "oacl.backbone/1"``): ``method``, ``arch``, ``stem``,
  ``feature_dim``, ``encoder`` (torchvision ResNet keys, no ``fc``), ``projector`` and
  ``projector_spec`` (to rebuild the head), ``mean`` / ``std`` (input normalisation),
  ``image_size``, ``params``.

Every problem — missing, truncated or foreign file, other format, other method or
architecture, mismatched weights — raises :class:`CheckpointError` naming the file.

:func:`load_backbone` and :func:`load_encoder_projector` also read published self-supervised
checkpoints (facebookresearch/moco, the paper's Lightning code, solo-learn, lightly, torchvision;
any file without a ``format`` entry): :mod:`oacl.io.published` rebuilds those.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from oacl.errors import CheckpointError
from oacl.io.atomic import atomic_path
from oacl.models.backbones import build_backbone, feature_dim
from oacl.models.heads import head_from_spec, head_spec

__all__ = [
    "TRAIN_FORMAT",
    "BACKBONE_FORMAT",
    "clean_state_dict",
    "read_torch_file",
    "save_checkpoint",
    "load_checkpoint",
    "export_backbone",
    "read_backbone",
    "check_backbone",
    "encoder_of",
    "projector_of",
    "is_oacl_file",
    "load_backbone",
    "load_encoder_projector",
]

TRAIN_FORMAT = "oacl.train/1"
BACKBONE_FORMAT = "oacl.backbone/1"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (``module.`` from DDP, ``_orig_mod.`` from torch.compile) from every key."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """``torch.save`` a dict atomically (a reader never sees a half-written file).

    Saved through a file object, so the zip archive inside gets torch's fixed name instead of
    one made from the (random) temporary file name: the same payload gives the same bytes.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(dict(payload), f)


def read_torch_file(path: str | Path, what: str = "checkpoint", missing_hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU: the one reader of the project's torch files.

    A missing file, or one that does not load (truncated, corrupt, not a torch file, or holding
    objects other than tensors and plain containers), is a :class:`CheckpointError` naming
    ``what`` and the path (``missing_hint`` is appended to the missing-file message). A file
    refused because it pickles Python objects (a Lightning checkpoint's hyper-parameters, say)
    gets its own message: the first such object, and how to keep only the weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist{missing_hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        found = _UNSAFE_GLOBAL.search(str(err)) if isinstance(err, pickle.UnpicklingError) else None
        if found:  # a readable pickle, refused for the objects it holds (not a corrupt file)
            obj = found.group(1)
            raise CheckpointError(
                f"{what} {path} pickles Python objects ({obj}), not only tensors and plain containers, and is "
                "refused: unpickling them could run arbitrary code. If you trust the file, keep only its weights: "
                f"python -c \"import torch; c = torch.load('{path}', weights_only=False); "
                "torch.save({'state_dict': c['state_dict']}, 'weights.pt')\""
            ) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{what} {path} cannot be read (truncated, corrupt or not a {what}): {first}") from None


def _load(path: str | Path, expected_format: str) -> dict[str, Any]:
    return _check_format(read_torch_file(path), path, expected_format)


def _check_format(obj: Any, path: str | Path, expected_format: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or "format" not in obj:
        raise CheckpointError(f"checkpoint {path} is not an oacl checkpoint (no 'format' entry)")
    if obj["format"] != expected_format:
        raise CheckpointError(f"checkpoint {path} has format {obj['format']!r}, expected {expected_format!r}")
    return obj


def _check_identity(
    obj: Mapping[str, Any], path: str | Path, method: str | None, arch: str | None, stem: str | None = None
) -> None:
    if method is not None and obj.get("method") != method:
        raise CheckpointError(f"checkpoint {path} was trained with method {obj.get('method')!r}, expected {method!r}")
    if arch is not None and obj.get("arch") != arch:
        raise CheckpointError(f"checkpoint {path} holds architecture {obj.get('arch')!r}, expected {arch!r}")
    if stem is not None and obj.get("stem") != stem:
        raise CheckpointError(
            f"checkpoint {path} holds a {obj.get('stem')!r}-stem ResNet, but 'pretrain.stem' is {stem!r}"
        )


def load_checkpoint(path: str | Path, *, method: str | None = None, arch: str | None = None) -> dict[str, Any]:
    """Read a training checkpoint (on the CPU); check its method / arch when given."""
    obj = _load(path, TRAIN_FORMAT)
    for key in ("method", "arch", "stem", "epoch", "model", "optimizer"):
        if key not in obj:
            raise CheckpointError(f"checkpoint {path} lacks the entry {key!r}")
    _check_identity(obj, path, method, arch)
    return obj


def export_backbone(
    path: str | Path,
    model: nn.Module,
    *,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    params: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model.encoder`` and ``model.projector`` (an SSL method of :mod:`oacl.models`) atomically.

    ``image_size`` and ``mean`` / ``std`` record the input the encoder was trained on.
    """
    payload = {
        "format": BACKBONE_FORMAT,
        "method": model.name,
        "arch": model.arch,
        "stem": model.stem,
        "feature_dim": feature_dim(model.arch),
        "encoder": {k: v.detach().cpu().clone() for k, v in clean_state_dict(model.encoder.state_dict()).items()},
        "projector": {k: v.detach().cpu().clone() for k, v in clean_state_dict(model.projector.state_dict()).items()},
        "projector_spec": head_spec(model.projector),
        "image_size": int(image_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "params": dict(params or {}),
    }
    save_checkpoint(path, payload)


def read_backbone(
    path: str | Path, *, method: str | None = None, arch: str | None = None, stem: str | None = None
) -> dict[str, Any]:
    """Read an exported backbone file as a dict (see the module docstring) after validating it.

    ``method`` / ``arch`` / ``stem``, when given, must match the file.
    """
    return check_backbone(read_torch_file(path), path, method=method, arch=arch, stem=stem)


def check_backbone(
    obj: Any, path: str | Path, *, method: str | None = None, arch: str | None = None, stem: str | None = None
) -> dict[str, Any]:
    """:func:`read_backbone` on a file already read (``obj``, from ``path``): the same checks, the same errors."""
    obj = _check_format(obj, path, BACKBONE_FORMAT)
    for key in ("method", "arch", "stem", "encoder", "projector", "projector_spec"):
        if key not in obj:
            raise CheckpointError(f"backbone file {path} lacks the entry {key!r}")
    _check_identity(obj, path, method, arch, stem)
    return obj


def encoder_of(obj: Mapping[str, Any], path: str | Path) -> torchvision.models.ResNet:
    """The encoder (fc = Identity, eval mode, CPU) of a backbone dict read by :func:`read_backbone` from ``path``."""
    try:
        encoder = build_backbone(obj["arch"], obj["stem"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"backbone file {path} describes a model this code cannot build: {err}") from None
    _load_into(encoder, obj["encoder"], "encoder", path)
    return encoder.eval()


def _load_into(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, path: str | Path) -> None:
    try:
        module.load_state_dict(clean_state_dict(state), strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:400]
        raise CheckpointError(f"{what} weights in {path} do not fit: {detail}") from None


def load_encoder_projector(
    path: str | Path, *, method: str | None = None, arch: str | None = None
) -> tuple[torchvision.models.ResNet, nn.Sequential]:
    """Rebuild (encoder, projector) from an exported backbone or a published checkpoint, on the CPU, in eval mode.

    encoder: torchvision ResNet with ``fc = Identity`` ((B, 3, H, W) → (B, C));
    projector: (B, C) → (B, D). ``method`` / ``arch``, when given, must match the file. A file
    without a ``format`` entry is read as a published checkpoint
    (:func:`oacl.io.published.published_model`); one without a projection head (a torchvision
    state dict, a bare backbone) is a :class:`CheckpointError`: ContraCAM needs the head.
    """
    obj = read_torch_file(path)
    if not is_oacl_file(obj):
        from oacl.io.published import published_model

        return published_model(obj, path, method=method, arch=arch).encoder_projector()
    obj = check_backbone(obj, path, method=method, arch=arch)
    return encoder_of(obj, path), projector_of(obj, path)


def projector_of(obj: Mapping[str, Any], path: str | Path) -> nn.Sequential:
    """The projector (eval mode, CPU) of a backbone dict read by :func:`read_backbone` from ``path``."""
    try:
        projector = head_from_spec(obj["projector_spec"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"backbone file {path} describes a model this code cannot build: {err}") from None
    _load_into(projector, obj["projector"], "projector", path)
    return projector.eval()


def is_oacl_file(obj: Any) -> bool:
    """Whether a loaded torch file is one of the project's own (they all carry a ``format`` entry).

    Anything else is read as a published checkpoint (or refused as garbage) by :mod:`oacl.io.published`.
    """
    return isinstance(obj, Mapping) and "format" in obj


def load_backbone(path: str | Path, *, arch: str | None = None) -> torchvision.models.ResNet:
    """The torchvision ResNet (fc = Identity, eval mode, CPU) of an exported backbone or a published checkpoint.

    Published checkpoints (see :mod:`oacl.io.published`) may lack a projection head: only the
    encoder is needed here.
    """
    obj = read_torch_file(path)
    if not is_oacl_file(obj):
        from oacl.io.published import published_model

        return published_model(obj, path, arch=arch).encoder
    obj = check_backbone(obj, path, arch=arch)
    encoder = encoder_of(obj, path)
    projector_of(obj, path)  # the file must be whole: a projector that does not fit is an error here too
    return encoder
