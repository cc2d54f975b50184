"""Checkpoints in object storage: publish (files, then marker, then LATEST), find, fetch.

The order of writes is the whole protocol: a reader that finds LATEST can trust the folder it
names, because LATEST is written only after that folder's COMMITTED marker, which is written
only after every file in it. A folder without its marker (a pod killed mid-upload) is ignored.

Uploads run on one background thread (`Uploader`) so the training loop only pays for the
Trainer's local save: jobs run in submission order (so LATEST only ever moves forward), each
step of a job is retried with backoff while the store is unreachable, and a checkpoint that
is overtaken by a newer one before its upload starts is skipped. Only rank 0 uploads.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import queue
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kubetune.contract.layout import RunLayout, checkpoint_name, checkpoint_step, resume_step
from kubetune.integrity import UNVERIFIABLE, DamagedError, check_local, check_store_sizes, read_manifest, summary
from kubetune.storage import Store
from kubetune.workload.model.downloads import download_once

log = logging.getLogger("kubetune.checkpoint")

# Files other ranks uploaded into a checkpoint folder: name -> `{size, sha256}`, or bare names.
ExtraFiles = dict[str, Any] | list[str] | None

# Written by kubetune into every checkpoint folder: where in the data the run stands.
DATA_POSITION = "kubetune_position.json"
# Written by the Trainer into every checkpoint folder; its `best_global_step` names the
# checkpoint the validation metric chose so far (transformers 5.24.0).
TRAINER_STATE = "trainer_state.json"
# Written by the Trainer subclass into every checkpoint folder: the training loss summed since
# the last log, and that log's step, so a resumed run's first logged loss covers the same steps.
LOSS_WINDOW = "kubetune_loss_window.json"


def _attempt_once(action: Callable[[], Any], what: str) -> Any:
    return action()


def commit_checkpoint(store: Store, layout: RunLayout, local_dir: Path, step: int,
                      extra_files: ExtraFiles = None,
                      attempt: Callable[[Callable[[], Any], str], Any] = _attempt_once) -> str:
    """The checkpoint protocol, in its one place: upload the folder's files, hashing them as
    they go, then write the COMMITTED marker (the manifest: each file's size and sha256, with
    `extra_files`, the files other ranks already uploaded into the folder: their RNG states),
    then point LATEST at it. `attempt(action, what)` runs each step (the background uploader
    retries them). Returns the folder's store path."""
    rel = layout.checkpoint(step)
    name = checkpoint_name(step)
    files = attempt(lambda: store.upload_dir(local_dir, rel), f"upload of {name}")
    manifest = {**_extra_records(extra_files), **files}
    attempt(lambda: store.commit(rel, manifest, step=step), f"commit of {name}")
    attempt(lambda: store.write_text(layout.latest, name + "\n"), "update of LATEST")
    return rel


def _extra_records(extra_files: ExtraFiles) -> dict[str, Any]:
    """Other ranks' files as manifest records: their `{size, sha256}` where the rank sent them,
    else the name alone (checked for presence only)."""
    if isinstance(extra_files, dict):
        return dict(extra_files)
    return dict.fromkeys(extra_files or [])


def publish_checkpoint(store: Store, layout: RunLayout, local_dir: Path, step: int, keep: int,
                       extra_files: ExtraFiles = None) -> str:
    """Commit a local checkpoint folder now (`commit_checkpoint`) and prune old ones."""
    rel = commit_checkpoint(store, layout, local_dir, step, extra_files)
    prune_checkpoints(store, layout, keep)
    return rel


def committed_steps(store: Store, layout: RunLayout, warn: bool = False) -> list[int]:
    """Steps of committed checkpoints, oldest first; partial folders are skipped (and named)."""
    steps = []
    for name in store.list_dirs(layout.checkpoints):
        step = checkpoint_step(name)
        if step is None:
            continue
        if store.is_committed(layout.checkpoint(step)):
            steps.append(step)
        elif warn:
            log.warning("ignoring checkpoint %s: no commit marker (its upload did not finish)", name)
    return sorted(steps)


def find_resume_step(store: Store, layout: RunLayout) -> int | None:
    """The step a resume starts from, by the one rule both sides use (`contract.layout.
    resume_step`: what LATEST names if committed, else the newest committed), saying so when
    LATEST named something else."""
    steps = committed_steps(store, layout, warn=True)
    latest = store.read_text(layout.latest) if store.exists(layout.latest) else None
    step = resume_step(latest, steps)
    named = checkpoint_step(latest.strip()) if latest is not None else None
    if latest is not None and named != step:
        log.warning("LATEST names %s, which is not a committed checkpoint; using the newest committed one", named)
    return step


def best_step(store: Store, layout: RunLayout, step: int) -> int | None:
    """The best checkpoint's step as the Trainer recorded it in checkpoint `step` (None: no
    evaluation yet, or a checkpoint without the Trainer's state)."""
    rel = posixpath.join(layout.checkpoint(step), TRAINER_STATE)
    if not store.exists(rel):
        return None
    best = store.read_json(rel).get("best_global_step")
    return int(best) if best else None


def prune_checkpoints(store: Store, layout: RunLayout, keep: int) -> None:
    """Keep the newest `keep` committed checkpoints and the best one (as the newest records
    it: a resumed run must still be able to commit the model the validation metric chose);
    also remove uncommitted folders older than the newest committed one (uploads that died).
    Never touches what LATEST names."""
    steps = committed_steps(store, layout)
    best = best_step(store, layout, steps[-1]) if steps else None
    for step in steps[:-keep] if keep > 0 else []:
        if step != best:
            store.remove(layout.checkpoint(step))
    if steps:
        for name in store.list_dirs(layout.checkpoints):
            step = checkpoint_step(name)
            if step is not None and step < steps[-1] and step not in steps:
                store.remove(layout.checkpoint(step))


def clear_after_success(store: Store, layout: RunLayout, keep: int) -> None:
    """Once the model is committed: keep the newest `keep` committed checkpoints, remove the
    rest; with 0, the whole checkpoints folder, LATEST included. Why: a finished run resumes
    nothing (its best checkpoint is already the committed model), and each checkpoint carries
    the optimizer state (about 3x the model); an incomplete run never gets here, so it keeps
    all it needs to resume."""
    if keep == 0:
        store.remove(layout.checkpoints)
        return
    kept = set(committed_steps(store, layout)[-keep:])
    for name in store.list_dirs(layout.checkpoints):
        step = checkpoint_step(name)
        if step is not None and step not in kept:
            store.remove(layout.checkpoint(step))


def fetch_checkpoint(store: Store, layout: RunLayout, step: int, local_root: Path) -> Path:
    """A verified local copy of a committed checkpoint (`kubetune.integrity`): the store's sizes
    are checked against the marker's manifest before the download, the local copy is hashed
    after it. A local folder left by an earlier attempt is used if it matches, else downloaded
    again; downloads go through `download_once`, so ranks sharing a disk never see a
    half-written copy. Raises `DamagedError` (one line) when the store's copy does not match."""
    rel = layout.checkpoint(step)
    manifest = read_manifest(store, rel)
    problems = check_store_sizes(store, rel, manifest)
    if problems:
        raise DamagedError(summary(problems))
    if manifest and all(record is UNVERIFIABLE for record in manifest.values()):
        log.warning("checkpoint %s has a marker from before manifests: its files are checked for presence only",
                    checkpoint_name(step))

    def whole(folder: Path) -> bool:
        return bool(manifest) and all((folder / name).is_file() for name in manifest)

    for _ in range(2):  # a bad local copy from an earlier attempt is downloaded again, once
        local = download_once(local_root / f"checkpoint-{step}", lambda folder: store.download_dir(rel, folder), whole)
        problems = check_local(local, manifest)
        if not problems:
            return local
        shutil.rmtree(local, ignore_errors=True)
    raise DamagedError(summary(problems))


def read_position(checkpoint_dir: Path) -> dict[str, Any]:
    path = Path(checkpoint_dir) / DATA_POSITION
    return json.loads(path.read_text()) if path.is_file() else {}


def snapshot(local_dir: Path, staging: Path) -> Path:
    """Hard-link a checkpoint folder's files into `staging`: instant, and immune to the
    Trainer deleting (rotating) the original while the upload is still running. Falls back
    to copying across file systems."""
    if staging.exists():
        shutil.rmtree(staging)
    for src in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        dest = staging / src.relative_to(local_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dest)
        except OSError:
            shutil.copy2(src, dest)
    return staging


# ---------------------------------------------------------------------------------------------
# Background uploads


def retrying(action: Callable[[], Any], what: str, deadline_s: float, stop: threading.Event | None = None,
             first_delay_s: float = 1.0, max_delay_s: float = 15.0) -> Any:
    """Run `action` until it succeeds or `deadline_s` has passed (then re-raise). Every
    failure is one line on stderr, so an outage is visible in the pod's log."""
    start = time.monotonic()
    delay = first_delay_s
    attempt = 1
    while True:
        try:
            return action()
        except Exception as exc:
            waited = time.monotonic() - start
            if waited + delay > deadline_s or (stop is not None and stop.is_set()):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"kubetune: {what} failed (attempt {attempt}: {first}); retrying in {delay:.0f}s",
                  file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
            attempt += 1


@dataclass
class _Job:
    kind: str  # "checkpoint" | "file"
    seq: int
    local: Path
    rel: str = ""
    step: int = 0
    extra_files: ExtraFiles = None
    on_done: Callable[[str], None] | None = None


class Uploader:
    """One background thread that publishes checkpoints and small files, in order.

    `submit_checkpoint` snapshots the folder first (hard links) and returns at once. A
    checkpoint still waiting when a newer one is submitted is skipped: only the newest
    matters for resuming. `submit_file` uploads a small file (metrics) and, likewise, only
    the newest content of a path. `wait` blocks until everything submitted is in the store.
    """

    def __init__(self, store: Store, layout: RunLayout, keep: int, staging_root: Path,
                 retry_deadline_s: float = 900.0):
        self.store = store
        self.layout = layout
        self.keep = keep
        self.staging_root = Path(staging_root)
        self.retry_deadline_s = retry_deadline_s
        self.errors: list[str] = []
        self.committed: list[int] = []
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._seq = 0
        self._newest_checkpoint = -1
        self._best: int | None = None
        self._newest_file: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubetune-uploader", daemon=True)
        self._thread.start()

    # -- submitting -------------------------------------------------------------------------------
    def _next(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def submit_checkpoint(self, local_dir: Path, step: int, extra_files: ExtraFiles = None,
                          on_done: Callable[[str], None] | None = None, best: int | None = None) -> None:
        """Queue a checkpoint; `best` is the step the Trainer now calls best, whose upload is
        never skipped (pruning keeps it in the store for a resumed run)."""
        seq = self._next()
        staging = snapshot(Path(local_dir), self.staging_root / f"{checkpoint_name(step)}-{seq}")
        with self._lock:
            self._newest_checkpoint = seq
            self._best = best
        self._queue.put(_Job("checkpoint", seq, staging, step=step, extra_files=extra_files,
                             on_done=on_done))

    def submit_file(self, local: Path, rel: str) -> None:
        seq = self._next()
        staging = self.staging_root / "files" / f"{seq}-{Path(local).name}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local, staging)
        with self._lock:
            self._newest_file[rel] = seq
        self._queue.put(_Job("file", seq, staging, rel=rel))

    def wait(self, timeout_s: float | None = None) -> bool:
        """True when every submitted upload has finished (or finally failed) in time."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self, timeout_s: float | None = None) -> bool:
        done = self.wait(timeout_s)
        self._stop.set()
        self._queue.put(None)
        return done

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
                self._upload(job)
            except Exception as exc:  # an upload that failed past its deadline; training goes on
                message = f"upload of {job.rel or job.local} failed for good: {exc}"
                self.errors.append(message)
                print(f"kubetune: {message}", file=sys.stderr, flush=True)
            finally:
                if job is not None:
                    shutil.rmtree(job.local, ignore_errors=True) if job.local.is_dir() else job.local.unlink(missing_ok=True)
                self._queue.task_done()

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

        rel = commit_checkpoint(self.store, self.layout, job.local, job.step, job.extra_files, attempt)
        self.committed.append(job.step)
        print(f"kubetune: checkpoint committed: {self.store.url(rel)}", flush=True)
        try:
            prune_checkpoints(self.store, self.layout, self.keep)
        except Exception as exc:  # pruning is housekeeping; the next commit tries again
            log.warning("could not prune old checkpoints: %s", exc)
        if job.on_done is not None:
            job.on_done(rel)
