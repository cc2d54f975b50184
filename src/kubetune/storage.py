"""Object storage behind one small interface: URIs → fsspec file systems, commit markers.

A local folder (the embedded default) and any S3-compatible store (through s3fs) look the same
to the rest of kubetune. Credentials never pass through here: s3fs/botocore read the standard
AWS environment variables or shared credentials file. Only the endpoint and region come from
the spec.

Relative URIs (no scheme, not starting with `/`, `./` or `../`) are relative to
`storage.root`, so one job file runs against a laptop folder and an S3 bucket alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import posixpath
import time
from pathlib import Path
from typing import Any

import fsspec

# The faults live in `store_faults`; re-exported here, where callers look for them.
from kubetune.store_faults import (SPACE_CODES, TRANSIENT_CODES, StorageError, StoreFullError,  # noqa: F401
                                   StoreUnavailableError, human_bytes, is_space_error, is_transient, one_line,
                                   retry_until)


COMMIT_MARKER = "COMMITTED"
# Read size of the one pass that uploads (or downloads) a file and hashes it.
HASH_BLOCK = 8 << 20


def has_scheme(uri: str) -> bool:
    return "://" in uri


def is_explicit_local(uri: str) -> bool:
    return uri.startswith(("/", "./", "../", "~")) or uri in (".", "..")


def store_timeouts(timeout_s: float | None) -> tuple[float, float]:
    """(connect, read) timeouts of every store request from `storage.startup_timeout_seconds`:
    at most 5 s and 60 s, never longer than it (at least 5 s), so a store that accepts and never
    answers fails a probe within it (a 60 s read timeout per probe made 5 s last 123.6 s)."""
    bound = 60.0 if timeout_s is None else max(float(timeout_s), 5.0)
    return min(5.0, bound), min(60.0, bound)


def storage_options(uri: str, endpoint_url: str | None = None, region: str | None = None,
                    timeout_s: float | None = None) -> dict[str, Any]:
    """fsspec options for a URI. For s3:// these carry the endpoint (any S3-compatible store),
    timeouts bounded by `timeout_s` (`store_timeouts`) so an unreachable or silent endpoint
    fails in seconds, and botocore's retries for transient errors; credentials come from the
    environment. Without `endpoint_url`, the
    endpoint is AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL: the AWS SDK's own variables, which
    botocore itself reads too; not kubetune's settings, so they are read here, where the SDK's
    options are made, and not passed down from an entrypoint (the one such read below them)."""
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    client_kwargs: dict[str, Any] = {}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if region:
        client_kwargs["region_name"] = region
    connect_timeout, read_timeout = store_timeouts(timeout_s)
    return {
        "client_kwargs": client_kwargs,
        "config_kwargs": {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retries": {"max_attempts": 5, "mode": "standard"},
        },
        # A new file system per process: s3fs instances are not fork-safe.
        "skip_instance_cache": True,
    }


class Store:
    """One storage root (local folder or s3://bucket/prefix) with the few operations runs need.

    Paths given to methods are relative to the root, joined with '/'.
    """

    def __init__(self, root: str, endpoint_url: str | None = None, region: str | None = None,
                 timeout_s: float | None = None):
        if not has_scheme(root):
            root = str(Path(root).expanduser().resolve())
        self.root = root.rstrip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.timeout_s = timeout_s
        self.options = storage_options(self.root, endpoint_url, region, timeout_s)
        self.fs, self.root_path = fsspec.core.url_to_fs(self.root, **self.options)
        self.protocol = self.root.split("://", 1)[0] if has_scheme(self.root) else "file"

    @classmethod
    def from_spec(cls, storage: Any) -> "Store":
        return cls(storage.root, storage.endpoint_url, storage.region, storage.startup_timeout_seconds)

    # -- naming --------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """File-system path (no scheme) of a path relative to the root."""
        return posixpath.join(self.root_path, *[p.strip("/") for p in parts if p])

    def url(self, *parts: str) -> str:
        """Full URI of a path relative to the root."""
        rel = posixpath.join(*[p.strip("/") for p in parts if p]) if parts else ""
        return f"{self.root}/{rel}" if rel else self.root

    def resolve(self, uri: str) -> str:
        """A user URI as a full URI: schemes and explicit local paths as given, the rest under
        the root."""
        if has_scheme(uri):
            return uri
        if is_explicit_local(uri):
            return str(Path(uri).expanduser().resolve())
        normal = posixpath.normpath(uri)
        if normal == ".." or normal.startswith("../"):  # the spec refuses these too
            raise StorageError(f"{uri}: a path relative to storage.root must stay under it")
        return self.url(uri)

    def options_for(self, uri: str) -> dict[str, Any]:
        """fsspec options for a resolved URI (the store's endpoint applies to its scheme)."""
        return storage_options(uri, self.endpoint_url, self.region, self.timeout_s)

    # -- checks --------------------------------------------------------------------------------
    def check_reachable(self, timeout_s: float = 0.0) -> None:
        """Fail fast, before any expensive work, when the root cannot be reached. A permanent
        fault is a `StorageError` at once; a transient one (`is_transient`) is retried with
        capped exponential backoff and jitter until `timeout_s` (a pod's
        storage.startup_timeout_seconds) has passed, then raised as `StoreUnavailableError`.

        The loop is `store_faults.retry_until`'s, shared with the Hub's reachability check."""
        def unreachable(exc: BaseException, waited: float) -> StoreUnavailableError:
            return StoreUnavailableError(f"storage.root: {self.root} unreachable for {waited:.0f}s "
                                         f"(storage.startup_timeout_seconds: {timeout_s:g}): {one_line(exc)}")

        try:
            retry_until(self._probe, is_transient, timeout_s, f"store {self.root}", unreachable)
        except StoreUnavailableError:
            raise
        except FileNotFoundError:
            raise StorageError(f"storage.root: {self.root}: bucket does not exist") from None
        except Exception as exc:  # a permanent fault: one line naming the root
            raise StorageError(f"storage.root: cannot reach {self.root}: {one_line(exc)}") from None

    def _probe(self) -> None:
        """One look at the root. For S3 through a client without botocore's or s3fs's own
        retries (they took 13 s per probe against a closed port), so `check_reachable`'s
        deadline holds."""
        if self.protocol == "file":
            _check_local_root(self.root_path)
            return
        if self.protocol not in ("s3", "s3a"):
            return
        options = dict(self.options)
        options["config_kwargs"] = {**options.get("config_kwargs", {}), "retries": {"total_max_attempts": 1}}
        fs = fsspec.filesystem("s3", **options)
        fs.retries = 1  # s3fs's own retry count (a class attribute, not an argument)
        fs.ls(self.root_path.split("/", 1)[0], refresh=True)

    # -- files ---------------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def read_text(self, rel: str) -> str:
        with self.fs.open(self.path(rel), "r") as handle:
            return handle.read()

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_text(rel))

    def write_text(self, rel: str, text: str) -> None:
        """Write a whole file so that readers see the old or the new content, never a part:
        object stores replace objects atomically; local files go through a rename."""
        target = self.path(rel)
        if self.protocol == "file":
            os.replace(_local_temp_copy(target, text), target)
        else:
            with self.fs.open(target, "w") as handle:
                handle.write(text)

    def create_exclusive(self, rel: str, text: str) -> bool:
        """Write `rel` only if it does not exist yet; False when another writer was first. The
        store's own atomic operation decides: `os.link` locally, S3's `If-None-Match: *`
        (`mode="create"`); a store without one (memory://) checks, then writes."""
        target = self.path(rel)
        if self.protocol == "file":
            tmp = _local_temp_copy(target, text)
            try:
                os.link(tmp, target)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        if self.protocol in ("s3", "s3a"):
            try:
                self.fs.pipe_file(target, text.encode(), mode="create")
                return True
            except Exception as exc:  # s3fs maps HTTP 412 to an OSError subclass, version-dependent
                if _is_precondition_failed(exc):
                    return False
                raise
        if self.fs.exists(target):
            return False
        self.write_text(rel, text)
        return True

    def write_json(self, rel: str, data: Any) -> None:
        self.write_text(rel, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def upload_file(self, local: str | Path, rel: str) -> dict[str, Any]:
        """Copy a local file to `rel`; returns its record `{size, sha256}`, hashed from the same
        reads that upload it (the local file is read once: no second pass over a multi-GB
        checkpoint), which a COMMITTED marker's manifest records (`kubetune.integrity`)."""
        target = self.path(rel)
        if self.protocol == "file":
            os.makedirs(os.path.dirname(target), exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with open(local, "rb") as source, self.fs.open(target, "wb") as sink:
            for block in iter(lambda: source.read(HASH_BLOCK), b""):
                digest.update(block)
                size += len(block)
                sink.write(block)
        return {"size": size, "sha256": digest.hexdigest()}

    def upload_dir(self, local_dir: str | Path, rel: str) -> dict[str, dict[str, Any]]:
        """Copy a local folder's files under `rel`; returns the manifest of what was uploaded:
        relative name -> `{size, sha256}` (`upload_file`), in name order."""
        local_dir = Path(local_dir)
        names = sorted(str(p.relative_to(local_dir)).replace(os.sep, "/") for p in local_dir.rglob("*") if p.is_file())
        return {name: self.upload_file(local_dir / name, posixpath.join(rel, name)) for name in names}

    def download_dir(self, rel: str, local_dir: str | Path) -> Path:
        """Copy every file under `rel` into a local folder (created)."""
        local_dir = Path(local_dir)
        base = self.path(rel)
        for remote in self.fs.find(base):
            name = posixpath.relpath(remote, base)
            dest = local_dir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(remote, str(dest))
        return local_dir

    def list_dirs(self, rel: str) -> list[str]:
        """Names of the folders directly under `rel` (empty if it does not exist)."""
        base = self.path(rel)
        if not self.fs.exists(base):
            return []
        out = []
        for entry in self.fs.ls(base, detail=True, refresh=True):
            if entry["type"] == "directory":
                out.append(posixpath.basename(entry["name"].rstrip("/")))
        return sorted(out)

    def remove(self, rel: str) -> None:
        target = self.path(rel)
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)

    # -- commit markers ------------------------------------------------------------------------
    def commit(self, rel_dir: str, files: list[str] | dict[str, Any], **info: Any) -> None:
        """Mark a folder complete. Written after every file in it, so a folder without its
        marker (a writer that died mid-upload) is never trusted. `files`: the manifest
        (`upload_dir`: name -> `{size, sha256}`, recorded under `manifest` for
        `kubetune.integrity` to verify), or bare names (a marker that can only be checked for
        presence); `files` lists the names either way, as markers before the manifest did."""
        marker: dict[str, Any] = {"files": sorted(files), "time": time.time(), **info}
        if isinstance(files, dict):
            marker["manifest"] = {name: files[name] for name in sorted(files)}
        self.write_json(posixpath.join(rel_dir, COMMIT_MARKER), marker)

    def is_committed(self, rel_dir: str) -> bool:
        return self.exists(posixpath.join(rel_dir, COMMIT_MARKER))


def _check_local_root(root: str) -> None:
    """A local root need not exist yet (the first write creates it), but nothing is created
    here: a run refused later must leave no folder behind. Its nearest existing ancestor must
    be a folder this process can write into."""
    existing = Path(root)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{existing}: not writable")




def _local_temp_copy(target: str, text: str) -> str:
    """`text` in a file beside `target`, under a name no other writer (process or thread)
    uses, ready to be renamed or linked into place."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as handle:
        handle.write(text)
    return tmp


def _is_precondition_failed(exc: BaseException) -> bool:
    """S3's 412 (the condition failed) or 409 ConditionalRequestConflict (AWS: a concurrent
    conditional write to the same key), as s3fs raises them."""
    text = f"{type(exc).__name__} {exc}"
    return (isinstance(exc, FileExistsError) or "PreconditionFailed" in text or "412" in text
            or "ConditionalRequestConflict" in text)

