"""Self-supervised models: backbones (:mod:`~oacl.models.backbones`), heads, MoCo v2
(:mod:`~oacl.models.moco`) and BYOL (:mod:`~oacl.models.byol`).

Every method (:class:`SSLMethod`; the registry is :data:`oacl.train.pretrain.METHOD_BUILDERS`)
is an ``nn.Module`` with the same interface, which is all the training engine
(:mod:`oacl.train.engine`) relies on:

- ``forward(x1, x2, index) -> dict`` with a scalar ``"loss"`` (and detached statistics);
  x1, x2: (B, 3, H, W) two views, index: (B,) dataset indices;
- ``update_target(progress)`` after each optimizer step (EMA of the online weights);
- ``online_parameters()`` — what the optimizer updates, and ``optimizer_groups()``: the same as
  SGD parameter groups, each with an ``lr_mult`` applied to the scheduled learning rate;
- ``encoder`` (torchvision ResNet, fc = Identity) and ``projector`` ((B, C) → (B, D)):
  what is exported and what ContraCAM uses;
- ``name``, ``arch``, ``stem``.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

__all__ = ["SSLMethod"]

# No submodule is imported here: the evaluation stages import ``backbones`` alone and must not
# depend on (and rerun with) the MoCo / BYOL code.


class SSLMethod(Protocol):
    """The interface of every self-supervised method (see the module docstring)."""

    name: str
    arch: str
    stem: str
    encoder: nn.Module
    projector: nn.Module

    def __call__(self, x1: Tensor, x2: Tensor, index: Tensor) -> dict[str, Tensor]: ...

    def update_target(self, progress: float) -> None: ...

    def online_parameters(self) -> list[nn.Parameter]: ...

    def optimizer_groups(self) -> list[dict]: ...
