"""One writer per run folder: a lease object in the store (`RunLayout.lease`).

Two `kubetune run` processes (or a pod and a forgotten laptop run) of one job on one store
would otherwise train into the same folder and both report success. The writer holds a lease
`{holder, expires}` that a background thread renews every third of `storage.lease_seconds`; a
writer killed with SIGKILL stops renewing, so its lease expires and blocks nobody for longer.
A second writer waits up to one lease period (so a retried pod can take over from a dead one)
and, when the lease is still being renewed, stops with one line naming the run and the holder.

Why by hand: object stores offer no portable lock (s3fs has no conditional PUT), so this is a
write-then-read-back lease: of two writers racing for a free lease, the one whose write is read
back holds it; the other sees a live holder and waits or stops. Timestamps are wall-clock
seconds, so the writers' clocks must agree to well within a lease period (NTP does that).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from kubetune.contract.errors import UserError
from kubetune.contract.layout import RunLayout
from kubetune.storage import Store


class RunBusyError(UserError):
    """Another live writer holds the run folder (exit code 2)."""


def holder_id(where: str) -> str:
    """Who holds a lease, readable by a person: `where` it runs (the pod's name, `PodEnv.
    pod_name`, or the host's), the process, and a nonce so two processes that reuse a pid
    never look like one holder."""
    return f"{where} pid {os.getpid()} ({uuid.uuid4().hex[:8]})"


class RunLease:
    """The lease of one run folder, held by this process between `acquire` and `release`;
    `holder` names it (`holder_id`; by default on this host's name)."""

    def __init__(self, store: Store, layout: RunLayout, seconds: int, holder: str | None = None):
        self.store, self.layout, self.seconds = store, layout, seconds
        self.holder = holder or holder_id(socket.gethostname())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read_lease(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.store.read_text(self.layout.lease))
        except FileNotFoundError:
            return None
        except ValueError:  # a torn or foreign file: treat as expired
            return {"holder": "?", "expires": 0}
        return data if isinstance(data, dict) else {"holder": "?", "expires": 0}

    def _write_lease(self) -> None:
        self.store.write_json(self.layout.lease, {"holder": self.holder, "expires": time.time() + self.seconds,
                                                  "seconds": self.seconds, "host": socket.gethostname(),
                                                  "pid": os.getpid()})

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
        Raises RunBusyError when another holder still renews it."""
        deadline = time.monotonic() + self.seconds + 1
        settle = min(0.5, self.seconds / 4)
        while True:
            current = self._read_lease()
            if self._free(current, self.holder):
                self._write_lease()
                time.sleep(settle)  # a racing writer's lease lands now or not at all
                current = self._read_lease()
                if current is not None and current.get("holder") == self.holder:
                    self._start_renewing()
                    return self
            if time.monotonic() >= deadline:
                left = max(0.0, float(current.get("expires", 0)) - time.time()) if current else 0.0
                raise RunBusyError(
                    f"run {self.layout.job!r} ({self.store.url(self.layout.base)}) is being written by "
                    f"{current.get('holder') if current else '?'} (lease renewed, {left:.0f}s left); "
                    "wait for that run to finish, or choose another name (--set name=...)"
                )
            time.sleep(min(1.0, self.seconds / 4))

    def _start_renewing(self) -> None:
        def renew() -> None:
            while not self._stop.wait(self.seconds / 3):
                try:
                    self._write_lease()
                except Exception:  # a store hiccup: the next renewal tries again
                    pass

        self._thread = threading.Thread(target=renew, name="kubetune-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = self._read_lease()
        if current is not None and current.get("holder") == self.holder:
            self.store.remove(self.layout.lease)
