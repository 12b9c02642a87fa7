"""The localization metrics under the public name DESIGN.md gives them (``oacl.eval.localization``).

They live in :mod:`oacl.localization`, below both ``cam/`` (whose stage scores its masks with them)
and ``eval/``, so that neither package imports the other.
"""

from oacl.localization import *  # noqa: F401,F403  (re-export: the public API)
from oacl.localization import __all__  # noqa: F401
