"""ImageNet-C style corruptions (Hendrycks & Dietterich 2019), written here with numpy / cv2 / PIL.

Why not a library: ``imagecorruptions`` does not import on current setuptools, and pulling in
``albumentations`` for a dozen closed-form formulas is a heavy dependency whose constants are not
ImageNet-C's anyway. The formulas below follow the published ImageNet-C definitions; the
severity constants are the published *Tiny-ImageNet-C* ones (64 x 64 images, the default size of
the embedded benchmark). Spatial constants (blur radii, motion length) are scaled by
``size / 64`` for other image sizes. Differences from the reference code, all deliberate:

* motion blur uses a cv2 line kernel with Gaussian weights (the reference calls ImageMagick);
* brightness / saturate work directly in RGB with formulas that equal the HSV round trip
  (V or S changed, hue kept), instead of skimage's colour conversion;
* randomness comes from the caller's ``numpy.random.Generator`` (deterministic per set).

Every corruption maps a batch of uint8 images (n, s, s, 3) to uint8 images of the same shape.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

__all__ = ["CORRUPTIONS", "FAMILIES", "corrupt", "plasma_fractal"]

CorruptionFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]

# Tiny-ImageNet-C severity constants (severity 1..5).
_C = {
    "gaussian_noise": [0.04, 0.08, 0.12, 0.15, 0.18],
    "shot_noise": [250, 100, 50, 30, 15],
    "impulse_noise": [0.01, 0.02, 0.05, 0.08, 0.14],
    "speckle_noise": [0.15, 0.2, 0.25, 0.3, 0.35],
    "gaussian_blur": [0.5, 0.75, 1.0, 1.25, 1.5],
    "defocus_blur": [(0.5, 0.6), (1.0, 0.1), (1.5, 0.1), (2.5, 0.01), (3.0, 0.1)],
    "motion_blur": [(10, 1.0), (10, 1.5), (10, 2.0), (10, 2.5), (12, 3.0)],
    "fog": [(0.4, 3.0), (0.7, 3.0), (1.0, 2.5), (1.5, 2.0), (2.0, 1.75)],
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
    "saturate": [(0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (30.0, 0.2)],
    "pixelate": [0.9, 0.8, 0.7, 0.6, 0.5],
    "jpeg_compression": [65, 58, 50, 40, 25],
}


def _f(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _scale(images: np.ndarray) -> float:
    return images.shape[1] / 64.0


# ------------------------------------------------------------------------------ noise


def gaussian_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """x + N(0, c^2) per pixel and channel."""
    c = _C["gaussian_noise"][severity - 1]
    x = _f(images)
    return _u8(x + rng.normal(0.0, c, x.shape).astype(np.float32))


def shot_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson(c x) / c."""
    c = _C["shot_noise"][severity - 1]
    return _u8(rng.poisson(_f(images) * c).astype(np.float32) / c)


def impulse_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper on a fraction c of the values (half salt, half pepper)."""
    c = _C["impulse_noise"][severity - 1]
    x = _f(images)
    r = rng.random(x.shape, dtype=np.float32)
    x = np.where(r < c / 2, 1.0, x)
    return _u8(np.where((r >= c / 2) & (r < c), 0.0, x))


def speckle_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """x + x N(0, c^2)."""
    c = _C["speckle_noise"][severity - 1]
    x = _f(images)
    return _u8(x + x * rng.normal(0.0, c, x.shape).astype(np.float32))


# ------------------------------------------------------------------------------- blur


def _filter_each(x: np.ndarray, kernel: np.ndarray, border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    return np.stack([cv2.filter2D(img, -1, kernel, borderType=border) for img in x])


def gaussian_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, sigma c (px at 64 px)."""
    sigma = _C["gaussian_blur"][severity - 1] * _scale(images)
    x = _f(images)
    return _u8(np.stack([cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101) for img in x]))


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """ImageNet-C defocus kernel: an aliased disk of ``radius`` smoothed by a Gaussian (sigma ``alias_blur``)."""
    half = max(8, int(np.ceil(radius)))
    ks = (3, 3) if radius <= 8 else (5, 5)
    ax = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(ax, ax)
    k = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    k /= k.sum()
    return cv2.GaussianBlur(k, ks, sigmaX=alias_blur)


def defocus_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Convolution with an anti-aliased disk (radius, alias sigma) = c."""
    radius, alias = _C["defocus_blur"][severity - 1]
    return _u8(_filter_each(_f(images), _disk(radius * _scale(images), alias)))


def _motion_kernel(radius: float, sigma: float, angle: float) -> np.ndarray:
    """One-sided motion kernel: Gaussian weights exp(-i^2 / 2 sigma^2) at offsets i along ``angle`` (deg)."""
    width = int(round(2 * radius + 1))
    w = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    w /= w.sum()
    k = np.zeros((2 * width + 1, 2 * width + 1), np.float32)
    a = np.deg2rad(angle)
    for i in range(width):  # a handful of taps, not pixels
        dy, dx = int(round(i * np.sin(a))), int(round(i * np.cos(a)))
        k[width + dy, width + dx] += w[i]
    return k


def motion_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Motion blur along a random direction in [-45, 45] deg, (radius, sigma) = c."""
    radius, sigma = _C["motion_blur"][severity - 1]
    s = _scale(images)
    x = _f(images)
    out = [
        cv2.filter2D(
            img, -1, _motion_kernel(radius * s, sigma * s, float(rng.uniform(-45, 45))), borderType=cv2.BORDER_REPLICATE
        )
        for img in x
    ]
    return _u8(np.stack(out))


# ---------------------------------------------------------------------------- weather


def plasma_fractal(rng: np.random.Generator, n: int, mapsize: int, wibbledecay: float) -> np.ndarray:
    """Diamond-square height maps (n, mapsize, mapsize) in [0, 1], toroidal, as in ImageNet-C's fog.

    ``mapsize`` must be a power of two. The random offset at each level is
    ``wibble * U(-wibble, wibble)`` with ``wibble`` starting at 100 and divided by ``wibbledecay``
    per level, exactly the reference recipe.
    """
    if mapsize < 2 or mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two >= 2, got {mapsize}")
    a = np.zeros((n, mapsize, mapsize), np.float64)
    step, wibble = mapsize, 100.0

    def wibbled(arr: np.ndarray) -> np.ndarray:
        return arr / 4 + wibble * rng.uniform(-wibble, wibble, arr.shape)

    while step >= 2:
        h = step // 2
        corners = a[:, 0:mapsize:step, 0:mapsize:step]
        sq = corners + np.roll(corners, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        a[:, h:mapsize:step, h:mapsize:step] = wibbled(sq)
        dr = a[:, h:mapsize:step, h:mapsize:step]
        ul = a[:, 0:mapsize:step, 0:mapsize:step]
        a[:, 0:mapsize:step, h:mapsize:step] = wibbled(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2))
        a[:, h:mapsize:step, 0:mapsize:step] = wibbled(dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1))
        step //= 2
        wibble /= wibbledecay
    a -= a.min(axis=(1, 2), keepdims=True)
    return (a / np.maximum(a.max(axis=(1, 2), keepdims=True), 1e-12)).astype(np.float32)


def fog(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """x + c0 * plasma(decay c1), rescaled by max / (max + c0) per image."""
    c0, c1 = _C["fog"][severity - 1]
    x = _f(images)
    n, s = x.shape[:2]
    mapsize = 1 << max(1, int(np.ceil(np.log2(s))))
    x = x + c0 * plasma_fractal(rng, n, mapsize, c1)[:, :s, :s, None]
    mx = _f(images).max(axis=(1, 2, 3), keepdims=True)
    return _u8(x * mx / (mx + c0))


def brightness(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """HSV value + c (hue and saturation kept): RGB scaled by clip(V + c) / V; black becomes grey c."""
    c = _C["brightness"][severity - 1]
    x = _f(images)
    v = x.max(axis=-1, keepdims=True)
    v2 = np.clip(v + c, 0.0, 1.0)
    return _u8(np.where(v > 0, x * v2 / np.maximum(v, 1e-12), v2))


# ---------------------------------------------------------------------------- digital


def contrast(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """(x - mean) * c + mean, mean per image and channel."""
    c = _C["contrast"][severity - 1]
    x = _f(images)
    m = x.mean(axis=(1, 2), keepdims=True)
    return _u8((x - m) * c + m)


def saturate(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """HSV saturation * c0 + c1 (value and hue kept), computed in RGB; a grey pixel takes hue 0 (red)."""
    c0, c1 = _C["saturate"][severity - 1]
    x = _f(images)
    v = x.max(axis=-1, keepdims=True)
    mn = x.min(axis=-1, keepdims=True)
    chroma = v - mn
    s = np.where(v > 0, chroma / np.maximum(v, 1e-12), 0.0)
    # w_k in [0, 1]: how far channel k sits below V, relative to the chroma (grey: hue 0 -> (0, 1, 1))
    w = np.where(chroma > 0, (v - x) / np.maximum(chroma, 1e-12), np.array([0.0, 1.0, 1.0], np.float32))
    s2 = np.clip(s * c0 + c1, 0.0, 1.0)
    return _u8(v * (1.0 - s2 * w))


def pixelate(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Box-downsample to c * size, nearest-upsample back (PIL, as the reference)."""
    c = _C["pixelate"][severity - 1]
    n, s = images.shape[:2]
    small = max(1, int(s * c))
    out = [
        np.asarray(Image.fromarray(img).resize((small, small), Image.BOX).resize((s, s), Image.NEAREST))
        for img in images
    ]
    return np.stack(out).astype(np.uint8)


def jpeg_compression(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG round trip at quality c (PIL, baseline, 4:2:0)."""
    q = _C["jpeg_compression"][severity - 1]
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return np.stack(out).astype(np.uint8)


#: name -> (function, ImageNet-C family)
CORRUPTIONS: dict[str, tuple[CorruptionFn, str]] = {
    "gaussian_noise": (gaussian_noise, "noise"),
    "shot_noise": (shot_noise, "noise"),
    "impulse_noise": (impulse_noise, "noise"),
    "speckle_noise": (speckle_noise, "noise"),
    "defocus_blur": (defocus_blur, "blur"),
    "gaussian_blur": (gaussian_blur, "blur"),
    "motion_blur": (motion_blur, "blur"),
    "fog": (fog, "weather"),
    "brightness": (brightness, "weather"),
    "contrast": (contrast, "digital"),
    "saturate": (saturate, "digital"),
    "pixelate": (pixelate, "digital"),
    "jpeg_compression": (jpeg_compression, "digital"),
}
FAMILIES: tuple[str, ...] = ("noise", "blur", "weather", "digital")


def corrupt(images: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5) to uint8 images (n, s, s, 3); returns uint8, same shape."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1..5, got {severity!r}")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (n, s, s, 3), got {images.dtype} {images.shape}")
    if images.shape[0] == 0:
        return images.copy()
    return CORRUPTIONS[name][0](images, severity, rng)
