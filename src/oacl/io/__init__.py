"""Files: atomic writes, HDF5 stores (sets, CAMs), checkpoints.

``oacl.io.load_backbone`` / ``oacl.io.load_encoder_projector`` (the public API of DESIGN.md) are
resolved on first use from :mod:`oacl.io.checkpoint`, by name: importing ``oacl.io.atomic`` or
``oacl.io.sets`` must neither import torch nor make the stage depend on the checkpoint and model
code. The project's own modules import :mod:`oacl.io.checkpoint` directly (a test holds them to it),
so their ``dvc.yaml`` deps see it.
"""

import importlib
from typing import Any

__all__ = ["load_backbone", "load_encoder_projector"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("oacl.io.checkpoint"), name)
    raise AttributeError(f"module 'oacl.io' has no attribute {name!r}")
