"""Procedural noise, colours and the background scene families of the embedded benchmark.

Everything here is vectorised over a batch of ``n`` images of side ``s``: per-image random
parameters are drawn as arrays of shape ``(n, 1, 1)`` and broadcast against pixel coordinates
``(1, s, 1)`` / ``(1, 1, s)``; there are no per-pixel Python loops. All images are float32 RGB in
[0, 1], shape ``(n, s, s, 3)``.

A background family is a kind of scene with its own *spatial* statistics (smooth clouds, waves,
tiles, clutter, camouflage blobs, polka dots, bricks, grass streaks, rays, marble veins). Colours
are random per image (a harmonious two-colour palette, moderate saturation and contrast), so a
family is recognised from structure, not from hue, and every image carries instance-specific
structure (frequency, orientation, phase, layout) that survives cropping and colour jitter.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "BackgroundFn",
    "coords",
    "hsv_to_rgb",
    "luminance",
    "fractal_noise",
    "value_noise",
    "render_backgrounds",
    "smoothstep",
    "squeeze_hues",
    "instance_uniform",
    "instance_spread",
]

BackgroundFn = Callable[[np.random.Generator, int, int], np.ndarray]


# ----------------------------------------------------------------------------- helpers


def coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``X`` (1, 1, s) and ``Y`` (1, s, 1), float32, in pixels."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    c = np.arange(size, dtype=np.float32) + 0.5
    return c[None, None, :], c[None, :, None]


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB. ``h, s, v`` broadcastable arrays in [0, 1]; returns (..., 3) float32."""
    h, s, v = np.broadcast_arrays(np.asarray(h, np.float32) % 1.0, np.asarray(s, np.float32), np.asarray(v, np.float32))
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p = v * (1.0 - s)
    q = v * (1.0 - f * s)
    t = v * (1.0 - (1.0 - f) * s)
    # rows: sector 0..5; columns: (r, g, b) taken from (v, t, p, q)
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ],
        0,
    )  # (6, ..., 3)
    return np.take_along_axis(table, i[None, ..., None], 0)[0].astype(np.float32)


def squeeze_hues(rgb: np.ndarray, spread: float) -> np.ndarray:
    """Map every colour's hue h in [0, 1) to ``0.5 + spread * (h - 0.5)``; saturation and value kept.

    ``rgb`` (..., 3) float in [0, 1]. ``spread`` 1 returns the input unchanged; smaller values confine
    all hues to a band of that fraction of the hue circle, centred on cyan (0.5).
    """
    if not 0.0 < spread <= 1.0:
        raise ValueError(f"spread must be in (0, 1], got {spread}")
    if spread == 1.0:
        return rgb
    rgb = np.asarray(rgb, np.float32)
    hi, lo = rgb.max(-1), rgb.min(-1)
    chroma = hi - lo
    safe = np.where(chroma > 0, chroma, 1.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    h = np.where(hi == r, ((g - b) / safe) % 6.0, np.where(hi == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)) / 6.0
    sat = np.where(hi > 0, chroma / np.where(hi > 0, hi, 1.0), 0.0)
    return hsv_to_rgb(0.5 + spread * (h % 1.0 - 0.5), sat, hi)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of (..., 3) RGB -> (...)."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def smoothstep(lo: float | np.ndarray, hi: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 (x <= lo) to 1 (x >= hi)."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@functools.lru_cache(maxsize=64)
def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells + 3) Catmull-Rom weights that sample a (cells + 3)-knot 1-D grid at ``size`` points."""
    x = (np.arange(size, dtype=np.float64) + 0.5) / size * cells + 1.0  # knot coordinates in [1, cells + 1]
    i = np.floor(x).astype(np.int64)
    t = x - i
    w = np.stack(
        [
            0.5 * (-t + 2 * t**2 - t**3),
            0.5 * (2 - 5 * t**2 + 3 * t**3),
            0.5 * (t + 4 * t**2 - 3 * t**3),
            0.5 * (-(t**2) + t**3),
        ],
        1,
    )
    m = np.zeros((size, cells + 3))
    for k in range(4):
        np.add.at(m, (np.arange(size), i - 1 + k), w[:, k])
    return m.astype(np.float32)


def value_noise(rng: np.random.Generator, n: int, size: int, cells: int | tuple[int, int]) -> np.ndarray:
    """Smooth random field (n, s, s) float32 with ``cells`` random knots per side (y, x), values ~[0, 1].

    Separable Catmull-Rom interpolation of a uniform random grid: ``Wy @ G @ Wx^T``.
    """
    cy, cx = (cells, cells) if isinstance(cells, int) else cells
    if cy < 1 or cx < 1:
        raise ValueError(f"cells must be >= 1, got {cells}")
    grid = rng.random((n, cy + 3, cx + 3), dtype=np.float32)
    wy, wx = _interp_matrix(size, cy), _interp_matrix(size, cx)
    return np.matmul(np.matmul(wy, grid), wx.T)  # (s, cy+3) @ (n, cy+3, cx+3) @ (cx+3, s) -> (n, s, s)


def fractal_noise(rng: np.random.Generator, n: int, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Sum of ``octaves`` value-noise layers (cells doubling, amplitude halving), min-max scaled to [0, 1] per image."""
    total = np.zeros((n, size, size), np.float32)
    amp = 1.0
    for o in range(octaves):
        total += amp * value_noise(rng, n, size, min(cells * 2**o, size))
        amp *= 0.5
    lo = total.min(axis=(1, 2), keepdims=True)
    hi = total.max(axis=(1, 2), keepdims=True)
    return (total - lo) / np.maximum(hi - lo, 1e-6)


_SPREAD: ContextVar[float] = ContextVar("oacl_instance_spread", default=1.0)


@contextlib.contextmanager
def instance_spread(spread: float) -> Iterator[None]:
    """Within the block, every per-instance structural parameter (:func:`instance_uniform`) is drawn
    from its range shrunk to ``spread`` of its width about the middle (1: the full range)."""
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"spread must be in [0, 1], got {spread}")
    token = _SPREAD.set(spread)
    try:
        yield
    finally:
        _SPREAD.reset(token)


def instance_uniform(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """A per-instance parameter (frequency, orientation, phase, offset, aspect ...), shape (n, 1, 1)
    float32: uniform on [lo, hi], or on its middle ``spread`` fraction inside :func:`instance_spread`."""
    spread = _SPREAD.get()
    if spread < 1.0:
        mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0 * spread
        lo, hi = mid - half, mid + half
    return rng.uniform(lo, hi, size=(n, 1, 1)).astype(np.float32)


_u = instance_uniform


def _palette(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two background colours (n, 1, 1, 3): random hue, moderate saturation, a luminance step of 0.15-0.35."""
    hue = rng.random(n)
    sat = rng.uniform(0.15, 0.65, n)
    val = rng.uniform(0.35, 0.75, n)
    step = rng.uniform(0.15, 0.35, n) * rng.choice([-1.0, 1.0], n)
    val2 = np.clip(val + step, 0.08, 0.97)
    hue2 = hue + rng.uniform(-0.12, 0.12, n)
    sat2 = np.clip(sat + rng.uniform(-0.2, 0.2, n), 0.05, 0.9)
    a = hsv_to_rgb(hue, sat, val)[:, None, None, :]
    b = hsv_to_rgb(hue2, sat2, val2)[:, None, None, :]
    return a, b


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """a + t (b - a): colours (n, 1, 1, 3), weights (n, s, s) -> (n, s, s, 3)."""
    return a + t[..., None] * (b - a)


def _rotated(
    rng: np.random.Generator, n: int, size: int, *, angle: tuple[float, float] = (0.0, np.pi)
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random per-image angle about a random origin: (n, s, s) each."""
    x, y = coords(size)
    th = _u(rng, n, *angle)
    ox, oy = _u(rng, n, 0, size), _u(rng, n, 0, size)
    c, s = np.cos(th), np.sin(th)
    return (x - ox) * c + (y - oy) * s, -(x - ox) * s + (y - oy) * c


# --------------------------------------------------------------------- background families


def bg_clouds(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Soft clouds: fractal value noise (2-4 knots) blending two colours, plus a linear sky gradient."""
    t = fractal_noise(rng, n, size, int(rng.integers(2, 5)), octaves=4)
    u, _ = _rotated(rng, n, size)
    grad = u / size
    t = 0.75 * t + 0.25 * (grad - grad.min(axis=(1, 2), keepdims=True))
    return _mix(*_palette(rng, n), np.clip(t, 0, 1))


def bg_waves(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Soft wavy bands: sin(2 pi f u / s + A sin(2 pi g v / s + phi2) + phi), f in 2.5-5 cycles per image."""
    u, v = _rotated(rng, n, size)
    f, g = _u(rng, n, 2.5, 5.0), _u(rng, n, 0.6, 2.0)
    amp = _u(rng, n, 0.8, 2.5)
    t = 0.5 + 0.5 * np.sin(2 * np.pi * f * u / size + amp * np.sin(2 * np.pi * g * v / size + _u(rng, n, 0, 6.3)))
    return _mix(*_palette(rng, n), t)


def bg_tiles(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Rotated two-colour tiles (cell 6-12 px) separated by 1-px grout lines."""
    u, v = _rotated(rng, n, size)
    cell = _u(rng, n, 6.0, 12.0)
    fu, fv = u / cell, v / cell
    parity = ((np.floor(fu) + np.floor(fv)) % 2).astype(np.float32)
    edge = np.minimum(np.minimum(fu % 1, 1 - fu % 1), np.minimum(fv % 1, 1 - fv % 1)) * cell
    a, b = _palette(rng, n)
    img = _mix(a, b, 0.25 + 0.5 * parity)
    grout = (edge < 0.6)[..., None]
    return np.where(grout, 0.5 * (a + b) * _u(rng, n, 0.4, 1.5)[..., None], img).clip(0, 1)


def bg_clutter(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Clutter: a plain base with 20-40 small random discs and squares (radius 1.5-3.5 px), random colours."""
    x, y = coords(size)
    m = 40
    count = rng.integers(20, m + 1, size=(n, 1, 1))
    cx = rng.uniform(0, size, (m, n, 1, 1)).astype(np.float32)
    cy = rng.uniform(0, size, (m, n, 1, 1)).astype(np.float32)
    r = rng.uniform(1.5, 3.5, (m, n, 1, 1)).astype(np.float32)
    square = rng.random((m, n, 1, 1)) < 0.5
    cols = hsv_to_rgb(rng.random((m, n)), rng.uniform(0.1, 0.6, (m, n)), rng.uniform(0.25, 0.85, (m, n)))
    base, _ = _palette(rng, n)
    img = np.broadcast_to(base, (n, size, size, 3)).copy()
    for k in range(m):  # m = 40 layers, each vectorised over the batch and the pixels
        dx, dy = np.abs(x - cx[k]), np.abs(y - cy[k])
        inside = np.where(square[k], np.maximum(dx, dy) <= r[k] * 0.8, dx * dx + dy * dy <= r[k] * r[k]) & (k < count)
        img[inside] = np.broadcast_to(cols[k][:, None, None, :], img.shape)[inside]
    return img


def bg_camo(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Camouflage: fractal noise (3-5 knots) cut into three flat colour levels with sharp edges."""
    t = fractal_noise(rng, n, size, int(rng.integers(3, 6)), octaves=2)
    lo = _u(rng, n, 0.3, 0.45)
    hi = lo + _u(rng, n, 0.15, 0.3)
    level = (t > lo).astype(np.float32) * 0.5 + (t > hi).astype(np.float32) * 0.5
    return _mix(*_palette(rng, n), level)


def bg_polka(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Rotated square lattice of soft dots: spacing 6-10 px, radius 0.2-0.35 of the spacing."""
    u, v = _rotated(rng, n, size)
    sp = _u(rng, n, 6.0, 10.0)
    du, dv = (u / sp) % 1 - 0.5, (v / sp) % 1 - 0.5
    d = np.sqrt(du * du + dv * dv)
    rad = _u(rng, n, 0.2, 0.35)
    t = 1.0 - smoothstep(rad - 0.06, rad + 0.06, d)
    return _mix(*_palette(rng, n), t)


def bg_bricks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Bricks: rows 5-8 px high, bricks 1.8-2.6 rows wide, every other row offset, 1-px mortar, per-brick shade."""
    u, v = _rotated(rng, n, size, angle=(-0.25, 0.25))
    h = _u(rng, n, 5.0, 8.0)
    w = h * _u(rng, n, 1.8, 2.6)
    row = np.floor(v / h)
    uu = u / w + 0.5 * (row % 2)
    col = np.floor(uu)
    mortar = ((v / h) % 1 * h < 1.0) | ((uu % 1) * w < 1.0)
    # per-brick shade from a per-image random table indexed by (row, col) modulo its size
    table = rng.uniform(-0.12, 0.12, (n, 16, 16)).astype(np.float32)
    ri = (row.astype(np.int64) % 16) * 16 + col.astype(np.int64) % 16
    shade = np.take_along_axis(table.reshape(n, -1), ri.reshape(n, -1), 1).reshape(n, size, size)
    a, b = _palette(rng, n)
    img = np.clip(a + shade[..., None], 0, 1)
    return np.where(mortar[..., None], b, img)


def bg_grass(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Grass / grain: anisotropic streaks (2 knots along, 16-28 across) plus fine per-pixel grain."""
    across = int(rng.integers(16, 29))
    t = value_noise(rng, n, size, (2, across))
    t = np.where(rng.random((n, 1, 1)) < 0.5, t, t.transpose(0, 2, 1))
    t = t + 0.25 * rng.random((n, size, size), dtype=np.float32)
    lo = t.min(axis=(1, 2), keepdims=True)
    hi = t.max(axis=(1, 2), keepdims=True)
    return _mix(*_palette(rng, n), (t - lo) / np.maximum(hi - lo, 1e-6))


def bg_rays(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Sunburst: 5-12 soft angular rays from a random centre (possibly off-image), radial darkening."""
    x, y = coords(size)
    cx, cy = _u(rng, n, -0.3 * size, 1.3 * size), _u(rng, n, -0.3 * size, 1.3 * size)
    th = np.arctan2(y - cy, x - cx)
    k = np.floor(_u(rng, n, 5.0, 13.0))
    t = 0.5 + 0.5 * np.sin(k * th + _u(rng, n, 0, 6.3))
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / (1.5 * size)
    return _mix(*_palette(rng, n), np.clip(0.8 * t + 0.2 * r, 0, 1))


def bg_marble(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Marble: thin dark veins |sin(2 pi f u / s + turbulence)|^0.4 over a light base."""
    u, _ = _rotated(rng, n, size)
    turb = fractal_noise(rng, n, size, 3, octaves=3)
    f = _u(rng, n, 1.5, 3.0)
    t = np.abs(np.sin(2 * np.pi * f * u / size + _u(rng, n, 3.0, 7.0) * turb)) ** 0.4
    return _mix(*_palette(rng, n), t)


#: name -> renderer ``fn(rng, n, size) -> (n, size, size, 3) float32``; family index = position.
BACKGROUNDS: dict[str, BackgroundFn] = {
    "clouds": bg_clouds,
    "waves": bg_waves,
    "tiles": bg_tiles,
    "clutter": bg_clutter,
    "camo": bg_camo,
    "polka": bg_polka,
    "bricks": bg_bricks,
    "grass": bg_grass,
    "rays": bg_rays,
    "marble": bg_marble,
}


def render_backgrounds(rng: np.random.Generator, families: np.ndarray, size: int, *, chunk: int = 128) -> np.ndarray:
    """Render one background per entry of ``families`` (n,) int: family indices into :data:`BACKGROUNDS`.

    Returns (n, size, size, 3) float32 in [0, 1]. Images of the same family are rendered together
    (in chunks of ``chunk`` to bound memory); the result depends only on ``rng``'s state and the inputs.
    """
    families = np.asarray(families, dtype=np.int64)
    names = list(BACKGROUNDS)
    if families.size and (families.min() < 0 or families.max() >= len(names)):
        bad = families[(families < 0) | (families >= len(names))][0]
        raise ValueError(f"background family {int(bad)} is outside [0, {len(names)})")
    out = np.empty((families.size, size, size, 3), np.float32)
    for fam in range(len(names)):
        idx = np.flatnonzero(families == fam)
        for lo in range(0, idx.size, chunk):
            part = idx[lo : lo + chunk]
            out[part] = np.clip(BACKGROUNDS[names[fam]](rng, part.size, size), 0.0, 1.0)
    return out
