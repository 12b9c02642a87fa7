"""Published checkpoints: each layout fabricated from real modules, wrapped and saved as its source code does.

For every format the test builds the source's model (a torchvision ResNet-18 plus the head the
source builds, named and nested as the source names them: DDP's ``module.``, Lightning's
``state_dict`` / ``hyper_parameters``, momentum copies, queues), saves it with ``torch.save``,
loads it with :func:`oacl.io.load_backbone` / :func:`oacl.io.load_encoder_projector` and checks
the features (and embeddings) equal the source module's on a fixed batch in eval mode. Then the
refusals: pickled Python objects, other architectures, widths that do not fit, unknown layouts.
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import oacl.io
from oacl.errors import CheckpointError
from oacl.io.checkpoint import export_backbone
from oacl.io.published import load_model, resnet_arch
from oacl.models.moco import MoCo

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- the sources' modules


def _perturb(module: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine terms, so that eval-mode features depend on every buffer."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            if m.affine:
                m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))
    return module.eval()


class Wrapped(nn.Module):
    """What DistributedDataParallel adds to every key: ``module.``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def _cifar_stem(net: torchvision.models.ResNet, padding: int) -> torchvision.models.ResNet:
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=padding, bias=False)
    net.maxpool = nn.Identity()
    return net


class Lambda(nn.Module):
    """The paper's code: ``Lambda(F.normalize)`` ends its projection heads."""

    def __init__(self, func: Callable) -> None:
        super().__init__()
        self.func = func

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.func(x)


@dataclass
class Source:
    """A fabricated checkpoint and the modules that made it: encoder (B, 3, H, W) → (B, C), head (B, C) → (B, D)."""

    path: Path
    encoder: nn.Module
    head: nn.Module | None
    normalized_head: bool = False  # the head ends with an L2 normalisation (no weights)


def moco_v2(tmp: Path, *, mlp: bool = True) -> Source:
    """facebookresearch/moco builder.MoCo(resnet18, dim, K, mlp) under DDP, saved by main_moco.py's save_checkpoint."""

    class MoCoBuilder(nn.Module):
        def __init__(self, dim: int = 16, k: int = 8) -> None:
            super().__init__()
            self.encoder_q = torchvision.models.resnet18(num_classes=dim)
            self.encoder_k = torchvision.models.resnet18(num_classes=dim)
            if mlp:
                dim_mlp = self.encoder_q.fc.weight.shape[1]
                self.encoder_q.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_q.fc)
                self.encoder_k.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_k.fc)
            self.register_buffer("queue", F.normalize(torch.randn(dim, k), dim=0))
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    torch.manual_seed(1)
    model = _perturb(MoCoBuilder(), 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    path = tmp / "checkpoint_0199.pth.tar"
    state = {
        "epoch": 200,
        "arch": "resnet18",
        "state_dict": Wrapped(model).state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(state, path, _use_new_zipfile_serialization=False)  # the released files predate the zip format
    encoder = copy.deepcopy(model.encoder_q)
    head, encoder.fc = encoder.fc, nn.Identity()
    return Source(path, encoder, head)


def moco_v3(tmp: Path) -> Source:
    """facebookresearch/moco-v3 MoCo_ResNet: ``base_encoder.fc`` = Linear-BN-ReLU-Linear-BN(affine=False), no biases."""

    def build_mlp(
        num_layers: int, input_dim: int, mlp_dim: int, output_dim: int, last_bn: bool = True
    ) -> nn.Sequential:
        mlp: list[nn.Module] = []
        for layer in range(num_layers):
            dim1 = input_dim if layer == 0 else mlp_dim
            dim2 = output_dim if layer == num_layers - 1 else mlp_dim
            mlp.append(nn.Linear(dim1, dim2, bias=False))
            if layer < num_layers - 1:
                mlp += [nn.BatchNorm1d(dim2), nn.ReLU(inplace=True)]
            elif last_bn:
                mlp.append(nn.BatchNorm1d(dim2, affine=False))
        return nn.Sequential(*mlp)

    class MoCoV3(nn.Module):
        def __init__(self, dim: int = 16, mlp_dim: int = 32) -> None:
            super().__init__()
            self.base_encoder = torchvision.models.resnet18(num_classes=mlp_dim)
            self.momentum_encoder = torchvision.models.resnet18(num_classes=mlp_dim)
            hidden_dim = self.base_encoder.fc.weight.shape[1]
            del self.base_encoder.fc, self.momentum_encoder.fc
            self.base_encoder.fc = build_mlp(2, hidden_dim, mlp_dim, dim)
            self.momentum_encoder.fc = build_mlp(2, hidden_dim, mlp_dim, dim)
            self.predictor = build_mlp(2, dim, mlp_dim, dim, False)

    torch.manual_seed(2)
    model = _perturb(MoCoV3(), 2)
    path = tmp / "r-18-100ep.pth.tar"
    torch.save({"epoch": 100, "arch": "resnet18", "state_dict": Wrapped(model).state_dict()}, path)
    encoder = copy.deepcopy(model.base_encoder)
    head, encoder.fc = encoder.fc, nn.Identity()
    return Source(path, encoder, head)


def paper(tmp: Path, *, method: str = "moco", image_size: int = 32, hparams_extra: dict | None = None) -> Source:
    """alinlab/object-aware-contrastive models/base.py + moco.py / byol.py, a PyTorch Lightning 1.2 checkpoint."""

    def load_projection(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
        layers = [nn.Linear(n_in, n_hidden, bias=False), nn.BatchNorm1d(n_hidden), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(n_hidden, n_out, bias=True), Lambda(F.normalize))

    class PaperModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = torchvision.models.resnet18(zero_init_residual=True)
            if image_size == 32:
                _cifar_stem(self.encoder, padding=1)
            self.encoder.fc = nn.Identity()
            hidden = 512 if method == "moco" else 64
            self.projector = load_projection(512, hidden, 16)
            if method == "byol":
                self.predictor = load_projection(16, hidden, 16)
            self._encoder = copy.deepcopy(self.encoder)
            self._projector = copy.deepcopy(self.projector)
            if method == "moco":
                self.register_buffer("queue", F.normalize(torch.randn(8, 16)))

    torch.manual_seed(3)
    model = _perturb(PaperModel(), 3)
    hp = {
        "arch": "resnet18",
        "image_size": image_size,
        "proj_dim": 16,
        "base_lr": 0.03,
        "global_batch_size": None,
        **(hparams_extra or {}),
    }
    ckpt = {
        "epoch": 799,
        "global_step": 100,
        "pytorch-lightning_version": "1.2.4",
        "state_dict": model.state_dict(),
        "callbacks": {},
        "optimizer_states": [torch.optim.SGD(model.parameters(), lr=0.1).state_dict()],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": hp,
    }
    path = tmp / "last.ckpt"
    torch.save(ckpt, path)
    return Source(path, model.encoder, model.projector, normalized_head=True)


def solo(tmp: Path, *, cifar: bool = True, method: str = "mocov2plus") -> Source:
    """solo-learn BaseMomentumMethod + MoCoV2Plus / BYOL heads; CIFAR stem with padding 2."""

    class SoloModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torchvision.models.resnet18()
            self.backbone.fc = nn.Identity()
            if cifar:
                _cifar_stem(self.backbone, padding=2)
            self.classifier = nn.Linear(512, 10)
            if method == "mocov2plus":
                self.projector = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 16))
                self.register_buffer("queue", F.normalize(torch.randn(2, 16, 8), dim=1))
                self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
            else:
                self.projector = nn.Sequential(nn.Linear(512, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 16))
                self.predictor = nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 16))
            self.momentum_backbone = copy.deepcopy(self.backbone)
            self.momentum_projector = copy.deepcopy(self.projector)

    torch.manual_seed(4)
    model = _perturb(SoloModel(), 4)
    path = tmp / f"{method}-cifar10-ep=999.ckpt"
    torch.save({"epoch": 999, "global_step": 10, "state_dict": model.state_dict()}, path)
    return Source(path, model.backbone, model.projector)


def lightly(tmp: Path) -> Source:
    """lightly's MoCo example: ``backbone = nn.Sequential(*list(resnet.children())[:-1])``, MoCoProjectionHead."""

    class ProjectionHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    class LightlyMoCo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            resnet = torchvision.models.resnet18()
            self.backbone = nn.Sequential(*list(resnet.children())[:-1])
            self.projection_head = ProjectionHead()
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)

    torch.manual_seed(5)
    model = _perturb(LightlyMoCo(), 5)
    path = tmp / "lightly_moco.pth"
    torch.save(model.state_dict(), path)
    return Source(path, nn.Sequential(model.backbone, nn.Flatten(1)), model.projection_head)


def plain_torchvision(tmp: Path) -> Source:
    """A torchvision ResNet-18 classifier's state dict (backbone + fc), as torchvision publishes them."""
    torch.manual_seed(6)
    net = _perturb(torchvision.models.resnet18(num_classes=10), 6)
    path = tmp / "resnet18-supervised.pth"
    torch.save(net.state_dict(), path)
    encoder = copy.deepcopy(net)
    encoder.fc = nn.Identity()
    return Source(path, encoder, None)


SOURCES: dict[str, Callable[[Path], Source]] = {
    "moco-v2": moco_v2,
    "moco-v1": lambda tmp: moco_v2(tmp, mlp=False),
    "moco-v3": moco_v3,
    "paper-moco-32px": paper,
    "paper-byol-224px": lambda tmp: paper(tmp, method="byol", image_size=224),
    "solo-learn-mocov2plus-cifar": solo,
    "solo-learn-byol-imagenet": lambda tmp: solo(tmp, cifar=False, method="byol"),
    "lightly-moco": lightly,
}

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("name", list(SOURCES))
def test_features_equal_the_source_modules(tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    src = SOURCES[name](tmp_path)
    with caplog.at_level(logging.INFO, logger="oacl.io.published"):
        encoder, projector = oacl.io.load_encoder_projector(src.path)
    assert isinstance(encoder, torchvision.models.ResNet) and isinstance(encoder.fc, nn.Identity)
    assert not encoder.training and not projector.training
    with torch.no_grad():
        want = src.encoder(X)  # (2, 512)
        torch.testing.assert_close(encoder(X), want, rtol=1e-5, atol=1e-5)
        z, z_want = projector(encoder(X)), src.head(want)  # (2, D)
        if src.normalized_head:
            z = F.normalize(z, dim=1)
        torch.testing.assert_close(z, z_want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(oacl.io.load_backbone(src.path)(X), want, rtol=1e-5, atol=1e-5)
    lines = [r.getMessage() for r in caplog.records if r.name == "oacl.io.published"]
    assert any(m.startswith(f"loaded {src.path}") and "resnet18 encoder" in m for m in lines), lines
    assert any(m.startswith(f"not loaded from {src.path}") for m in lines), lines
    assert all("\n" not in m for m in lines)


def test_what_is_left_out_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = paper(tmp_path)
    with caplog.at_level(logging.INFO, logger="oacl.io.published"):
        model = load_model(src.path)
    assert (model.source, model.method, model.arch, model.stem, model.image_size) == (
        "object-aware-contrastive",
        "moco",
        "resnet18",
        "cifar",
        32,
    )
    left = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("not loaded"))
    assert "_encoder.* (" in left and "_projector.* (" in left and "queue (1)" in left
    loaded = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded"))
    assert "Linear(512>512, no bias)-BN-ReLU-Linear(512>16)" in loaded


def test_torchvision_state_dict_is_a_backbone_with_a_classifier(tmp_path: Path) -> None:
    src = plain_torchvision(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(oacl.io.load_backbone(src.path)(X), src.encoder(X), rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointError, match=r"resnet18 backbone without a projection head, which ContraCAM") as err:
        oacl.io.load_encoder_projector(src.path)
    assert "classifier_cam" in str(err.value) and "\n" not in str(err.value)
    model = load_model(src.path)
    assert model.projector is None and model.classifier is not None and model.classifier.out_features == 10


def test_the_projects_own_backbone_still_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    moco = MoCo("resnet18", "cifar", proj_hidden=32, proj_dim=8, queue_size=16).eval()
    export_backbone(tmp_path / "backbone.pt", moco, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    model = load_model(tmp_path / "backbone.pt")
    assert (model.source, model.image_size, model.mean) == ("oacl", 32, (0.5, 0.5, 0.5))
    with torch.no_grad():
        torch.testing.assert_close(oacl.io.load_backbone(tmp_path / "backbone.pt")(X), moco.encoder_q(X))


@pytest.mark.parametrize(
    ("arch", "name"),
    [
        ("resnet18", "resnet18"),
        ("resnet34", "resnet34"),
        ("resnet50", "resnet50"),
        ("wide_resnet50_2", "wide_resnet50_2"),
    ],
)
def test_architecture_is_read_from_tensor_shapes(arch: str, name: str) -> None:
    with torch.device("meta"):  # shapes only, no memory
        state = getattr(torchvision.models, arch)().state_dict()
    assert resnet_arch(state) == name


# ----------------------------------------------------------------------------- refusals


def test_a_pickled_namespace_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "moco.pth.tar"
    torch.save(
        {"state_dict": {"module.encoder_q.conv1.weight": torch.zeros(64, 3, 7, 7)}, "args": argparse.Namespace(a=1)},
        path,
    )
    with pytest.raises(CheckpointError, match=r"moco\.pth\.tar pickles Python objects \(argparse\.Namespace\)") as err:
        oacl.io.load_backbone(path)
    assert "\n" not in str(err.value) and "weights_only=False" in str(err.value)


def test_a_lightning_checkpoint_pickling_a_module_is_refused(tmp_path: Path) -> None:
    """The paper's own checkpoints store their Kornia augmentation (an nn.Module) in hyper_parameters."""
    src = paper(tmp_path, hparams_extra={"diff_transform": nn.Identity()})
    with pytest.raises(CheckpointError, match=r"pickles Python objects \(torch\.nn\.modules\.linear\.Identity\)"):
        oacl.io.load_encoder_projector(src.path)


def test_another_architecture_is_refused(tmp_path: Path) -> None:
    src = moco_v2(tmp_path)
    with pytest.raises(CheckpointError, match="holds architecture 'resnet18', expected 'resnet50'"):
        oacl.io.load_backbone(src.path, arch="resnet50")
    obj = torch.load(src.path, weights_only=True)
    torch.save({**obj, "arch": "resnet50"}, src.path)
    with pytest.raises(CheckpointError, match="says its architecture is 'resnet50', but its weights are a resnet18"):
        oacl.io.load_backbone(src.path)


def test_a_resnet_this_project_does_not_build_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(
        CheckpointError,
        match=r"r34\.pth \(torchvision\) holds a resnet34; this project builds resnet18, resnet18_w32, resnet50",
    ):
        oacl.io.load_backbone(path)


def test_wrong_widths_are_refused(tmp_path: Path) -> None:
    state = torchvision.models.resnet18().state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(96, 64, 3, 3)
    torch.save(state, tmp_path / "narrow.pth")
    with pytest.raises(
        CheckpointError,
        match=r"encoder weights in .*narrow\.pth \(torchvision\) do not fit: .*layer2\.0\.conv1\.weight \(96, 64, 3, 3\) vs \(128, 64, 3, 3\)",
    ):
        oacl.io.load_backbone(tmp_path / "narrow.pth")
    src = solo(tmp_path, cifar=False)
    obj = torch.load(src.path, weights_only=True)
    obj["state_dict"]["projector.0.weight"] = torch.zeros(64, 256)
    torch.save(obj, src.path)
    with pytest.raises(
        CheckpointError,
        match=r"projector weights in .* \(solo-learn\): layer 0 takes 256 features, the encoder gives 512",
    ):
        oacl.io.load_encoder_projector(src.path)


def test_another_method_is_refused(tmp_path: Path) -> None:
    src = paper(tmp_path, method="byol", image_size=224)
    with pytest.raises(CheckpointError, match="trained with method 'byol', expected 'moco'"):
        oacl.io.load_encoder_projector(src.path, method="moco")


def test_an_unknown_layout_is_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {"vit.patch_embed.weight": torch.zeros(4, 3, 16, 16)}}, tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match=r"vit\.pth is neither an oacl backbone nor a layout this code knows"):
        oacl.io.load_backbone(tmp_path / "vit.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list\.pth holds a list, not a state dict"):
        oacl.io.load_backbone(tmp_path / "list.pth")
