"""Turn `model.source` into something `from_pretrained` can load.

A source is, in this order: a URI with a scheme (s3://…, hf://org/name[@rev], file://…); an explicit local folder
(`/…`, `./…`); a path under `storage.root` (`models/all-MiniLM-L6-v2`); and, when no such
folder exists in the store, a Hugging Face Hub id (`bert-base-uncased`). Folders in an object
store are downloaded once into a local cache, then loaded through the normal
`from_pretrained` path.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fsspec

from kubetune.storage import Store, has_scheme, is_explicit_local
from kubetune.workload.data.hub_revisions import is_hub_uri, pin
from kubetune.workload.model.downloads import download_once
from kubetune.workload.errors import ModelSourceError

HF_CONFIG = "config.json"


def check_model_source(store: Store, source: str, field: str = "model.source", revision: str | None = None,
                       commits: dict[str, str] | None = None) -> str:
    """Validate cheaply, before anything is loaded. Returns the resolved URI (an hf:// one read
    at the commit its revision, else `revision`, names now, or the run's in `commits`:
    `hub_revisions.pin`), or the hub id."""
    if has_scheme(source) or is_explicit_local(source):
        url = store.resolve(source)
        if is_hub_uri(url):
            url = pin(url, field, {} if commits is None else commits, ModelSourceError, default_revision=revision)[0]
        _require_hf_folder(store, url, field)
        return url
    url = store.resolve(source)
    if _store_dir_exists(store, url):
        _require_hf_folder(store, url, field)
        return url
    top = source.split("/", 1)[0]
    if "/" in source and _store_dir_exists(store, store.resolve(top)):
        # `models/does-not-exist` with a `models/` folder in the store is a mistyped store path,
        # not the Hub organisation "models": trying the Hub would take a minute and fail late.
        raise ModelSourceError(f"{field}: {url}: folder not found in the store ({top}/ has no such model)")
    if not _looks_like_hub_id(source):
        raise ModelSourceError(
            f"{field}: {url}: folder not found in the store, and {source!r} is not a Hugging Face Hub id (org/name)"
        )
    return source  # a Hub id: from_pretrained fetches (or reads the HF cache)


def _looks_like_hub_id(source: str) -> bool:
    """`name` or `org/name` by the Hub's own rules (huggingface_hub.utils.validate_repo_id)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True


def local_model_dir(store: Store, resolved: str, cache: Path, version: str = "") -> str:
    """A local folder (or hub id) for from_pretrained; object-store folders are downloaded once
    into `cache` (the pod's `PodEnv.cache_root`: names.ENV_CACHE, a PVC in a cluster), keyed by
    their URI and `version` (e.g. the commit marker's content, so a retrained run is fetched
    again)."""
    if not has_scheme(resolved) and not Path(resolved).is_absolute():
        return resolved  # hub id
    if resolved.startswith("file://"):
        return resolved[len("file://") :]
    if not has_scheme(resolved):
        return resolved
    key = hashlib.sha256(f"{resolved}\n{version}".encode()).hexdigest()[:16]
    fs, path = fsspec.core.url_to_fs(resolved, **store.options_for(resolved))

    def fill(folder: Path) -> None:
        for remote in fs.find(path):
            rel = os.path.relpath(remote, path)
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(folder / rel))

    return str(download_once(cache / "models" / key, fill))


def _store_dir_exists(store: Store, url: str) -> bool:
    try:
        fs, path = fsspec.core.url_to_fs(url, **store.options_for(url))
        return fs.isdir(path)
    except Exception:
        return False


def _require_hf_folder(store: Store, url: str, field: str) -> None:
    try:
        fs, path = fsspec.core.url_to_fs(url, **store.options_for(url))
        exists = fs.isdir(path)
        has_config = exists and fs.exists(f"{path.rstrip('/')}/{HF_CONFIG}")
    except Exception as exc:
        raise ModelSourceError(f"{field}: cannot read {url}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    if not exists:
        raise ModelSourceError(f"{field}: {url}: folder not found")
    if not has_config:
        raise ModelSourceError(f"{field}: {url}: no {HF_CONFIG}; not a Hugging Face model folder")
