"""User-facing errors.

Every problem caused by user input (a bad name, path, dataset, config key, or an SAE that does not fit the
model) raises a subclass of :class:`GhostLensError` with a one-line message naming the problem. The CLI prints
that line and exits non-zero; the traceback is shown only under ``--debug``.
"""

from __future__ import annotations


class GhostLensError(Exception):
    """A problem with user input, reported as one line."""


class ConfigError(GhostLensError):
    """Unknown key, bad value or malformed YAML in a config."""


class DatasetError(GhostLensError):
    """Missing, malformed or empty dataset, or labels unusable for the task."""


class ModelError(GhostLensError):
    """Unknown model name, or text the model's tokenizer cannot represent."""


class SAEError(GhostLensError):
    """Unknown release, missing hook, SAE/model dimension mismatch, uncovered layer."""


class RunFolderError(GhostLensError):
    """A run folder that would be overwritten, or is missing what a command needs."""


class BusyError(GhostLensError):
    """A run folder or a cache entry held by another process (its lock names the pid and host)."""
