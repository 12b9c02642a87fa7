"""A stage's numbers in two files: the headline for people, the rest for files.

``artifacts/metrics/<stem>.json`` is what ``dvc.yaml`` declares as ``metrics:``: the few numbers
``dvc metrics diff`` and ``dvc exp show`` print (top-1, BG-Gap, mIoU, AP50, ...; the keys
DESIGN.md's checks read). Everything else the stage measured lands beside it in
``artifacts/eval/<stem>/details.json`` (``eval/<stage>/ablation.json`` for
``<stage>-ablation``), a DVC output that ``dvc diff`` still compares. The two files partition
the record: no key is in both, and :func:`read_results` merges them back.

:data:`HEADLINE` names the headline keys per stage family; a pattern is a dotted path into the
record (``crops.top1``: key ``top1`` of ``crops``; ``*`` matches any key at its level; keys with
slashes such as ``bg/mixed_rand/top1`` are flat keys). A pattern that matches nothing is skipped,
so optional numbers (kNN monitor, trial std) join the headline when the run has them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from oacl.config import overlay as merge  # the deep merge params overlays use
from oacl.errors import DataError
from oacl.io.atomic import write_json

__all__ = ["HEADLINE", "details_path", "family", "merge", "read_results", "split_headline", "write_results"]

HEADLINE: dict[str, tuple[str, ...]] = {
    "generate": ("images", "seconds"),
    "pretrain": ("final_loss", "knn/crops", "knn/single"),
    "retrain": ("final_loss", "knn/crops", "knn/single", "mix_rate", "box_rate"),
    "contracam": ("mask_miou_pct", "mask_miou_soft_pct", "pxap_pct", "max_box_acc_v2_pct"),
    "contracam-ablation": (
        "iters.*.refined_miou_pct",
        "iters_stop.*.refined_miou_pct",
        "without_nsr.refined_miou_pct",
    ),
    "lineval": ("crops.top1", "crops.test_images", "original.top1", "original.test_images"),
    "shift": ("bg_gap", "bg_gap_std", "bg/mixed_rand/top1", "bg/mixed_rand/top1_std"),
    "detect": ("bbox/ap50", "segm/ap50"),
}


def family(stem: str) -> str:
    """The :data:`HEADLINE` key of a metrics file stem: ``lineval-moco`` → ``lineval``, ``contracam-multi-ablation`` → ``contracam-ablation``."""
    base = stem.split("-", 1)[0]
    return f"{base}-ablation" if stem.endswith("-ablation") else base


def details_path(metrics_path: str | Path) -> Path:
    """Where the details of ``<root>/metrics/<stem>.json`` go: ``<root>/eval/<stem>/details.json``.

    ``<stem>-ablation`` shares its stage's folder: ``<root>/eval/<stem>/ablation.json``.
    """
    p = Path(metrics_path)
    root, stem = p.parent.parent, p.stem
    if stem.endswith("-ablation"):
        return root / "eval" / stem[: -len("-ablation")] / "ablation.json"
    return root / "eval" / stem / "details.json"


def _move(src: Mapping[str, Any], rest: dict[str, Any], head: dict[str, Any], parts: Sequence[str]) -> None:
    """Move the keys of ``rest`` that ``parts`` match (looked up in ``src``) into ``head``."""
    key, more = parts[0], parts[1:]
    for k in [k for k in src if key in ("*", k)]:
        if k not in rest:
            continue
        if not more:
            head[k] = rest.pop(k)
        elif isinstance(src[k], Mapping) and isinstance(rest[k], dict):
            sub = head.setdefault(k, {})
            _move(src[k], rest[k], sub, more)
            if not sub:
                head.pop(k)
            if not rest[k]:
                rest.pop(k)


def split_headline(record: Mapping[str, Any], patterns: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(headline, details): the keys ``patterns`` match, and everything else (see the module docstring).

    The two partition ``record``: ``merge(headline, details) == record``. ``record`` must be JSON-able.
    """
    # a JSON round trip, not deepcopy: it also unshares blocks the record holds twice (the
    # ablation's ``base`` is its ``iters[T]``), which deepcopy would keep aliased
    rest = json.loads(json.dumps(record))
    head: dict[str, Any] = {}
    for pattern in patterns:
        if not pattern:
            raise ValueError(f"empty headline pattern in {list(patterns)!r}")
        _move(record, rest, head, pattern.split("."))
    return head, rest


def write_results(
    metrics_path: str | Path, record: Mapping[str, Any], stage: str | None = None, *, details: str | Path | None = None
) -> dict[str, Any]:
    """Write the headline of ``record`` to ``metrics_path`` and the rest to its :func:`details_path`.

    ``stage``: the :data:`HEADLINE` family (default: from the file name). The details file is
    written first, so a metrics file never points at details from another run. Returns the headline.
    """
    metrics_path = Path(metrics_path)
    name = stage or family(metrics_path.stem)
    if name not in HEADLINE:
        raise ValueError(f"no headline keys for stage family {name!r}; known: {', '.join(HEADLINE)}")
    head, rest = split_headline(record, HEADLINE[name])
    write_json(Path(details) if details is not None else details_path(metrics_path), rest)
    write_json(metrics_path, head)
    return head


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"results file {path} is not readable JSON: {err}") from err


def read_results(metrics_path: str | Path) -> dict[str, Any]:
    """The whole record of a stage: its metrics file merged with its details file (when there is one)."""
    metrics_path = Path(metrics_path)
    out = _read(metrics_path)
    extra = details_path(metrics_path)
    if extra.is_file():
        out = merge(_read(extra), out)
    return out
