"""Checkpoints and metrics uploaded in the background, in order, and stopped when they must be.

`Uploader` runs one thread so the training loop only pays for the Trainer's local save: jobs
run in submission order (so LATEST only ever moves forward), each step of a job is retried with
backoff while the store is unreachable (`retrying`), and a checkpoint that is overtaken by a
newer one before its upload starts is skipped. A checkpoint carries the metrics log as it was
when it was saved, uploaded before its marker, so the store's `metrics/train.jsonl` never lags
a committed checkpoint (issue 23, point 5). Two faults stop it for good (`fatal`), and the
training loop then stops too (`checkpointer.StopOnFatal`): a full store (`storage.
StoreFullError`: never retried like an outage) and a lost lease (`lease.LeaseLostError`: this
writer must not write any more). Moved out of `protocol`, which keeps what is written where.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kubetune.contract.layout import RunLayout, checkpoint_name
from kubetune.storage import Store, StoreFullError, human_bytes, is_space_error
from kubetune.workload.checkpointing.lease import LeaseLostError, RunLease
from kubetune.workload.checkpointing.protocol import ExtraFiles, commit_checkpoint, prune_checkpoints, snapshot

log = logging.getLogger("kubetune.checkpoint")


def retrying(action: Callable[[], Any], what: str, deadline_s: float, stop: threading.Event | None = None,
             first_delay_s: float = 1.0, max_delay_s: float = 15.0) -> Any:
    """Run `action` until it succeeds or `deadline_s` has passed (then re-raise). Every
    failure is one line on stderr, so an outage is visible in the pod's log. A full store
    (`storage.is_space_error`) is raised at once: no retry writes into it."""
    start = time.monotonic()
    delay = first_delay_s
    attempt = 1
    while True:
        try:
            return action()
        except Exception as exc:
            waited = time.monotonic() - start
            if waited + delay > deadline_s or (stop is not None and stop.is_set()) or is_space_error(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"kubetune: {what} failed (attempt {attempt}: {first}); retrying in {delay:.0f}s",
                  file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
            attempt += 1


def no_space(store: Store, what: str, local: Path, exc: BaseException) -> StoreFullError:
    """The one line of a full store: what could not be written, how much it needed (the local
    copy's size) and, for a local volume, how much room there is."""
    files = [p for p in local.rglob("*") if p.is_file()] if local.is_dir() else [local]
    needed = sum(p.stat().st_size for p in files if p.exists())
    free = ""
    if store.protocol == "file":
        existing = Path(store.root)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        free = f", {human_bytes(shutil.disk_usage(existing).free)} free there"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreFullError(f"no space in the store for {what}: it needs {human_bytes(needed)} ({needed} bytes) "
                          f"in {store.root}{free}: {first}")


@dataclass
class _Job:
    kind: str  # "checkpoint" | "file"
    seq: int
    local: Path
    rel: str = ""
    step: int = 0
    extra_files: ExtraFiles = None
    on_done: Callable[[str], None] | None = None
    carried: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"checkpoint {checkpoint_name(self.step)}" if self.kind == "checkpoint" else self.rel


class Uploader:
    """One background thread that publishes checkpoints and small files, in order.

    `submit_checkpoint` snapshots the folder first (hard links) and returns at once. A
    checkpoint still waiting when a newer one is submitted is skipped: only the newest
    matters for resuming. `submit_file` uploads a small file (metrics) and, likewise, only
    the newest content of a path; `carry` names a file every checkpoint takes with it. `wait`
    blocks until everything submitted is in the store. `guard(what)` runs before each commit
    (the lease's `confirm`)."""

    def __init__(self, store: Store, layout: RunLayout, keep: int, staging_root: Path,
                 retry_deadline_s: float = 900.0, guard: Callable[[str], None] | None = None):
        self.store = store
        self.layout = layout
        self.keep = keep
        self.staging_root = Path(staging_root)
        self.retry_deadline_s = retry_deadline_s
        self.guard = guard
        self.errors: list[str] = []
        self.committed: list[int] = []
        self.last_upload_seconds: float | None = None  # the newest committed checkpoint's upload (checkpoint_every: auto)
        self.fatal: BaseException | None = None  # a full store or a lost lease: nothing more is written
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._seq = 0
        self._newest_checkpoint = -1
        self._best: int | None = None
        self._newest_file: dict[str, int] = {}
        self._carried: list[tuple[Path, str]] = []
        self._waiting: dict[int, str] = {}  # seq -> what, until it is done
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubetune-uploader", daemon=True)
        self._thread.start()

    # -- submitting -------------------------------------------------------------------------------
    def _next(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def carry(self, local: Path, rel: str) -> None:
        """Every checkpoint from now on uploads `local` (as it is when the checkpoint is
        submitted) to `rel` before its marker: the metrics log, so it never lags LATEST."""
        self._carried.append((Path(local), rel))

    def submit_checkpoint(self, local_dir: Path, step: int, extra_files: ExtraFiles = None,
                          on_done: Callable[[str], None] | None = None, best: int | None = None) -> None:
        """Queue a checkpoint; `best` is the step the Trainer now calls best, whose upload is
        never skipped (pruning keeps it in the store for a resumed run)."""
        seq = self._next()
        staging = snapshot(Path(local_dir), self.staging_root / f"{checkpoint_name(step)}-{seq}")
        carried = []
        for local, rel in self._carried:
            if local.is_file():
                copy = self.staging_root / "carried" / f"{seq}-{local.name}"
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(local, copy)
                carried.append((copy, rel))
        with self._lock:
            self._newest_checkpoint = seq
            self._best = best
        self._put(_Job("checkpoint", seq, staging, step=step, extra_files=extra_files,
                       on_done=on_done, carried=carried))

    def submit_file(self, local: Path, rel: str) -> None:
        seq = self._next()
        staging = self.staging_root / "files" / f"{seq}-{Path(local).name}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local, staging)
        with self._lock:
            self._newest_file[rel] = seq
        self._put(_Job("file", seq, staging, rel=rel))

    def _put(self, job: _Job) -> None:
        with self._lock:
            self._waiting[job.seq] = job.name
        self._queue.put(job)

    def wait(self, timeout_s: float | None = None, interrupted: Callable[[], bool] | None = None) -> bool:
        """True when every submitted upload has finished (or finally failed) in time; False at
        `timeout_s`, or as soon as `interrupted()` says so."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if (deadline is not None and time.monotonic() > deadline) or (interrupted is not None and interrupted()):
                return False
            time.sleep(0.05)
        return True

    def close(self, timeout_s: float | None = None) -> bool:
        done = self.wait(timeout_s)
        self.abort()
        return done

    def abort(self, reason: str | None = None) -> None:
        """Stop: the running upload gives up at its next failure, and nothing queued starts.
        Once: a second call only says what was not uploaded."""
        if not self._stop.is_set():
            self._stop.set()
            self._queue.put(None)
        if reason is not None and self.not_uploaded():
            print(f"kubetune: uploads aborted ({reason}); not uploaded: {', '.join(self.not_uploaded())}",
                  file=sys.stderr, flush=True)

    def fenced_by(self, lease: RunLease) -> "Uploader":
        """Every commit first confirms `lease` in the store, and losing it
        stops every upload: a stale writer commits nothing."""
        self.guard = lambda what: lease.confirm()
        lease.on_lost.append(lambda reason: self.stop_for(lease.lost_error()))
        return self

    def stop_for(self, fatal: BaseException) -> None:
        """Nothing more is written (a full store, a lost lease): `fatal` is kept for the
        training loop to raise, and the uploads are aborted."""
        self.fatal = self.fatal or fatal
        self.errors.append(str(fatal))
        self.abort("this writer lost the run's lease" if isinstance(fatal, LeaseLostError) else "the store is full")

    def not_uploaded(self) -> list[str]:
        """What was submitted and is not (yet) in the store, oldest first."""
        with self._lock:
            return [self._waiting[seq] for seq in sorted(self._waiting)]

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:  # Linux: nice this thread only, so the upload yields the CPU to training
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._stop.is_set():
                    continue  # aborted: nothing queued starts
                self._upload(job)
                with self._lock:
                    self._waiting.pop(job.seq, None)
            except Exception as exc:  # an upload that failed past its deadline; training goes on
                self._failed(job, exc)
            finally:
                if job is not None:
                    shutil.rmtree(job.local, ignore_errors=True) if job.local.is_dir() else job.local.unlink(missing_ok=True)
                    for copy, _ in job.carried:
                        copy.unlink(missing_ok=True)
                self._queue.task_done()

    def _failed(self, job: _Job, exc: Exception) -> None:
        """A job that failed for good: a full store or a lost lease stops every upload (and,
        through `fatal`, the training); any other failure is named and training goes on."""
        if isinstance(exc, LeaseLostError) or isinstance(self.fatal, LeaseLostError):
            print(f"kubetune: {job.name} refused, not committed: {self.fatal or exc}", file=sys.stderr, flush=True)
            self.stop_for(exc)
        elif is_space_error(exc):
            self.stop_for(no_space(self.store, job.name, job.local, exc))
        else:
            message = f"upload of {job.rel or job.local} failed for good: {exc}"
            self.errors.append(message)
            print(f"kubetune: {message}", file=sys.stderr, flush=True)

    def _upload(self, job: _Job) -> None:
        if job.kind == "file":
            with self._lock:
                superseded = self._newest_file.get(job.rel, job.seq) > job.seq
            if not superseded:
                retrying(lambda: self.store.upload_file(job.local, job.rel), f"upload of {job.rel}",
                         self.retry_deadline_s, self._stop)
            return
        with self._lock:
            superseded = self._newest_checkpoint > job.seq and job.step != self._best
        if superseded:
            log.info("skipping upload of checkpoint %s: a newer one is queued", job.step)
            return
        name = checkpoint_name(job.step)
        print(f"kubetune: uploading checkpoint {name}", flush=True)

        def attempt(action: Callable[[], Any], what: str) -> Any:
            return retrying(action, what, self.retry_deadline_s, self._stop)

        started = time.monotonic()
        rel = commit_checkpoint(self.store, self.layout, job.local, job.step, job.extra_files, attempt,
                                carried=job.carried, guard=self.guard or (lambda what: None))
        self.last_upload_seconds = time.monotonic() - started
        self.committed.append(job.step)
        print(f"kubetune: checkpoint committed: {self.store.url(rel)}", flush=True)
        try:
            prune_checkpoints(self.store, self.layout, self.keep)
        except Exception as exc:  # pruning is housekeeping; the next commit tries again
            log.warning("could not prune old checkpoints: %s", exc)
        if job.on_done is not None:
            job.on_done(rel)
