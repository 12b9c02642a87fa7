"""ContraCAM: known answers on synthetic scenes, the reference pseudo-code, and the model contract."""

from __future__ import annotations

import copy
import gc
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from oacl.cam.contracam import (
    _features,
    _fold_batchnorms,
    classifier_cam,
    contracam,
    contracam_prepared,
    contrastive_score,
    partition_groups,
    prepare_cam_model,
    raw_cam,
    run_contracam,
)

torch.set_num_threads(1)
SIZE = 32


def tiny_resnet(seed: int = 0, zero_residual: bool = True) -> ResNet:
    """A ResNet-10 (torchvision BasicBlock x [1, 1, 1, 1]) with ``fc = Identity``.

    With ``zero_residual`` every residual branch ends in a BN with weight 0, so
    each block is ReLU(shortcut): the features of a pixel depend only on a
    small neighbourhood and a flat zero background gives exactly zero
    features — a model whose layer4 responds to the objects and nothing else.
    """
    torch.manual_seed(seed)
    net = ResNet(BasicBlock, [1, 1, 1, 1], zero_init_residual=zero_residual)
    net.fc = nn.Identity()
    return net


def tiny_projector(seed: int = 0, dim: int = 16) -> nn.Module:
    torch.manual_seed(seed + 100)
    return nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, dim))


def scenes(batch: int = 8, size: int = SIZE, obj: int = 12, seed: int = 0) -> tuple[torch.Tensor, list[tuple]]:
    """Normalized images: one bright square of a random colour on a flat zero background.

    Returns images (B, 3, size, size) and the squares' boxes (x0, y0, x1, y1), exclusive.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(batch, 3, size, size)
    boxes = []
    for i in range(batch):
        x0, y0 = torch.randint(0, size - obj + 1, (2,), generator=g).tolist()
        colour = torch.rand(3, generator=g) * 2.0 + 0.5
        x[i, :, y0 : y0 + obj, x0 : x0 + obj] = colour[:, None, None]
        boxes.append((x0, y0, x0 + obj, y0 + obj))
    return x, boxes


def box_mask(box: tuple, size: int = SIZE) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


# ----------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("iters", [1, 3])
def test_cam_peaks_on_the_object(iters: int) -> None:
    enc, proj = tiny_resnet(), tiny_projector()
    x, boxes = scenes()
    cam = contracam(enc, proj, x, iters=iters, expand_res=4)[:, 0]
    # At expand_res 4 the CAM lives on a 4 x 4 grid of 8-px cells, so "on the object" means
    # within one cell of it; the contrast between inside and outside is the sharper check.
    cell = SIZE // 4
    inside_peaks = 0
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        inside = box_mask((x0, y0, x1, y1))
        near = box_mask((max(x0 - cell, 0), max(y0 - cell, 0), x1 + cell, y1 + cell))
        peak = int(cam[i].argmax())
        assert near.flatten()[peak], f"image {i}: CAM peak at {divmod(peak, SIZE)} far from {(x0, y0, x1, y1)}"
        inside_peaks += bool(inside.flatten()[peak])
        assert cam[i][inside].mean() > cam[i][~inside].mean() + 0.3
        assert cam[i].max() == pytest.approx(1.0)
    assert inside_peaks >= 6


def test_outputs_are_masks_in_unit_range() -> None:
    enc, proj = tiny_resnet(), tiny_projector()
    x, _ = scenes(batch=4)
    for kwargs in (
        {"iters": 1},
        {"iters": 2, "expand_res": 2},
        {"iters": 2, "amp": True, "expand_res": 4},
        {"iters": 2, "remove_negative_signal": False, "expand_res": 4},
    ):
        cam = contracam(enc, proj, x, **kwargs)
        assert cam.shape == (4, 1, SIZE, SIZE) and cam.dtype == torch.float32
        assert not cam.requires_grad
        assert torch.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() <= 1.0


def test_union_over_iterations_is_monotone() -> None:
    enc, proj = tiny_resnet(), tiny_projector()
    x, _ = scenes(batch=6, seed=1)
    masks = [contracam(enc, proj, x, iters=t, expand_res=4) for t in range(1, 5)]
    for prev, cur in zip(masks, masks[1:]):
        assert (cur >= prev).all()
    assert (masks[-1] > masks[0]).any()  # later iterations found something new
    final, steps = contracam(enc, proj, x, iters=4, expand_res=4, return_steps=True)
    assert steps.shape == (4, 6, 1, SIZE, SIZE)
    assert torch.equal(final, steps.amax(dim=0))
    assert torch.equal(final, masks[-1])


def raw_peaks(enc: nn.Module, proj: nn.Module, x: torch.Tensor, iters: int) -> torch.Tensor:
    """(T, B) raw CAM peaks of a plain run, recomputed step by step from its returned per-step maps."""
    model = prepare_cam_model(enc, proj, expand_res=4)
    _, steps = contracam_prepared(model, x, iters=iters, return_steps=True)
    colour = x.mean(dim=(0, 2, 3), keepdim=True)
    mask, peaks, queue, key = None, [], [], None
    for t in range(iters):
        xt = x if mask is None else x * (1 - mask) + colour * mask
        feat = _features(model, xt).requires_grad_(True)
        q = F.normalize(model.projector(torch.flatten(model.encoder.avgpool(feat), 1)), dim=1)
        key = q.detach() if key is None else key
        queue.append(q.detach())
        (grad,) = torch.autograd.grad(contrastive_score(q, key, queue).sum(), feat)
        peaks.append(raw_cam(feat.detach(), grad).flatten(1).amax(1))
        mask = steps[: t + 1].amax(0)
    return torch.stack(peaks)


def test_stopping_rule_freezes_an_image_once_its_peak_falls() -> None:
    enc, proj = tiny_resnet(), tiny_projector()
    x, _ = scenes(batch=6, seed=1)
    plain, plain_steps = contracam(enc, proj, x, iters=4, expand_res=4, return_steps=True)
    assert torch.equal(contracam(enc, proj, x, iters=4, expand_res=4, stop_ratio=0.0), plain)  # 0 = the paper
    ratio = (raw_peaks(enc, proj, x, 4)[1] / raw_peaks(enc, proj, x, 4)[0]).sort().values
    r = float(ratio[2:4].mean())  # between the 3rd and 4th image's second-step ratio: 3 images stop there
    stopped, steps = contracam(enc, proj, x, iters=4, expand_res=4, return_steps=True, stop_ratio=r)
    assert torch.equal(stopped, steps.amax(0))  # still the running max of the steps
    zero = steps.flatten(2).amax(2) == 0  # (T, B): a stopped image's step adds nothing
    assert not zero[0].any() and int(zero[1].sum()) == 3
    assert (zero[1:].cummax(0).values == zero[1:]).all()  # stopped for good
    for i in torch.nonzero(zero[1]).flatten():
        assert torch.equal(stopped[i], plain_steps[0, i])  # the first iteration's mask, as T = 1 gives it
    with pytest.raises(ValueError, match="stop_ratio"):
        contracam(enc, proj, x, iters=2, stop_ratio=1.0)


def test_constant_images_give_a_defined_mask() -> None:
    enc, proj = tiny_resnet(), tiny_projector()
    for value in (0.0, 0.7):
        x = torch.full((4, 3, SIZE, SIZE), value)
        for amp in (False, True):
            cam = contracam(enc, proj, x, iters=3, expand_res=4, amp=amp)
            assert torch.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    single = contracam(enc, proj, torch.zeros(1, 3, SIZE, SIZE), iters=2, expand_res=2)  # a batch of one
    assert torch.isfinite(single).all()


def test_works_inside_no_grad_and_inference_mode() -> None:
    enc, proj = tiny_resnet(), tiny_projector()
    x, _ = scenes(batch=4)
    plain = contracam(enc, proj, x, iters=2, expand_res=4)
    with torch.no_grad():
        torch.testing.assert_close(contracam(enc, proj, x, iters=2, expand_res=4), plain)
    with torch.inference_mode():
        xi = x.clone()  # an inference tensor
        torch.testing.assert_close(contracam(enc, proj, xi, iters=2, expand_res=4), plain)


# ----------------------------------------------------------------------------- the reference pseudo-code


def literal_contracam(enc: nn.Module, proj: nn.Module, image: torch.Tensor, n_iters: int, expand: int) -> torch.Tensor:
    """Algorithms 1-3 of the paper written out plainly (loops, torch.cat), on a deep copy."""
    enc = copy.deepcopy(enc).eval()
    proj = copy.deepcopy(proj).eval()
    if expand >= 2:
        for m in enc.layer4[0].modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)
    if expand >= 4:
        for m in enc.layer3[0].modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)

    def get_features(x):
        with torch.no_grad():
            for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
                x = getattr(enc, name)(x)
        return x

    b, c, h, w = image.shape
    original = image
    mask_color = image.mean(dim=(0, 2, 3), keepdim=True)
    queues = []
    for it in range(n_iters):
        feature = get_features(image)
        feature.requires_grad = True
        output = F.normalize(proj(torch.flatten(enc.avgpool(feature), 1)), dim=1)
        if it == 0:
            key = output.detach()
        queues.append(output.detach())
        eye = torch.eye(b)
        pos = torch.einsum("nc,nc->n", output, key).unsqueeze(0)
        neg = torch.cat([torch.einsum("nc,kc->nk", output, q) * (1 - eye) for q in queues], dim=1)
        score = (pos.exp().sum(dim=1) / neg.exp().sum(dim=1)).log()
        grad = torch.autograd.grad(score.sum(), feature)[0]
        weight = F.adaptive_avg_pool2d(grad, (1, 1)).clamp_min(0)
        cam = torch.sum(weight * feature, dim=1, keepdim=True).detach()
        cam = F.interpolate(F.relu(cam), size=(h, w), mode="bicubic", align_corners=False)
        cam = cam.clone()
        for i in range(b):
            cam[i] -= torch.min(cam[i])
            cam[i] /= torch.max(cam[i]) + 1e-20
        mask = torch.max(mask, cam) if it > 0 else cam  # noqa: F821  (bound at it == 0, as in Algorithm 1)
        image = original * (1 - mask) + mask_color * mask
    return mask


@pytest.mark.parametrize("iters,expand", [(1, 1), (3, 2), (2, 4)])
def test_reference_path_matches_the_papers_pseudo_code(iters: int, expand: int) -> None:
    enc, proj = tiny_resnet(seed=3, zero_residual=False), tiny_projector(seed=3)
    x = torch.randn(5, 3, SIZE, SIZE)
    ours = contracam(enc, proj, x, iters=iters, expand_res=expand)
    ref = literal_contracam(enc, proj, x, iters, expand)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def slow_score(q: torch.Tensor, k: torch.Tensor, negs: list[torch.Tensor], groups: list[int] | None) -> list[float]:
    """score_b = log sum_i exp(q_i.k_i) - log sum_l sum_j exp(q_b.n^l_j [j != b]), scalar loops."""
    b = len(q)
    grp = groups or [0] * b
    out = []
    for s in range(b):
        pos = sum(math.exp(float(q[i] @ k[i])) for i in range(b) if grp[i] == grp[s])
        neg = 0.0
        for n in negs:
            for j in range(b):
                if grp[j] != grp[s]:
                    continue
                neg += math.exp(0.0 if j == s else float(q[s] @ n[j]))
        out.append(math.log(pos) - math.log(neg))
    return out


@pytest.mark.parametrize("groups", [None, [0, 1, 0, 1, 1]])
def test_score_matches_a_slow_loop(groups: list[int] | None) -> None:
    torch.manual_seed(0)
    q = F.normalize(torch.randn(5, 7, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(5, 7, dtype=torch.float64), dim=1)
    negs = [F.normalize(torch.randn(5, 7, dtype=torch.float64), dim=1) for _ in range(3)]
    g = None if groups is None else torch.tensor(groups)
    ours = contrastive_score(q, k, negs, g)
    assert ours.shape == (5,)
    np.testing.assert_allclose(ours.numpy(), slow_score(q, k, negs, groups), rtol=1e-12)


def test_first_iteration_score_by_hand() -> None:
    # B = 2, q = k = negatives: score = log(2e) - log(exp(0) + exp(q0.q1)) for both samples.
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    s = contrastive_score(q, q, [q])
    expected = math.log(2 * math.e) - math.log(1 + math.exp(0.6))
    np.testing.assert_allclose(s.numpy(), [expected, expected], rtol=1e-12)


# ----------------------------------------------------------------------------- the caller's model


def snapshot(m: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in m.state_dict().items()},
        "ptrs": {k: v.data_ptr() for k, v in m.state_dict().items()},
        "strides": [(n, mod.stride) for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)],
        "requires_grad": [p.requires_grad for p in m.parameters()],
        "training": [mod.training for mod in m.modules()],
        "hooks": sum(
            len(mod._forward_hooks) + len(mod._forward_pre_hooks) + len(mod._backward_hooks) for mod in m.modules()
        ),
        "grads": [p.grad for p in m.parameters()],
        "types": [type(mod) for mod in m.modules()],
    }


def test_callers_model_is_unchanged() -> None:
    enc, proj = tiny_resnet(zero_residual=False), tiny_projector()
    enc.train()  # BN in train mode would update its running stats if we ran it as is
    enc.layer1.requires_grad_(False)  # a mixed requires_grad pattern must survive too
    before = (snapshot(enc), snapshot(proj))
    x, _ = scenes(batch=4)
    for kwargs in ({"expand_res": 4, "iters": 2}, {"expand_res": 2, "iters": 2, "amp": True}):
        contracam(enc, proj, x, **kwargs)
    after = (snapshot(enc), snapshot(proj))
    for b, a in zip(before, after):
        assert b["state"].keys() == a["state"].keys()
        for key in b["state"]:
            assert torch.equal(b["state"][key], a["state"][key]), key
        assert b["ptrs"] == a["ptrs"]
        for key in ("strides", "requires_grad", "training", "hooks", "grads", "types"):
            assert b[key] == a[key], key
    assert enc.layer4[0].conv1.stride == (2, 2) and enc.layer4[0].downsample[0].stride == (2, 2)


def test_expand_res_sets_strides_on_the_copy_only() -> None:
    enc, proj = tiny_resnet(), tiny_projector()
    x = torch.zeros(2, 3, SIZE, SIZE)
    sizes = {}
    for expand in (1, 2, 4):
        model = prepare_cam_model(enc, proj, expand_res=expand)
        sizes[expand] = tuple(_features(model, x).shape[2:])
        if expand >= 2:
            convs = [m for m in model.encoder.layer4[0].modules() if isinstance(m, nn.Conv2d)]
            assert len(convs) == 3 and all(c.stride == (1, 1) for c in convs)  # incl. the downsample
    assert sizes == {1: (1, 1), 2: (2, 2), 4: (4, 4)}
    assert enc.layer3[0].conv1.stride == (2, 2)
    with pytest.raises(ValueError, match="expand_res"):
        contracam(enc, proj, x, expand_res=3)


def test_loop_of_calls_does_not_grow_memory() -> None:
    enc, proj = tiny_resnet(), tiny_projector()
    x, _ = scenes(batch=4)

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))

    for _ in range(3):
        contracam(enc, proj, x, iters=2, expand_res=2)
    start_objects, start_tensors = len(gc.get_objects()), live_tensors()
    for _ in range(40):
        out = contracam(enc, proj, x, iters=2, expand_res=2)
    del out
    assert live_tensors() <= start_tensors
    assert len(gc.get_objects()) < start_objects + 200
    model = prepare_cam_model(enc, proj, expand_res=2)
    contracam_prepared(model, x, iters=2)
    assert all(p.grad is None for p in model.projector.parameters())


# ----------------------------------------------------------------------------- fast path


def test_fast_path_masks_agree_with_the_reference() -> None:
    enc, proj = tiny_resnet(seed=1), tiny_projector(seed=1)
    x, _ = scenes(batch=8, seed=2)
    ref = contracam(enc, proj, x, iters=3, expand_res=4) > 0.5
    fast = contracam(enc, proj, x, iters=3, expand_res=4, amp=True) > 0.5
    iou = (ref & fast).sum().item() / (ref | fast).sum().item()
    assert iou >= 0.95


def test_folding_batchnorm_keeps_the_function() -> None:
    enc = tiny_resnet(seed=2, zero_residual=False).eval()
    g = torch.Generator().manual_seed(0)
    for m in enc.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    folded = copy.deepcopy(enc)
    _fold_batchnorms(folded)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), enc(x), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- negative batch


def test_partition_groups() -> None:
    g = torch.Generator().manual_seed(0)
    assert partition_groups(8, None) is None and partition_groups(8, 8) is None
    groups = partition_groups(10, 4, g)
    assert sorted(torch.bincount(groups).tolist()) == [2, 4, 4]
    merged = partition_groups(9, 4, g)  # a lone remainder joins a group
    assert sorted(torch.bincount(merged).tolist()) == [4, 5]
    with pytest.raises(ValueError, match="neg_batch"):
        partition_groups(8, 1)


def test_negative_groups_equal_independent_batches() -> None:
    enc, proj = tiny_resnet(zero_residual=False), tiny_projector()
    x = torch.randn(8, 3, SIZE, SIZE)
    full = contracam(enc, proj, x, iters=2, expand_res=4, neg_batch=4, generator=torch.Generator().manual_seed(5))
    groups = partition_groups(8, 4, torch.Generator().manual_seed(5))
    for gid in groups.unique():
        idx = (groups == gid).nonzero().flatten()
        alone = contracam(enc, proj, x[idx], iters=2, expand_res=4)
        torch.testing.assert_close(full[idx], alone, atol=1e-4, rtol=0)
    whole = contracam(enc, proj, x, iters=2, expand_res=4)
    assert not torch.allclose(full, whole, atol=1e-3)


def test_bad_arguments_raise_value_errors() -> None:
    enc, proj = tiny_resnet(), tiny_projector()
    x = torch.zeros(2, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="iters"):
        contracam(enc, proj, x, iters=0)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        contracam(enc, proj, x[:, :2])
    with pytest.raises(ValueError, match="normalized floats"):
        contracam(enc, proj, x.to(torch.uint8))
    with pytest.raises(ValueError, match="neg_batch"):
        contracam(enc, proj, x, neg_batch=1)
    with pytest.raises(ValueError, match="torchvision ResNet"):
        contracam(nn.Linear(3, 3), proj, x)


def test_classifier_cam_follows_the_class_evidence() -> None:
    # A head that reads channel k as class k: the CAM of class k is feature map k, upsampled and normalized.
    enc = tiny_resnet()
    head = nn.Linear(512, 3, bias=False)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[0, 0] = head.weight[1, 1] = head.weight[2, 2] = 1.0
    x, _ = scenes(batch=4)
    cam = classifier_cam(enc, head, x, torch.tensor([0, 1, 2, 1]), expand_res=4)
    model = prepare_cam_model(enc, head, expand_res=4)
    a = _features(model, x)  # (4, 512, 4, 4)
    for i, k in enumerate([0, 1, 2, 1]):
        up = F.interpolate(F.relu(a[i : i + 1, k : k + 1]), size=(SIZE, SIZE), mode="bicubic", align_corners=False)
        up = (up - up.min()) / (up.max() - up.min() + 1e-20)
        if a[i, k].max() > 0:
            torch.testing.assert_close(cam[i : i + 1], up, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="labels"):
        classifier_cam(enc, head, x, torch.tensor([0, 1, 2, 3]))


# ----------------------------------------------------------------------------- whole data sets


def settings(**over) -> SimpleNamespace:
    base = dict(
        batch_size=4,
        iters=2,
        expand_res=4,
        remove_negative_signal=True,
        neg_batch=0,
        amp=False,
        stop_ratio=0.0,
        crf=True,
        crf_iters=5,
        crf_gauss_sxy=3.0,
        crf_gauss_compat=3.0,
        crf_bi_sxy=80.0,
        crf_bi_srgb=13.0,
        crf_bi_compat=10.0,
        threshold=0.5,
        min_component=0.001,
        box_margin=0.2,
        min_box_area=0.01,
        workers=1,
        seed=0,
    )
    base.update(over)
    return SimpleNamespace(**base)


def test_run_contracam_over_a_dataset() -> None:
    enc, proj = tiny_resnet(), tiny_projector()
    x, boxes = scenes(batch=10, seed=4)
    images_u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)  # bright squares on black
    dataset = [{"image": images_u8[i], "id": f"img{i:02d}"} for i in range(10)]
    res = run_contracam(enc, proj, dataset, settings(), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert res.ids == [f"img{i:02d}" for i in range(10)]
    assert res.masks.shape == (10, SIZE, SIZE) and res.masks.dtype == np.uint8
    assert res.masks_refined.shape == (10, SIZE, SIZE) and set(np.unique(res.masks_refined)) <= {0, 1}
    assert len(res.boxes) == 10
    assert (res.masks.reshape(10, -1).max(1) == 255).all()
    hits = 0
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        assert res.masks[i].argmax() in np.flatnonzero(box_mask((x0, y0, x1, y1)).numpy())
        for bx in res.boxes[i]:
            assert 0 <= bx[0] <= bx[2] <= 1 and 0 <= bx[1] <= bx[3] <= 1
        hits += any(b[0] * SIZE <= x0 + 2 and b[2] * SIZE >= x1 - 2 for b in res.boxes[i])
    assert hits >= 8
