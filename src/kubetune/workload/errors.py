"""The entrypoints' error contract: bad input is one line on stderr and exit code 2.

Kubernetes' podFailurePolicy fails a Job at once on exit code 2 (retrying a bad config only
burns GPU hours), so every user error — spec, data, model folder, unreachable store — must end
here, before any expensive work, and never as a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

from kubetune.contract.exitcodes import EXIT_BAD_INPUT
from kubetune.contract.spec import SpecError
from kubetune.storage import StorageError
from kubetune.workload.data import DataError


class ModelSourceError(Exception):
    """model.source does not point at a usable model; the message names the field."""


USER_ERRORS = (SpecError, DataError, StorageError, ModelSourceError)


def entrypoint(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap an entrypoint's main: user errors become `error: <one line>` and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except USER_ERRORS as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return EXIT_BAD_INPUT

    return wrapper
