"""Contact sheets: a grid of a set's first images with their ground truth drawn on top.

Mask outlines are yellow, boxes are drawn in a per-class colour, and the image's class name is
written in its corner. One PNG per set file (corruption sets: one PNG per corruption, one row per
severity, the same images in every row), small enough to commit and show in ``dvc plots``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageDraw

from oacl.io.atomic import save_png

__all__ = ["contact_sheet", "read_head", "write_contact_sheets"]

_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
]
_MASK_COLOUR = (255, 225, 0)


def read_head(path: str | Path, n: int) -> dict[str, object]:
    """The first ``n`` items of a set file: images, masks, labels, per-image boxes / box labels, classes, name."""
    with h5py.File(path, "r") as f:
        k = min(n, f["images"].shape[0])
        index = f["box_index"][: k + 1]
        boxes, blabels = f["boxes"][()], f["box_labels"][()]
        return {
            "images": f["images"][:k],
            "masks": f["masks"][:k],
            "labels": f["labels"][:k],
            "boxes": [boxes[index[i] : index[i + 1]] for i in range(k)],
            "box_labels": [blabels[index[i] : index[i + 1]] for i in range(k)],
            "classes": json.loads(f.attrs["classes"]),
            "name": str(f.attrs["name"]),
        }


def contact_sheet(
    images: np.ndarray,
    *,
    masks: np.ndarray | None = None,
    boxes: Sequence[np.ndarray] | None = None,
    box_labels: Sequence[np.ndarray] | None = None,
    labels: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    cols: int = 8,
    scale: int = 2,
    title: str = "",
    row_titles: Sequence[str] | None = None,
) -> Image.Image:
    """Grid of ``images`` (n, s, s, 3) uint8, upscaled ``scale`` x, with GT drawn.

    masks: (n, s, s) {0, 1} drawn as outlines; boxes: per image (k, 4) pixel x0, y0, x1, y1
    (exclusive); box_labels: per image (k,) class indices (box colour); labels: (n,) class of
    each image, written with ``classes`` names.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (n, s, s, 3), got {images.shape}")
    if cols < 1 or scale < 1:
        raise ValueError(f"cols and scale must be >= 1, got {cols}, {scale}")
    n, s = images.shape[:2]
    cell, pad, head = s * scale, 2, 14 if title else 0
    left = 70 if row_titles else 0
    rows = max(1, -(-n // cols))
    sheet = Image.new("RGB", (left + cols * (cell + pad) + pad, head + rows * (cell + pad) + pad), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad + 2, 1), title, fill=(255, 255, 255))
    for r, text in enumerate(row_titles or []):
        draw.text((4, head + r * (cell + pad) + cell // 2 - 5), text, fill=(255, 255, 255))
    for i in range(n):
        up = np.repeat(np.repeat(images[i], scale, 0), scale, 1)
        if masks is not None:
            m = np.repeat(np.repeat(np.asarray(masks[i]).astype(bool), scale, 0), scale, 1)
            p = np.pad(m, 1)
            edge = m & ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])
            up = up.copy()
            up[edge] = _MASK_COLOUR
        x, y = left + pad + (i % cols) * (cell + pad), head + pad + (i // cols) * (cell + pad)
        sheet.paste(Image.fromarray(up), (x, y))
        if boxes is not None:
            for j, (x0, y0, x1, y1) in enumerate(np.asarray(boxes[i]).reshape(-1, 4)):
                c = int(box_labels[i][j]) if box_labels is not None else 0
                draw.rectangle(
                    [x + x0 * scale, y + y0 * scale, x + x1 * scale - 1, y + y1 * scale - 1],
                    outline=_PALETTE[c % len(_PALETTE)],
                )
        if labels is not None and classes is not None and 0 <= int(labels[i]) < len(classes):
            name = str(classes[int(labels[i])])
            draw.rectangle([x, y, x + 6 * len(name) + 2, y + 10], fill=(0, 0, 0))
            draw.text((x + 1, y - 1), name, fill=(255, 255, 255))
    return sheet


def write_contact_sheets(data_dir: str | Path, plots_dir: str | Path, *, n: int = 16, cols: int = 8) -> list[Path]:
    """Write ``<plots_dir>/<set>.png`` for every set file under ``data_dir``; return the paths.

    Set names: ``multi-train``, ``crops-test``, ``single-only_bg_t``, ``shift-sketch``, ... and
    ``shift-<corruption>`` (rows = severities) for the corruption sets.
    """
    data_dir, plots_dir = Path(data_dir), Path(plots_dir)
    written: list[Path] = []
    corr_re = re.compile(r"^(?P<name>.+)-(?P<sev>[1-5])$")
    corruptions: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(data_dir.glob("*/*.h5")):
        group, stem = path.parent.name, path.stem
        match = corr_re.match(stem) if group == "shift" else None
        if match:
            corruptions.setdefault(match["name"], []).append((int(match["sev"]), path))
            continue
        if group == "multi" and stem.startswith("crops_"):
            name = f"crops-{stem[len('crops_') :]}"
        else:
            name = f"{group}-{stem}"
        h = read_head(path, n)
        img = contact_sheet(
            h["images"],
            masks=h["masks"],
            boxes=h["boxes"],
            box_labels=h["box_labels"],
            labels=h["labels"],
            classes=h["classes"],
            cols=cols,
            title=name,
        )
        out = plots_dir / f"{name}.png"
        save_png(img, out)
        written.append(out)
    for cname, files in sorted(corruptions.items()):
        heads = [read_head(p, cols) for _, p in sorted(files)]
        img = contact_sheet(
            np.concatenate([h["images"] for h in heads]),
            labels=np.concatenate([h["labels"] for h in heads]),
            classes=heads[0]["classes"],
            cols=cols,
            title=f"shift-{cname}",
            row_titles=[f"severity {sev}" for sev, _ in sorted(files)],
        )
        out = plots_dir / f"shift-{cname}.png"
        save_png(img, out)
        written.append(out)
    return written
