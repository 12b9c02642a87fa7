"""``python -m oacl.cam``: ContraCAM on a folder of images (see :mod:`oacl.cam.folder`).

Writes the HDF5 CAM store (schema ``oacl.cam/1``) and, with ``--sheet``, a contact sheet. A user
error (missing or unreadable checkpoint, a checkpoint without a projection head or of an
architecture this code does not build, a corrupt image) exits with status 2 and one line on
stderr, and writes nothing.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; the ContraCAM defaults are :class:`oacl.config.ContraCAMConfig`'s (the paper's box setting)."""
    from oacl.cam.folder import DEFAULT_SIDE
    from oacl.config import ContraCAMConfig

    d = ContraCAMConfig()
    p = argparse.ArgumentParser(
        prog="python -m oacl.cam",
        description="ContraCAM on a folder of images: an HDF5 CAM store (schema oacl.cam/1) and a contact sheet.",
        allow_abbrev=False,
    )
    p.add_argument("--checkpoint", required=True, help="backbone.pt of this project, or a published checkpoint")
    p.add_argument("--images", required=True, help="folder of JPEG / PNG images (not searched recursively)")
    p.add_argument("--out", required=True, help="the HDF5 CAM store to write")
    p.add_argument("--sheet", default=None, help="also write a contact sheet (PNG) of the first 16 images")
    p.add_argument("--iters", type=_positive, default=None, help=f"T, ContraCAM iterations (default {d.iters})")
    p.add_argument("--expand-res", type=int, choices=(1, 2, 4), default=None, help=f"default {d.expand_res}")
    p.add_argument("--crf", action=argparse.BooleanOptionalAction, default=None, help=f"dense CRF (default {d.crf})")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help=f"bf16 path (default {d.amp})")
    p.add_argument(
        "--image-size", type=_positive, default=None, help=f"side S (default: the checkpoint's, else {DEFAULT_SIDE})"
    )
    p.add_argument("--batch-size", type=int, default=None, help=f"images per negative batch (default {d.batch_size})")
    p.add_argument("--workers", type=int, default=None, help=f"CRF processes, 0 = every core (default {d.workers})")
    p.add_argument("--seed", type=int, default=None, help=f"order of the images, hence the batches (default {d.seed})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from oacl.cam.folder import cam_folder
    from oacl.cli import user_message
    from oacl.errors import OACLError

    names = ("iters", "expand_res", "crf", "amp", "batch_size", "workers", "seed")
    settings = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    try:
        cam_folder(
            args.checkpoint,
            args.images,
            args.out,
            sheet=args.sheet,
            image_size=args.image_size,
            device=args.device,
            **settings,
        )
        return
    except OACLError as err:  # includes a setting out of the contracam params' bounds (ConfigError)
        message = f"error: {user_message(err)}"
    gc.collect()  # as oacl.cli.run_stage: the message stands alone, last
    print(message, file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":  # CRF worker processes import this module again: keep the entry point guarded
    main()
