"""Committed folders that prove themselves: every file's size and sha256 in the COMMITTED marker,
checked before a folder is used (docs/recovery.md#verified-checkpoints).

A commit marker alone says a writer finished; it cannot say the bytes are still the ones written
(a flipped block, a truncated object, a file removed by hand). So the marker carries a manifest
(`Store.commit`), and the reader checks it. What is hashed, and when:

* writing: `Store.upload_file` hashes each file from the same reads that upload it, so a
  multi-GB checkpoint is read once; the manifest records `{size, sha256}` per file.
* resuming: the checkpoint's files are first checked in the store by size (one listing, no
  reads), then downloaded, and the local copy is hashed (`check_local`: one read of a copy the
  page cache still holds). A local copy left by an earlier attempt is hashed the same way.
* committing the final model: after its upload, every file is read back from the store and
  hashed (`commit_verified`) before the marker is written; a mismatch is uploaded again, and
  never committed.
* promoting: the registry reads the model back and hashes it (`check_stored`) and refuses a
  model whose files do not match its marker.

Markers written before the manifest (names only) are accepted as unverifiable: each named file
must exist; sizes and contents cannot be checked (`UNVERIFIABLE`).

Shared by both sides: the workload verifies before it resumes or commits, the registry before it
promotes, `kubetune runs`/`show` report the damaged checkpoints. Imports only the contract and
`storage`.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from pathlib import Path
from typing import Any, Callable

from kubetune.storage import COMMIT_MARKER, HASH_BLOCK, Store, StoreUnavailableError

# A marker's record of a file it names but cannot vouch for (a marker from before manifests).
UNVERIFIABLE = None
# Written into a folder set aside as damaged: why, and when.
DAMAGE_NOTE = "DAMAGED.json"
# Tries of upload + read-back before a final model is given up as not committable.
COMMIT_TRIES = 3

Manifest = dict[str, "dict[str, Any] | None"]


class DamagedError(Exception):
    """A committed folder whose files do not match its marker; the message is one line."""


def read_manifest(store: Store, rel_dir: str) -> Manifest:
    """The marker's manifest: name -> `{size, sha256}`, or UNVERIFIABLE for each name of a
    marker from before manifests. Raises DamagedError for a marker that cannot be read."""
    rel = posixpath.join(rel_dir, COMMIT_MARKER)
    try:
        marker = store.read_json(rel)
        if "manifest" in marker:
            return {str(name): dict(record) if record else UNVERIFIABLE for name, record in marker["manifest"].items()}
        return {str(name): UNVERIFIABLE for name in marker["files"]}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DamagedError(f"{COMMIT_MARKER} unreadable ({type(exc).__name__}: {exc})") from None


def check_store_sizes(store: Store, rel_dir: str, manifest: Manifest) -> list[str]:
    """What is missing or of the wrong size in the store (one listing, no file read)."""
    base = store.path(rel_dir)
    listed = store.fs.find(base, detail=True) if store.fs.exists(base) else {}
    sizes = {posixpath.relpath(info["name"], base): info.get("size") for info in listed.values()}
    return _compare(manifest, sizes, {})


def check_local(folder: Path, manifest: Manifest) -> list[str]:
    """What is missing, short or different in a local copy (every file hashed)."""
    sizes, hashes = {}, {}
    for name, record in manifest.items():
        path = folder / name
        if path.is_file():
            sizes[name] = path.stat().st_size
            if record is not UNVERIFIABLE and sizes[name] == record.get("size"):
                with path.open("rb") as handle:
                    hashes[name] = _sha256(handle)
    return _compare(manifest, sizes, hashes)


def check_stored(store: Store, rel_dir: str, manifest: Manifest) -> list[str]:
    """What is missing, short or different in the store: sizes listed, then every file whose
    size matches read back and hashed."""
    problems = check_store_sizes(store, rel_dir, manifest)
    hashes = {}
    for name, record in manifest.items():
        if record is UNVERIFIABLE or any(p.startswith(f"{name}:") for p in problems):
            continue
        with store.fs.open(store.path(rel_dir, name), "rb") as handle:
            hashes[name] = _sha256(handle)
    checked = {name: manifest[name] for name in hashes}
    return problems + _compare(checked, {name: record["size"] for name, record in checked.items()}, hashes)


def verify_committed(store: Store, rel_dir: str) -> list[str]:
    """`check_stored` against the folder's own marker (an unreadable marker is one problem)."""
    try:
        return check_stored(store, rel_dir, read_manifest(store, rel_dir))
    except DamagedError as exc:
        return [str(exc)]


def summary(problems: list[str]) -> str:
    """Problems as one line: the first two, and how many more."""
    shown = "; ".join(problems[:2])
    return shown + (f"; and {len(problems) - 2} more" if len(problems) > 2 else "")


def commit_verified(store: Store, rel_dir: str, local_dir: Path, guard: Callable[[], None] | None = None,
                    **info: Any) -> Manifest:
    """Upload `local_dir` to `rel_dir`, read every file back and hash it, and only then write
    the COMMITTED marker (after `guard()`, the writer's lease confirmed in the store: a writer
    that lost it raises and commits nothing); a file that does not match is uploaded again
    (COMMIT_TRIES in all).
    A folder that never matches is not committed: `StoreUnavailableError` (a retriable exit),
    naming what differed. Returns the committed manifest."""
    problems: list[str] = []
    for _ in range(COMMIT_TRIES):
        manifest = store.upload_dir(local_dir, rel_dir)
        problems = check_stored(store, rel_dir, manifest)
        if not problems:
            if guard is not None:
                guard()
            store.commit(rel_dir, manifest, **info)
            return manifest
        print(f"kubetune: {store.url(rel_dir)}: uploaded files do not match what was written "
              f"({summary(problems)}); uploading again", flush=True)
    raise StoreUnavailableError(f"{store.url(rel_dir)}: not committed: after {COMMIT_TRIES} uploads the store "
                                f"still does not hold what was written ({summary(problems)})")


def set_aside(store: Store, rel_dir: str, dest_rel: str, reason: str) -> str:
    """Move a damaged folder out of the way, to `dest_rel` (a `-2`, `-3`... suffix when that is
    taken), with a DAMAGE_NOTE saying why; nothing is deleted. File by file (s3fs's recursive
    `mv` trips over the folder entries it lists), which on S3 is a server-side copy. Returns
    where it went."""
    target, n = dest_rel, 1
    while store.exists(target):
        n += 1
        target = f"{dest_rel}-{n}"
    source, dest = store.path(rel_dir), store.path(target)
    for path in store.fs.find(source):  # copied first, then removed: a crash in between loses nothing
        store.fs.makedirs(posixpath.dirname(posixpath.join(dest, posixpath.relpath(path, source))), exist_ok=True)
        store.fs.copy(path, posixpath.join(dest, posixpath.relpath(path, source)))
    store.fs.rm(source, recursive=True)
    store.write_json(posixpath.join(target, DAMAGE_NOTE), {"from": rel_dir, "reason": reason, "time": time.time()})
    return target


def damaged_folders(store: Store, rel: str) -> list[dict[str, Any]]:
    """The folders set aside under `rel`: `{name, reason}` each, oldest name first."""
    found = []
    for name in store.list_dirs(rel):
        note = posixpath.join(rel, name, DAMAGE_NOTE)
        try:
            reason = store.read_json(note).get("reason") if store.exists(note) else None
        except (ValueError, OSError):
            reason = None
        found.append({"name": name, "reason": reason})
    return found


def _compare(manifest: Manifest, sizes: dict[str, Any], hashes: dict[str, str]) -> list[str]:
    problems = []
    for name, record in manifest.items():
        if name not in sizes:
            problems.append(f"{name}: missing")
        elif record is UNVERIFIABLE:
            continue
        elif sizes[name] != record.get("size"):
            problems.append(f"{name}: {sizes[name]} bytes, the marker says {record.get('size')}")
        elif name in hashes and hashes[name] != record.get("sha256"):
            problems.append(f"{name}: sha256 {hashes[name][:12]}..., the marker says {str(record.get('sha256'))[:12]}...")
    return problems


def _sha256(handle: Any) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(HASH_BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()

