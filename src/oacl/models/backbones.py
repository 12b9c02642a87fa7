"""ResNet backbones for self-supervised pretraining: torchvision ResNets with ``fc = Identity``.

A backbone maps normalized images (B, 3, H, W) to pooled features (B, C), C = 512 for
ResNet-18 and 2048 for ResNet-50. The ResNet's own layers stay reachable
(``conv1`` … ``layer4``, ``avgpool``), which is what ContraCAM needs.

Architectures (registry :data:`ARCHS`): ``resnet18`` and ``resnet50`` are torchvision's, as in the
paper; ``resnet18_w32`` is a ResNet-18 of half the width (planes 32 / 64 / 128 / 256, C = 256)
built from torchvision's own ``BasicBlock`` and ``ResNet._make_layer`` and initialised as
torchvision initialises a ResNet — a CPU-budget option (~3x the throughput at 64 px; see
``docs/learnability.md``).

Stems (registry :data:`STEMS`) adapt the network to small images:

- ``standard``: 7×7 stride-2 conv + 3×3 stride-2 max-pool (ImageNet; 64 px → layer4 2×2).
- ``s1``: the 7×7 conv with stride 1, max-pool kept (64 px → layer4 4×4).
- ``cifar``: a 3×3 stride-1 conv and no max-pool (64 px → layer4 8×8).
"""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

__all__ = ["ARCHS", "STEMS", "build_backbone", "feature_dim", "apply_stem", "layer4_stride"]


def _narrow_resnet18(width: int) -> torchvision.models.ResNet:
    """ResNet-18 with planes ``width`` x (1, 2, 4, 8), torchvision's blocks and initialisation."""
    from torchvision.models.resnet import BasicBlock

    net = torchvision.models.ResNet(BasicBlock, [2, 2, 2, 2])
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(BasicBlock, width, 2)
    net.layer2 = net._make_layer(BasicBlock, 2 * width, 2, stride=2)
    net.layer3 = net._make_layer(BasicBlock, 4 * width, 2, stride=2)
    net.layer4 = net._make_layer(BasicBlock, 8 * width, 2, stride=2)
    net.fc = nn.Linear(8 * width, 1000)
    for m in net.modules():  # torchvision.models.ResNet.__init__'s initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return net


ARCHS: dict[str, Callable[[], torchvision.models.ResNet]] = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "resnet18_w32": lambda: _narrow_resnet18(32),
}

_FEATURE_DIM = {"resnet18": 512, "resnet50": 2048, "resnet18_w32": 256}


def _stem_standard(net: torchvision.models.ResNet) -> None:
    return None


def _stem_s1(net: torchvision.models.ResNet) -> None:
    net.conv1.stride = (1, 1)


def _stem_cifar(net: torchvision.models.ResNet) -> None:
    net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()


STEMS: dict[str, Callable[[torchvision.models.ResNet], None]] = {
    "standard": _stem_standard,
    "s1": _stem_s1,
    "cifar": _stem_cifar,
}

# Total downsampling from the image to layer4, per stem.
_STEM_STRIDE = {"standard": 32, "s1": 16, "cifar": 8}


def feature_dim(arch: str) -> int:
    """Width C of the pooled feature of ``arch``."""
    if arch not in _FEATURE_DIM:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(_FEATURE_DIM)}")
    return _FEATURE_DIM[arch]


def layer4_stride(stem: str) -> int:
    """Image side / layer4 side for ``stem`` (32, 16 or 8)."""
    if stem not in _STEM_STRIDE:
        raise ValueError(f"unknown stem {stem!r}; known: {sorted(_STEM_STRIDE)}")
    return _STEM_STRIDE[stem]


def apply_stem(net: torchvision.models.ResNet, stem: str) -> torchvision.models.ResNet:
    """Change the stem of ``net`` in place to ``stem`` (see :data:`STEMS`); returns ``net``."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; known: {sorted(STEMS)}")
    STEMS[stem](net)
    return net


def build_backbone(arch: str = "resnet18", stem: str = "standard") -> torchvision.models.ResNet:
    """A randomly initialised torchvision ResNet with ``fc = nn.Identity()``.

    Returns a module mapping (B, 3, H, W) float images to (B, C) pooled features,
    C = :func:`feature_dim` (arch).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHS)}")
    net = ARCHS[arch]()
    apply_stem(net, stem)
    net.fc = nn.Identity()
    return net
