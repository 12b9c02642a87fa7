"""Two-view augmentation: the batched photometric ops equal torchvision v2 image by image."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from conftest import make_scenes
from oacl.augment.views import (
    AugmentSettings,
    BatchPhotometric,
    CropFlip,
    TwoCrops,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_photometric,
    blur_kernel_size,
    gaussian_blur,
    normalize,
    sample_photometric,
    two_view_pipeline,
)
from oacl.data.datasets import make_sample


def _images(n: int = 12, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    x[0] = 0.5  # a gray image (hue undefined)
    x[1, :, :4] = 0.0  # black rows
    x[2, 0] = x[2, 1]  # max shared by two channels
    return x


@pytest.mark.parametrize(
    "ours,theirs,lo,hi",
    [
        (adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
        (adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
        (adjust_saturation, TF.adjust_saturation, 0.6, 1.4),
        (adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_ops_match_torchvision(ours, theirs, lo, hi) -> None:
    x = _images()
    f = lo + (hi - lo) * torch.rand(x.shape[0], generator=torch.Generator().manual_seed(1))
    ref = torch.stack([theirs(x[i], float(f[i])) for i in range(x.shape[0])])
    torch.testing.assert_close(ours(x, f), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kernel", [3, 7])
def test_blur_matches_torchvision(kernel: int) -> None:
    x = _images()
    sigma = torch.linspace(0.1, 2.0, x.shape[0])
    ref = torch.stack([TF.gaussian_blur(x[i], [kernel, kernel], [float(sigma[i])] * 2) for i in range(x.shape[0])])
    torch.testing.assert_close(gaussian_blur(x, sigma, kernel), ref, atol=1e-5, rtol=0)


def test_photometric_pipeline_matches_per_image_reference() -> None:
    x = _images(32)
    torch.manual_seed(3)
    cfg = AugmentSettings(size=16, jitter_p=0.8, gray_p=0.3, blur_p=0.5)
    p = sample_photometric(32, cfg)
    assert p.jitter.any() and (~p.jitter).any() and p.gray.any() and p.blur.any()
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    ref = []
    for i in range(32):
        y = x[i]
        if p.jitter[i]:
            for op in p.order[i].tolist():
                y = ops[op](y, float(p.factors[i, op]))
        if p.gray[i]:
            y = TF.rgb_to_grayscale(y, num_output_channels=3)
        if p.blur[i]:
            y = TF.gaussian_blur(y, [5, 5], [float(p.sigma[i])] * 2)
        ref.append(y)
    torch.testing.assert_close(apply_photometric(x, p, 5), torch.stack(ref), atol=1e-5, rtol=0)
    assert torch.equal(x, _images(32))  # input untouched


def test_sampled_parameters_follow_the_recipe() -> None:
    torch.manual_seed(0)
    p = sample_photometric(20000, AugmentSettings(size=64))
    assert p.jitter.float().mean() == pytest.approx(0.8, abs=0.02)
    assert p.gray.float().mean() == pytest.approx(0.2, abs=0.02)
    assert p.blur.float().mean() == pytest.approx(0.5, abs=0.02)
    assert p.factors[:, :3].min() >= 0.6 and p.factors[:, :3].max() <= 1.4
    assert p.factors[:, 3].abs().max() <= 0.1
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(20000, 4))


def test_kernel_size_is_ten_percent_and_odd() -> None:
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(64) == 7
    assert blur_kernel_size(16) == 3


def test_two_crops_and_batch_half() -> None:
    s = make_scenes(n=2, size=32)
    item = make_sample(s.images[0], int(s.labels[0]), s.boxes_of(0), s.box_labels_of(0), s.masks[0], s.ids[0])
    torch.manual_seed(0)
    v1, v2 = TwoCrops(24)(item)
    assert v1.dtype == torch.uint8 and v1.shape == (3, 24, 24) and type(v1) is torch.Tensor
    assert not torch.equal(v1, v2)
    pipe = two_view_pipeline(AugmentSettings(size=24))
    x1, x2 = pipe.per_batch((torch.stack([v1, v1]), torch.stack([v2, v2])))
    assert x1.shape == (2, 3, 24, 24) and x1.dtype == torch.float32
    # A crop of the whole image at scale 1 and no flip is the image itself.
    whole = TwoCrops(32, crop_scale=(1.0, 1.0), flip_p=0.0)
    torch.manual_seed(0)
    a, _ = whole(item)
    assert a.shape == (3, 32, 32)


@pytest.mark.parametrize(
    ("shape", "dtype", "scale"),
    [
        ((3, 64, 64), torch.uint8, (0.2, 1.0)),  # the default's views
        ((4, 64, 64), torch.uint8, (0.08, 1.0)),  # BG-Mixup's image + mask
        ((3, 37, 90), torch.float32, (0.08, 1.0)),  # a real image of its own size
        ((3, 6, 200), torch.uint8, (0.9, 1.0)),  # no window fits the ratios: the centred fallback
    ],
)
def test_crop_flip_equals_torchvision(shape, dtype, scale) -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(dtype)
    reference = v2.Compose([v2.RandomResizedCrop(24, scale=scale, antialias=True), v2.RandomHorizontalFlip(0.5)])
    ours = CropFlip(24, scale, flip_p=0.5)
    flips = set()
    for seed in range(60):
        torch.manual_seed(seed)
        want, after_reference = reference(image), torch.rand(1)
        torch.manual_seed(seed)
        got, after_ours = ours(image), torch.rand(1)
        assert got.dtype == dtype and torch.equal(got, want), seed
        assert torch.equal(after_ours, after_reference)  # the same draws from the global RNG
        torch.manual_seed(seed)
        top, left, h, w = ours.window(shape[1], shape[2])
        flips.add(torch.equal(got, TF.resize_image(image[:, top : top + h, left : left + w], [24, 24]).flip(-1)))
    assert flips == {True, False}


def test_normalize_uint8_and_float_agree() -> None:
    u = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    torch.testing.assert_close(normalize(u, mean, std), normalize(u.float() / 255, mean, std))
    torch.testing.assert_close(normalize(u, mean, std), TF.normalize(u.float() / 255, list(mean), list(std)))


@pytest.mark.parametrize(
    "kw", [{"crop_scale": (0.5, 0.1)}, {"jitter_p": 1.5}, {"blur_kernel": 4}, {"blur_sigma": (0.0, 1.0)}, {"size": 0}]
)
def test_bad_settings_rejected(kw) -> None:
    with pytest.raises(ValueError):
        AugmentSettings(**{"size": 32, **kw})


def test_batch_half_rejects_float_views() -> None:
    with pytest.raises(ValueError, match="uint8"):
        BatchPhotometric(AugmentSettings(size=8))((torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)))
