"""Files: atomic writes, HDF5 stores, checkpoints."""

from typing import Any

__all__ = ["load_backbone", "load_encoder_projector"]


def __getattr__(name: str) -> Any:
    # Lazy: importing oacl.io (e.g. for atomic writes) must not import torch.
    if name in __all__:
        from oacl.io import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'oacl.io' has no attribute {name!r}")
