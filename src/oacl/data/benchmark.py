"""The embedded scene-bias benchmark: procedural multi-object, single-object and shift sets.

What is generated (all images ``s x s`` RGB, ``s = image_size``; see ``oacl.data.shapes`` for the
object classes and ``oacl.data.textures`` for the background families). How objects are painted
is ``object_texture``: ``class`` — each class its own object texture type in the object palette,
with a dark 1-px rim; ``scene`` — each object's shape filled with background family
``(texture class + num_backgrounds // 2) mod num_backgrounds``, rendered as that family's scenes
are, no rim, so objects and scenes share texture scale, contrast and colours and only the shape
and which texture carry the class (never the class's own paired background family):

``multi/`` — the COCO analogue (contextual bias). Each scene has 1-4 objects. The *primary*
object's class is drawn uniformly (balanced); every extra object comes from the primary's
co-occurrence group (classes ``[g * group_size, (g + 1) * group_size)``, like giraffe and zebra)
with probability ``cooccur``, else uniformly from the classes outside that group. The scene's
background family is the primary class's family with probability ``multi.bg_corr``, else one
of the others. Objects are placed with limited overlap, drawn largest first with the primary
on top; an object whose visible part falls below ``min_visible`` of its area is left out of the
scene entirely (never drawn), so every annotated instance is at least that visible and every
drawn pixel is annotated. Instance masks are the *visible* parts; boxes are their tight boxes.
``labels`` is the class of the largest visible object. COCO JSON holds the same instances
(RLE masks via pycocotools, ``bbox`` [x, y, w, h], ``area`` = mask pixels, ``iscrowd`` 0,
category id = class index + 1, supercategory = group name, image id = row + 1 and
``file_name`` = the set file's id string). ``crops_*.h5`` (the COCO-Crop analogue) cut every
instance out with its box grown by ``crop_margin`` x (box side) on each side (clipped to the
image) and resized to ``crop_size``; a crop's mask is the cut object's visible mask, its box
the tight box of that mask. ``crops_val`` comes from ``multi.val`` extra scenes that are not
written as a scene set.

``single/`` — the ImageNet-9 / Background Challenge analogue (background bias). One object
per image (scale ``object_scale``, random position fully inside the image, random rotation);
the background family equals the class's family (class k <-> family k) with probability
``single.bg_corr``, else it is uniform over the other families. ``train``/``val``/``original``
follow that rule. The test variants share the ORIGINAL test objects and ids
(Xiao et al. 2020, *Noise or Signal*):

==============  ====================================================  ===========  =============
variant         image                                                 masks/boxes  backgrounds
==============  ====================================================  ===========  =============
original        object on its background                              object       family
only_fg         object on black                                       object       -1
only_bg_b       ORIGINAL with the object's bounding box black         empty        family
only_bg_t       ORIGINAL with the box filled by tiling the largest    empty        family
                full-height / full-width strip outside the box
no_fg           ORIGINAL with the object's mask black                 empty        family
mixed_same      object on the background of another image of the      object       donor family
                same class
mixed_rand      ... of an image of a random class (uniform), then     object       donor family
                a random image of it (not the image itself)
mixed_next      ... of a random image of class (y + 1) mod K          object       donor family
==============  ====================================================  ===========  =============

"empty" = all-zero mask and no box (the object is gone); ``labels`` is always the object's
class. ``MIXED-*`` paste onto the donor's *clean* background (rendered without its object),
where the Background Challenge had to use the donor's ONLY-BG-T image; the extra dataset
``/bg_donors`` (N,) int64 gives the donor's row in ``original.h5`` (-1 for other variants).

``shift/`` — distribution shifts of the single-object classes. ``<corruption>-<severity>``:
ImageNet-C corruptions (``oacl.data.corruptions``) of one ORIGINAL-style base set (same ids,
masks and boxes in every corruption file). ``sketch``: the object's outline only, dark ink on
paper (shape only, no texture, no background). ``stylized``: the object painted with the
texture type of another (random) class, on a background of a uniformly random family.
``rendition``: the scene re-coloured through a random three-colour gradient map, posterised,
with a thick dark outline (another palette, same structure), background family uniform.

Every set file follows ``SCHEMA`` and is written by :func:`oacl.io.sets.write_set` (the format's
one writer and reader): gzip-compressed images and masks in chunks of 16 images, no timestamps,
so the same seed and params give byte-identical files. Randomness: one ``numpy.random.Generator`` per set,
seeded by ``(seed, crc32(set name))``; sets do not depend on each other's sizes.

Size: one module because every set file is cut from the same rendered scenes with one seeding scheme; the renderers themselves live in shapes.py, textures.py and corruptions.py.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from oacl.config import BenchmarkConfig
from oacl.cores import usable_cores
from oacl.data.boxes import mask_boxes
from oacl.data.corruptions import CORRUPTIONS, corrupt
from oacl.data.shapes import CLASSES, boundary, class_names, render_objects
from oacl.data.textures import (
    BACKGROUNDS,
    hsv_to_rgb,
    instance_spread,
    luminance,
    render_backgrounds,
    squeeze_hues,
)
from oacl.errors import ConfigError
from oacl.io.atomic import write_json, write_text
from oacl.io.sets import SCHEMA, write_set
from oacl.vocab import BG_VARIANTS

__all__ = [
    "SCHEMA",
    "STYLES",
    "SetData",
    "validate_config",
    "class_groups",
    "sample_families",
    "render_single",
    "render_multi",
    "background_challenge",
    "make_crops",
    "coco_dict",
    "write_set_file",
    "generate_benchmark",
]

log = logging.getLogger(__name__)

STYLES: tuple[str, ...] = ("sketch", "stylized", "rendition")
_CHUNK = 256  # images rendered per vectorised batch (a constant: results must not depend on it varying)
_KEY = "data.benchmark"


# ----------------------------------------------------------------------------- set data


@dataclass
class SetData:
    """The arrays of one set file (schema ``oacl.set/1``), N images and M boxes.

    images (N, s, s, 3) uint8; ids N strings; labels (N,) int64; masks (N, s, s) uint8 {0, 1};
    boxes (M, 4) float32 x0, y0, x1, y1 (exclusive); box_labels (M,) int64; box_index (N + 1,)
    int64; backgrounds (N,) int64; extra: additional (N, ...) datasets by name.
    """

    images: np.ndarray
    ids: list[str]
    labels: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    box_labels: np.ndarray
    box_index: np.ndarray
    backgrounds: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4 or self.images.shape[3] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, s, s, 3), got {self.images.dtype} {self.images.shape}")
        if self.masks.shape != self.images.shape[:3] or self.masks.dtype != np.uint8:
            raise ValueError(f"masks must be uint8 {self.images.shape[:3]}, got {self.masks.dtype} {self.masks.shape}")
        for name in ("labels", "backgrounds"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        if len(self.ids) != n or len(set(self.ids)) != n:
            raise ValueError(f"ids must be {n} unique strings, got {len(self.ids)} ({len(set(self.ids))} unique)")
        m = self.boxes.shape[0]
        if self.boxes.shape != (m, 4) or self.box_labels.shape != (m,) or self.box_index.shape != (n + 1,):
            raise ValueError(
                f"boxes {self.boxes.shape}, box_labels {self.box_labels.shape}, box_index {self.box_index.shape} "
                f"do not fit N={n}, M={m}"
            )
        if self.box_index[0] != 0 or self.box_index[-1] != m:
            raise ValueError(f"box_index must run from 0 to M={m}, got {self.box_index[0]}..{self.box_index[-1]}")

    def __len__(self) -> int:
        return int(self.images.shape[0])


# --------------------------------------------------------------------------- validation


def validate_config(cfg: BenchmarkConfig) -> None:
    """Cross-field checks the per-field bounds cannot express; raise ConfigError naming the key."""

    def bad(key: str, value: Any, why: str) -> ConfigError:
        return ConfigError(f"params: '{_KEY}.{key}' = {value!r} {why}")

    for key, pair in (
        ("object_scale", cfg.object_scale),
        ("multi.object_scale", cfg.multi.object_scale),
        ("multi.objects", cfg.multi.objects),
    ):
        if pair[0] > pair[1]:
            raise bad(key, list(pair), "must be [low, high] with low <= high")
    if cfg.num_classes > len(CLASSES):
        raise bad("num_classes", cfg.num_classes, f"exceeds the {len(CLASSES)} shape classes available")
    if cfg.num_backgrounds > len(BACKGROUNDS):
        raise bad(
            "num_backgrounds", cfg.num_backgrounds, f"exceeds the {len(BACKGROUNDS)} background families available"
        )
    if cfg.num_backgrounds < cfg.num_classes:
        raise bad(
            "num_backgrounds",
            cfg.num_backgrounds,
            f"must be >= num_classes ({cfg.num_classes}): class k is correlated with family k",
        )
    if cfg.multi.group_size > cfg.num_classes or cfg.num_classes % cfg.multi.group_size:
        raise bad("multi.group_size", cfg.multi.group_size, f"must divide num_classes ({cfg.num_classes})")
    if cfg.multi.group_size == cfg.num_classes and cfg.multi.cooccur < 1.0:
        raise bad(
            "multi.cooccur",
            cfg.multi.cooccur,
            "must be 1.0 when a single group holds every class (no class lies outside it)",
        )
    for key, scale in (("object_scale", cfg.object_scale), ("multi.object_scale", cfg.multi.object_scale)):
        if scale[0] * cfg.image_size < 6.0:
            raise bad(key, list(scale), f"gives objects under 6 px at image_size {cfg.image_size}")
    if cfg.single.test < 2 * cfg.num_classes:
        raise bad(
            "single.test",
            cfg.single.test,
            f"must be >= 2 * num_classes = {2 * cfg.num_classes} (MIXED-SAME needs two images per class)",
        )
    unknown = [c for c in cfg.shift.corruptions if c not in CORRUPTIONS]
    if unknown:
        raise bad(
            "shift.corruptions",
            list(cfg.shift.corruptions),
            f"names unknown corruption {unknown[0]!r} (known: {', '.join(CORRUPTIONS)})",
        )
    unknown = [c for c in cfg.shift.styles if c not in STYLES]
    if unknown:
        raise bad(
            "shift.styles", list(cfg.shift.styles), f"names unknown style {unknown[0]!r} (known: {', '.join(STYLES)})"
        )
    for key, values in (
        ("shift.corruptions", cfg.shift.corruptions),
        ("shift.severities", cfg.shift.severities),
        ("shift.styles", cfg.shift.styles),
    ):
        if len(set(values)) != len(values):
            raise bad(key, list(values), "repeats an entry")
    if cfg.shift.corruptions and not cfg.shift.severities:
        raise bad("shift.severities", [], "is empty but corruptions are requested")


# ------------------------------------------------------------------------------ helpers


def _rng(seed: int, name: str) -> np.random.Generator:
    """The generator of set ``name``: independent of every other set's size and draws."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def _to_u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(n,) int64: each class n // k or n // k + 1 times, shuffled."""
    return rng.permutation(np.arange(n, dtype=np.int64) % k)


def class_groups(num_classes: int, group_size: int) -> list[list[int]]:
    """Co-occurrence groups: consecutive runs of ``group_size`` classes."""
    if group_size < 1 or num_classes % group_size:
        raise ValueError(f"group_size {group_size} must be >= 1 and divide num_classes {num_classes}")
    return [list(range(g, g + group_size)) for g in range(0, num_classes, group_size)]


def sample_families(rng: np.random.Generator, classes: np.ndarray, num_backgrounds: int, corr: float) -> np.ndarray:
    """Background family per image: the class's own family ``classes[i]`` with probability ``corr``,
    else uniform over the other ``num_backgrounds - 1`` families. (n,) int64."""
    classes = np.asarray(classes, np.int64)
    if classes.size and classes.max() >= num_backgrounds:
        raise ValueError(f"class {int(classes.max())} has no family among {num_backgrounds} backgrounds")
    if not 0.0 <= corr <= 1.0:
        raise ValueError(f"corr must be in [0, 1], got {corr}")
    keep = rng.random(classes.size) < corr
    other = (classes + rng.integers(1, num_backgrounds, classes.size)) % num_backgrounds
    return np.where(keep, classes, other).astype(np.int64)


def _set_from_masks(
    images: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    backgrounds: np.ndarray,
    ids: list[str],
    extra: dict[str, np.ndarray] | None = None,
) -> SetData:
    """One box (the mask's tight box, labelled with the image's class) per image whose mask is non-empty."""
    boxes = mask_boxes(masks)
    has = ~np.isnan(boxes[:, 0])
    box_index = np.concatenate([[0], np.cumsum(has)]).astype(np.int64)
    return SetData(
        images=images,
        ids=ids,
        labels=np.asarray(labels, np.int64),
        masks=masks.astype(np.uint8),
        boxes=boxes[has].astype(np.float32),
        box_labels=np.asarray(labels, np.int64)[has],
        box_index=box_index,
        backgrounds=np.asarray(backgrounds, np.int64),
        extra=extra or {},
    )


def _place(
    rng: np.random.Generator, n: int, size: int, scale: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random object radius (n,) (scale x size / 2), centre (n, 2) keeping the disk of radius R inside, angle (n,)."""
    r = rng.uniform(scale[0], scale[1], n) * size / 2.0
    centers = np.stack([rng.uniform(r, size - r), rng.uniform(r, size - r)], 1)
    return r, centers, rng.uniform(0.0, 2.0 * np.pi, n)


# ------------------------------------------------------------------------- single object


def _objects(
    rng: np.random.Generator,
    cfg: BenchmarkConfig,
    classes: np.ndarray,
    centers: np.ndarray,
    radii: np.ndarray,
    angles: np.ndarray,
    texture_classes: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Masks (n, s, s) bool and colours (n, s, s, 3) float in [0, 1] of objects, painted as
    ``object_texture`` says: ``class`` — the texture type of ``texture_classes`` (default the class)
    in the object palette with a dark rim (``shapes.render_objects``); ``scene`` — the shape's mask
    filled with background family ``(texture class + num_backgrounds // 2) mod num_backgrounds``,
    rendered as a scene of that family is (its own colours, no rim), so texture scale, contrast and
    colour statistics are shared by objects and backgrounds and only shape and *which* texture
    carry the class."""
    s = cfg.image_size
    if cfg.object_texture == "class":
        return render_objects(rng, classes, centers, radii, angles, s, texture_classes=texture_classes)
    masks, _ = render_objects(rng, classes, centers, radii, angles, s, texture_classes=texture_classes, outline=False)
    tex = np.asarray(classes if texture_classes is None else texture_classes, np.int64)
    b = cfg.num_backgrounds
    return masks, render_backgrounds(rng, (tex + b // 2) % b, s)


def _texture_of(rng: np.random.Generator, classes: np.ndarray, cfg: BenchmarkConfig) -> np.ndarray | None:
    """Texture class per object: its own with probability ``texture_corr``, else another class's (uniform).

    None (every object its own class's texture, no random draw: the default's files are unchanged)
    when ``texture_corr`` is 1; ``1 / num_classes`` makes the texture independent of the class.
    """
    if cfg.texture_corr >= 1.0:
        return None
    k = cfg.num_classes
    keep = rng.random(classes.size) < cfg.texture_corr
    return np.where(keep, classes, (classes + rng.integers(1, k, classes.size)) % k)


def _render_single_layers(
    rng: np.random.Generator,
    cfg: BenchmarkConfig,
    labels: np.ndarray,
    families: np.ndarray | None,
    *,
    texture_classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render clean backgrounds, object layers and masks for single-object images, in chunks.

    Returns background (n, s, s, 3) uint8 (zeros when ``families`` is None), foreground (n, s, s, 3)
    uint8 (the object's colours inside its mask, 0 outside) and masks (n, s, s) bool (never empty).
    """
    n, s = labels.size, cfg.image_size
    bg = np.zeros((n, s, s, 3), np.uint8)
    fg = np.zeros((n, s, s, 3), np.uint8)
    masks = np.zeros((n, s, s), bool)
    with instance_spread(cfg.nuisance):  # narrower per-instance parameters (data.benchmark.nuisance)
        for lo in range(0, n, _CHUNK):
            sl = slice(lo, min(n, lo + _CHUNK))
            k = sl.stop - sl.start
            if families is not None:
                bg[sl] = _to_u8(squeeze_hues(render_backgrounds(rng, families[sl], s), cfg.hue_spread))
            tex = _texture_of(rng, labels[sl], cfg) if texture_classes is None else texture_classes[sl]
            r, c, a = _place(rng, k, s, cfg.object_scale)
            m, rgb = _objects(rng, cfg, labels[sl], c, r, a, tex)
            for _ in range(20):  # a degenerate draw (possible only for tiny objects): re-draw that object
                empty = np.flatnonzero(~m.any((1, 2)))
                if not empty.size:
                    break
                r2, c2, a2 = _place(rng, empty.size, s, cfg.object_scale)
                m[empty], rgb[empty] = _objects(
                    rng, cfg, labels[sl][empty], c2, r2, a2, None if tex is None else tex[empty]
                )
            else:
                raise RuntimeError(f"could not render a visible object at image_size {s}, scale {cfg.object_scale}")
            masks[sl] = m
            fg[sl] = np.where(m[..., None], _to_u8(squeeze_hues(rgb, cfg.hue_spread)), 0)
    return bg, fg, masks


def render_single(cfg: BenchmarkConfig, n: int, seed: int, *, bg_corr: float | None = None) -> dict[str, np.ndarray]:
    """Render ``n`` ORIGINAL-style single-object images in memory (for probes; nothing is written).

    Labels are balanced; the background family equals the class's with probability ``bg_corr``
    (default ``cfg.single.bg_corr``). Returns numpy arrays: ``images`` (n, s, s, 3) uint8,
    ``masks`` (n, s, s) uint8 {0, 1}, ``labels`` (n,) int64, ``backgrounds`` (n,) int64 (family),
    ``boxes`` (n, 4) float32 x0, y0, x1, y1 (exclusive), ``background`` (n, s, s, 3) uint8 (the
    clean background, no object) and ``foreground`` (n, s, s, 3) uint8 (object on black).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    validate_config(cfg)
    rng = _rng(seed, "probe/single")
    labels = _balanced_labels(rng, n, cfg.num_classes)
    corr = cfg.single.bg_corr if bg_corr is None else bg_corr
    families = sample_families(rng, labels, cfg.num_backgrounds, corr)
    bg, fg, masks = _render_single_layers(rng, cfg, labels, families)
    return {
        "images": np.where(masks[..., None], fg, bg),
        "masks": masks.astype(np.uint8),
        "labels": labels,
        "backgrounds": families,
        "boxes": mask_boxes(masks),
        "background": bg,
        "foreground": fg,
    }


def _tile_box(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """ONLY-BG-T for one image (s, s, 3): fill ``box`` by tiling the largest full-height or full-width
    strip of the image that lies outside it (black when the box spans the whole image)."""
    s = image.shape[0]
    x0, y0, x1, y1 = (int(v) for v in box)
    strips = [  # (area, rows, cols)
        (s * x0, slice(0, s), slice(0, x0)),
        (s * (s - x1), slice(0, s), slice(x1, s)),
        (s * y0, slice(0, y0), slice(0, s)),
        (s * (s - y1), slice(y1, s), slice(0, s)),
    ]
    area, rows, cols = max(strips, key=lambda t: t[0])
    out = image.copy()
    if area == 0:
        out[y0:y1, x0:x1] = 0
        return out
    strip = image[rows, cols]
    sh, sw = strip.shape[:2]
    out[y0:y1, x0:x1] = strip[np.arange(y1 - y0)[:, None] % sh, np.arange(x1 - x0)[None, :] % sw]
    return out


def _donors(rng: np.random.Generator, labels: np.ndarray, num_classes: int, rule: str) -> np.ndarray:
    """Donor row per image for MIXED-SAME / -RAND / -NEXT (never the image itself)."""
    by_class = [np.flatnonzero(labels == k) for k in range(num_classes)]
    out = np.empty(labels.size, np.int64)
    for i, y in enumerate(labels):
        if rule == "same":
            c = y
        elif rule == "rand":
            c = int(rng.integers(num_classes))
        elif rule == "next":
            c = (y + 1) % num_classes
        else:
            raise ValueError(f"unknown donor rule {rule!r}")
        pool = by_class[c]
        pool = pool[pool != i]
        if not pool.size:
            raise ValueError(f"class {c} has no donor image for image {i} (test set too small)")
        out[i] = pool[rng.integers(pool.size)]
    return out


def background_challenge(
    background: np.ndarray,
    foreground: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    families: np.ndarray,
    rng: np.random.Generator,
    num_classes: int,
) -> dict[str, dict[str, np.ndarray]]:
    """Build the eight Background Challenge variants from clean layers.

    Args:
        background: (n, s, s, 3) uint8 clean backgrounds; foreground: (n, s, s, 3) uint8 objects
        (0 outside the mask); masks: (n, s, s) bool object masks; labels, families: (n,) int.

    Returns ``{variant: {"images", "masks" (n, s, s) bool, "backgrounds" (n,), "bg_donors" (n,)}}``
    as defined in the module docstring.
    """
    n = labels.size
    m3 = masks[..., None]
    original = np.where(m3, foreground, background)
    boxes = mask_boxes(masks)
    if np.isnan(boxes).any():
        raise ValueError("every image needs a non-empty object mask")
    s = masks.shape[1]
    ys, xs = np.arange(s)[None, :, None], np.arange(s)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, j, None, None] for j in range(4))
    in_box = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    none = np.full(n, -1, np.int64)
    empty = np.zeros_like(masks)
    out: dict[str, dict[str, np.ndarray]] = {
        "original": {"images": original, "masks": masks, "backgrounds": families, "bg_donors": none},
        "only_fg": {
            "images": np.where(m3, foreground, 0).astype(np.uint8),
            "masks": masks,
            "backgrounds": none,
            "bg_donors": none,
        },
        "only_bg_b": {
            "images": np.where(in_box[..., None], 0, original).astype(np.uint8),
            "masks": empty,
            "backgrounds": families,
            "bg_donors": none,
        },
        "only_bg_t": {
            "images": np.stack([_tile_box(original[i], boxes[i]) for i in range(n)]),
            "masks": empty,
            "backgrounds": families,
            "bg_donors": none,
        },
        "no_fg": {
            "images": np.where(m3, 0, original).astype(np.uint8),
            "masks": empty,
            "backgrounds": families,
            "bg_donors": none,
        },
    }
    for rule in ("same", "rand", "next"):
        donor = _donors(rng, labels, num_classes, rule)
        out[f"mixed_{rule}"] = {
            "images": np.where(m3, foreground, background[donor]),
            "masks": masks,
            "backgrounds": families[donor],
            "bg_donors": donor,
        }
    return out


# -------------------------------------------------------------------------- multi object


@dataclass
class MultiScenes:
    """Rendered multi-object scenes plus their instances (M visible instances over N images).

    images (N, s, s, 3) uint8; families (N,) int64; primary (N,) int64 primary class;
    inst_image (M,) int64 row of each instance; inst_class (M,) int64; inst_masks (M, s, s) bool
    (visible part); inst_in_group (M,) bool (extra object from the primary's group);
    inst_primary (M,) bool.
    """

    images: np.ndarray
    families: np.ndarray
    primary: np.ndarray
    inst_image: np.ndarray
    inst_class: np.ndarray
    inst_masks: np.ndarray
    inst_in_group: np.ndarray
    inst_primary: np.ndarray


def render_multi(rng: np.random.Generator, cfg: BenchmarkConfig, n: int) -> MultiScenes:
    """Render ``n`` multi-object scenes (see the module docstring for the rules)."""
    mc, s, k_cls = cfg.multi, cfg.image_size, cfg.num_classes
    groups = class_groups(k_cls, mc.group_size)
    group_of = np.repeat(np.arange(len(groups)), mc.group_size)
    primary = _balanced_labels(rng, n, k_cls)
    families = sample_families(rng, primary, cfg.num_backgrounds, mc.bg_corr)

    # --- sample objects and positions (a few scalars per image; the pixels are vectorised below)
    o_img, o_cls, o_r, o_cx, o_cy, o_rank, o_group, o_primary = [], [], [], [], [], [], [], []
    for i in range(n):
        count = int(rng.integers(mc.objects[0], mc.objects[1] + 1))
        g = group_of[primary[i]]
        inside = np.asarray(groups[g])
        outside = np.flatnonzero(group_of != g)
        cls = [int(primary[i])]
        ing = [True]
        for _ in range(count - 1):
            if outside.size == 0 or rng.random() < mc.cooccur:
                cls.append(int(inside[rng.integers(inside.size)]))
                ing.append(True)
            else:
                cls.append(int(outside[rng.integers(outside.size)]))
                ing.append(False)
        radii = rng.uniform(mc.object_scale[0], mc.object_scale[1], count) * s / 2.0
        placed: list[int] = []
        pos: dict[int, tuple[float, float]] = {}
        for j in range(count):
            for _ in range(50):
                cx, cy = rng.uniform(radii[j], s - radii[j], 2)
                if all(
                    (cx - pos[q][0]) ** 2 + (cy - pos[q][1]) ** 2 >= (0.7 * (radii[j] + radii[q])) ** 2 for q in placed
                ):
                    placed.append(j)
                    pos[j] = (cx, cy)
                    break
        # draw order: extras largest first, the primary (j = 0) on top
        extras = sorted((j for j in placed if j != 0), key=lambda j: -radii[j])
        order = extras + [0]
        for rank, j in enumerate(order):
            o_img.append(i)
            o_cls.append(cls[j])
            o_r.append(radii[j])
            o_cx.append(pos[j][0])
            o_cy.append(pos[j][1])
            o_rank.append(rank)
            o_group.append(ing[j])
            o_primary.append(j == 0)
    o_img_a = np.asarray(o_img, np.int64)
    o_cls_a = np.asarray(o_cls, np.int64)
    o_r_a = np.asarray(o_r, np.float32)
    o_c_a = np.stack([np.asarray(o_cx, np.float32), np.asarray(o_cy, np.float32)], 1)
    o_rank_a = np.asarray(o_rank, np.int64)

    # --- render in chunks of images: backgrounds, objects, occlusion, composite
    images = np.empty((n, s, s, 3), np.uint8)
    keep_all = np.zeros(o_img_a.size, bool)
    vis_all = np.zeros((o_img_a.size, s, s), bool)
    with instance_spread(cfg.nuisance):
        for lo in range(0, n, _CHUNK):
            hi = min(n, lo + _CHUNK)
            sel = np.flatnonzero((o_img_a >= lo) & (o_img_a < hi))
            canvas = squeeze_hues(render_backgrounds(rng, families[lo:hi], s), cfg.hue_spread)
            angles = rng.uniform(0, 2 * np.pi, sel.size)
            tex = _texture_of(rng, o_cls_a[sel], cfg)
            masks, rgb = _objects(rng, cfg, o_cls_a[sel], o_c_a[sel], o_r_a[sel], angles, tex)
            rgb = squeeze_hues(rgb, cfg.hue_spread)
            local, ranks = o_img_a[sel] - lo, o_rank_a[sel]
            cover = np.zeros((hi - lo, s, s), bool)
            keep = np.zeros(sel.size, bool)
            vis = np.zeros_like(masks)
            for r in range(int(ranks.max(initial=-1)), -1, -1):  # top-down: decide visibility
                js = np.flatnonzero(ranks == r)
                v = masks[js] & ~cover[local[js]]
                area, shown = masks[js].sum((1, 2)), v.sum((1, 2))
                ok = (shown > 0) & (shown >= mc.min_visible * area)
                keep[js], vis[js] = ok, v
                cover[local[js[ok]]] |= masks[js[ok]]
            for r in range(int(ranks.max(initial=-1)) + 1):  # bottom-up: composite the kept objects
                js = np.flatnonzero((ranks == r) & keep)
                canvas[local[js]] = np.where(masks[js][..., None], rgb[js], canvas[local[js]])
            images[lo:hi] = _to_u8(canvas)
            keep_all[sel], vis_all[sel] = keep, vis & keep[:, None, None]
    # instances in image order, primary first within an image (stable by the original sampling order)
    order = np.lexsort((~np.asarray(o_primary, bool), o_img_a))
    order = order[keep_all[order]]
    return MultiScenes(
        images=images,
        families=families,
        primary=primary,
        inst_image=o_img_a[order],
        inst_class=o_cls_a[order],
        inst_masks=vis_all[order],
        inst_in_group=np.asarray(o_group, bool)[order],
        inst_primary=np.asarray(o_primary, bool)[order],
    )


def _multi_set(scenes: MultiScenes, ids: list[str]) -> SetData:
    """The scene set file: union masks, one box per visible instance, label = largest instance's class."""
    n, s = scenes.images.shape[:2]
    boxes = mask_boxes(scenes.inst_masks)
    counts = np.bincount(scenes.inst_image, minlength=n)
    box_index = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    union = np.zeros((n, s, s), bool)
    np.logical_or.at(union, scenes.inst_image, scenes.inst_masks)
    areas = scenes.inst_masks.sum((1, 2))
    labels = np.full(n, -1, np.int64)
    for i in range(n):
        lo, hi = box_index[i], box_index[i + 1]
        if hi > lo:
            labels[i] = scenes.inst_class[lo + int(np.argmax(areas[lo:hi]))]
    return SetData(
        images=scenes.images,
        ids=ids,
        labels=labels,
        masks=union.astype(np.uint8),
        boxes=boxes,
        box_labels=scenes.inst_class.copy(),
        box_index=box_index,
        backgrounds=scenes.families,
    )


def make_crops(scenes: MultiScenes, ids: list[str], margin: float, crop_size: int) -> SetData:
    """COCO-Crop analogue: each instance's box grown by ``margin`` x side on every side (clipped),
    resized to ``crop_size`` (bilinear; area when shrinking). Mask = the instance's visible mask
    (nearest), box = its tight box, label = its class, background = the scene's family."""
    s = scenes.images.shape[1]
    boxes = mask_boxes(scenes.inst_masks)
    crops, cmasks, labels, fams, cids = [], [], [], [], []
    within = np.zeros(len(ids), np.int64)
    for j in range(scenes.inst_image.size):
        i = int(scenes.inst_image[j])
        x0, y0, x1, y1 = boxes[j]
        w, h = x1 - x0, y1 - y0
        cx0, cy0 = int(max(0, np.floor(x0 - margin * w))), int(max(0, np.floor(y0 - margin * h)))
        cx1, cy1 = int(min(s, np.ceil(x1 + margin * w))), int(min(s, np.ceil(y1 + margin * h)))
        patch = scenes.images[i, cy0:cy1, cx0:cx1]
        interp = cv2.INTER_AREA if max(cx1 - cx0, cy1 - cy0) > crop_size else cv2.INTER_LINEAR
        crop = cv2.resize(patch, (crop_size, crop_size), interpolation=interp)
        cm = cv2.resize(
            scenes.inst_masks[j, cy0:cy1, cx0:cx1].astype(np.uint8),
            (crop_size, crop_size),
            interpolation=cv2.INTER_NEAREST,
        )
        k = within[i]
        within[i] += 1
        if not cm.any():  # a sliver lost by nearest-neighbour shrinking: no usable crop
            continue
        crops.append(crop)
        cmasks.append(cm)
        labels.append(int(scenes.inst_class[j]))
        fams.append(int(scenes.families[i]))
        cids.append(f"{ids[i]}-o{k}")
    masks = np.stack(cmasks) if cmasks else np.zeros((0, crop_size, crop_size), np.uint8)
    images = np.stack(crops) if crops else np.zeros((0, crop_size, crop_size, 3), np.uint8)
    return _set_from_masks(images, masks, np.asarray(labels, np.int64), np.asarray(fams, np.int64), cids)


def coco_dict(
    data: SetData, scenes: MultiScenes, classes: Sequence[str], groups: Sequence[Sequence[int]]
) -> dict[str, Any]:
    """COCO instances JSON for a scene set: RLE masks (pycocotools), bbox [x, y, w, h], area in px.

    Image id = row + 1, ``file_name`` = the set file's id; annotation id = instance row + 1;
    category id = class + 1 with supercategory ``group<g>``.
    """
    n, s = data.images.shape[:2]
    images = [{"id": i + 1, "file_name": data.ids[i], "height": s, "width": s} for i in range(n)]
    annotations = []
    for lo in range(0, scenes.inst_image.size, 1024):
        part = scenes.inst_masks[lo : lo + 1024]
        rles = mask_utils.encode(np.asfortranarray(part.transpose(1, 2, 0).astype(np.uint8)))
        areas = part.sum((1, 2))  # pycocotools.mask.area overflows on numpy 2 for batches; equal by definition
        xyxy = mask_boxes(part)
        bboxes = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
        for k, rle in enumerate(rles):
            j = lo + k
            annotations.append(
                {
                    "id": j + 1,
                    "image_id": int(scenes.inst_image[j]) + 1,
                    "category_id": int(scenes.inst_class[j]) + 1,
                    "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
                    "area": float(areas[k]),
                    "bbox": [float(v) for v in bboxes[k]],
                    "iscrowd": 0,
                }
            )
    group_of = {c: g for g, members in enumerate(groups) for c in members}
    categories = [{"id": k + 1, "name": name, "supercategory": f"group{group_of[k]}"} for k, name in enumerate(classes)]
    return {
        "info": {"description": "oacl embedded benchmark, multi-object scenes", "version": SCHEMA},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


# ---------------------------------------------------------------------------- shift sets


def _sketch(rng: np.random.Generator, cfg: BenchmarkConfig, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outline-only drawings: dark ink (0-0.25) of width ~s/32 on off-white paper. Images uint8, masks bool."""
    n, s = labels.size, cfg.image_size
    width = max(1, int(round(s / 32)))
    _, _, masks = _render_single_layers(rng, cfg, labels, None)
    line = boundary(masks, width)
    paper = rng.uniform(0.85, 1.0, (n, 1, 1, 1)).astype(np.float32) * np.array([1.0, 0.98, 0.94], np.float32)
    ink = rng.uniform(0.0, 0.25, (n, 1, 1, 1)).astype(np.float32)
    return _to_u8(np.where(line[..., None], ink, paper)), masks


def _rendition(rng: np.random.Generator, images: np.ndarray, masks: np.ndarray, s: int) -> np.ndarray:
    """Re-colour (n, s, s, 3) uint8 through a random dark-mid-light gradient map, posterise to 6 levels,
    and draw a thick dark object outline."""
    n = images.shape[0]
    lum = luminance(images.astype(np.float32) / 255.0)
    lum = np.floor(np.clip(lum, 0, 0.999) * 6) / 5.0  # 6 flat levels in [0, 1]
    hues = rng.random((n, 3))
    stops = hsv_to_rgb(hues, rng.uniform(0.5, 1.0, (n, 3)), np.array([0.12, 0.55, 0.95])[None, :])  # (n, 3 stops, 3)
    a, b, c = (stops[:, k, None, None, :] for k in range(3))
    t = lum[..., None]
    out = np.where(t < 0.5, a + (b - a) * (t / 0.5), b + (c - b) * ((t - 0.5) / 0.5))
    rim = boundary(masks, max(1, int(round(s / 32))))
    return _to_u8(np.where(rim[..., None], 0.05, out))


def _shift_sets(cfg: BenchmarkConfig) -> Iterator[tuple[str, SetData]]:
    """Yield (file stem, set) for every shift set: corruptions x severities, then the styles."""
    s, k, b, n = cfg.image_size, cfg.num_classes, cfg.num_backgrounds, cfg.shift.test
    if cfg.shift.corruptions:
        rng = _rng(cfg.seed, "shift/base")
        labels = _balanced_labels(rng, n, k)
        fams = sample_families(rng, labels, b, cfg.single.bg_corr)
        bg, fg, masks = _render_single_layers(rng, cfg, labels, fams)
        base = np.where(masks[..., None], fg, bg)
        ids = [f"shift-c-{i:05d}" for i in range(n)]
        for name in cfg.shift.corruptions:
            for sev in cfg.shift.severities:
                stem = f"{name}-{sev}"
                yield (
                    stem,
                    _set_from_masks(
                        corrupt(base, name, sev, _rng(cfg.seed, f"shift/{stem}")), masks, labels, fams, ids
                    ),
                )
    for style in cfg.shift.styles:
        rng = _rng(cfg.seed, f"shift/{style}")
        labels = _balanced_labels(rng, n, k)
        ids = [f"shift-{style}-{i:05d}" for i in range(n)]
        if style == "sketch":
            images, masks = _sketch(rng, cfg, labels)
            fams = np.full(n, -1, np.int64)
        else:
            fams = rng.integers(0, b, n).astype(np.int64)
            tex = (labels + rng.integers(1, k, n)) % k if style == "stylized" else None
            bg, fg, masks = _render_single_layers(rng, cfg, labels, fams, texture_classes=tex)
            images = np.where(masks[..., None], fg, bg)
            if style == "rendition":
                images = _rendition(rng, images, masks, s)
        yield style, _set_from_masks(images, masks, labels, fams, ids)


# ------------------------------------------------------------------------------- writing


def write_set_file(
    path: str | Path,
    data: SetData,
    *,
    kind: str,
    name: str,
    classes: Sequence[str],
    attrs: Mapping[str, Any] | None = None,
) -> int:
    """Write ``data`` as an ``oacl.set/1`` file (:func:`oacl.io.sets.write_set`); return its size in bytes."""
    return write_set(
        path,
        data.images,
        data.ids,
        data.labels,
        data.masks,
        data.boxes.reshape(-1, 4),
        data.box_labels,
        data.box_index,
        data.backgrounds,
        kind,
        classes,
        name,
        attrs=attrs,
        extra=data.extra,
    )


def _measure_rates(labels: np.ndarray, families: np.ndarray) -> float:
    return float(np.mean(families == labels)) if labels.size else float("nan")


GROUPS = ("multi", "single", "shift")  # independent groups of set files (own generators), made in parallel


def _file_key(rel: str) -> str:
    """``multi/crops_train.h5`` → ``multi-crops_train`` (readable flattened metrics)."""
    return rel.rsplit(".", 1)[0].replace("/", "-")


def _generate_group(
    group: str, cfg: BenchmarkConfig, out: Path
) -> tuple[dict[str, int], dict[str, int], dict[str, Any], list[str]]:
    """Write one of :data:`GROUPS` into ``out``; returns its (sizes, bytes, rates), keyed as in
    ``benchmark.json``, and a line per file written (logged by the caller: a worker process has no
    logging set up)."""
    t0 = time.perf_counter()
    classes = class_names(cfg.num_classes)
    sizes: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    rates: dict[str, Any] = {}
    lines: list[str] = []
    gen_attrs = {"seed": np.int64(cfg.seed), "generator": "oacl.data.benchmark"}

    def write(rel: str, data: SetData, kind: str, name: str) -> None:
        key = _file_key(rel)
        nbytes[key] = write_set_file(out / rel, data, kind=kind, name=name, classes=classes, attrs=gen_attrs)
        sizes[key] = len(data)
        lines.append(f"wrote {rel}: {len(data)} images, {data.boxes.shape[0]} boxes ({nbytes[key] / 1e6:.1f} MB)")

    if group == "multi":  # multi-object scenes, COCO JSON, object crops
        groups = class_groups(cfg.num_classes, cfg.multi.group_size)
        cooc_hits = cooc_total = 0
        for split, n in (("train", cfg.multi.train), ("val", cfg.multi.val), ("test", cfg.multi.test)):
            scenes = render_multi(_rng(cfg.seed, f"multi/{split}"), cfg, n)
            ids = [f"multi-{split}-{i:05d}" for i in range(n)]
            extra = ~scenes.inst_primary
            cooc_hits += int(scenes.inst_in_group[extra].sum())
            cooc_total += int(extra.sum())
            rates[f"multi_{split}_bg_corr"] = _measure_rates(scenes.primary, scenes.families)
            rates[f"multi_{split}_objects_per_image"] = float(scenes.inst_image.size / n)
            if split != "val":
                data = _multi_set(scenes, ids)
                write(f"multi/{split}.h5", data, "multi", f"multi-{split}")
                coco = coco_dict(data, scenes, classes, groups)
                text = json.dumps(coco, separators=(",", ":"), sort_keys=True)
                write_text(out / f"multi/instances_{split}.json", text + "\n")
                nbytes[_file_key(f"multi/instances_{split}.json")] = len(text) + 1
            crops = make_crops(scenes, ids, cfg.multi.crop_margin, cfg.multi.crop_size)
            write(f"multi/crops_{split}.h5", crops, "crops", f"crops-{split}")
        rates["multi_cooccur"] = cooc_hits / cooc_total if cooc_total else float("nan")
    elif group == "single":  # single-object sets and the Background Challenge variants
        k, b = cfg.num_classes, cfg.num_backgrounds
        for split, n in (("train", cfg.single.train), ("val", cfg.single.val)):
            rng = _rng(cfg.seed, f"single/{split}")
            labels = _balanced_labels(rng, n, k)
            fams = sample_families(rng, labels, b, cfg.single.bg_corr)
            bg, fg, masks = _render_single_layers(rng, cfg, labels, fams)
            images = np.where(masks[..., None], fg, bg)
            write(
                f"single/{split}.h5",
                _set_from_masks(images, masks, labels, fams, [f"single-{split}-{i:05d}" for i in range(n)]),
                "single",
                f"single-{split}",
            )
            rates[f"single_{split}_bg_corr"] = _measure_rates(labels, fams)
        rng = _rng(cfg.seed, "single/test")
        n = cfg.single.test
        labels = _balanced_labels(rng, n, k)
        fams = sample_families(rng, labels, b, cfg.single.bg_corr)
        bg, fg, masks = _render_single_layers(rng, cfg, labels, fams)
        rates["single_test_bg_corr"] = _measure_rates(labels, fams)
        ids = [f"single-test-{i:05d}" for i in range(n)]
        variants = background_challenge(bg, fg, masks, labels, fams, _rng(cfg.seed, "single/donors"), k)
        for name in BG_VARIANTS:
            v = variants[name]
            data = _set_from_masks(
                v["images"], v["masks"], labels, v["backgrounds"], ids, {"bg_donors": v["bg_donors"]}
            )
            write(f"single/{name}.h5", data, "single", name)
        for rule in ("same", "next"):
            don = variants[f"mixed_{rule}"]["bg_donors"]
            rates[f"single_mixed_{rule}_bg_corr"] = _measure_rates(labels, fams[don])
    elif group == "shift":  # distribution shifts
        for stem, data in _shift_sets(cfg):
            write(f"shift/{stem}.h5", data, "shift", stem)
    else:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    lines.append(f"{group}: {len(sizes)} set files in {time.perf_counter() - t0:.1f} s")
    return sizes, nbytes, rates, lines


def generate_benchmark(cfg: BenchmarkConfig, out_dir: str | Path, workers: int = 0) -> dict[str, Any]:
    """Generate the whole benchmark into ``out_dir`` (created; files are overwritten).

    Writes ``benchmark.json``, ``multi/``, ``single/`` and ``shift/`` as described in the module
    docstring and returns the metrics: ``sizes`` (images per file), ``rates`` (measured
    co-occurrence and background-class correlation), ``bytes`` and ``seconds``. The three
    :data:`GROUPS` draw from generators of their own, so they are written by up to ``workers``
    processes at once (0: one per usable core; 1: in this process) with the same bytes.
    """
    validate_config(cfg)
    t0 = time.perf_counter()
    out = Path(out_dir)
    classes = class_names(cfg.num_classes)
    families = list(BACKGROUNDS)[: cfg.num_backgrounds]
    groups = class_groups(cfg.num_classes, cfg.multi.group_size)
    workers = min(len(GROUPS), workers or usable_cores())
    if workers > 1:
        spawn = multiprocessing.get_context("spawn")  # not fork: a parent's OpenMP / OpenCV threads do not survive it
        with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
            parts = list(pool.map(_generate_group, GROUPS, [cfg] * len(GROUPS), [out] * len(GROUPS)))
    else:
        parts = [_generate_group(group, cfg, out) for group in GROUPS]
    sizes: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    rates: dict[str, Any] = {}
    for part_sizes, part_bytes, part_rates, lines in parts:  # in GROUPS order: benchmark.json as one process writes it
        sizes.update(part_sizes)
        nbytes.update(part_bytes)
        rates.update(part_rates)
        for line in lines:
            log.info("%s", line)

    meta = {
        "schema": SCHEMA,
        "seed": cfg.seed,
        "image_size": cfg.image_size,
        "classes": classes,
        "class_textures": [tex for _, tex in CLASSES[: cfg.num_classes]],
        "groups": [[classes[c] for c in g] for g in groups],
        "background_families": families,
        "class_family": {classes[c]: families[c] for c in range(cfg.num_classes)},
        "variants": list(BG_VARIANTS),
        "shift_sets": [f"{c}-{sv}" for c in cfg.shift.corruptions for sv in cfg.shift.severities]
        + list(cfg.shift.styles),
        "corruption_families": {c: CORRUPTIONS[c][1] for c in cfg.shift.corruptions},
        "sizes": sizes,
        "rates": rates,
        "params": asdict(cfg),
    }
    rates = {k: (round(v, 4) if np.isfinite(v) else None) for k, v in rates.items()}  # None: nothing to measure
    meta["rates"] = rates
    write_json(out / "benchmark.json", meta)
    return {
        "sizes": sizes,
        "rates": rates,
        "bytes": nbytes,
        "total_bytes": int(sum(nbytes.values())),
        "seconds": time.perf_counter() - t0,
    }
