"""The one base class for a user's mistake, shared by every room.

A bad spec, bad data, an unreadable store path or a model source that is not there are all
permanent: retrying cannot help, so every entrypoint maps `UserError` (and only it) to exit
code 2 and one `error:` line, and the rendered podFailurePolicy fails the Job at once.
"""

from __future__ import annotations


class UserError(Exception):
    """A permanent, one-line error caused by the user's input (exit code 2)."""


class SpecError(UserError):
    """A job spec that cannot be read or is not valid: one line naming the file and the field or
    the cause."""
