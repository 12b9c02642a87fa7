"""What every stage script shares: logging set-up, params loading, one clear error on bad input."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Callable

from oacl.config import Params, load_params
from oacl.errors import OACLError
from oacl.vocab import variant_names

log = logging.getLogger("oacl")


def user_message(err: OACLError) -> str:
    """The one-line message of ``err``.

    An error raised in a DataLoader worker comes back re-raised by the DataLoader with the
    worker's whole traceback as its message; the original message is its last entry.
    """
    text = str(err).strip()
    if "Original Traceback" in text:
        name = f"{type(err).__module__}.{type(err).__qualname__}: "
        cut = text.rfind(name)
        if cut >= 0:
            text = text[cut + len(name) :].strip()
    return text


def run_stage(main: Callable[[Params], None], params_path: str = "params.yaml") -> None:
    """Validate the whole params file, then run ``main``; user errors exit 2 with one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params(params_path)
        main(params)
        return
    except OACLError as err:
        message = f"error: {user_message(err)}"
    # Printed once the failed run's frames are released (their progress bars close on the way;
    # a DataLoader's worker error leaves them in reference cycles), so that the message stands
    # on its own line, last.
    gc.collect()
    print(message, file=sys.stderr)
    sys.exit(2)


def model_stage_args(doc: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of an evaluation stage run once per model (``lineval``, ``shift``, ``detect``).

    ``--model VARIANT`` (see :func:`oacl.vocab.variant_names`), ``--params``,
    ``--models-dir`` (where ``pretrain-*`` / ``retrain-*`` backbones are) and ``--out-dir``.
    ``doc``: the stage's module docstring; its first line is the description.
    """
    names = variant_names()
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--model", required=True, choices=names, metavar="VARIANT", help=", ".join(names))
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--models-dir", default="artifacts/models")
    p.add_argument("--out-dir", default="artifacts")
    return p.parse_args(argv)
