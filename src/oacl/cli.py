"""What every stage script shares: logging set-up, params loading, one clear error on bad input."""

from __future__ import annotations

import logging
import sys
from typing import Callable

from oacl.config import Params, load_params
from oacl.errors import OACLError

log = logging.getLogger("oacl")


def run_stage(main: Callable[[Params], None], params_path: str = "params.yaml") -> None:
    """Validate the whole params file, then run ``main``; user errors exit 2 with one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params(params_path)
        main(params)
    except OACLError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
