"""Write files so that a reader (or DVC) never sees a half-written output."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files of ``path`` left by writers that were killed (their process is gone)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = stale.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On an exception the temporary file is removed and ``path`` is left as it was. A killed
    writer cannot clean up: its temporary file (``.<name>.<pid>.<random>.tmp``) is removed by
    the next write of ``path`` once that process is gone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a new empty directory beside ``path``; on success it replaces ``path`` (whole).

    A killed or failing block leaves ``path`` as it was (the half-written temporary directory
    is removed on an exception; after a kill, the next call removes leftovers). The swap is
    two renames: the old tree is moved aside, the new one moved in, then the old one deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in path.parent.glob(f".{path.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        tmp.chmod(0o755)
        yield tmp
        old = None
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON with sorted keys (stable across runs)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_png(picture: Any, path: str | Path, **savefig_kwargs: Any) -> None:
    """Write a PNG atomically: a PIL image (optimised) or a matplotlib ``Figure`` (Agg, no display).

    ``savefig_kwargs`` (e.g. ``dpi``) go to ``Figure.savefig``.
    """
    if hasattr(picture, "savefig"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: config reads this module

        if not isinstance(picture.canvas, FigureCanvasAgg):
            FigureCanvasAgg(picture)
        with atomic_path(path) as tmp:
            picture.savefig(tmp, format="png", **savefig_kwargs)
    elif hasattr(picture, "save"):
        if savefig_kwargs:
            raise ValueError(f"savefig options {sorted(savefig_kwargs)} apply to matplotlib figures only")
        with atomic_path(path) as tmp:
            picture.save(tmp, format="PNG", optimize=True)
    else:
        raise TypeError(f"expected a PIL image or a matplotlib Figure, got {type(picture).__name__}")
