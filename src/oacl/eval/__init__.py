"""Evaluation: localization metrics (``oacl.eval.localization``), linear evaluation, detection, shift."""
