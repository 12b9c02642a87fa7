"""Backbones, heads, MoCo (queue, self-key mask, momentum) and BYOL."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from oacl.losses import info_nce
from oacl.models.backbones import build_backbone, feature_dim, layer4_stride
from oacl.models.byol import BYOL
from oacl.models.ema import cosine_momentum, ema_update
from oacl.models.heads import mlp_head
from oacl.models.moco import MoCo


def _layer4(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


@pytest.mark.parametrize("stem,side", [("standard", 2), ("s1", 4), ("cifar", 8)])
def test_stems_layer4_resolution(stem: str, side: int) -> None:
    net = build_backbone("resnet18", stem).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert _layer4(net, x).shape == (2, 512, side, side)
        assert net(x).shape == (2, 512)
    assert 64 // layer4_stride(stem) == side
    assert isinstance(net.fc, nn.Identity)


def test_resnet50_width() -> None:
    assert feature_dim("resnet50") == 2048
    assert build_backbone("resnet50").layer4[-1].conv3.out_channels == 2048


@pytest.mark.parametrize(
    "call", [lambda: build_backbone("vgg"), lambda: build_backbone("resnet18", "tiny"), lambda: mlp_head(4, 0, 2)]
)
def test_bad_backbone_arguments(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_head_is_linear_bn_relu_linear() -> None:
    head = mlp_head(8, 16, 4)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head(torch.randn(3, 8)).shape == (3, 4)


def test_registry_covers_the_vocabulary() -> None:
    from oacl.config import PretrainConfig
    from oacl.train.pretrain import METHOD_BUILDERS
    from oacl.vocab import METHODS

    assert tuple(METHOD_BUILDERS) == METHODS
    cfg = PretrainConfig()
    assert isinstance(METHOD_BUILDERS["moco"](cfg), MoCo) and isinstance(METHOD_BUILDERS["byol"](cfg), BYOL)


def _moco(queue: int = 12, **kw) -> MoCo:
    torch.manual_seed(0)
    return MoCo("resnet18", "standard", proj_hidden=32, proj_dim=8, queue_size=queue, **kw)


def test_moco_enqueues_the_keys_and_wraps() -> None:
    model = _moco(queue=12)
    x1, x2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    ref = copy.deepcopy(model)
    with torch.no_grad():  # the keys, computed independently (same train-mode BN batch)
        k = F.normalize(ref.projector_k(ref.encoder_k(x2)), dim=1)
    model(x1, x2, torch.arange(8))
    torch.testing.assert_close(model.queue[:8], k, atol=1e-5, rtol=1e-5)
    assert model.queue_index.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, -1, -1, -1, -1]
    assert int(model.queue_ptr) == 8
    model(x1, x2, torch.arange(10, 18))  # 8 more keys: 4 fill the end, 4 wrap to the front
    assert model.queue_index.tolist() == [14, 15, 16, 17, 4, 5, 6, 7, 10, 11, 12, 13]
    assert int(model.queue_ptr) == 4
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(12))


def test_moco_masks_stale_self_keys() -> None:
    model = _moco(queue=8, temperature=0.2).eval()  # eval: deterministic BN, so keys repeat exactly
    x = torch.randn(4, 3, 32, 32)
    index = torch.tensor([5, 6, 7, 8])
    model(x, x, index)  # queue now holds the keys of images 5..8
    queue = model.queue.clone()
    queue_index = model.queue_index.clone()
    out = model(x, x, index)
    with torch.no_grad():
        q = F.normalize(model.projector_q(model.encoder_q(x)), dim=1)
        k = F.normalize(model.projector_k(model.encoder_k(x)), dim=1)
    mask = queue_index[None, :] == index[:, None]
    assert mask.sum() == 4
    expected = info_nce(q, k, queue, 0.2, self_mask=mask)
    unmasked = info_nce(q, k, queue, 0.2)
    assert float(out["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(out["loss"].detach()) < float(unmasked) - 0.1  # the stale positive would have been a hard negative


def test_moco_gradients_reach_queries_only() -> None:
    model = _moco()
    out = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.arange(4))
    out["loss"].backward()
    assert all(p.grad is not None for p in model.online_parameters())
    assert all(
        p.grad is None and not p.requires_grad for p in [*model.encoder_k.parameters(), *model.projector_k.parameters()]
    )
    assert model.encoder is model.encoder_q and model.projector is model.projector_q
    assert 0.0 <= float(out["inst_acc"]) <= 1.0


def test_moco_momentum_update() -> None:
    model = _moco(momentum=0.9)
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(1.0)
    before_k = [p.clone() for p in model.encoder_k.parameters()]
    model.update_target(0.5)
    for pk, pq, b in zip(model.encoder_k.parameters(), model.encoder_q.parameters(), before_k):
        torch.testing.assert_close(pk, 0.9 * b + 0.1 * pq)


def test_ema_update_and_schedule() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    ema_update(a, b, 0.75)
    torch.testing.assert_close(a.weight, 0.75 * wa + 0.25 * wb)
    assert cosine_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 0.5) == pytest.approx(0.998)
    assert cosine_momentum(0.996, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ema_update(a, b, 1.5)


def test_byol_forward_and_target() -> None:
    torch.manual_seed(0)
    model = BYOL("resnet18", "standard", proj_hidden=32, proj_dim=8, pred_hidden=16, tau_base=0.9)
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    out = model(x1, x2, torch.arange(4))
    assert 0.0 <= float(out["loss"].detach()) <= 8.0
    out["loss"].backward()
    assert all(p.grad is not None for p in model.online_parameters())
    assert not any(p.requires_grad for p in model.encoder_target.parameters())
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(1.0)
    target = [p.clone() for p in model.projector_target.parameters()]
    model.update_target(1.0)  # tau = 1 at the end of training: the target stays
    for p, t in zip(model.projector_target.parameters(), target):
        torch.testing.assert_close(p, t)
    model.update_target(0.0)  # tau = tau_base
    for p, t, o in zip(model.projector_target.parameters(), target, model.projector_online.parameters()):
        torch.testing.assert_close(p, 0.9 * t + 0.1 * o)


def test_byol_loss_is_symmetric_in_views() -> None:
    torch.manual_seed(0)
    model = BYOL("resnet18", "standard", proj_hidden=16, proj_dim=8, pred_hidden=16).eval()
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x1, x2)["loss"], model(x2, x1)["loss"]
    assert float(a) == pytest.approx(float(b), rel=1e-5)
    assert not math.isnan(float(a))


@pytest.mark.parametrize("kw", [{"queue_size": 0}, {"temperature": 0.0}, {"momentum": 1.5}])
def test_moco_rejects_bad_arguments(kw) -> None:
    with pytest.raises(ValueError, match=str(list(kw.values())[0])):
        MoCo("resnet18", **kw)


def test_head_spec_round_trips_mlp_bn_and_other_layer_stacks() -> None:
    from oacl.models.heads import head_from_spec, head_spec

    bn = mlp_head(8, 16, 4)
    assert head_spec(bn) == {"kind": "mlp-bn", "in_dim": 8, "hidden_dim": 16, "out_dim": 4}
    v2 = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))  # MoCo v2's head: no BN
    spec = head_spec(v2)
    assert spec["kind"] == "layers" and [d["type"] for d in spec["layers"]] == ["linear", "relu", "linear"]
    rebuilt = head_from_spec(spec)
    rebuilt.load_state_dict(v2.state_dict())
    x = torch.randn(3, 8)
    torch.testing.assert_close(rebuilt(x), v2(x))
    with pytest.raises(ValueError, match="Linear, BatchNorm1d and ReLU"):
        head_spec(nn.Sequential(nn.Linear(8, 4), nn.GELU()))
    with pytest.raises(ValueError, match="unknown head kind"):
        head_from_spec({"kind": "transformer"})
