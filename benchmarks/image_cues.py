"""How far image statistics alone localise the objects of the embedded benchmark; prints a Markdown table.

A localisation benchmark is informative only if no model-free cue finds the objects: otherwise a
CAM that "localises" may read contrast, not objects, and an image-blind prior refined by the
dense CRF wins (issue 17). For single-object images rendered from the pipeline's benchmark params
(``oacl.data.benchmark.render_single``, in memory), each row scores one image-only cue map against
the ground-truth masks: PxAP of the soft map (%), its mean inside / outside the objects, and mask
mIoU (%) after the pipeline's dense CRF and cleaning (the paper code's kernels). The cues: local
luminance standard deviation in a k × k window, HSV saturation, Sobel edge density in 9 × 9, and
the centred Gaussian (σ = 0.3 of the side) for reference.

``--variants`` renders the same images under screening variants of the object appearance, to find
a benchmark where these cues fail (not params of the pipeline yet; they patch the renderer of this
process only):

- ``paper``: the class-texture renderer, ``object_texture: class`` (saturated objects, bright /
  dark parts, a dark 1-px rim);
- ``no-rim``: without the dark rim;
- ``scene-palette``: object colours drawn as the backgrounds' are (moderate saturation, a
  luminance step of 0.15–0.35 between the two colours), rim kept;
- ``scene-palette, no-rim``: both;
- ``camouflage``: no rim, and each object recoloured with its own image's background colours: the
  object's luminance pattern, min-max scaled inside the mask, interpolates between the background
  pixels at the 10th and 90th luminance percentiles (the texture pattern kept, the colours shared).
- ``scene-texture``: the generator's ``data.benchmark.object_texture: scene`` (the default since
  2026-12-02) — no rim, and each object painted with a background family's texture instead of its
  class's object texture — family ``(texture class + B / 2) mod B`` of the ``B`` =
  ``num_backgrounds`` families, so never its class's paired background — in that family's own
  colours (drawn as the backgrounds' are): texture scale, contrast and colours come from the same
  distributions inside and outside the objects, and only the shape and which texture tell them apart;
- ``scene-texture, camouflage``: ``scene-texture`` recoloured as ``camouflage`` (its own
  background's colours).
- ``disjoint-texture``: as ``scene-texture``, but class ``c`` wears family ``B + c``, one of the
  scene families that no background uses (so ``num_backgrounds + num_classes`` ≤ the 10 families):
  objects and scenes share texture statistics but no texture, so invariance to the background
  (what BG-Mixup teaches) is not invariance to the object's own texture.
- ``shared-scene``: as ``scene-texture``, but the backgrounds of one family are near copies of each
  other — every per-instance structural parameter drawn from the middle 10 % of its range and the
  family's two colours fixed (drawn once per family) — while objects vary as before: the object
  is the only part of an image that tells it from the other images of its family (the
  instance-discriminative region), as a photographed object is against a common sky or lawn.
- ``shared-palette``: as ``shared-scene``, with one pair of colours for every family: scenes of
  different families differ only in their pattern.
- ``one-scene``: every image has the same background (one scene of family 0, drawn once), only the
  objects vary — a positive control of a CAM, not a benchmark: the object is the only thing that
  tells two images apart, so a map of what tells them apart must find it.

``--stored`` scores the training splits the pipeline's ContraCAM reads instead (``data/`` after
``dvc repro generate``; single and multi), rendered as the params said.

    PYTHONPATH=src python benchmarks/image_cues.py [--params params.yaml] [--images 512] [--variants ...]
    PYTHONPATH=src python benchmarks/image_cues.py --stored
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
from scipy.ndimage import sobel, uniform_filter

from oacl.cam.nulls import gaussian_map
from oacl.cam.pipeline import ground_truth, open_cam_set
from oacl.cam.postprocess import PostprocessOptions, refine_batch
from oacl.config import BenchmarkConfig, load_params
from oacl.data import benchmark, shapes, textures
from oacl.data.textures import BACKGROUNDS, instance_spread, luminance, render_backgrounds
from oacl.localization import mask_ious, pxap


def _unit(maps: np.ndarray) -> np.ndarray:
    """Min-max scale each (H, W) map of (n, H, W) to [0, 1]."""
    lo = maps.min((1, 2), keepdims=True)
    return (maps - lo) / np.maximum(maps.max((1, 2), keepdims=True) - lo, 1e-6)


def local_std(lum: np.ndarray, k: int) -> np.ndarray:
    """Standard deviation in a k × k window of luminance maps (n, H, W) -> (n, H, W) in [0, 1]."""
    mean = uniform_filter(lum, (0, k, k), mode="reflect")
    var = uniform_filter(lum * lum, (0, k, k), mode="reflect") - mean * mean
    return _unit(np.sqrt(np.maximum(var, 0.0)))


def saturation(images: np.ndarray) -> np.ndarray:
    """HSV saturation (max − min) / max per pixel, (n, H, W) in [0, 1]."""
    x = images.astype(np.float32) / 255.0
    hi, lo = x.max(-1), x.min(-1)
    return (hi - lo) / np.maximum(hi, 1e-6)


def edge_density(lum: np.ndarray, k: int = 9) -> np.ndarray:
    """Sobel gradient magnitude of luminance maps (n, H, W) averaged in a k × k window, in [0, 1]."""
    return _unit(uniform_filter(np.hypot(sobel(lum, 1), sobel(lum, 2)), (0, k, k), mode="reflect"))


def cue_maps(images: np.ndarray) -> dict[str, np.ndarray]:
    """Every cue of the table for (n, H, W, 3) uint8 images: name -> (n, H, W) float in [0, 1]."""
    n, h, w, _ = images.shape
    gauss = gaussian_map(h, w, 0.3).astype(np.float32) / 255.0
    lum = luminance(images.astype(np.float32) / 255.0)
    return {
        "local std 3 px": local_std(lum, 3),
        "local std 9 px": local_std(lum, 9),
        "saturation": saturation(images),
        "edge density 9 px": edge_density(lum, 9),
        "centred Gaussian (σ 0.3)": np.broadcast_to(gauss, (n, h, w)),
    }


def scene_palette(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Object colours (n, 3) drawn as the backgrounds' two colours are (oacl.data.textures._palette)."""
    from oacl.data.textures import _palette

    a, b = _palette(rng, n)
    return a[:, 0, 0, :], b[:, 0, 0, :]


def scene_objects(family_of: Callable[[np.ndarray], np.ndarray]) -> Callable:
    """A stand-in for ``benchmark._objects`` (same signature): each object's mask, filled with a scene of
    family ``family_of(texture class)`` rendered by the unpatched :func:`render_backgrounds` (full
    per-instance ranges, its own colours)."""

    def objects(rng, cfg, classes, centers, radii, angles, texture_classes):
        masks, _ = benchmark.render_objects(
            rng, classes, centers, radii, angles, cfg.image_size, texture_classes=texture_classes, outline=False
        )
        tex = np.asarray(classes if texture_classes is None else texture_classes, np.int64)
        return masks, render_backgrounds(rng, family_of(tex), cfg.image_size)

    return objects


@contextlib.contextmanager
def disjoint_textures(cfg: BenchmarkConfig) -> Iterator[None]:
    """Inside the block, ``object_texture: scene`` objects of texture class c wear family ``num_backgrounds + c``."""
    first, count = cfg.num_backgrounds, len(BACKGROUNDS)
    if first + cfg.num_classes > count:
        raise ValueError(
            f"disjoint-texture needs num_backgrounds + num_classes <= {count} families, got {first} + {cfg.num_classes}"
        )
    saved = benchmark._objects

    benchmark._objects = scene_objects(lambda tex: first + tex)
    try:
        yield
    finally:
        benchmark._objects = saved


SHARED_SPREAD = (
    0.1  # shared-scene and kin: the fraction of each per-instance parameter range a background is drawn from
)
SHARED = {"shared-scene": "family", "shared-palette": "global", "one-scene": "one"}  # variant -> shared_scenes(colours)


@contextlib.contextmanager
def shared_scenes(num_backgrounds: int, colours: str = "family") -> Iterator[None]:
    """Inside the block, backgrounds are near copies (``shared-scene`` and its kin); objects as drawn.

    The generator's background renderer is replaced by one that draws each family's parameters
    from :data:`SHARED_SPREAD` of their ranges, in fixed colours: ``colours`` ``family`` — the
    family's palette drawn once from a generator seeded by the family (``shared-scene``);
    ``global`` — family 0's for every family (``shared-palette``); ``one`` — every background is
    one scene of family 0, drawn once (``one-scene``). ``object_texture: scene`` objects keep the
    full ranges and their own colours.
    """
    if colours not in ("family", "global", "one"):
        raise ValueError(f"colours must be family, global or one, got {colours!r}")
    saved_bg, saved_obj, saved_palette = benchmark.render_backgrounds, benchmark._objects, textures._palette
    names = list(BACKGROUNDS)

    def family_palette(fam: int) -> Callable:
        a, b = saved_palette(np.random.default_rng(7919 + (0 if colours != "family" else fam)), 1)
        return lambda rng, n: (np.repeat(a, n, axis=0), np.repeat(b, n, axis=0))

    def render(rng, fam: int, n: int, size: int) -> np.ndarray:
        textures._palette = family_palette(fam)
        try:
            with instance_spread(SHARED_SPREAD):
                return np.clip(BACKGROUNDS[names[fam]](rng, n, size), 0.0, 1.0)
        finally:
            textures._palette = saved_palette

    def backgrounds(rng, families, size, *, chunk=128):  # textures.render_backgrounds's signature
        families = np.asarray(families, np.int64)
        if colours == "one":
            scene = render(np.random.default_rng(7919), 0, 1, size)
            return np.repeat(scene, families.size, axis=0)
        out = np.empty((families.size, size, size, 3), np.float32)
        for fam in np.unique(families):
            idx = np.flatnonzero(families == fam)
            out[idx] = render(rng, int(fam), idx.size, size)
        return out

    objects = scene_objects(lambda tex, b=num_backgrounds: (tex + b // 2) % b)  # the generator's families
    benchmark.render_backgrounds, benchmark._objects = backgrounds, objects
    try:
        yield
    finally:
        benchmark.render_backgrounds, benchmark._objects = saved_bg, saved_obj


@contextlib.contextmanager
def variant(name: str, cfg: BenchmarkConfig) -> Iterator[BenchmarkConfig]:
    """Yield the benchmark config that renders one screening variant (see the module docstring).

    ``scene-texture`` is the generator's own ``object_texture: scene``; ``disjoint-texture`` sets it
    too and patches the family each object wears (:func:`disjoint_textures`); the others set
    ``object_texture: class`` and patch this process's object renderer inside the block.
    """
    if name.startswith("scene-texture"):
        yield dataclasses.replace(cfg, object_texture="scene")
        return
    if name == "disjoint-texture":
        with disjoint_textures(cfg):
            yield dataclasses.replace(cfg, object_texture="scene")
        return
    if name in SHARED:
        with shared_scenes(cfg.num_backgrounds, SHARED[name]):
            yield dataclasses.replace(cfg, object_texture="scene")
        return
    palette = "scene-palette" in name
    rim = "no-rim" not in name and name != "camouflage"
    saved: tuple[Callable, Callable] = (shapes.object_colours, benchmark.render_objects)
    render = saved[1]
    if palette:
        shapes.object_colours = scene_palette
    if not rim:
        benchmark.render_objects = lambda *a, **kw: render(*a, **{**kw, "outline": False})
    try:
        yield dataclasses.replace(cfg, object_texture="class")
    finally:
        shapes.object_colours, benchmark.render_objects = saved


VARIANTS = (
    "paper",
    "no-rim",
    "scene-palette",
    "scene-palette, no-rim",
    "camouflage",
    "scene-texture",
    "scene-texture, camouflage",
    "disjoint-texture",
    "shared-scene",
    "shared-palette",
    "one-scene",
)


def camouflage(foreground: np.ndarray, background: np.ndarray, masks: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """Images whose objects wear their own background's colours (see ``camouflage`` in the module docstring).

    foreground / background (n, H, W, 3) uint8 (the object on black; the clean background), masks
    (n, H, W) {0, 1}; ``weight`` < 1 blends each object pixel between its own colour (0) and the
    camouflaged one (1). Returns the composited (n, H, W, 3) uint8 images.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    fg, bg = foreground.astype(np.float32), background.astype(np.float32)
    m = masks.astype(bool)
    out = bg.copy()
    for i in range(len(fg)):
        order = np.argsort(luminance(bg[i]), axis=None, kind="stable")
        lo, hi = (bg[i].reshape(-1, 3)[order[int(q * (order.size - 1))]] for q in (0.1, 0.9))
        w = luminance(fg[i][m[i]])
        w = (w - w.min()) / max(float(np.ptp(w)), 1e-6)
        out[i][m[i]] = weight * (lo + w[:, None] * (hi - lo)) + (1.0 - weight) * fg[i][m[i]]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--variants", nargs="+", default=["paper"], choices=VARIANTS)
    p.add_argument("--no-crf", action="store_true", help="skip the CRF column (it is the slow part)")
    p.add_argument(
        "--camouflage-weight",
        type=float,
        default=1.0,
        help="camouflage variants: blend each object pixel between its own colour (0) and the camouflaged one (1)",
    )
    p.add_argument("--stored", action="store_true", help="the pipeline's stored training splits instead")
    args = p.parse_args()
    params = load_params(args.params)
    print("| images | cue | PxAP | inside / outside | mIoU after CRF |")
    print("|---|---|---|---|---|")
    if args.stored:
        for name in ("single", "multi"):
            data = open_cam_set(params, name, params.data.benchmark.image_size)
            idx = np.sort(np.random.default_rng(0).choice(len(data), min(args.images, len(data)), replace=False))
            images = np.stack([np.asarray(data[int(i)]["image"]).transpose(1, 2, 0) for i in idx])
            score(f"stored {name} train", images, ground_truth(data, idx).masks, crf=not args.no_crf)
        return
    cfg = params.data.benchmark
    for name in args.variants:
        with variant(name, cfg) as drawn_cfg:
            drawn = benchmark.render_single(drawn_cfg, args.images, seed=cfg.seed)
        images, masks = drawn["images"], drawn["masks"]
        if name.endswith("camouflage"):
            images = camouflage(drawn["foreground"], drawn["background"], masks, args.camouflage_weight)
            name = f"{name} {args.camouflage_weight:g}" if args.camouflage_weight < 1 else name
        score(name, images, masks, crf=not args.no_crf)


def score(label: str, images: np.ndarray, masks: np.ndarray, *, crf: bool) -> None:
    """One table row per cue of :func:`cue_maps` for (n, H, W, 3) uint8 images and (n, H, W) masks."""
    for cue, soft in cue_maps(images).items():
        refined = "–"
        if crf:
            out = refine_batch(
                images, np.ascontiguousarray(soft * 255).astype(np.uint8), PostprocessOptions(), processes=1
            )
            refined = f"{100 * mask_ious(masks, out[0]).mean():.1f}"
        inside, outside = soft[masks == 1].mean(), soft[masks == 0].mean()
        print(f"| {label} | {cue} | {pxap(masks, soft):.1f} | {inside:.2f} / {outside:.2f} | {refined} |", flush=True)


if __name__ == "__main__":  # the CRF worker pool re-imports this script
    main()
