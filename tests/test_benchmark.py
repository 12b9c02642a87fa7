"""The embedded benchmark generator: determinism, exact ground truth, Background Challenge
definitions, COCO export, measured rates, corruption formulas and bad params."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib.colors import hsv_to_rgb as mpl_hsv_to_rgb
from matplotlib.colors import rgb_to_hsv as mpl_rgb_to_hsv

from oacl.config import BenchmarkConfig, ConfigError, MultiSetConfig, ShiftSetConfig, SingleSetConfig, parse_section
from oacl.data import benchmark as bm
from oacl.data import corruptions as cr
from oacl.data.shapes import CLASSES, boundary, render_objects
from oacl.data.textures import BACKGROUNDS, hsv_to_rgb, render_backgrounds
from oacl.vocab import BG_VARIANTS

TINY = BenchmarkConfig(
    seed=3,
    image_size=32,
    num_classes=4,
    num_backgrounds=5,
    object_scale=(0.45, 0.7),
    multi=MultiSetConfig(
        train=24, val=8, test=12, objects=(1, 4), object_scale=(0.3, 0.5), group_size=2, cooccur=0.8, crop_size=24
    ),
    single=SingleSetConfig(train=24, val=8, test=16, bg_corr=0.75),
    shift=ShiftSetConfig(test=8, corruptions=("gaussian_noise", "fog"), severities=(1, 5)),
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in f}
        out["ids"] = np.array([s.decode() if isinstance(s, bytes) else s for s in out["ids"]])
        out["attrs"] = dict(f.attrs)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench") / "data"
    metrics = bm.generate_benchmark(TINY, out)
    return out, metrics


# ------------------------------------------------------------------------ files, schema


def test_expected_files_and_sizes(tiny):
    out, metrics = tiny
    expected = {
        "benchmark.json",
        "multi/train.h5",
        "multi/test.h5",
        "multi/instances_train.json",
        "multi/instances_test.json",
        "multi/crops_train.h5",
        "multi/crops_val.h5",
        "multi/crops_test.h5",
        "single/train.h5",
        "single/val.h5",
    }
    expected |= {f"single/{v}.h5" for v in BG_VARIANTS}
    expected |= {f"shift/{c}-{s}.h5" for c in ("gaussian_noise", "fog") for s in (1, 5)}
    expected |= {"shift/sketch.h5", "shift/stylized.h5", "shift/rendition.h5"}
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == expected
    assert metrics["sizes"]["multi-train"] == 24 and metrics["sizes"]["single-original"] == 16
    assert metrics["sizes"]["shift-fog-5"] == 8
    meta = json.loads((out / "benchmark.json").read_text())
    assert meta["classes"] == ["disk", "square", "triangle", "star"]
    assert meta["groups"] == [["disk", "square"], ["triangle", "star"]]
    assert meta["background_families"] == list(BACKGROUNDS)[:5]
    assert meta["sizes"] == metrics["sizes"]


def test_schema_of_every_set_file(tiny):
    out, _ = tiny
    for path in out.rglob("*.h5"):
        d = _read(path)
        a = d["attrs"]
        assert a["schema"] == bm.SCHEMA == "oacl.set/1"
        assert a["kind"] in ("multi", "single", "crops", "shift")
        assert json.loads(a["classes"]) == ["disk", "square", "triangle", "star"]
        n, s = d["images"].shape[:2]
        assert int(a["image_size"]) == s and d["images"].shape == (n, s, s, 3) and d["images"].dtype == np.uint8
        assert d["masks"].shape == (n, s, s) and d["masks"].dtype == np.uint8 and d["masks"].max() <= 1
        assert len(set(d["ids"])) == n
        assert d["labels"].dtype == np.int64 and d["backgrounds"].dtype == np.int64
        assert d["boxes"].dtype == np.float32 and d["boxes"].shape[1] == 4
        assert d["box_index"][0] == 0 and d["box_index"][-1] == len(d["boxes"]) == len(d["box_labels"])
        with h5py.File(path, "r") as f:  # no timestamps in the object headers
            for key in ("images", "masks", "ids", "labels"):
                info = h5py.h5o.get_info(f[key].id)
                assert info.ctime == info.mtime == 0, (path, key)


def test_set_files_open_with_the_project_reader(tiny):
    from oacl.io.sets import open_set

    out, _ = tiny
    for path in sorted(out.rglob("*.h5")):
        sf = open_set(path)
        assert len(sf) > 0 and sf.masks.shape[0] == len(sf)


def test_same_seed_gives_byte_identical_files(tiny, tmp_path):
    out, metrics = tiny  # written by one process per usable core (two here), at most one per group
    again = tmp_path / "again"
    assert bm.generate_benchmark(TINY, again, workers=1)["sizes"] == metrics["sizes"]  # in this process
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert len(files) > 20 and files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert _sha(out / rel) == _sha(again / rel), rel
    other = tmp_path / "other"
    bm.generate_benchmark(BenchmarkConfig(**{**TINY.__dict__, "seed": 4}), other)
    assert _sha(out / "single/train.h5") != _sha(other / "single/train.h5")


# ------------------------------------------------------------------------- ground truth


def _tight(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize(
    "rel", ["single/train.h5", "single/original.h5", "single/mixed_next.h5", "shift/fog-5.h5", "shift/sketch.h5"]
)
def test_single_object_box_is_the_tight_box_of_the_mask(tiny, rel):
    d = _read(tiny[0] / rel)
    assert np.array_equal(d["box_index"], np.arange(len(d["ids"]) + 1))
    for i in range(len(d["ids"])):
        assert d["masks"][i].sum() > 0
        assert d["boxes"][i].tolist() == _tight(d["masks"][i])
        assert d["box_labels"][i] == d["labels"][i]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2
def test_multi_scenes_coco_masks_match_the_set_file(tiny):
    from pycocotools.coco import COCO

    out, _ = tiny
    for split in ("train", "test"):
        d = _read(out / f"multi/{split}.h5")
        coco = COCO(str(out / f"multi/instances_{split}.json"))
        assert sorted(coco.getCatIds()) == [1, 2, 3, 4]
        assert [c["supercategory"] for c in coco.loadCats([1, 2, 3, 4])] == ["group0", "group0", "group1", "group1"]
        n = len(d["ids"])
        assert sorted(coco.getImgIds()) == list(range(1, n + 1))
        for i in range(n):
            img = coco.loadImgs(i + 1)[0]
            assert img["file_name"] == d["ids"][i] and img["height"] == img["width"] == 32
            anns = coco.loadAnns(coco.getAnnIds(imgIds=i + 1))
            lo, hi = d["box_index"][i], d["box_index"][i + 1]
            assert len(anns) == hi - lo >= 1
            union = np.zeros((32, 32), int)
            areas = []
            for j, ann in zip(range(lo, hi), anns):
                m = coco.annToMask(ann)
                assert ann["iscrowd"] == 0 and ann["category_id"] == d["box_labels"][j] + 1
                assert ann["area"] == m.sum() > 0
                x, y, w, h = ann["bbox"]
                assert [x, y, x + w, y + h] == d["boxes"][j].tolist() == _tight(m)
                union += m
                areas.append(m.sum())
            assert union.max() == 1, "visible instance masks must not overlap"
            assert np.array_equal(union, d["masks"][i])
            assert d["labels"][i] == d["box_labels"][lo + int(np.argmax(areas))]


def test_multi_objects_per_image_and_visibility():
    cfg = TINY
    scenes = bm.render_multi(np.random.default_rng(0), cfg, 200)
    counts = np.bincount(scenes.inst_image, minlength=200)
    assert counts.min() >= 1 and counts.max() <= 4
    assert scenes.inst_primary.sum() == 200  # the primary (drawn on top) is always kept
    assert np.array_equal(scenes.inst_class[scenes.inst_primary], scenes.primary)


def test_crops_boxes_and_labels(tiny):
    out, _ = tiny
    for split in ("train", "val", "test"):
        d = _read(out / f"multi/crops_{split}.h5")
        assert d["images"].shape[1:] == (24, 24, 3) and d["attrs"]["kind"] == "crops"
        for i in range(len(d["ids"])):
            assert d["boxes"][i].tolist() == _tight(d["masks"][i])
            assert d["box_labels"][i] == d["labels"][i]
    train = _read(out / "multi/train.h5")
    crops = _read(out / "multi/crops_train.h5")
    assert len(crops["ids"]) == len(train["boxes"])  # one crop per instance
    assert np.array_equal(np.sort(crops["labels"]), np.sort(train["box_labels"]))


def test_crop_with_known_box_and_margin():
    s = 32
    images = np.zeros((1, s, s, 3), np.uint8)
    images[0, 10:20, 5:15] = 200  # object occupies x 5..14, y 10..19 (10 x 10 px)
    masks = np.zeros((1, s, s), bool)
    masks[0, 10:20, 5:15] = True
    scenes = bm.MultiScenes(
        images, np.array([0]), np.array([0]), np.array([0]), np.array([1]), masks, np.array([True]), np.array([True])
    )
    crops = bm.make_crops(scenes, ["a"], margin=0.2, crop_size=14)
    # box grown by 2 px per side: x 3..16, y 8..21 -> 14 x 14 px, resized 1:1
    assert np.array_equal(crops.images[0], images[0, 8:22, 3:17])
    assert crops.boxes[0].tolist() == [2, 2, 12, 12] and crops.labels.tolist() == [1] and crops.ids == ["a-o0"]


# ----------------------------------------------------------------- Background Challenge


@pytest.fixture(scope="module")
def variants(tiny) -> dict[str, dict[str, np.ndarray]]:
    return {v: _read(tiny[0] / f"single/{v}.h5") for v in BG_VARIANTS}


def _box_mask(box: np.ndarray, s: int) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    m = np.zeros((s, s), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_variants_share_ids_labels_and_foreground_masks(variants):
    orig = variants["original"]
    for name, d in variants.items():
        assert d["attrs"]["name"] == name
        assert list(d["ids"]) == list(orig["ids"]) and np.array_equal(d["labels"], orig["labels"])
        if name in ("only_bg_b", "only_bg_t", "no_fg"):
            assert d["masks"].sum() == 0 and len(d["boxes"]) == 0
        else:
            assert np.array_equal(d["masks"], orig["masks"]) and np.array_equal(d["boxes"], orig["boxes"])


def test_only_bg_b_has_no_foreground_pixel_left(variants):
    orig, v = variants["original"], variants["only_bg_b"]
    for i in range(len(orig["ids"])):
        inside = _box_mask(orig["boxes"][i], 32)
        assert (v["images"][i][inside] == 0).all()
        assert (v["images"][i][orig["masks"][i] == 1] == 0).all()
        assert np.array_equal(v["images"][i][~inside], orig["images"][i][~inside])


def test_only_fg_and_no_fg(variants):
    orig, fg, nofg = variants["original"], variants["only_fg"], variants["no_fg"]
    m = orig["masks"].astype(bool)
    assert (fg["images"][~m] == 0).all() and np.array_equal(fg["images"][m], orig["images"][m])
    assert (nofg["images"][m] == 0).all() and np.array_equal(nofg["images"][~m], orig["images"][~m])
    assert (fg["backgrounds"] == -1).all() and np.array_equal(nofg["backgrounds"], orig["backgrounds"])


def test_only_bg_t_tiles_the_largest_strip_outside_the_box(variants):
    orig, v = variants["original"], variants["only_bg_t"]
    s = 32
    for i in range(len(orig["ids"])):
        img = orig["images"][i]
        x0, y0, x1, y1 = (int(t) for t in orig["boxes"][i])
        inside = _box_mask(orig["boxes"][i], s)
        assert np.array_equal(v["images"][i][~inside], img[~inside])
        # slow reference: pick the widest strip (left, right, top, bottom), tile pixel by pixel
        strips = [
            (s * x0, 0, s, 0, x0),
            (s * (s - x1), 0, s, x1, s),
            (s * y0, 0, y0, 0, s),
            (s * (s - y1), y1, s, 0, s),
        ]
        area, r0, r1, c0, c1 = max(strips, key=lambda t: t[0])
        assert area > 0
        for y in range(y0, y1):
            for x in range(x0, x1):
                src = img[r0 + (y - y0) % (r1 - r0), c0 + (x - x0) % (c1 - c0)]
                assert (v["images"][i][y, x] == src).all()


@pytest.mark.parametrize("name", ["mixed_same", "mixed_rand", "mixed_next"])
def test_mixed_keep_the_object_and_take_the_donor_background(variants, name):
    orig, v = variants["original"], variants[name]
    labels, donors = orig["labels"], v["bg_donors"]
    k = 4
    m = orig["masks"].astype(bool)
    assert np.array_equal(v["images"][m], orig["images"][m])
    assert (donors != np.arange(len(donors))).all()
    if name == "mixed_same":
        assert np.array_equal(labels[donors], labels)
    if name == "mixed_next":
        assert np.array_equal(labels[donors], (labels + 1) % k)
    assert np.array_equal(v["backgrounds"], orig["backgrounds"][donors])
    for i, j in enumerate(donors):
        clean = ~m[i] & ~m[j]  # neither this object nor the donor's object covers the pixel
        assert np.array_equal(v["images"][i][clean], orig["images"][j][clean])


def test_background_challenge_on_hand_made_layers():
    s, n = 8, 4
    bg = np.stack([np.full((s, s, 3), 10 * (i + 1), np.uint8) for i in range(n)])
    masks = np.zeros((n, s, s), bool)
    masks[:, 2:4, 3:6] = True
    fg = np.where(masks[..., None], np.uint8(250), np.uint8(0))
    labels = np.array([0, 0, 1, 1])
    out = bm.background_challenge(bg, fg, masks, labels, labels.copy(), np.random.default_rng(0), 2)
    assert out["mixed_same"]["bg_donors"].tolist() == [1, 0, 3, 2]
    assert out["mixed_next"]["bg_donors"].tolist()[0] in (2, 3)
    assert out["mixed_same"]["images"][0, 0, 0, 0] == 20 and out["mixed_same"]["images"][0, 2, 3, 0] == 250
    # box x 3..5, y 2..3: largest outside strip is the bottom one (rows 4..7, full width)
    t = out["only_bg_t"]["images"][0]
    assert (t[2:4, 3:6] == 10).all() and (out["only_bg_b"]["images"][0][2:4, 3:6] == 0).all()


# ---------------------------------------------------------------------------- rates


def test_background_correlation_rate_and_uniform_others():
    rng = np.random.default_rng(0)
    labels = np.arange(20000) % 8
    fam = bm.sample_families(rng, labels, 10, 0.9)
    rate = np.mean(fam == labels)
    assert abs(rate - 0.9) < 4 * np.sqrt(0.9 * 0.1 / labels.size)
    off = fam != labels
    shift = (fam[off] - labels[off]) % 10  # 1..9, uniform
    counts = np.bincount(shift, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 0.75 * off.sum() / 9


def test_measured_rates_within_tolerance_of_params():
    cfg = BenchmarkConfig(
        image_size=32,
        num_classes=6,
        num_backgrounds=6,
        multi=MultiSetConfig(objects=(2, 4), group_size=3, cooccur=0.7, bg_corr=0.6, object_scale=(0.25, 0.4)),
    )
    scenes = bm.render_multi(np.random.default_rng(1), cfg, 600)
    extra = ~scenes.inst_primary
    rate = scenes.inst_in_group[extra].mean()
    tol = 4 * np.sqrt(0.7 * 0.3 / extra.sum())
    assert abs(rate - 0.7) < tol, (rate, extra.sum())
    groups = scenes.inst_class // 3
    prim_group = (scenes.primary // 3)[scenes.inst_image]
    assert np.array_equal(groups[extra] == prim_group[extra], scenes.inst_in_group[extra])
    bg_rate = np.mean(scenes.families == scenes.primary)
    assert abs(bg_rate - 0.6) < 4 * np.sqrt(0.6 * 0.4 / 600)


def test_generated_rates_reported(tiny):
    out, metrics = tiny
    d = _read(out / "single/train.h5")
    measured = np.mean(d["backgrounds"] == d["labels"])
    assert metrics["rates"]["single_train_bg_corr"] == pytest.approx(measured, abs=1e-4)
    assert metrics["rates"]["single_mixed_same_bg_corr"] is not None
    assert 0.0 <= metrics["rates"]["multi_cooccur"] <= 1.0


# --------------------------------------------------------------------------- shift sets


def test_shift_sets(tiny):
    out, _ = tiny
    g1, g5, f5 = (_read(out / f"shift/{n}.h5") for n in ("gaussian_noise-1", "gaussian_noise-5", "fog-5"))
    assert list(g1["ids"]) == list(g5["ids"]) == list(f5["ids"])
    assert np.array_equal(g1["masks"], f5["masks"]) and np.array_equal(g1["labels"], f5["labels"])
    diff = np.abs(g1["images"].astype(int) - g5["images"].astype(int)).mean()
    assert diff > 3
    sk = _read(out / "shift/sketch.h5")
    for i in range(len(sk["ids"])):
        outside = sk["masks"][i] == 0
        img = sk["images"][i]
        assert (img[outside] == img[0, 0]).all() and img[0, 0].min() > 200  # plain paper outside the object
        assert img[sk["masks"][i] == 1].min() < 80  # ink on the outline
    assert (sk["backgrounds"] == -1).all()


# ---------------------------------------------------------------------------- rendering


def test_render_single_is_deterministic_and_consistent():
    a = bm.render_single(TINY, 12, seed=5)
    b = bm.render_single(TINY, 12, seed=5)
    for key in a:
        assert np.array_equal(a[key], b[key], equal_nan=True), key
    m = a["masks"].astype(bool)
    assert np.array_equal(a["images"], np.where(m[..., None], a["foreground"], a["background"]))
    assert np.bincount(a["labels"]).tolist() == [3, 3, 3, 3]
    for i in range(12):
        assert a["boxes"][i].tolist() == _tight(m[i])
        # object size: the silhouette spans a good part of the image
        x0, y0, x1, y1 = a["boxes"][i]
        assert max(x1 - x0, y1 - y0) >= 0.3 * 32


def test_objects_render_inside_their_disk():
    n = len(CLASSES)
    centers = np.full((n, 2), 32.0)
    masks, rgb = render_objects(np.random.default_rng(0), np.arange(n), centers, np.full(n, 20.0), np.zeros(n), 64)
    ys, xs = np.mgrid[0:64, 0:64] + 0.5
    r = np.sqrt((xs - 32) ** 2 + (ys - 32) ** 2)
    for k in range(n):
        assert masks[k].sum() > 0.25 * np.pi * 20**2, CLASSES[k]
        assert r[masks[k]].max() <= 20 * 1.07 + 0.5, CLASSES[k]
    assert rgb.min() >= 0 and rgb.max() <= 1


def test_classes_are_told_apart_by_silhouette_alone():
    """A linear classifier on rotation-invariant silhouette features separates the shape classes."""
    from sklearn.linear_model import LogisticRegression

    def features(masks: np.ndarray) -> np.ndarray:
        out = []
        for m in masks:
            ys, xs = np.nonzero(m)
            dy, dx = ys - ys.mean(), xs - xs.mean()
            r = np.sqrt(dx**2 + dy**2)
            rmax = r.max()
            radial = np.histogram(r / rmax, bins=8, range=(0, 1))[0] / len(r)  # hole (ring), fill
            fill = len(r) / (np.pi * rmax**2)
            rim = boundary(m[None])[0].sum() / np.sqrt(len(r))  # perimeter / sqrt(area)
            # outer radius per angle -> magnitudes of its angular harmonics (arms: star 5, cross 4, ...)
            sector = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * 36).astype(int) % 36
            prof = np.zeros(36)
            np.maximum.at(prof, sector, r / rmax)
            harm = np.abs(np.fft.rfft(prof))[1:8] / 36
            out.append(np.concatenate([radial, [fill, rim], harm]))
        return np.asarray(out)

    cfg = BenchmarkConfig(num_classes=10, num_backgrounds=10)
    tr, te = bm.render_single(cfg, 400, seed=0), bm.render_single(cfg, 200, seed=1)
    clf = LogisticRegression(max_iter=2000).fit(features(tr["masks"].astype(bool)), tr["labels"])
    acc = clf.score(features(te["masks"].astype(bool)), te["labels"])
    assert acc > 0.6, acc  # chance is 0.1


def test_background_families_have_distinct_statistics():
    """Radial power spectra of the luminance identify the background family (chance 0.1)."""
    from sklearn.linear_model import LogisticRegression

    def spectrum(img: np.ndarray) -> np.ndarray:
        lum = img.mean(-1)
        p = np.abs(np.fft.fftshift(np.fft.fft2(lum - lum.mean(), axes=(1, 2)), axes=(1, 2))) ** 2
        yy, xx = np.mgrid[-32:32, -32:32]
        ring = np.minimum(np.sqrt(yy**2 + xx**2).astype(int), 31)
        prof = np.stack([np.bincount(ring.ravel(), q.ravel(), 32) for q in p])
        prof = np.log(prof + 1e-6)
        return np.concatenate([prof - prof.mean(1, keepdims=True), lum.std((1, 2))[:, None]], 1)

    fam_tr, fam_te = np.repeat(np.arange(10), 40), np.repeat(np.arange(10), 20)
    tr = render_backgrounds(np.random.default_rng(0), fam_tr, 64)
    te = render_backgrounds(np.random.default_rng(1), fam_te, 64)
    assert tr.shape == (400, 64, 64, 3) and tr.min() >= 0 and tr.max() <= 1
    clf = LogisticRegression(max_iter=3000).fit(spectrum(tr), fam_tr)
    assert clf.score(spectrum(te), fam_te) > 0.6


def test_hsv_to_rgb_matches_matplotlib():
    rng = np.random.default_rng(0)
    hsv = rng.random((500, 3))
    assert np.allclose(hsv_to_rgb(hsv[:, 0], hsv[:, 1], hsv[:, 2]), mpl_hsv_to_rgb(hsv), atol=1e-6)


# -------------------------------------------------------------------------- corruptions


def _img(seed: int = 0, n: int = 4, s: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, s, s, 3), dtype=np.uint8)


def test_every_corruption_keeps_shape_dtype_and_is_seeded():
    x = _img()
    for name in cr.CORRUPTIONS:
        for sev in (1, 5):
            a = cr.corrupt(x, name, sev, np.random.default_rng(1))
            b = cr.corrupt(x, name, sev, np.random.default_rng(1))
            assert a.shape == x.shape and a.dtype == np.uint8 and np.array_equal(a, b), name


def test_noise_strength_matches_the_severity_constant():
    x = np.full((8, 32, 32, 3), 128, np.uint8)
    for sev, c in enumerate([0.04, 0.08, 0.12, 0.15, 0.18], start=1):
        y = cr.corrupt(x, "gaussian_noise", sev, np.random.default_rng(0)).astype(float) / 255
        assert y.std() == pytest.approx(c, rel=0.05)


def test_contrast_brightness_saturate_closed_forms():
    x = _img(1)
    f = x.astype(np.float64) / 255
    m = f.mean(axis=(1, 2), keepdims=True)
    ref = np.clip((f - m) * 0.2 + m, 0, 1)
    assert np.abs(cr.corrupt(x, "contrast", 3, np.random.default_rng(0)) / 255 - ref).max() <= 1 / 255 + 1e-9
    hsv = mpl_rgb_to_hsv(f)
    hsv_b = hsv.copy()
    hsv_b[..., 2] = np.clip(hsv[..., 2] + 0.3, 0, 1)
    assert (
        np.abs(cr.corrupt(x, "brightness", 3, np.random.default_rng(0)) / 255 - mpl_hsv_to_rgb(hsv_b)).max()
        <= 1 / 255 + 1e-6
    )
    hsv_s = hsv.copy()
    hsv_s[..., 1] = np.clip(hsv[..., 1] * 5 + 0.1, 0, 1)
    assert (
        np.abs(cr.corrupt(x, "saturate", 4, np.random.default_rng(0)) / 255 - mpl_hsv_to_rgb(hsv_s)).max()
        <= 1 / 255 + 1e-6
    )


def test_blurs_preserve_a_constant_image_and_smooth_noise():
    flat = np.full((2, 32, 32, 3), 90, np.uint8)
    noisy = _img(2, 2)
    for name in ("defocus_blur", "gaussian_blur", "motion_blur"):
        assert np.abs(cr.corrupt(flat, name, 5, np.random.default_rng(0)).astype(int) - 90).max() <= 1
        assert cr.corrupt(noisy, name, 5, np.random.default_rng(0)).std() < 0.6 * noisy.std()


def test_plasma_fractal_and_pixelate():
    p = cr.plasma_fractal(np.random.default_rng(0), 3, 64, 2.0)
    assert p.shape == (3, 64, 64) and p.min() == 0 and p.max() == pytest.approx(1)
    x = _img(3, 1, 40)
    y = cr.corrupt(x, "pixelate", 5, np.random.default_rng(0))[0]  # 40 -> 20 -> 40: 2 x 2 blocks
    assert (y[0::2, 0::2] == y[1::2, 1::2]).all()


def test_bad_corruption_arguments():
    with pytest.raises(ValueError, match="unknown corruption 'snow'"):
        cr.corrupt(_img(), "snow", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="severity must be 1..5, got 6"):
        cr.corrupt(_img(), "fog", 6, np.random.default_rng(0))


# --------------------------------------------------------------------------- bad params


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"num_classes": 6, "num_backgrounds": 5}, "'data.benchmark.num_backgrounds' = 5 must be >= num_classes"),
        ({"num_classes": 5}, "'data.benchmark.multi.group_size' = 2 must divide num_classes"),
        ({"object_scale": [0.6, 0.4]}, "'data.benchmark.object_scale' = [0.6, 0.4] must be [low, high]"),
        ({"multi": {"objects": [3, 2]}}, "'data.benchmark.multi.objects' = [3, 2]"),
        ({"multi": {"group_size": 8}}, "'data.benchmark.multi.cooccur' = 0.85 must be 1.0"),
        ({"single": {"test": 10}}, "'data.benchmark.single.test' = 10 must be >= 2 * num_classes = 16"),
        ({"shift": {"corruptions": ["fog", "snow"]}}, "unknown corruption 'snow'"),
        ({"shift": {"styles": ["cartoon"]}}, "unknown style 'cartoon'"),
        ({"shift": {"severities": [1, 1]}}, "'data.benchmark.shift.severities' = [1, 1] repeats"),
        ({"image_size": 16, "object_scale": [0.2, 0.5]}, "gives objects under 6 px"),
    ],
)
def test_bad_params_are_rejected_with_the_key(raw, message):
    cfg = parse_section(BenchmarkConfig, raw, "data.benchmark")
    with pytest.raises(ConfigError) as info:
        bm.validate_config(cfg)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"num_classes": 11}, "'data.benchmark.num_classes' = 11 is out of range"),
        ({"single": {"bg_corr": 1.2}}, "'data.benchmark.single.bg_corr' = 1.2 is out of range"),
        ({"shift": {"severities": [0]}}, "'data.benchmark.shift.severities[0]' = 0 is out of range"),
        ({"multi": {"min_visible": 0}}, "'data.benchmark.multi.min_visible' = 0.0 is out of range"),
        ({"object_texture": "scenes"}, "'data.benchmark.object_texture' = 'scenes' is not one of ['class', 'scene']"),
    ],
)
def test_out_of_range_fields_are_rejected(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_section(BenchmarkConfig, raw, "data.benchmark")
    assert message in str(info.value)


def test_default_config_is_valid():
    bm.validate_config(BenchmarkConfig())


def test_texture_corr_draws_another_class_texture_at_the_given_rate() -> None:
    cfg = parse_section(BenchmarkConfig, {"num_classes": 8})
    classes = np.arange(80_000) % 8
    assert bm._texture_of(np.random.default_rng(0), classes, cfg) is None  # the default draws nothing
    never = bm._texture_of(np.random.default_rng(0), classes, parse_section(BenchmarkConfig, {"texture_corr": 0.0}))
    assert (never != classes).all() and set(np.unique(never)) == set(range(8))
    half = bm._texture_of(np.random.default_rng(0), classes, parse_section(BenchmarkConfig, {"texture_corr": 0.5}))
    assert abs(float(np.mean(half == classes)) - 0.5) < 0.03
    uniform = bm._texture_of(np.random.default_rng(0), classes, parse_section(BenchmarkConfig, {"texture_corr": 1 / 8}))
    counts = np.bincount(uniform[classes == 3], minlength=8)  # independent of the class: 1/8 each (s.e. ~3 %)
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()


def test_scene_object_texture_paints_each_object_with_the_family_half_a_turn_from_its_class() -> None:
    """object_texture scene: the class's mask, filled with background family (texture class + B/2) mod B, no rim."""
    cfg = parse_section(BenchmarkConfig, {"image_size": 32, "object_texture": "scene"})
    classes = np.array([0, 3, 5, 6])
    centers, radii, angles = np.full((4, 2), 16.0), np.full(4, 11.0), np.linspace(0, 1, 4)
    masks, rgb = bm._objects(np.random.default_rng(7), cfg, classes, centers, radii, angles, None)
    rng = np.random.default_rng(7)  # the same draws by hand: the shapes, then the families' textures
    want_masks, _ = render_objects(rng, classes, centers, radii, angles, 32, outline=False)
    np.testing.assert_array_equal(masks, want_masks)
    np.testing.assert_array_equal(rgb, render_backgrounds(rng, np.array([4, 7, 1, 2]), 32))
    # texture classes (texture_corr, the stylized shift set's swap) pick the family, not the shape
    _, swapped = bm._objects(np.random.default_rng(7), cfg, classes, centers, radii, angles, classes[::-1])
    rng = np.random.default_rng(7)
    render_objects(rng, classes, centers, radii, angles, 32, outline=False)
    np.testing.assert_array_equal(swapped, render_backgrounds(rng, np.array([2, 1, 7, 4]), 32))
    # ten families: half a turn is 5
    ten = parse_section(BenchmarkConfig, {"image_size": 32, "num_backgrounds": 10, "object_texture": "scene"})
    _, rgb10 = bm._objects(np.random.default_rng(7), ten, classes, centers, radii, angles, None)
    rng = np.random.default_rng(7)
    render_objects(rng, classes, centers, radii, angles, 32, outline=False)
    np.testing.assert_array_equal(rgb10, render_backgrounds(rng, np.array([5, 8, 0, 1]), 32))
    # the default (class) is the object renderer itself
    m0, rgb0 = bm._objects(
        np.random.default_rng(7), BenchmarkConfig(image_size=32), classes, centers, radii, angles, None
    )
    w0 = render_objects(np.random.default_rng(7), classes, centers, radii, angles, 32)
    np.testing.assert_array_equal(m0, w0[0])
    np.testing.assert_array_equal(rgb0, w0[1])


def test_scene_object_texture_reaches_every_set_and_keeps_the_scenes() -> None:
    """Same seed, class vs scene textures (one render chunk): the same labels, families, masks and backgrounds;
    other object pixels only."""
    raw = {"image_size": 32, "object_scale": [0.4, 0.6], "multi": {"object_scale": [0.4, 0.5]}}
    cls = parse_section(BenchmarkConfig, raw)
    scn = parse_section(BenchmarkConfig, {**raw, "object_texture": "scene"})
    a, b = bm.render_single(cls, 64, seed=3), bm.render_single(scn, 64, seed=3)
    for key in ("labels", "backgrounds", "masks", "background"):
        np.testing.assert_array_equal(a[key], b[key])
    inside = b["masks"] == 1
    assert (a["images"][~inside] == b["images"][~inside]).all()
    assert (a["images"][inside] != b["images"][inside]).any(-1).mean() > 0.5
    ma, mb = bm.render_multi(np.random.default_rng(1), cls, 40), bm.render_multi(np.random.default_rng(1), scn, 40)
    np.testing.assert_array_equal(ma.inst_class, mb.inst_class)
    np.testing.assert_array_equal(ma.inst_masks, mb.inst_masks)
    assert not np.array_equal(ma.images, mb.images)


def test_squeeze_hues_maps_each_hue_into_the_band_and_keeps_saturation_and_value() -> None:
    from oacl.data.textures import squeeze_hues

    rgb = np.random.default_rng(0).random((500, 3)).astype(np.float32)
    assert squeeze_hues(rgb, 1.0) is rgb
    out = squeeze_hues(rgb, 0.2)
    hsv_in, hsv_out = mpl_rgb_to_hsv(rgb), mpl_rgb_to_hsv(out)
    np.testing.assert_allclose(hsv_out[:, 0], 0.5 + 0.2 * (hsv_in[:, 0] - 0.5), atol=1e-4)
    np.testing.assert_allclose(hsv_out[:, 1:], hsv_in[:, 1:], atol=1e-5)
    # pure red (h 0) at spread 0.5 -> h 0.25: (0.5, 1, 0); grey stays grey
    np.testing.assert_allclose(
        squeeze_hues(np.array([[1.0, 0, 0], [0.3, 0.3, 0.3]]), 0.5), [[0.5, 1, 0], [0.3, 0.3, 0.3]]
    )
    with pytest.raises(ValueError, match="spread"):
        squeeze_hues(rgb, 0.0)


def test_hue_spread_confines_the_colours_of_objects_and_backgrounds() -> None:
    cfg = parse_section(BenchmarkConfig, {"hue_spread": 0.1})
    d = bm.render_single(cfg, 16, 0)
    hsv = mpl_rgb_to_hsv(d["images"].reshape(-1, 3) / 255.0)
    coloured = hsv[(hsv[:, 1] > 0.25) & (hsv[:, 2] > 0.2), 0]  # hue is ill-defined near grey and black
    assert coloured.size > 1000
    assert coloured.min() > 0.5 - 0.05 - 0.02 and coloured.max() < 0.5 + 0.05 + 0.02  # u8 rounding
    free = mpl_rgb_to_hsv(bm.render_single(BenchmarkConfig(), 16, 0)["images"].reshape(-1, 3) / 255.0)
    assert np.ptp(free[(free[:, 1] > 0.25) & (free[:, 2] > 0.2), 0]) > 0.8  # the default: any hue
    with pytest.raises(ConfigError, match="hue_spread"):
        parse_section(BenchmarkConfig, {"hue_spread": 0.0}, "data.benchmark")


def test_instance_spread_narrows_every_per_instance_parameter_about_its_middle() -> None:
    from oacl.data.textures import instance_spread, instance_uniform

    rng = np.random.default_rng(0)
    full = instance_uniform(rng, 4000, 2.0, 4.0)
    assert full.shape == (4000, 1, 1) and full.min() < 2.05 and full.max() > 3.95
    with instance_spread(0.5):
        half = instance_uniform(rng, 4000, 2.0, 4.0)
        with instance_spread(0.0):
            assert (instance_uniform(rng, 10, 2.0, 4.0) == 3.0).all()
    assert half.min() >= 2.5 and half.max() <= 3.5 and half.min() < 2.55 and half.max() > 3.45
    assert instance_uniform(rng, 4000, 2.0, 4.0).max() > 3.95  # the block restores the full range
    with pytest.raises(ValueError, match="spread"), instance_spread(1.5):
        pytest.fail("a spread outside [0, 1] must be refused on entering the block")


def test_nuisance_zero_gives_every_instance_of_a_class_the_same_shape_and_texture_layout() -> None:
    from oacl.data.textures import instance_spread, luminance

    def patterns(spread: float) -> tuple[np.ndarray, np.ndarray]:
        centres, radii, angles = np.full((2, 2), 16.0), np.full(2, 12.0), np.zeros(2)
        with instance_spread(spread):
            masks, rgb = render_objects(
                np.random.default_rng(1), np.array([0, 0]), centres, radii, angles, 32, outline=False
            )
        lum = luminance(rgb)
        bright = np.stack(
            [(lum[i] > 0.5 * (lum[i][masks[i]].max() + lum[i][masks[i]].min())) & masks[i] for i in range(2)]
        )
        return masks, bright  # same place, size and angle: only the per-instance parameters can differ

    masks, bright = patterns(0.0)
    assert (masks[0] == masks[1]).all() and (bright[0] == bright[1]).all() and 0.2 < bright[0][masks[0]].mean() < 0.8
    masks, bright = patterns(1.0)  # the default: aspect, stripe period, orientation and phase are each drawn
    assert (masks[0] != masks[1]).any() and (bright[0] != bright[1]).any()
    with pytest.raises(ConfigError, match="nuisance"):
        parse_section(BenchmarkConfig, {"nuisance": -0.1}, "data.benchmark")
