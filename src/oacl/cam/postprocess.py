"""From soft ContraCAM masks to refined binary masks and boxes (paper Sec. 3 and App. B.2).

Per image: dense CRF (pydensecrf, 2 labels, the library's default pairwise
terms) -> binarise -> drop tiny connected components -> one box per remaining
outer contour (OpenCV), widened by a 20 % margin, clipped to the image, boxes
under 1 % of the image dropped. :func:`refine_batch` runs that over a data set
on a pool of single-threaded processes (started by a fork server, see
:func:`_pool_context`); the results do not depend on the number of processes.

Decisions (the authors' code differs in ways that look accidental):

* The CRF's foreground probability is binarised at 0.5 (the 2-label argmax)
  before cleaning; the authors' cleaning step saw any non-zero probability as
  foreground.
* Boxes come from the *outer* contours (``RETR_EXTERNAL``): a hole inside an
  object is not another object. The 1 % area rule applies to the contour's
  bounding rectangle before the margin, as in the authors' code.
* Boxes are sorted by area, largest first (ties by position).

This module imports no torch: worker processes stay light.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing as mp
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from oacl.cores import usable_cores

__all__ = [
    "PostprocessOptions",
    "boxes_to_pixels",
    "clean_mask",
    "close_worker_pools",
    "count_boxes",
    "dense_crf",
    "mask_to_boxes",
    "refine_batch",
    "refine_one",
    "resolve_workers",
]

UNARY_EPS = 1e-20
_START_TIMEOUT_S = 120


@dataclass(frozen=True)
class PostprocessOptions:
    """Settings of the post-processing (defaults: the paper's).

    crf: run the dense CRF (else binarise the soft mask at ``threshold``).
    crf_iters: mean-field iterations. gauss_*/bi_*: pydensecrf pairwise terms.
    threshold: binarisation of the soft mask (no CRF) or of the CRF's
    foreground probability. min_component: connected components (4-connected)
    with area <= this fraction of the image are dropped. box_margin: added on
    each side, as a fraction of the box's width (left/right) or height
    (top/bottom). min_box_area: contour rectangles under this fraction of the
    image area are dropped.
    """

    crf: bool = True
    crf_iters: int = 5
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bi_sxy: float = 80.0
    bi_srgb: float = 13.0
    bi_compat: float = 10.0
    threshold: float = 0.5
    min_component: float = 0.001
    box_margin: float = 0.2
    min_box_area: float = 0.01

    @classmethod
    def from_config(cls, cfg: Any) -> PostprocessOptions:
        """The post-processing settings of a ``contracam`` params block (any object with its fields)."""
        return cls(
            crf=cfg.crf,
            crf_iters=cfg.crf_iters,
            gauss_sxy=cfg.crf_gauss_sxy,
            gauss_compat=cfg.crf_gauss_compat,
            bi_sxy=cfg.crf_bi_sxy,
            bi_srgb=cfg.crf_bi_srgb,
            bi_compat=cfg.crf_bi_compat,
            threshold=cfg.threshold,
            min_component=cfg.min_component,
            box_margin=cfg.box_margin,
            min_box_area=cfg.min_box_area,
        )

    def __post_init__(self) -> None:
        if self.crf_iters < 1:
            raise ValueError(f"crf_iters must be >= 1, got {self.crf_iters!r}")
        for name in ("threshold", "min_component", "min_box_area"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
        if not 0.0 <= self.box_margin <= 1.0:
            raise ValueError(f"box_margin must be in [0, 1], got {self.box_margin!r}")


def _as_prob(soft: np.ndarray) -> np.ndarray:
    """A soft mask as float32 in [0, 1]: uint8 masks are read as value / 255."""
    if soft.dtype == np.uint8:
        return soft.astype(np.float32) / 255.0
    prob = soft.astype(np.float32)
    if prob.size and (not np.isfinite(prob).all() or prob.min() < 0.0 or prob.max() > 1.0):
        raise ValueError(f"soft mask must lie in [0, 1], got range [{prob.min()}, {prob.max()}]")
    return prob


def dense_crf(image: np.ndarray, soft: np.ndarray, opts: PostprocessOptions = PostprocessOptions()) -> np.ndarray:
    """Dense CRF with two labels (foreground, background); unary -log(p + 1e-20).

    image: (H, W, 3) uint8 RGB; soft: (H, W) foreground probability in [0, 1]
    (float) or x 255 (uint8). Returns the CRF's foreground probability,
    (H, W) float32.
    """
    import pydensecrf.densecrf as dcrf

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if soft.shape != (h, w):
        raise ValueError(f"soft mask shape {soft.shape} does not match the image {(h, w)}")
    p = _as_prob(soft).reshape(1, -1)
    probs = np.concatenate([p, 1.0 - p], axis=0)  # (2, H*W): label 0 = foreground
    unary = np.ascontiguousarray(-np.log(probs + UNARY_EPS), dtype=np.float32)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=opts.gauss_sxy, compat=opts.gauss_compat)
    crf.addPairwiseBilateral(
        sxy=opts.bi_sxy, srgb=opts.bi_srgb, rgbim=np.ascontiguousarray(image), compat=opts.bi_compat
    )
    q = np.asarray(crf.inference(opts.crf_iters), dtype=np.float32).reshape(2, h, w)
    return q[0]


def clean_mask(mask: np.ndarray, min_component: float = 0.001) -> np.ndarray:
    """Keep the 4-connected foreground components larger than ``min_component`` x image area.

    mask: (H, W) bool / {0, 1}. Returns (H, W) uint8 in {0, 1}.
    """
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    h, w = binary.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=4)
    keep = np.zeros(n, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] > min_component * h * w
    return keep[labels].astype(np.uint8)


def mask_to_boxes(mask: np.ndarray, margin: float = 0.2, min_box_area: float = 0.01) -> np.ndarray:
    """Boxes of the outer contours of a binary mask, normalized x1, y1, x2, y2 in [0, 1].

    Each contour's bounding rectangle (pixel x, y, w, h; right/bottom edge
    exclusive) is dropped if ``w * h < min_box_area * H * W``, else widened by
    ``margin * w`` left and right and ``margin * h`` top and bottom, clipped
    to the image and divided by W (x) or H (y). mask: (H, W). Returns (k, 4)
    float32, largest first; (0, 4) when nothing is found.
    """
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    h, w = binary.shape
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rects = []
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        if bw * bh < min_box_area * h * w:
            continue
        x1 = max(0.0, x - bw * margin)
        y1 = max(0.0, y - bh * margin)
        x2 = min(float(w), x + bw + bw * margin)
        y2 = min(float(h), y + bh + bh * margin)
        rects.append((bw * bh, x, y, x1 / w, y1 / h, x2 / w, y2 / h))
    rects.sort(key=lambda r: (-r[0], r[2], r[1]))
    if not rects:
        return np.zeros((0, 4), np.float32)
    return np.asarray([r[3:] for r in rects], dtype=np.float32)


def refine_one(
    image: np.ndarray, soft: np.ndarray, opts: PostprocessOptions = PostprocessOptions()
) -> tuple[np.ndarray, np.ndarray]:
    """Refined mask and boxes of one image.

    image: (H, W, 3) uint8; soft: (H, W) uint8 (x 255) or float in [0, 1].
    Returns ((H, W) uint8 in {0, 1}, (k, 4) float32 normalized boxes).
    """
    prob = dense_crf(image, soft, opts) if opts.crf else _as_prob(soft)
    refined = clean_mask(prob > opts.threshold, opts.min_component)
    return refined, mask_to_boxes(refined, opts.box_margin, opts.min_box_area)


def _refine_chunk(args: tuple[np.ndarray, np.ndarray, PostprocessOptions]) -> tuple[np.ndarray, list[np.ndarray]]:
    images, soft, opts = args
    out = np.zeros(soft.shape, np.uint8)
    boxes = []
    for i in range(len(soft)):
        out[i], b = refine_one(images[i], soft[i], opts)
        boxes.append(b)
    return out, boxes


def _init_worker() -> None:
    """One thread per worker process: the pool provides the parallelism."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    cv2.setNumThreads(1)


def _pool_context() -> mp.context.BaseContext:
    """Worker processes that never inherit a used OpenCV / OpenMP thread pool.

    A plain ``fork`` of this (multi-threaded: torch, OpenCV, OpenBLAS) process
    deadlocks now and then: measured here, 2 of 6 runs of the two-process test
    hung forever with ``fork``, 0 of 6 with ``forkserver``. ``forkserver`` forks
    the workers from a clean server process that has imported this module
    (and so torch, through ``oacl.cam``). ``spawn`` is the fallback where there
    is no fork server. Each worker imports the caller's main script again (the
    server cannot preload it: CPython 3.11 drops ``main_path`` on the way), so
    that script must guard its entry point with ``if __name__ == "__main__":``,
    and a pool takes a few seconds to start — hence :func:`_worker_pool` keeps
    one per process.
    """
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])  # no effect once this process's server runs
        return ctx
    return mp.get_context("spawn")


_POOLS: dict[tuple[int, int], Any] = {}


def _worker_pool(processes: int) -> Any:
    """This process's pool of ``processes`` single-threaded workers, started on first use."""
    key = (os.getpid(), processes)
    pool = _POOLS.get(key)
    if pool is None:
        pool = _pool_context().Pool(processes, initializer=_init_worker)
        try:  # a worker that cannot start makes Pool.map wait forever: fail clearly instead
            pool.apply_async(os.getpid).get(timeout=_START_TIMEOUT_S)
        except mp.TimeoutError:
            pool.terminate()
            raise RuntimeError(
                f"CRF worker processes did not start within {_START_TIMEOUT_S} s; a script that runs "
                "refine_batch with processes > 1 must guard its entry point with "
                "`if __name__ == '__main__':`"
            ) from None
        _POOLS[key] = pool
    return pool


def close_worker_pools() -> None:
    """Stop the worker pools this process started (also run at interpreter exit)."""
    for key in list(_POOLS):
        pool = _POOLS.pop(key)
        if key[0] == os.getpid():
            pool.terminate()
            pool.join()


atexit.register(close_worker_pools)


def resolve_workers(workers: int) -> int:
    """``workers`` processes, or all cores this process may use when 0."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers!r}")
    return workers or usable_cores()


def refine_batch(
    images: np.ndarray,
    soft: np.ndarray,
    opts: PostprocessOptions = PostprocessOptions(),
    *,
    processes: int = 1,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`refine_one` over a batch, on ``processes`` worker processes (0: all cores).

    images: (N, H, W, 3) uint8; soft: (N, H, W) uint8 (x 255) or float in [0, 1].
    Returns ((N, H, W) uint8 refined masks in {0, 1}, N arrays (k_i, 4) of
    normalized boxes). With one process the work runs in this process; with
    more, on a pool kept for the life of this process (the first call pays its
    start-up, a few seconds; :func:`close_worker_pools` stops it). The output
    is identical for any number of processes.
    """
    images = np.asarray(images)
    soft = np.asarray(soft)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    if soft.shape != images.shape[:3]:
        raise ValueError(f"soft masks {soft.shape} do not match the images {images.shape[:3]}")
    n = len(images)
    processes = min(resolve_workers(processes), max(n, 1))
    if processes == 1 or n <= 1:
        return _refine_chunk((images, soft, opts))
    if chunk_size is None:
        chunk_size = max(1, math.ceil(n / (processes * 4)))
    chunks = [(images[i : i + chunk_size], soft[i : i + chunk_size], opts) for i in range(0, n, chunk_size)]
    parts = _worker_pool(processes).map(_refine_chunk, chunks, chunksize=1)
    refined = np.concatenate([p[0] for p in parts], axis=0)
    boxes = [b for p in parts for b in p[1]]
    return refined, boxes


def boxes_to_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalized x1, y1, x2, y2 boxes (k, 4) to pixel coordinates (k, 4) float32."""
    scale = np.asarray([width, height, width, height], np.float32)
    return np.asarray(boxes, np.float32).reshape(-1, 4) * scale


def count_boxes(boxes: Sequence[np.ndarray]) -> np.ndarray:
    """Number of boxes per image, (N,) int64 (for the paper's Fig. 12 histogram)."""
    return np.asarray([len(b) for b in boxes], dtype=np.int64)
