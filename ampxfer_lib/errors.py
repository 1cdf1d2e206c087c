"""Errors a user can act on.

Every error raised for bad input is an :class:`AmpxferError` whose message is one line that
names the file, says what is wrong and how to fix it. The command line prints that line and
exits non-zero without a traceback (``--debug`` shows one); notebooks show the same line.
"""

from __future__ import annotations


class AmpxferError(Exception):
    """A problem with the user's input, files or settings (not a bug in ampxfer)."""

    exit_code = 2


class AudioError(AmpxferError):
    """A recording that cannot be used as it is (unreadable, silent, wrong rate, ...)."""


class ModelFormatError(AmpxferError):
    """A model file of the wrong kind, with wrong shapes, or truncated."""


class ConfigError(AmpxferError):
    """Settings that contradict each other or do not fit the data or the model."""


class RunFolderError(AmpxferError):
    """A run folder that holds something else, or a checkpoint that cannot be resumed."""


class OutputError(AmpxferError):
    """An output that cannot be written: a missing or read-only folder, a full disk, a Drive
    mount that went away. What was written before is intact (every write is atomic)."""


class DownloadError(AmpxferError):
    """A download that failed (offline, bad link); callers fall back to local data."""


class TrainingDiverged(AmpxferError):
    """The loss became NaN or infinite; the best model so far is kept."""
