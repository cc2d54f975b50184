"""A store's faults, told apart: an outage that may pass (`is_transient`, retried, then a
retriable exit), a full store (`is_space_error`, never retried: exit 73) and everything else
(a permanent user error). Kept apart from `storage` (which re-exports them) because the cause
chains of s3fs, botocore, aiohttp and the socket are a subject of their own.
"""

from __future__ import annotations

import errno
import math
import random
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from kubetune.contract.errors import UserError

T = TypeVar("T")


class StorageError(UserError):
    """A store or file could not be reached or read; the message names the URI. A user error
    (exit code 2): a wrong root, endpoint or bucket does not fix itself on a retry."""


class StoreFullError(StorageError):
    """The store (or the local disk under it) has no room: ENOSPC, EDQUOT, S3 `EntityTooLarge`
    or a quota. Not an outage: retrying writes the same bytes into the same full volume, so a
    pod exits with EXIT_NO_SPACE, which the Job does not retry. The message says how much the
    failed write needed (and, on a local volume, how much is free)."""


class StoreUnavailableError(StorageError):
    """A transient fault (`is_transient`) outlasted the retries. Pod entrypoints exit with
    EXIT_STORE_UNAVAILABLE, which the Job retries (a MinIO restart must not fail a job);
    a CLI verb, which a person simply runs again, reports it like any StorageError."""


# S3 error codes that mean "try again later" (AWS, MinIO, Ceph, R2 spell them so).
TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "RequestTimeout", "ServiceUnavailable", "InternalError", "503", "500", "502", "504",
})
# S3 codes for "no room" (MinIO's full disk and bucket quota, Ceph's quota, AWS's 5 TB limit).
SPACE_CODES = frozenset({"EntityTooLarge", "QuotaExceeded", "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded",
                         "InsufficientStorage", "507"})
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# What s3fs turns those into when it drops the ClientError (see s3fs.errors), and socket faults.
TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EREMOTEIO, errno.ETIMEDOUT, errno.ECONNREFUSED,
                              errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH})


def is_transient(exc: BaseException) -> bool:
    """Whether a store fault may go away by itself: connection refused or reset, timeouts,
    HTTP 5xx and 429, throttling (SlowDown), botocore's EndpointConnectionError,
    ConnectTimeoutError and ReadTimeoutError, aiohttp's ClientConnectorError. Everything else
    (AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, NoSuchBucket, a missing file,
    an unknown error) is permanent. The whole cause chain is read, outermost first: s3fs
    wraps botocore errors, which wrap aiohttp's, which wrap the socket's."""
    import aiohttp
    from botocore import exceptions as boto

    transient_types = (ConnectionError, TimeoutError, boto.EndpointConnectionError, boto.ConnectTimeoutError,
                       boto.ReadTimeoutError, boto.ConnectionClosedError, aiohttp.ClientConnectorError,
                       aiohttp.ServerTimeoutError, aiohttp.ServerDisconnectedError)
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, boto.ClientError):
            code = str(link.response.get("Error", {}).get("Code", ""))
            status = int(link.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return code in TRANSIENT_CODES or status >= 500 or status == 429
        if isinstance(link, transient_types):
            return True
        if isinstance(link, (FileNotFoundError, PermissionError)):
            return False
        if isinstance(link, OSError) and link.errno in TRANSIENT_ERRNOS:
            return True
        link = link.__cause__ or link.__context__
    return False


def is_space_error(exc: BaseException) -> bool:
    """Whether a write failed for want of room (`SPACE_ERRNOS`, `SPACE_CODES`), anywhere in
    the cause chain. Checked before `is_transient`: a full volume is never an outage."""
    from botocore import exceptions as boto

    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, StoreFullError):
            return True
        if isinstance(link, boto.ClientError):
            code = str(link.response.get("Error", {}).get("Code", ""))
            status = int(link.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return code in SPACE_CODES or status == 507
        if isinstance(link, OSError) and link.errno in SPACE_ERRNOS:
            return True
        link = link.__cause__ or link.__context__
    return False


def human_bytes(size: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0 if size < 1024 else min(int(math.log(size, 1024)), 4)
    return f"{size / 1024 ** power:.{0 if power == 0 else 1}f} {units[power]}"


def one_line(exc: BaseException) -> str:
    """An exception as one line of a message: its first line, or its type when it has no text."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def retry_until(attempt: Callable[[], T], transient: Callable[[BaseException], bool], timeout_s: float,
                what: str, gave_up: Callable[[BaseException, float], BaseException]) -> T:
    """`attempt()`, again while it fails with a fault `transient` accepts, with capped exponential
    backoff and jitter, until `timeout_s` has passed; then the exception `gave_up(fault, waited)`
    makes. Any other fault is raised at once. Each retry says so on stderr, naming `what`.

    Why by hand: botocore's and huggingface_hub's own retries count attempts, not time, and stop
    at the first fault that does not look retryable to them; the stores and the Hub need one
    deadline (a pod's storage.startup_timeout_seconds), and a dozen lines bounded by it are
    clearer than a new dependency in the pinned storage stack."""
    start, delay, tries = time.monotonic(), 0.5, 1
    while True:
        try:
            return attempt()
        except Exception as exc:  # the transports raise many types for one cause
            if not transient(exc):
                raise
            waited = time.monotonic() - start
            if waited >= timeout_s:
                raise gave_up(exc, waited) from None
            pause = min(delay / 2 + random.uniform(0, delay / 2), timeout_s - waited)
            print(f"kubetune: {what} unreachable (attempt {tries}: {one_line(exc)}); retrying in {pause:.1f}s",
                  file=sys.stderr, flush=True)
            time.sleep(pause)
            delay, tries = min(delay * 2, 30.0), tries + 1
