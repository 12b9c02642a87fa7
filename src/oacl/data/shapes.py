"""Object classes of the embedded benchmark: a shape family plus an internal texture type.

Class ``k`` is the pair ``CLASSES[k] = (shape, texture)``. A class is recognisable by its
*silhouette* and the *kind* of its texture, never by one pixel's colour: every instance draws
its own two colours (random hue, one bright and one dark, so the texture survives grey-scaling
and colour jitter), its own texture parameters (frequency, orientation, phase, layout — the
instance-specific structure a contrastive learner can latch on to), scale, position, rotation
and small shape variations (aspect ratio, inner radius, ...).

Shapes are implicit functions of object-local coordinates ``(u, v)``: the pixel offset from the
object centre, rotated by the object's angle and divided by its radius ``R`` (px), so a shape
lives in (roughly) the unit disk. Masks are exact and binary (a pixel belongs to the object when
its centre is inside the shape), so the stored mask *is* the rendered object. Every function is
vectorised over a batch: coordinates are (n, s, s), per-instance parameters (n, 1, 1).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from oacl.data.textures import coords, hsv_to_rgb, instance_uniform, smoothstep, value_noise

__all__ = [
    "CLASSES",
    "SHAPES",
    "TEXTURES",
    "class_names",
    "boundary",
    "render_objects",
]

ShapeFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
TextureFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


_u = instance_uniform  # per-instance parameters shrink with data.benchmark.nuisance


# ------------------------------------------------------------------------------ shapes
# Each returns a bool mask (n, s, s) from local coordinates u, v (n, s, s) in units of R.


def shape_disk(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ellipse, aspect 0.7-1."""
    a = _u(rng, u.shape[0], 0.7, 1.0)
    return u * u + (v / a) ** 2 <= 0.95**2


def shape_square(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rectangle with half-sides 0.75 x (0.8-1) * 0.75 (corners reach 1.06 R)."""
    a = _u(rng, u.shape[0], 0.8, 1.0)
    return np.maximum(np.abs(u), np.abs(v) / a) <= 0.75


def shape_triangle(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Equilateral triangle inscribed in the unit circle (in-radius 0.5)."""
    inside = np.ones(u.shape, bool)
    for k in range(3):
        a = np.pi / 2 + k * 2 * np.pi / 3
        inside &= u * np.cos(a) + v * np.sin(a) <= 0.5
    return inside


def shape_star(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Five-pointed star, outer radius 1, inner radius 0.42-0.52 (radius linear in angle between tips)."""
    inner = _u(rng, u.shape[0], 0.42, 0.52)
    th = np.arctan2(v, u)
    frac = np.abs(((th / (2 * np.pi / 5)) % 1.0) - 0.5) * 2.0  # 1 at a tip, 0 half-way between tips
    return np.sqrt(u * u + v * v) <= inner + (1.0 - inner) * frac**1.5


def shape_cross(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Plus sign: arm half-width 0.27-0.36, arm length 0.93."""
    w = _u(rng, u.shape[0], 0.27, 0.36)
    au, av = np.abs(u), np.abs(v)
    return ((au <= w) & (av <= 0.93)) | ((av <= w) & (au <= 0.93))


def shape_ring(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Annulus: outer radius 0.97, inner radius 0.45-0.58 (the hole shows the background)."""
    inner = _u(rng, u.shape[0], 0.45, 0.58)
    r2 = u * u + v * v
    return (r2 <= 0.97**2) & (r2 >= inner * inner)


def shape_crescent(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crescent: unit disk minus a disk of radius 0.8 shifted by 0.4-0.55."""
    d = _u(rng, u.shape[0], 0.4, 0.55)
    return (u * u + v * v <= 0.97**2) & ((u - d) ** 2 + v * v > 0.8**2)


def shape_heart(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Heart: (x^2 + y^2 - 1)^3 <= x^2 y^3 with x = 1.3 u, y = 0.25 - 1.3 v (fits radius 0.96)."""
    x, y = u * 1.3, 0.25 - v * 1.3
    q = x * x + y * y - 1.0
    return q * q * q <= x * x * y * y * y


def shape_arrow(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Arrow pointing +u: shaft half-width 0.16-0.24, triangular head from u = 0."""
    w = _u(rng, u.shape[0], 0.16, 0.24)
    shaft = (np.abs(v) <= w) & (u >= -0.95) & (u <= 0.1)
    head = (u >= 0.0) & (np.abs(v) <= 0.8 * (0.95 - u))
    return shaft | head


def shape_hourglass(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hourglass / bow-tie: two triangles meeting at a waist of half-width 0.08-0.15."""
    waist = _u(rng, u.shape[0], 0.08, 0.15)
    return (np.abs(v) <= 0.8) & (np.abs(u) <= waist + 0.72 * np.abs(v))


SHAPES: dict[str, ShapeFn] = {
    "disk": shape_disk,
    "square": shape_square,
    "triangle": shape_triangle,
    "star": shape_star,
    "cross": shape_cross,
    "ring": shape_ring,
    "crescent": shape_crescent,
    "heart": shape_heart,
    "arrow": shape_arrow,
    "hourglass": shape_hourglass,
}


# ---------------------------------------------------------------------------- textures
# Each returns a weight t (n, s, s) in [0, 1] between the instance's dark (0) and bright (1) colour.


def _rot(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    th = _u(rng, u.shape[0], 0.0, np.pi)
    c, s = np.cos(th), np.sin(th)
    return u * c + v * s, -u * s + v * c


def tex_stripes(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Straight stripes, period 0.3-0.55 R, random orientation and phase."""
    a, _ = _rot(u, v, rng)
    p = _u(rng, u.shape[0], 0.3, 0.55)
    return ((a / p + _u(rng, u.shape[0], 0, 1)) % 1.0 < 0.5).astype(np.float32)


def tex_checker(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Checkerboard, cell 0.28-0.45 R, random orientation and offset."""
    a, b = _rot(u, v, rng)
    c = _u(rng, u.shape[0], 0.28, 0.45)
    n = u.shape[0]
    return ((np.floor(a / c + _u(rng, n, 0, 1)) + np.floor(b / c + _u(rng, n, 0, 1))) % 2).astype(np.float32)


def tex_dots(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bright dots on a dark ground: square lattice, spacing 0.38-0.55 R, radius 0.3-0.38 of the spacing."""
    a, b = _rot(u, v, rng)
    n = u.shape[0]
    sp = _u(rng, n, 0.38, 0.55)
    da = (a / sp + _u(rng, n, 0, 1)) % 1.0 - 0.5
    db = (b / sp + _u(rng, n, 0, 1)) % 1.0 - 0.5
    return (da * da + db * db <= _u(rng, n, 0.3, 0.38) ** 2).astype(np.float32)


def tex_rings(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Concentric rings about a random point within 0.4 R of the centre, period 0.3-0.45 R."""
    n = u.shape[0]
    cu, cv = _u(rng, n, -0.4, 0.4), _u(rng, n, -0.4, 0.4)
    r = np.sqrt((u - cu) ** 2 + (v - cv) ** 2)
    return ((r / _u(rng, n, 0.3, 0.45) + _u(rng, n, 0, 1)) % 1.0 < 0.5).astype(np.float32)


def tex_spots(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Leopard spots: value noise sampled in object coordinates, thresholded at 0.45-0.6."""
    n, s = u.shape[0], u.shape[1]
    # noise on a fixed 9x9 knot grid over the object's bounding square, looked up per pixel
    field = value_noise(rng, n, 32, 5)  # (n, 32, 32) over local [-1, 1]^2
    iu = np.clip(((u + 1.0) * 16.0).astype(np.int64), 0, 31)
    iv = np.clip(((v + 1.0) * 16.0).astype(np.int64), 0, 31)
    vals = np.take_along_axis(field.reshape(n, -1), (iv * 32 + iu).reshape(n, -1), 1).reshape(n, s, s)
    return (vals > _u(rng, n, 0.45, 0.6)).astype(np.float32)


def tex_zigzag(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Chevron stripes: stripes along a displaced by a triangle wave of b (period 0.5-0.8 R)."""
    a, b = _rot(u, v, rng)
    n = u.shape[0]
    g = _u(rng, n, 0.5, 0.8)
    tri = np.abs((b / g) % 1.0 - 0.5) * _u(rng, n, 0.5, 0.8)
    return (((a + tri) / _u(rng, n, 0.3, 0.45) + _u(rng, n, 0, 1)) % 1.0 < 0.5).astype(np.float32)


def tex_grid(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bright lattice lines (width 0.3 of the cell) on a dark ground, cell 0.35-0.55 R."""
    a, b = _rot(u, v, rng)
    n = u.shape[0]
    c = _u(rng, n, 0.35, 0.55)
    fa = (a / c + _u(rng, n, 0, 1)) % 1.0
    fb = (b / c + _u(rng, n, 0, 1)) % 1.0
    return ((fa < 0.3) | (fb < 0.3)).astype(np.float32)


def tex_waves(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Wavy stripes: sin(2 pi a / p + A sin(2 pi b / q)), p 0.3-0.45 R, thresholded."""
    a, b = _rot(u, v, rng)
    n = u.shape[0]
    ph = np.sin(
        2 * np.pi * a / _u(rng, n, 0.3, 0.45) + _u(rng, n, 1.5, 3.0) * np.sin(2 * np.pi * b / _u(rng, n, 0.6, 1.0))
    )
    return (ph > 0).astype(np.float32)


def tex_spiral(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Spiral arms: sin(k theta + 2 pi r / p + phase), k in {2, 3, 4}."""
    n = u.shape[0]
    th = np.arctan2(v, u)
    r = np.sqrt(u * u + v * v)
    k = rng.integers(2, 5, size=(n, 1, 1)).astype(np.float32)
    sign = rng.choice(np.array([-1.0, 1.0], np.float32), size=(n, 1, 1))
    return (np.sin(k * th + sign * 2 * np.pi * r / _u(rng, n, 0.45, 0.7) + _u(rng, n, 0, 6.3)) > 0).astype(np.float32)


def tex_gradient(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth luminance ramp across the object in a random direction (a shaded, untextured object)."""
    a, _ = _rot(u, v, rng)
    return smoothstep(-0.9, 0.9, a)


TEXTURES: dict[str, TextureFn] = {
    "stripes": tex_stripes,
    "checker": tex_checker,
    "dots": tex_dots,
    "rings": tex_rings,
    "spots": tex_spots,
    "zigzag": tex_zigzag,
    "grid": tex_grid,
    "waves": tex_waves,
    "spiral": tex_spiral,
    "gradient": tex_gradient,
}

#: Class k = (shape, texture). The first ``num_classes`` entries are used.
CLASSES: tuple[tuple[str, str], ...] = (
    ("disk", "stripes"),
    ("square", "dots"),
    ("triangle", "checker"),
    ("star", "rings"),
    ("cross", "spots"),
    ("ring", "zigzag"),
    ("crescent", "grid"),
    ("heart", "waves"),
    ("arrow", "spiral"),
    ("hourglass", "gradient"),
)


def class_names(num_classes: int) -> list[str]:
    """Names ``"<shape>"`` of the first ``num_classes`` classes."""
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(CLASSES)}], got {num_classes}")
    return [shape for shape, _ in CLASSES[:num_classes]]


# ----------------------------------------------------------------------------- render


def boundary(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of ``mask`` (n, s, s) bool within ``width`` px (4-neighbourhood) of its outside."""
    inner = mask.copy()
    for _ in range(width):
        p = np.pad(inner, ((0, 0), (1, 1), (1, 1)), constant_values=False)
        inner = inner & p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:]
    return mask & ~inner


def object_colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-instance (bright, dark) colours (n, 3): independent random hues, saturated, V 0.72-1 vs 0.08-0.4."""
    bright = hsv_to_rgb(rng.random(n), rng.uniform(0.45, 1.0, n), rng.uniform(0.72, 1.0, n))
    dark = hsv_to_rgb(rng.random(n), rng.uniform(0.3, 1.0, n), rng.uniform(0.08, 0.4, n))
    return bright, dark


def render_objects(
    rng: np.random.Generator,
    classes: np.ndarray,
    centers: np.ndarray,
    radii: np.ndarray,
    angles: np.ndarray,
    size: int,
    *,
    texture_classes: np.ndarray | None = None,
    outline: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one object per row into a (size x size) canvas.

    Args:
        classes: (n,) int class index (shape family, and texture unless ``texture_classes``).
        centers: (n, 2) float object centre (x, y) in pixels.
        radii: (n,) float object radius R in pixels (the shape spans about 2 R).
        angles: (n,) float rotation in radians.
        texture_classes: (n,) int class whose texture type to paint (the "stylized" shift set
            swaps it); defaults to ``classes``.
        outline: darken the 1-px rim of the mask (an object boundary, as real objects have).

    Returns:
        masks (n, s, s) bool and colours (n, s, s, 3) float32 in [0, 1] (meaningful inside the mask).
    """
    classes = np.asarray(classes, np.int64)
    n = classes.size
    centers = np.asarray(centers, np.float32).reshape(n, 2)
    radii = np.asarray(radii, np.float32).reshape(n)
    angles = np.asarray(angles, np.float32).reshape(n)
    tex = classes if texture_classes is None else np.asarray(texture_classes, np.int64).reshape(n)
    for name, arr in (("classes", classes), ("texture_classes", tex)):
        if n and (arr.min() < 0 or arr.max() >= len(CLASSES)):
            raise ValueError(
                f"{name} must be in [0, {len(CLASSES)}), got {int(arr[(arr < 0) | (arr >= len(CLASSES))][0])}"
            )
    if n and radii.min() <= 0:
        raise ValueError(f"radii must be > 0, got {float(radii.min())}")

    x, y = coords(size)
    dx, dy = x - centers[:, 0, None, None], y - centers[:, 1, None, None]
    c, s = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    r = radii[:, None, None]
    u = (dx * c + dy * s) / r  # (n, s, s)
    v = (-dx * s + dy * c) / r

    masks = np.zeros((n, size, size), bool)
    weight = np.zeros((n, size, size), np.float32)
    shape_names = [sh for sh, _ in CLASSES]
    tex_names = [tx for _, tx in CLASSES]
    for k in np.unique(classes):
        idx = np.flatnonzero(classes == k)
        masks[idx] = SHAPES[shape_names[k]](u[idx], v[idx], rng)
    for k in np.unique(tex):
        idx = np.flatnonzero(tex == k)
        weight[idx] = TEXTURES[tex_names[k]](u[idx], v[idx], rng)

    bright, dark = object_colours(rng, n)
    rgb = dark[:, None, None, :] + weight[..., None] * (bright - dark)[:, None, None, :]
    if outline:
        rim = boundary(masks)
        shade = rng.uniform(0.15, 0.45, n).astype(np.float32)[:, None, None, None]
        rgb = np.where(rim[..., None], rgb * shade, rgb)
    return masks, rgb.astype(np.float32)
