"""One small file of the store written only at a known version: the lease's compare-and-swap.

`read` gives the file's text and version token, `replace_if` and `remove_if` act only while the
file is still at that version. Each object store decides atomically, with its own conditional
request (docs/storage.md):

* S3: `If-Match: <ETag>` / `If-None-Match: *` on PUT and DELETE (botocore 1.43, moto 5.2).
* GCS: the object's generation, `ifGenerationMatch=<generation>` (`0`: while absent).
* Azure Blob: `If-Match: <ETag>` / `If-None-Match: *` (azure-storage-blob's `etag` and
  `match_condition`, `overwrite=False`).
* A local folder: compare and rename under an exclusive flock of the folder (atomic among one
  machine's processes, not across NFS clients). Any other store (memory://) compares, then
  writes: not atomic.

Why by hand: none of the file systems exposes a generic compare-and-swap. s3fs passes S3's
conditional headers through `pipe_file`/`call_s3`; gcsfs's `pipe_file` knows only
`ifGenerationMatch=0`, so the JSON API's media upload and delete are called through gcsfs's own
authenticated session (`GCSFileSystem.call`); adlfs's `pipe_file` knows only `overwrite=False`,
so the blob client of adlfs's own service client is called with an ETag condition. Each store's
requests go through the same file system (credentials, endpoint, emulator) as every other read.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from typing import Any

from kubetune.storage import AZURE_SCHEMES, GCS_SCHEMES, S3_SCHEMES, Store


class ConditionalFile:
    """The file `rel` of `store`, written only at a known version (see the module)."""

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
                return _gcs_read(self.store.fs, self.target)
            if self.kind == "azure":
                return _azure(self.store.fs, self.target, "read")
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
            return _gcs_replace(self.store.fs, self.target, text.encode(), token)
        if self.kind == "azure":
            return _azure(self.store.fs, self.target, "replace", text.encode(), token)
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
            return _gcs_remove(self.store.fs, self.target, token)
        if self.kind == "azure":
            return bool(_azure(self.store.fs, self.target, "remove", None, token))
        with _FolderLock(self.target if self.store.protocol == "file" else None):
            current = self.read()
            if current is None or current[1] != token:
                return False
            self.store.remove(self.rel)
            return True


# -- Google Cloud Storage: generation preconditions of the JSON API ------------------------------
def _gcs_read(fs: Any, target: str) -> tuple[str, str]:
    generation = str(fs.info(target, refresh=True)["generation"])
    return fs.cat_file(f"{target}#{generation}" if fs.version_aware else target).decode(), generation


def _gcs_replace(fs: Any, target: str, data: bytes, token: str | None) -> str | None:
    """A multipart upload (gcsfs's own request for small files) with `ifGenerationMatch`
    (`0`: only while absent); GCS answers 412, which gcsfs raises as FileExistsError, when the
    object is at another generation."""
    import json

    from gcsfs.core import quote

    bucket, key, _ = fs.split_path(target)
    body = (b'--==0==\nContent-Type: application/json; charset=UTF-8\n\n' + json.dumps({"name": key}).encode()
            + b"\n--==0==\nContent-Type: application/octet-stream\n\n" + data + b"\n--==0==--")
    try:
        out = fs.call("POST", f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o", uploadType="multipart",
                      ifGenerationMatch=token or "0", data=body, json_out=True,
                      headers={"Content-Type": 'multipart/related; boundary="==0=="'})
    except FileExistsError:
        return None
    finally:
        fs.invalidate_cache(target)
    return str(out["generation"])


def _gcs_remove(fs: Any, target: str, token: str) -> bool:
    bucket, key, _ = fs.split_path(target)
    try:
        fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=token)
    except (FileExistsError, FileNotFoundError):
        return False
    finally:
        fs.invalidate_cache(target)
    return True


# -- Azure Blob: ETag conditions of the blob client -------------------------------------------
def _azure(fs: Any, target: str, action: str, data: bytes | None = None, token: str | None = None) -> Any:
    """Runs one conditional blob request on adlfs's own (async) service client, in adlfs's
    event loop: `read` -> (text, etag); `replace` -> the new etag or None; `remove` -> bool."""
    from fsspec.asyn import sync

    return sync(fs.loop, _azure_request, fs, target, action, data, token)


async def _azure_request(fs: Any, target: str, action: str, data: bytes | None, token: str | None) -> Any:
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

    container, blob, _ = fs.split_path(target)
    client = fs.service_client.get_blob_client(container, blob)
    condition = {"etag": token, "match_condition": MatchConditions.IfNotModified} if token else {}
    try:
        if action == "read":
            properties = await client.get_blob_properties()
            download = await client.download_blob(etag=properties.etag, match_condition=MatchConditions.IfNotModified)
            return (await download.readall()).decode(), properties.etag
        if action == "replace":
            out = await client.upload_blob(data, overwrite=bool(token), **condition)
            return out["etag"]
        await client.delete_blob(**condition)
        return True
    except ResourceNotFoundError:
        if action == "read":
            raise FileNotFoundError(target) from None
        return None if action == "replace" else False
    except (ResourceExistsError, ResourceModifiedError):  # 409 BlobAlreadyExists, 412 ConditionNotMet
        if action == "read":  # changed between its properties and its body: read again
            return await _azure_request(fs, target, action, data, token)
        return None if action == "replace" else False
    finally:
        fs.invalidate_cache(target)


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
