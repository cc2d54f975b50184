"""The workload's user errors: bad data, a model source that is no model.

Every such error is a `kubetune.contract.errors.UserError`, which the entrypoints turn into one
`error:` line and exit code 2 (`entrypoints.exits`). This module imports nothing of the
workload, so any module may raise these without an import cycle.
"""

from __future__ import annotations

from kubetune.contract.errors import UserError


class DataError(UserError):
    """Bad input data; the message names the spec field and the file. Exit code 2."""


class ModelSourceError(UserError):
    """model.source does not point at a usable model; the message names the field."""
