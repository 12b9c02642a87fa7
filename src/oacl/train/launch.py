"""How a training stage starts: as one process, or relaunched under torchrun with ``pretrain.nproc`` processes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from oacl import dist
from oacl.cli import run_stage
from oacl.config import Params, load_params
from oacl.errors import OACLError

__all__ = ["run_training_stage"]


def run_training_stage(
    main: Callable[[Params], None], params_path: str, script: str | Path, argv: Sequence[str]
) -> None:
    """Run ``main`` through :func:`oacl.cli.run_stage`, or, when ``pretrain.nproc`` > 1 and this
    process is not a torchrun worker, run ``script argv`` under torchrun and exit with its status.

    A params file that does not load is left to :func:`~oacl.cli.run_stage` to report (one line).
    """
    if not dist.under_torchrun():
        try:
            nproc = load_params(params_path).pretrain.nproc
        except OACLError:
            nproc = 1
        if nproc > 1:
            sys.exit(dist.launch_torchrun(nproc, script, argv))
    run_stage(main, params_path)
