"""Checkpoints in object storage: publish (files, then marker, then LATEST), find, fetch.

The order of writes is the whole protocol: a reader that finds LATEST can trust the folder it
names, because LATEST is written only after that folder's COMMITTED marker, which is written
only after every file in it. A folder without its marker (a pod killed mid-upload) is ignored.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kubetune.layout import RunLayout, checkpoint_name, checkpoint_step
from kubetune.storage import Store

log = logging.getLogger("kubetune.checkpoint")


def publish_checkpoint(store: Store, layout: RunLayout, local_dir: Path, step: int, keep: int) -> str:
    """Upload a local checkpoint folder, commit it, point LATEST at it, prune old ones."""
    rel = layout.checkpoint(step)
    files = store.upload_dir(local_dir, rel)
    store.commit(rel, files, step=step)
    store.write_text(layout.latest, checkpoint_name(step) + "\n")
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


def find_latest(store: Store, layout: RunLayout) -> int | None:
    """The step to resume from: what LATEST names if committed, else the newest committed."""
    steps = committed_steps(store, layout, warn=True)
    if store.exists(layout.latest):
        step = checkpoint_step(store.read_text(layout.latest).strip())
        if step is not None and step in steps:
            return step
        log.warning("LATEST names %s, which is not a committed checkpoint; using the newest committed one", step)
    return steps[-1] if steps else None


def prune_checkpoints(store: Store, layout: RunLayout, keep: int) -> None:
    """Keep the newest `keep` committed checkpoints; never the one LATEST names."""
    steps = committed_steps(store, layout)
    for step in steps[:-keep] if keep > 0 else []:
        store.remove(layout.checkpoint(step))


def fetch_checkpoint(store: Store, layout: RunLayout, step: int, local_root: Path) -> Path:
    target = local_root / f"checkpoint-{step}"
    if not target.exists():
        store.download_dir(layout.checkpoint(step), target)
    return target
