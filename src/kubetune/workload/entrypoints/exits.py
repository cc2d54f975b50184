"""How every entrypoint ends: a user error as one line and exit code 2, an unreachable store as
one line and a retriable exit, anything else as the bug it is.

Kubernetes' podFailurePolicy fails a Job at once on exit code 2 (retrying a bad config only
burns GPU hours), so every user error (spec, data, model folder, unreachable store) must end
here, before any expensive work, and never as a traceback. The errors themselves live where
any module can raise them without an import cycle (`contract.errors`, `workload.errors`); this
wrapper reads the pod's environment (`arguments.pod_env`), so it sits with the entrypoints.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

from kubetune.contract.errors import UserError
from kubetune.contract.exitcodes import EXIT_BAD_INPUT, EXIT_NO_SPACE, EXIT_STORE_UNAVAILABLE
from kubetune.contract.recovery import die_with_parent
from kubetune.storage import StoreFullError, StoreUnavailableError, is_space_error, is_transient
from kubetune.workload.entrypoints.arguments import pod_env
from kubetune.workload.stages.run import PodEnv


def entrypoint(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap an entrypoint's main: a `UserError` (SpecError, StorageError, DataError,
    ModelSourceError, ...) becomes `error: <one line>` and exit code 2; a full store or disk
    (`StoreFullError`, `storage.is_space_error`) one line and EXIT_NO_SPACE; a store that stayed
    unreachable (`StoreUnavailableError`, or any transient store fault per
    `storage.is_transient`) becomes one line and EXIT_STORE_UNAVAILABLE, which the Job retries;
    anything else is a bug and keeps its traceback. Under `kubetune run --local`
    (names.ENV_DIE_WITH_PARENT) the process dies with its parent: torchrun's workers are the
    launcher's grandchildren, which its own parent-death signal cannot reach."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        env = pod_env()
        if env.die_with_parent is not None:
            die_with_parent(expected_parent=env.die_with_parent)
        try:
            return main(*args, **kwargs) or 0
        except StoreFullError as exc:  # said how much room the write needed
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return EXIT_NO_SPACE
        except StoreUnavailableError as exc:  # outlasted storage.startup_timeout_seconds
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return EXIT_STORE_UNAVAILABLE
        except UserError as exc:
            print(f"error: {user_line(str(exc), env)}", file=sys.stderr, flush=True)
            return EXIT_BAD_INPUT
        except Exception as exc:
            if is_space_error(exc):  # a full local disk (the Trainer's own save) or store: not retried
                print(f"error: no space left: {_first_line(exc)}", file=sys.stderr, flush=True)
                return EXIT_NO_SPACE
            if not is_transient(exc):
                raise
            # A store fault that outlasted botocore's retries after the start: the Job retries
            # the pod, which resumes from LATEST; one line, no traceback.
            print(f"error: object store unavailable: {_first_line(exc)}", file=sys.stderr, flush=True)
            return EXIT_STORE_UNAVAILABLE

    return wrapper


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def user_line(message: str, env: PodEnv) -> str:
    """A user error's line as the launcher would print it: starting with the user's spec file
    (`env.spec_file`: names.ENV_SPEC_FILE, as given on the command line) instead of the pod's
    mounted copy (`env.spec_mount`: names.ENV_SPEC), so `error: jobs/x.yaml: data.train: ...`
    reads the same from either side."""
    shown = env.spec_file
    if not shown:
        return message
    mounted = env.spec_mount
    if mounted and message.startswith(f"{mounted}: "):
        message = message[len(mounted) + 2:]
    return message if message.startswith(f"{shown}: ") else f"{shown}: {message}"
