"""The data a run trains on, pinned across its attempts: `runs/<job>/attempts.json`
(docs/recovery.md#data-pinned-across-attempts).

A resumed attempt continues weights, optimizer and data position learned from the files the run
started with; a file changed in between (a relabelled table, a re-exported object) would be
mixed in silently. So the first attempt records each input file's identity (size and ETag or
version id on an object store, size and sha256 in a folder: `lineage.file_records`), and every
later attempt compares the files it resolved with them before it loads the model: one that
differs is refused in one line naming the file and what changed (a `DataError`, exit 2), unless
the user starts a new run (another `name`). An attempt with no committed checkpoint to resume
keeps nothing trained on the old files, so it pins the new ones instead (saying so).

Every attempt that trains appends itself (when it started, the checkpoint it resumed from, its
files), and the run's `lineage.json` carries the list, so a model says what it was trained on,
attempt by attempt.
"""

from __future__ import annotations

import sys
from typing import Any

from kubetune.contract.layout import RunLayout, checkpoint_step
from kubetune.storage import Store
from kubetune.workload.errors import DataError

# What identifies a file's content; `mtime` only where none of these is known (a local file
# over lineage.HASH_LIMIT).
IDENTITY = ("size", "etag", "version_id", "sha256", "revision")

Records = dict[str, list[dict[str, Any]]]


def identity(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a file record that change when its content does."""
    found = {key: record[key] for key in IDENTITY if record.get(key) is not None}
    if not any(key in found for key in ("etag", "version_id", "sha256")):
        found["mtime"] = record.get("mtime")
    return found


def changes(pinned: Records, now: Records) -> list[str]:
    """Each difference between the pinned files and the files resolved now, one phrase each
    (`data.train: s3://b/train.tsv changed since the run's first attempt (etag 1a… -> 9f…)`)."""
    found = []
    for field in sorted(set(pinned) | set(now)):
        before = {r["uri"]: r for r in pinned.get(field, [])}
        after = {r["uri"]: r for r in now.get(field, [])}
        found += [f"{field}: {uri} is gone since the run's first attempt" for uri in before if uri not in after]
        found += [f"{field}: {uri} is new since the run's first attempt" for uri in after if uri not in before]
        for uri in (u for u in before if u in after):
            old, new = identity(before[uri]), identity(after[uri])
            if old != new:
                what = ", ".join(f"{k} {_short(old.get(k))} -> {_short(new.get(k))}" for k in sorted(set(old) | set(new))
                                 if old.get(k) != new.get(k))
                found.append(f"{field}: {uri} changed since the run's first attempt ({what})")
    return found


def read_attempts(store: Store, layout: RunLayout) -> dict[str, Any]:
    """`attempts.json`: `{pinned: {field: [records]}, attempts: [...]}`; empty before the first."""
    return store.read_json(layout.attempts) if store.exists(layout.attempts) else {}


def check_inputs(store: Store, layout: RunLayout, now: Records) -> None:
    """Refuse (DataError, exit 2) an attempt whose input files differ from the ones the run
    pinned, when it has a committed checkpoint to resume; before the model loads."""
    pinned = read_attempts(store, layout).get("pinned")
    found = changes(pinned, now) if pinned is not None else []
    if not found:
        return
    if not _has_checkpoint(store, layout):
        print(f"kubetune: {found[0]}; no checkpoint to resume, so this attempt pins the files it reads now",
              file=sys.stderr, flush=True)
        return
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    raise DataError(f"{found[0]}{more}; a resumed run trains on the data it started with: restore the file, or "
                    f"start a new run (--set name=...)")


def record_attempt(store: Store, layout: RunLayout, now: Records, resumed_from: int | None, started: str,
                   hub_commits: dict[str, str] | None = None) -> None:
    """Append this attempt to `attempts.json`; the files pinned are this attempt's when none
    were, or when it resumes nothing (`check_inputs` let it through). `hub_commits`: the hf://
    revisions the run read and their commits (its model source's too), kept from the first
    attempt for every later one (`hub_revisions`)."""
    data = read_attempts(store, layout)
    attempts = list(data.get("attempts", []))
    attempts.append({"attempt": len(attempts) + 1, "started": started, "resumed_from": resumed_from, "data": now})
    pinned = data.get("pinned") if data.get("pinned") is not None and resumed_from is not None else now
    record: dict[str, Any] = {"pinned": pinned, "attempts": attempts}
    commits = {**(hub_commits or {}), **(data.get("hub_commits") or {})}
    if commits:
        record["hub_commits"] = commits
    store.write_json(layout.attempts, record)


def _has_checkpoint(store: Store, layout: RunLayout) -> bool:
    return any(checkpoint_step(name) is not None and store.is_committed(f"{layout.checkpoints}/{name}")
               for name in store.list_dirs(layout.checkpoints))


def _short(value: Any) -> str:
    text = "unset" if value is None else str(value)
    return text[:12] + "..." if len(text) > 15 else text
