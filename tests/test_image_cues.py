"""benchmarks/image_cues.py: the cue maps on images with a known answer; camouflage's colours; the variants."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from oacl.config import BenchmarkConfig
from oacl.data import benchmark, shapes
from oacl.data.textures import luminance
from oacl.localization import pxap

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "image_cues.py"
spec = importlib.util.spec_from_file_location("image_cues", SCRIPT)
image_cues = importlib.util.module_from_spec(spec)
spec.loader.exec_module(image_cues)


def _checker_on_flat(n: int = 4, s: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A black-and-white checkered square (side 12, off-centre) on a flat grey background."""
    images = np.full((n, s, s, 3), 128, np.uint8)
    masks = np.zeros((n, s, s), np.uint8)
    yy, xx = np.mgrid[0:12, 0:12]
    checker = np.where((yy // 2 + xx // 2) % 2 == 0, 255, 0).astype(np.uint8)
    for i in range(n):
        y, x = 2 + 4 * i, 18 - 4 * i
        images[i, y : y + 12, x : x + 12] = checker[..., None]
        masks[i, y : y + 12, x : x + 12] = 1
    return images, masks


def test_local_contrast_finds_a_textured_object_on_a_flat_background():
    images, masks = _checker_on_flat()
    cues = image_cues.cue_maps(images)
    assert pxap(masks, cues["local std 3 px"]) > 90
    assert pxap(masks, cues["edge density 9 px"]) > 60
    # nothing is saturated: the saturation map is flat zero, PxAP the object fraction
    assert np.all(cues["saturation"] == 0)
    assert abs(pxap(masks, cues["saturation"]) - 100 * masks.mean()) < 1e-6
    # a flat image has no local contrast anywhere
    assert np.all(image_cues.local_std(np.full((1, 16, 16), 0.3, np.float32), 5) == 0)


def test_saturation_is_hsv_saturation():
    px = np.array([[[[255, 0, 0], [200, 100, 100], [90, 90, 90], [0, 0, 0]]]], np.uint8)
    np.testing.assert_allclose(image_cues.saturation(px)[0, 0], [1.0, 0.5, 0.0, 0.0], atol=1e-6)


def test_camouflage_paints_objects_with_two_colours_of_their_own_background():
    rng = np.random.default_rng(0)
    n, s = 3, 24
    background = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    masks = np.zeros((n, s, s), np.uint8)
    masks[:, 6:18, 4:20] = 1
    foreground = np.where(masks[..., None] == 1, rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8), 0).astype(np.uint8)
    out = image_cues.camouflage(foreground, background, masks)
    assert out.dtype == np.uint8 and out.shape == background.shape
    np.testing.assert_array_equal(out[masks == 0], background[masks == 0])  # background untouched
    for i in range(n):
        bg = background[i].reshape(-1, 3).astype(np.float32)
        order = np.argsort(luminance(bg), kind="stable")
        lo, hi = (bg[order[int(q * (order.size - 1))]].astype(np.float64) for q in (0.1, 0.9))
        obj = out[i][masks[i] == 1].astype(np.float64)
        # every object pixel lies on the segment lo -> hi (to rounding), and both ends are reached
        t = (obj - lo) @ (hi - lo) / ((hi - lo) @ (hi - lo))
        assert np.abs(obj - (lo + t[:, None] * (hi - lo))).max() <= 0.9
        assert t.min() < 0.01 and t.max() > 0.99
    # a weight blends own and camouflaged colours linearly: 0 keeps the object, 0.5 is the midpoint
    np.testing.assert_array_equal(
        image_cues.camouflage(foreground, background, masks, 0.0),
        np.where(masks[..., None] == 1, foreground, background),
    )
    half = image_cues.camouflage(foreground, background, masks, 0.5).astype(np.float64)
    mid = (out.astype(np.float64) + foreground) / 2
    assert np.abs(half - mid)[masks == 1].max() <= 1.0  # each of the two roundings moves it by <= 0.5
    with pytest.raises(ValueError, match="weight must be in"):
        image_cues.camouflage(foreground, background, masks, 1.5)


def test_variants_patch_the_renderer_only_inside_the_block():
    cfg = BenchmarkConfig()
    saved = (shapes.object_colours, benchmark.render_objects)
    paper = benchmark.render_single(cfg, 8, seed=0)
    with image_cues.variant("scene-palette, no-rim", cfg) as patched:
        assert shapes.object_colours is image_cues.scene_palette
        plain = benchmark.render_single(patched, 8, seed=0)
    assert (shapes.object_colours, benchmark.render_objects) == saved
    np.testing.assert_array_equal(benchmark.render_single(cfg, 8, seed=0)["images"], paper["images"])
    # same scenes (labels, masks), other object colours
    np.testing.assert_array_equal(plain["labels"], paper["labels"])
    assert not np.array_equal(plain["foreground"], paper["foreground"])
    sat = image_cues.saturation
    inside = paper["masks"] == 1
    assert sat(plain["foreground"])[inside].mean() < sat(paper["foreground"])[inside].mean()


def test_scene_texture_removes_the_local_contrast_cue_inside_the_block_only():
    cfg = BenchmarkConfig()
    saved = benchmark.render_objects
    with image_cues.variant("scene-texture", cfg) as scene:
        assert scene.object_texture == "scene" and benchmark.render_objects is saved  # a param, no patch
        drawn = benchmark.render_single(scene, 48, seed=0)
    paper = benchmark.render_single(cfg, 48, seed=0)
    cue = image_cues.cue_maps
    # today's objects stand out by local contrast; background-textured ones do not (PxAP near the
    # object fraction, far below today's)
    assert pxap(paper["masks"], cue(paper["images"])["local std 9 px"]) > 70
    assert pxap(drawn["masks"], cue(drawn["images"])["local std 9 px"]) < 40


def test_disjoint_texture_dresses_class_c_in_the_unused_family_b_plus_c(monkeypatch):
    cfg = BenchmarkConfig(num_classes=4, num_backgrounds=4)
    worn = []
    real = image_cues.render_backgrounds
    monkeypatch.setattr(image_cues, "render_backgrounds", lambda rng, fam, s: worn.append(fam) or real(rng, fam, s))
    saved = benchmark._objects
    with image_cues.variant("disjoint-texture", cfg) as patched:
        assert patched.object_texture == "scene" and benchmark._objects is not saved
        drawn = benchmark.render_single(patched, 16, seed=0)
    assert benchmark._objects is saved
    # one object per image, rendered in order: class c wears family 4 + c; backgrounds stay in 0-3
    np.testing.assert_array_equal(np.concatenate(worn), 4 + drawn["labels"])
    assert drawn["backgrounds"].max() < 4


def test_disjoint_texture_needs_a_free_family_per_class():
    saved = benchmark._objects
    with pytest.raises(ValueError, match="num_backgrounds \\+ num_classes <= 10 families, got 8 \\+ 8"):
        with image_cues.variant("disjoint-texture", BenchmarkConfig(num_classes=8, num_backgrounds=8)):
            pass  # entering the block raises: 8 + 8 families needed, 10 exist
    assert benchmark._objects is saved  # refused before anything was patched


def test_shared_scene_makes_a_familys_backgrounds_near_copies_and_leaves_objects_free():
    cfg = BenchmarkConfig()
    saved = (benchmark.render_backgrounds, benchmark._objects, image_cues.textures._palette)
    plain = benchmark.render_single(dataclasses.replace(cfg, object_texture="scene"), 96, seed=0)
    with image_cues.variant("shared-scene", cfg) as patched:
        assert patched.object_texture == "scene" and benchmark.render_backgrounds is not saved[0]
        shared = benchmark.render_single(patched, 96, seed=0)
    assert (benchmark.render_backgrounds, benchmark._objects, image_cues.textures._palette) == saved

    def spread(drawn: dict, layer: str, where: np.ndarray) -> float:
        """Mean over families of the s.d. across images of each image's mean colour in ``where``."""
        colours = np.array([drawn[layer][i][where[i]].mean(axis=0) for i in range(len(where))])
        fams = drawn["backgrounds"]
        return float(np.mean([colours[fams == f].std(axis=0).mean() for f in np.unique(fams) if (fams == f).sum() > 2]))

    # the same scenes; a family's backgrounds share their colours (s.d. of the mean colour a few
    # grey levels at most, against tens when drawn per image), the objects' colours still vary
    np.testing.assert_array_equal(shared["labels"], plain["labels"])
    np.testing.assert_array_equal(shared["backgrounds"], plain["backgrounds"])
    outside = shared["masks"] == 0
    assert spread(shared, "background", outside) < 0.25 * spread(plain, "background", plain["masks"] == 0)
    inside = shared["masks"] == 1
    assert spread(shared, "foreground", inside) > 0.5 * spread(plain, "foreground", plain["masks"] == 1)
