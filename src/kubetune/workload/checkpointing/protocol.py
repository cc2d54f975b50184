"""Checkpoints in object storage: publish (files, then marker, then LATEST), find, fetch.

The order of writes is the whole protocol: a reader that finds LATEST can trust the folder it
names, because LATEST is written only after that folder's COMMITTED marker, which is written
only after every file in it. A folder without its marker (a pod killed mid-upload) is ignored.

Uploads run on one background thread (`uploader.Uploader`) so the training loop only pays for
the Trainer's local save. Only rank 0 uploads.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
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


def _no_guard(what: str) -> None:
    return None


def commit_checkpoint(store: Store, layout: RunLayout, local_dir: Path, step: int,
                      extra_files: ExtraFiles = None,
                      attempt: Callable[[Callable[[], Any], str], Any] = _attempt_once,
                      carried: list[tuple[Path, str]] | None = None,
                      guard: Callable[[str], None] = _no_guard) -> str:
    """The checkpoint protocol, in its one place: upload the folder's files, hashing them as
    they go, and the `carried` files (local copy, store path: the metrics log up to this step,
    so a resume from this checkpoint never finds it shorter), then write the COMMITTED marker
    (the manifest: each file's size and sha256, with `extra_files`, the files other ranks
    already uploaded into the folder: their RNG states), then point LATEST at it. `guard(what)`
    runs before the marker and before LATEST (the lease's `confirm`: a writer that lost the
    run's lease raises, and commits nothing); `attempt(action, what)` runs each step (the
    background uploader retries them). Returns the folder's store path."""
    rel = layout.checkpoint(step)
    name = checkpoint_name(step)
    files = attempt(lambda: store.upload_dir(local_dir, rel), f"upload of {name}")
    for local, target in carried or []:
        attempt(lambda local=local, target=target: store.upload_file(local, target), f"upload of {target}")
    manifest = {**_extra_records(extra_files), **files}
    guard(f"commit of {name}")
    attempt(lambda: store.commit(rel, manifest, step=step), f"commit of {name}")
    guard("update of LATEST")
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
