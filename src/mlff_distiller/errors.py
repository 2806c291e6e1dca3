"""User-facing errors.

A :class:`UserError` carries a one-line message that names the problem and the fix.
The CLI prints it as ``mlff-distill: error: <message>`` and exits with status 2,
without a stack trace. Raise it for anything the user can correct (bad input files,
bad configuration, missing weights); let genuine bugs raise ordinary exceptions.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; ``str(err)`` is a single line."""

    def __init__(self, message: str):
        message = " ".join(str(message).split())  # force one line
        super().__init__(message)


class DatasetError(UserError):
    """A dataset file is missing, corrupt, of another version, or given bad data."""


class ConfigError(UserError):
    """A recipe or configuration has a bad field; the message names it and what is allowed."""


class TeacherError(UserError):
    """A teacher cannot be built or cannot handle the given structures."""
