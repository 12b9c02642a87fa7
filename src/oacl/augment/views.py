"""Two-view augmentation of MoCo v2 / BYOL (paper appendix B.1), split in two halves.

The recipe: RandomResizedCrop (scale 0.08–1), horizontal flip, colour jitter (0.4, 0.4,
0.4, 0.1) with p = 0.8, grayscale with p = 0.2, Gaussian blur (kernel ≈ 10 % of the side,
σ ∈ [0.1, 2]) with p = 0.5, then normalisation.

It runs in two places (a :class:`ViewPipeline`):

- ``per_item`` — in the DataLoader, on one item dict: the *geometric* part
  (:class:`CropFlip`: ``torchvision.transforms.v2``'s RandomResizedCrop and horizontal flip
  without its per-call dispatch, on a tensor of any number of channels, so that BG-Mixup's mask
  is cropped and flipped with its image; OA-Crop crops to a box first). :class:`TwoCrops`
  returns two uint8 views.
- ``per_batch`` — in the training process, on the collated batch and on its device: the
  *photometric* part, vectorised over the batch with per-image random parameters
  (:class:`BatchPhotometric`). Each function matches ``torchvision.transforms.v2.functional``
  on float images image by image (tested), at a fraction of the per-item cost: on 64 px
  images the per-item v2 pipeline took ~1.5 ms per view here, its geometric half 0.2 ms.

Debiased variants plug in by replacing either half: a ``per_item`` that crops to an object
box before :class:`TwoCrops`, a ``per_batch`` that mixes backgrounds before
:class:`BatchPhotometric`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from oacl.imaging import normalize
from oacl.vocab import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "AugmentSettings",
    "ViewPipeline",
    "CropFlip",
    "TwoCrops",
    "PhotometricParams",
    "BatchPhotometric",
    "blur_kernel_size",
    "sample_photometric",
    "apply_photometric",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "to_grayscale",
    "gaussian_blur",
    "two_view_pipeline",
]

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's aspect-ratio range (torchvision's default)
# benchmarks/cam_screen.py --vflip: a vertical flip after every horizontal one, same probability, in the
# TwoCrops built while this is True
VERTICAL_FLIPS = False
_JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


@dataclass(frozen=True)
class AugmentSettings:
    """The two-view recipe; defaults are the paper's (appendix B.1)."""

    size: int
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int | None = None  # None: blur_kernel_size(size)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size!r}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale!r}")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        if any(j < 0 for j in self.jitter) or self.jitter[3] > 0.5:
            raise ValueError(f"jitter strengths must be >= 0 (hue <= 0.5), got {self.jitter!r}")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < lo <= hi, got {self.blur_sigma!r}")
        if self.blur_kernel is not None and (self.blur_kernel < 1 or self.blur_kernel % 2 == 0):
            raise ValueError(f"blur_kernel must be a positive odd integer, got {self.blur_kernel!r}")

    @property
    def kernel(self) -> int:
        return self.blur_kernel if self.blur_kernel is not None else blur_kernel_size(self.size)


@dataclass(frozen=True)
class ViewPipeline:
    """How the engine makes two views: ``per_item`` in the DataLoader, ``per_batch`` after collation.

    ``per_item(item) -> views`` receives a dataset item dict (see
    :mod:`oacl.data.datasets`) and returns anything ``torch.utils.data.default_collate``
    can stack (a pair of uint8 (3, H, W) tensors, or a pair of dicts of tensors).
    ``per_batch(views) -> (x1, x2)`` receives the collated views already on the training
    device and returns two normalized float batches (B, 3, H, W); it may return
    ``(x1, x2, stats)`` with ``stats`` a dict of 0-d tensors (e.g. a realised mix rate) that
    the engine averages per epoch like the method's own statistics. Both must be picklable
    when the loader has workers (top-level classes or functions, no lambdas).
    """

    per_item: Callable[[Any], Any]
    per_batch: Callable[[Any], tuple[Tensor, ...]]


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian-blur kernel of about 10 % of the image side (23 px at 224 px, 7 at 64), >= 3."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size!r}")
    k = max(3, int(round(0.1 * size)))
    return k if k % 2 == 1 else k + 1


# --------------------------------------------------------------------------- per item


class CropFlip:
    """RandomResizedCrop (bilinear, antialiased) then a horizontal flip, of one (C, H, W) tensor.

    Draws from the global torch RNG what ``v2.Compose([v2.RandomResizedCrop(size, scale),
    v2.RandomHorizontalFlip(flip_p)])`` draws, in the same order, and returns the same values
    (tested, uint8 and float, 3 and 4 channels), without v2's per-call dispatch: 0.11–0.14 → 0.07–0.08 ms a
    64 px view on one core here. The crop window is torchvision's: up to 10 tries of an area
    fraction uniform in ``scale`` and a log-uniform aspect ratio in :data:`CROP_RATIO`, else the
    largest centred window within those ratios. ``vflip_p`` > 0 adds a vertical flip after the
    horizontal one.
    """

    def __init__(self, size: int, scale: tuple[float, float], flip_p: float = 0.5, vflip_p: float = 0.0) -> None:
        self.size, self.scale, self.flip_p, self.vflip_p = size, scale, flip_p, vflip_p
        # float32 bounds, as torchvision draws them
        self.log_ratio = tuple(torch.log(torch.tensor(CROP_RATIO)).tolist())

    def window(self, height: int, width: int) -> tuple[int, int, int, int]:
        """A random crop window (top, left, h, w) of a ``height`` × ``width`` image."""
        area = height * width
        for _ in range(10):
            target = area * torch.empty(1).uniform_(*self.scale).item()
            aspect = torch.exp(torch.empty(1).uniform_(*self.log_ratio)).item()  # exp in float32, as torchvision
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,)).item())
                left = int(torch.randint(0, width - w + 1, size=(1,)).item())
                return top, left, h, w
        ratio = width / height
        if ratio < CROP_RATIO[0]:
            w, h = width, int(round(width / CROP_RATIO[0]))
        elif ratio > CROP_RATIO[1]:
            h, w = height, int(round(height * CROP_RATIO[1]))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: Tensor) -> Tensor:
        top, left, h, w = self.window(int(image.shape[-2]), int(image.shape[-1]))
        out = TF.resize_image(image[..., top : top + h, left : left + w], [self.size, self.size], antialias=True)
        if torch.rand(1) < self.flip_p:
            out = out.flip(-1)
        if self.vflip_p > 0 and torch.rand(1) < self.vflip_p:
            out = out.flip(-2)
        return out


class TwoCrops:
    """Per-item half: two independent :class:`CropFlip` views of ``item["image"]``.

    Returns ``(view1, view2)``, each a plain uint8 tensor (3, size, size). :attr:`crop_flip` is
    the one-view transform, for variants that crop a mask with the image (as a fourth channel).
    """

    def __init__(self, size: int, crop_scale: tuple[float, float] = (0.08, 1.0), flip_p: float = 0.5) -> None:
        AugmentSettings(size=size, crop_scale=crop_scale, flip_p=flip_p)  # validates
        self.crop_flip = CropFlip(size, crop_scale, flip_p, flip_p if VERTICAL_FLIPS else 0.0)

    def __call__(self, item: dict[str, Any]) -> tuple[Tensor, Tensor]:
        image = item["image"].as_subclass(Tensor)
        return self.crop_flip(image), self.crop_flip(image)


# --------------------------------------------------------------------- photometric ops
# Each op: x (N, 3, H, W) float in [0, 1], per-image factor (N,) -> (N, 3, H, W), clamped to [0, 1].


def _per_image(f: Tensor, x: Tensor) -> Tensor:
    return f.to(x.dtype).view(-1, 1, 1, 1)


def to_grayscale(x: Tensor) -> Tensor:
    """Luma (N, 1, H, W) of RGB x (N, 3, H, W), torchvision's weights."""
    r, g, b = x.unbind(dim=-3)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(-3)


def _blend(a: Tensor, b: Tensor, ratio: Tensor) -> Tensor:
    return (ratio * a + (1.0 - ratio) * b).clamp_(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """x · factor, clamped (v2.functional.adjust_brightness per image)."""
    return (x * _per_image(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's mean luma (v2.functional.adjust_contrast per image)."""
    mean = to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)  # (N, 1, 1, 1)
    return _blend(x, mean, _per_image(factor, x))


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's luma (v2.functional.adjust_saturation per image)."""
    return _blend(x, to_grayscale(x), _per_image(factor, x))


def _frac(x: Tensor) -> Tensor:
    """x mod 1 (for any sign), via floor: several times cheaper than ``%`` on the CPU."""
    return x - torch.floor(x)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(dim=-3)
    maxc = x.amax(dim=-3)  # amax / amin: no index output, far cheaper than max / min
    minc = x.amin(dim=-3)
    delta = maxc - minc
    s = delta / torch.where(maxc == 0, 1.0, maxc)
    d = torch.where(delta == 0, 1.0, delta)  # gray pixels: rc = gc = bc = 0, so h = 0
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    return torch.stack((_frac(h / 6.0 + 1.0), s, maxc), dim=-3)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    # Channel n in (R, G, B) = (5, 3, 1): v − v·s·clamp(min(k, 4 − k), 0, 1), k = (n + 6h) mod 6 —
    # the sector formula without a table lookup (elementwise only, so cheap on a batch).
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)
    k = 6.0 * _frac((n + 6.0 * h) / 6.0)  # (N, 3, H, W)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate the hue by ``factor`` turns (in [−0.5, 0.5]) (v2.functional.adjust_hue per image)."""
    hsv = _rgb_to_hsv(x)
    h = _frac(hsv[:, 0] + factor.to(x.dtype).view(-1, 1, 1))
    return _hsv_to_rgb(torch.cat([h.unsqueeze(1), hsv[:, 1:]], dim=1))


_OPS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_hue,
)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Per-image Gaussian blur with reflect padding (v2.functional.gaussian_blur per image).

    x: (N, 3, H, W) float; sigma: (N,) > 0 in pixels; kernel_size odd. Separable: one
    grouped 1-D convolution per axis, one kernel per image and channel.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    n, c, h, w = x.shape
    half = kernel_size // 2
    if half >= min(h, w):
        raise ValueError(f"kernel_size {kernel_size} is too large for {h}x{w} images (reflect padding)")
    pos = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - half  # (k,)
    kern = torch.softmax(-(pos.view(1, -1) ** 2) / (2.0 * sigma.to(x.dtype).view(-1, 1) ** 2), dim=1)  # (N, k)
    kern = kern.repeat_interleave(c, dim=0)  # (N·3, k)
    y = F.pad(x.reshape(1, n * c, h, w), (half, half, half, half), mode="reflect")
    y = F.conv2d(y, kern.view(n * c, 1, 1, kernel_size), groups=n * c)  # along W
    y = F.conv2d(y, kern.view(n * c, 1, kernel_size, 1), groups=n * c)  # along H
    return y.view(n, c, h, w)


# ----------------------------------------------------------------------- per batch


@dataclass(frozen=True)
class PhotometricParams:
    """Random parameters of the photometric half for a batch of B images.

    jitter: (B,) bool apply colour jitter; factors: (B, 4) brightness, contrast,
    saturation, hue factor; order: (B, 4) a permutation of the 4 ops per image;
    gray: (B,) bool; blur: (B,) bool; sigma: (B,) blur σ in pixels.
    """

    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor
    blur: Tensor
    sigma: Tensor


def sample_photometric(batch: int, cfg: AugmentSettings, device: torch.device | str = "cpu") -> PhotometricParams:
    """Draw :class:`PhotometricParams` like ``v2.ColorJitter`` / ``RandomGrayscale`` / ``GaussianBlur``.

    Uses the global torch RNG of ``device`` (seeded by ``torch.manual_seed``).
    """
    b, cs, s, hue = cfg.jitter
    lo = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - cs), max(0.0, 1 - s), -hue], device=device)
    hi = torch.tensor([1 + b, 1 + cs, 1 + s, hue], device=device)
    u = torch.rand(batch, 4, device=device)
    order = torch.rand(batch, 4, device=device).argsort(dim=1)
    slo, shi = cfg.blur_sigma
    return PhotometricParams(
        jitter=torch.rand(batch, device=device) < cfg.jitter_p,
        factors=lo + (hi - lo) * u,
        order=order,
        gray=torch.rand(batch, device=device) < cfg.gray_p,
        blur=torch.rand(batch, device=device) < cfg.blur_p,
        sigma=slo + (shi - slo) * torch.rand(batch, device=device),
    )


def apply_photometric(x: Tensor, p: PhotometricParams, kernel_size: int) -> Tensor:
    """Colour jitter (per-image random op order) → grayscale → blur, each where its flag is set.

    x: (B, 3, H, W) float in [0, 1] → (B, 3, H, W). The input is not modified.
    """
    out = x.clone()
    for slot in range(4):
        op_at_slot = p.order[:, slot]
        for op_id, op in enumerate(_OPS):
            sel = torch.nonzero(p.jitter & (op_at_slot == op_id)).flatten()
            if sel.numel():
                out[sel] = op(out[sel], p.factors[sel, op_id])
    sel = torch.nonzero(p.gray).flatten()
    if sel.numel():
        out[sel] = to_grayscale(out[sel]).expand(-1, 3, -1, -1)
    sel = torch.nonzero(p.blur).flatten()
    if sel.numel():
        out[sel] = gaussian_blur(out[sel], p.sigma[sel], kernel_size)
    return out


class BatchPhotometric:
    """Per-batch half: independent photometric augmentation of each view, then normalisation.

    ``__call__(views)`` takes the collated pair of uint8 (B, 3, H, W) batches and returns
    two normalized float32 batches on the same device.
    """

    def __init__(self, cfg: AugmentSettings) -> None:
        self.cfg = cfg

    def __call__(self, views: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        if len(views) != 2:
            raise ValueError(f"expected 2 views, got {len(views)}")
        out = []
        for v in views:
            if v.dtype != torch.uint8 or v.dim() != 4 or v.shape[1] != 3:
                raise ValueError(f"views must be uint8 (B, 3, H, W), got {v.dtype} {tuple(v.shape)}")
            x = v.float().div_(255.0)
            params = sample_photometric(x.shape[0], self.cfg, x.device)
            out.append(normalize(apply_photometric(x, params, self.cfg.kernel), self.cfg.mean, self.cfg.std))
        return out[0], out[1]


def two_view_pipeline(cfg: AugmentSettings) -> ViewPipeline:
    """The paper's two-view recipe as a :class:`ViewPipeline` (:class:`TwoCrops` + :class:`BatchPhotometric`)."""
    return ViewPipeline(TwoCrops(cfg.size, cfg.crop_scale, cfg.flip_p), BatchPhotometric(cfg))
