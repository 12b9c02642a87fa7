"""Exceptions that stages turn into one clear message and a non-zero exit."""

from __future__ import annotations


class OACLError(Exception):
    """A problem with the user's input (params, data, checkpoints), not a bug."""


class ConfigError(OACLError, ValueError):
    """params.yaml holds an unknown key, a wrong type or a value out of range."""


class DataError(OACLError, ValueError):
    """A data set, annotation file or mask file is missing, corrupt or inconsistent."""


class CheckpointError(OACLError, ValueError):
    """A checkpoint is missing, truncated or from another model."""
