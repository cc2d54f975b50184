"""One writer per run folder, fenced: a lease object in the store (`RunLayout.lease`).

Two `kubetune run` processes (or a pod and a forgotten laptop run) of one job on one store
would otherwise train into the same folder and both report success. The writer holds a lease
`{holder, generation, expires}` that a background thread renews every third of
`storage.lease_seconds`; a writer killed with SIGKILL stops renewing, so its lease expires and
blocks nobody for longer. A second writer waits up to one lease period (so a retried pod can
take over from a dead one) and, when the lease is still being renewed, stops with one line
naming the run and the holder.

Fencing (issue 23): a writer that could not renew before its lease ran out has lost it for
good (`LeaseLostError`, a retriable exit): it stops writing, and every commit (a checkpoint's
marker and LATEST, the model's marker) first renews the lease with a conditional write
(`confirm`), so a stale writer's late commit is refused and logged, never applied. Every write
of the lease is conditional on the version this writer last wrote or read: S3's If-Match /
If-None-Match (atomic in the store), in a local folder a compare-and-rename under a flock of
the folder. The residual window, stated honestly: a commit is written right after a confirm
that holds the lease for a whole lease period; only a commit request delayed in flight for
longer than that (it is bounded by the store's read timeout, `storage.store_timeouts`, at most
60 s: keep `lease_seconds` above it) could land after another writer took over. Timestamps in
the lease are wall-clock seconds, so the writers' clocks must agree to well within a lease
period (NTP does that); this writer's own view of its lease runs on the monotonic clock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable

from kubetune.contract.errors import UserError
from kubetune.contract.layout import RunLayout
from kubetune.storage import AZURE_SCHEMES, GCS_SCHEMES, S3_SCHEMES, Store, StoreUnavailableError
from kubetune.store_clouds import azure_conditional, gcs_read_versioned, gcs_remove_if, gcs_replace_if


class RunBusyError(UserError):
    """Another live writer holds the run folder (exit code 2)."""


class LeaseLostError(StoreUnavailableError):
    """This writer no longer holds its run's lease (it could not renew in time, or another
    writer took it over): it must stop writing. Retriable (EXIT_STORE_UNAVAILABLE): the pod's
    next attempt waits for the lease like any second writer."""


def holder_id(where: str) -> str:
    """Who holds a lease, readable by a person: `where` it runs (the pod's name, `PodEnv.
    pod_name`, or the host's), the process, and a nonce so two processes that reuse a pid
    never look like one holder."""
    return f"{where} pid {os.getpid()} ({uuid.uuid4().hex[:8]})"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class RunLease:
    """The lease of one run folder, held by this process between `acquire` and `release`;
    `holder` names it (`holder_id`; by default on this host's name)."""

    def __init__(self, store: Store, layout: RunLayout, seconds: int, holder: str | None = None):
        self.store, self.layout, self.seconds = store, layout, seconds
        self.holder = holder or holder_id(socket.gethostname())
        self.file = ConditionalFile(store, layout.lease)
        self.generation = 0
        self.lost: str | None = None  # why this writer lost the lease, once it has
        self.on_lost: list[Callable[[str], None]] = []  # told once, from the thread that noticed
        self._token: str | None = None  # the version of the lease this writer last wrote
        self._valid_until = 0.0  # monotonic: the lease is ours until then, unless renewed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read_lease(self) -> tuple[dict[str, Any] | None, str | None]:
        found = self.file.read()
        if found is None:
            return None, None
        try:
            data = json.loads(found[0])
        except ValueError:  # a torn or foreign file: treat as expired
            data = None
        return (data if isinstance(data, dict) else {"holder": "?", "expires": 0}), found[1]

    def _record(self, now: float) -> str:
        return json.dumps({"holder": self.holder, "generation": self.generation, "expires": now + self.seconds,
                           "seconds": self.seconds, "host": socket.gethostname(), "pid": os.getpid()},
                          indent=2, sort_keys=True) + "\n"

    @staticmethod
    def _free(current: dict[str, Any] | None, holder: str) -> bool:
        """Free to take: no lease, ours, expired, or held by a process of this host that is gone
        (a local run killed with SIGKILL and started again need not wait out its lease)."""
        if current is None or current.get("holder") == holder or current.get("expires", 0) < time.time():
            return True
        if current.get("host") == socket.gethostname() and isinstance(current.get("pid"), int):
            try:
                os.kill(current["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def acquire(self) -> "RunLease":
        """Take the lease, waiting up to one lease period for a holder that stopped renewing.
        Raises RunBusyError when another holder still renews it. Of two writers racing for a
        free lease, the conditional write lets exactly one win; the other sees a live holder."""
        deadline = time.monotonic() + self.seconds + 1
        while True:
            current, token = self._read_lease()
            if self._free(current, self.holder):
                self.generation = int((current or {}).get("generation", 0) or 0) + 1
                started = time.monotonic()
                written = self.file.replace_if(self._record(time.time()), token)
                if written is not None:
                    self._token, self._valid_until = written, started + self.seconds
                    self._start_renewing()
                    return self
                continue  # another writer changed it first: look again
            if time.monotonic() >= deadline:
                left = max(0.0, float(current.get("expires", 0)) - time.time()) if current else 0.0
                raise RunBusyError(
                    f"run {self.layout.job!r} ({self.store.url(self.layout.base)}) is being written by "
                    f"{current.get('holder') if current else '?'} (lease renewed, {left:.0f}s left); "
                    "wait for that run to finish, or choose another name (--set name=...)"
                )
            time.sleep(min(1.0, self.seconds / 4))

    # -- holding it -------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise LeaseLostError when this writer no longer holds the lease: lost before, or not
        renewed within its period (no I/O: a store that hangs cannot make this wait)."""
        if self.lost is None and time.monotonic() >= self._valid_until:
            self._lose(f"not renewed within its {self.seconds}s (storage.lease_seconds)")
        if self.lost is not None:
            raise self.lost_error()

    def lost_error(self) -> LeaseLostError:
        return LeaseLostError(f"run {self.layout.job!r}: this writer lost its lease: {self.lost}")

    def confirm(self) -> None:
        """Renew the lease now, conditionally on the version this writer last wrote: a success
        holds the lease for one more period from before the request; a failure means another
        writer took it (LeaseLostError). Every commit calls it first. The holder and generation
        are read back first too, so a store that ignores S3's conditional headers still refuses
        a stale writer (then with the window between that read and the write)."""
        with self._lock:
            self.check()
            started = time.monotonic()
            current, _ = self._read_lease()  # also for a store that ignores conditional headers
            ours = (current or {}).get("holder") == self.holder and (current or {}).get("generation") == self.generation
            written = self.file.replace_if(self._record(time.time()), self._token) if ours else None
            if written is None:
                current, _ = self._read_lease()
                self._lose(f"taken over by {(current or {}).get('holder', 'nobody (removed)')} "
                           f"(generation {(current or {}).get('generation', '?')}, ours {self.generation})")
                self.check()
            self._token, self._valid_until = written, started + self.seconds

    def _lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        print(f"kubetune: lease of run {self.layout.job!r} lost: {reason}; this writer stops writing "
              "(its uploads are aborted)", file=sys.stderr, flush=True)
        for callback in self.on_lost:
            callback(reason)

    def _start_renewing(self) -> None:
        def renew() -> None:
            while not self._stop.wait(self.seconds / 3):
                try:
                    self.confirm()
                except LeaseLostError:
                    return
                except Exception as exc:  # a store fault: said, and the next renewal tries again
                    left = self._valid_until - time.monotonic()
                    print(f"kubetune: lease renewal failed ({_one_line(exc)}); {max(left, 0):.0f}s of the lease "
                          "left", file=sys.stderr, flush=True)
                    if left <= 0:
                        self._lose(f"not renewed within its {self.seconds}s: {_one_line(exc)}")
                        return

        self._thread = threading.Thread(target=renew, name="kubetune-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and remove the lease, only at the version this writer last wrote: a
        lease another writer took over (or renewed since) is theirs and stays."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost is None and self._token is not None:
            try:
                self.file.remove_if(self._token)
            except Exception as exc:  # it expires by itself
                print(f"kubetune: could not remove the lease ({_one_line(exc)}); it expires in {self.seconds}s",
                      file=sys.stderr, flush=True)


class ConditionalFile:
    """One small file of the store written only at a known version: `read` gives its text and
    version token, `replace_if` and `remove_if` act only while the file is still at that
    version. Each store decides atomically with its own conditional request (docs/storage.md):
    S3's If-Match / If-None-Match on PUT and DELETE (botocore 1.43, moto 5.2; s3fs passes them
    through `pipe_file`/`call_s3`); GCS's `ifGenerationMatch` and Azure's ETag conditions
    (`store_clouds`). In a local folder: compare and rename under an exclusive flock of the
    folder (atomic among one machine's processes, not across NFS clients). Any other store
    (memory://) compares, then writes: not atomic.

    Why here and not in `storage`: the lease is its only user."""

    def __init__(self, store: Store, rel: str):
        self.store, self.rel, self.target = store, rel, store.path(rel)
        protocol = store.protocol
        self.kind = ("s3" if protocol in S3_SCHEMES else "gcs" if protocol in GCS_SCHEMES
                     else "azure" if protocol in AZURE_SCHEMES else "local")
        self.s3 = self.kind == "s3"
        self._fs: Any = None

    def _single_try_fs(self) -> Any:
        """S3 through a client without retries of its own: the lease decides what a failure
        means and must not wait out five attempts of a silent store."""
        if self._fs is None:
            import fsspec

            options = dict(self.store.options)
            options["config_kwargs"] = {**options.get("config_kwargs", {}), "retries": {"total_max_attempts": 1}}
            self._fs = fsspec.filesystem("s3", **options)
            self._fs.retries = 1  # s3fs's own retry count (a class attribute, not an argument)
        return self._fs

    def read(self) -> tuple[str, str] | None:
        """The text and its version token, or None when absent: the S3 ETag, GCS generation or
        Azure ETag, read before the body (a change in between fails the next conditional
        write), else the text's sha256."""
        try:
            if self.kind == "s3":
                etag = self._single_try_fs().info(self.target, refresh=True)["ETag"]
                return self._single_try_fs().cat_file(self.target).decode(), etag
            if self.kind == "gcs":
                return gcs_read_versioned(self.store.fs, self.target)
            if self.kind == "azure":
                return azure_conditional(self.store.fs, self.target, "read")
            text = self.store.read_text(self.rel)
        except FileNotFoundError:
            return None
        return text, hashlib.sha256(text.encode()).hexdigest()

    def replace_if(self, text: str, token: str | None) -> str | None:
        """Write `text` only while the file is at version `token` (None: while it is absent);
        the new token, or None when another writer changed it first."""
        if self.kind == "s3":
            match = {"IfMatch": token} if token is not None else {"IfNoneMatch": "*"}
            try:
                out = self._single_try_fs().pipe_file(self.target, text.encode(), **match)
            except FileNotFoundError:  # If-Match on an object another writer removed
                return None
            except Exception as exc:
                if _precondition_failed(exc):
                    return None
                raise
            return (out or {}).get("ETag") or self._single_try_fs().info(self.target, refresh=True)["ETag"]
        if self.kind == "gcs":
            return gcs_replace_if(self.store.fs, self.target, text.encode(), token)
        if self.kind == "azure":
            return azure_conditional(self.store.fs, self.target, "replace", text.encode(), token)
        with _FolderLock(self.target if self.store.protocol == "file" else None):
            current = self.read()
            if (current[1] if current else None) != token:
                return None
            self.store.write_text(self.rel, text)
            return hashlib.sha256(text.encode()).hexdigest()

    def remove_if(self, token: str) -> bool:
        """Remove the file only while it is at version `token`; False when it changed."""
        if self.kind == "s3":
            bucket, key, _ = self._single_try_fs().split_path(self.target)
            try:
                self._single_try_fs().call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=token)
            except FileNotFoundError:
                return False
            except Exception as exc:
                if _precondition_failed(exc):
                    return False
                raise
            return True
        if self.kind == "gcs":
            return gcs_remove_if(self.store.fs, self.target, token)
        if self.kind == "azure":
            return bool(azure_conditional(self.store.fs, self.target, "remove", None, token))
        with _FolderLock(self.target if self.store.protocol == "file" else None):
            current = self.read()
            if current is None or current[1] != token:
                return False
            self.store.remove(self.rel)
            return True


def _precondition_failed(exc: BaseException) -> bool:
    """S3's 412, or AWS's 409 ConditionalRequestConflict (a concurrent conditional write),
    anywhere in the cause chain (s3fs turns the ClientError into an OSError(EINVAL))."""
    link: BaseException | None = exc
    for _ in range(8):
        if link is None:
            return False
        response = getattr(link, "response", None)
        code = str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            return True
        link = link.__cause__ or link.__context__
    return False


class _FolderLock:
    """An exclusive flock of the folder that holds `target` (created), for one compare-and-
    write; a no-op for None. Why the folder itself: no lock file is left in the store, and the
    kernel drops the lock when the process dies, so a SIGKILLed writer never leaves it held."""

    def __init__(self, target: str | None):
        self.target, self.fd = target, -1

    def __enter__(self) -> "_FolderLock":
        if self.target is not None:
            folder = os.path.dirname(self.target)
            os.makedirs(folder, exist_ok=True)
            self.fd = os.open(folder, os.O_RDONLY)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = -1
