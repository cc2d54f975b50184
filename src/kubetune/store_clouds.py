"""What Google Cloud Storage (gcsfs) and Azure Blob (adlfs) need beyond fsspec's interface:
their options, a single-try probe of the bucket or container, and the conditional writes of a
lease (GCS generation preconditions, Azure ETag conditions; docs/storage.md). Kept apart from `storage`
(which uses them) because each SDK's settings and retry layers are a subject of their own, and
neither is imported unless its scheme is used (the `gcs` and `azure` extras are optional).

Why single-try probes by hand: `Store.check_reachable` owns the retries of a pod's start,
bounded by `storage.startup_timeout_seconds`; gcsfs retries a refused connection six times with
backoff (32 s per probe against a closed port) and azure-core's retry policy waited 80 s, so
the probe asks once through each file system's own client (its credentials and endpoint).
"""

from __future__ import annotations

import os
from typing import Any

# The schemes of each store, as fsspec names them (gcsfs registers gs and gcs; adlfs az, abfs
# and abfss).
GCS_SCHEMES = ("gs", "gcs")
AZURE_SCHEMES = ("az", "abfs", "abfss")


def gcs_options(endpoint_url: str | None, emulator_host: str | None, timeouts: tuple[float, float]) -> dict[str, Any]:
    """gcsfs's options. The endpoint is `endpoint_url` or, as the Google SDKs do,
    STORAGE_EMULATOR_HOST (`emulator_host`; gcsfs reads it itself). Against an emulator the
    token is anonymous (emulators take none, and the default chain would ask a metadata
    server), and gcsfs's experimental zonal/HNS bucket lookup is switched off before gcsfs is
    imported: it asks the storage-control gRPC API, which no emulator serves, and waited 60 s
    per bucket for it. Credentials otherwise come from gcsfs's default chain
    (GOOGLE_APPLICATION_CREDENTIALS, GKE Workload Identity)."""
    options: dict[str, Any] = {"requests_timeout": timeouts[1], "skip_instance_cache": True}
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    if endpoint_url or emulator_host:
        options["token"] = "anon"
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    return options


def azure_options(timeouts: tuple[float, float]) -> dict[str, Any]:
    """adlfs's options: timeouts bounded like every store's (`storage.store_timeouts`). The
    account and its credential come from adlfs's own environment (AZURE_STORAGE_CONNECTION_STRING,
    or AZURE_STORAGE_ACCOUNT_NAME with a key, SAS token or workload identity), never the spec."""
    return {"connection_timeout": max(1, int(timeouts[0])), "read_timeout": max(1, int(timeouts[1])),
            "skip_instance_cache": True}


def probe_gcs(fs: Any, bucket: str, timeouts: tuple[float, float]) -> None:
    """One GET of the bucket's metadata through gcsfs's own session, without gcsfs's retry
    decorator (`__wrapped__`, which the `decorator` package keeps): a missing bucket is
    FileNotFoundError, refused or silent endpoints raise at once."""
    from fsspec.asyn import sync
    from gcsfs.retry import validate_response

    single_try = type(fs)._request.__wrapped__

    async def probe() -> None:
        status, _, _, contents = await single_try(fs, "GET", "b/{}", bucket)
        validate_response(status, contents, f"b/{bucket}")

    sync(fs.loop, probe, timeout=sum(timeouts))


def probe_azure(fs: Any, container: str, timeouts: tuple[float, float]) -> None:
    """One request for the container's properties through adlfs's own service client, with
    azure-core's retries off for it (`retry_total=0`): a missing container is
    FileNotFoundError."""
    from azure.core.exceptions import ResourceNotFoundError
    from fsspec.asyn import sync

    async def probe() -> None:
        try:
            await fs.service_client.get_container_client(container).get_container_properties(
                retry_total=0, connection_timeout=timeouts[0], read_timeout=timeouts[1])
        except ResourceNotFoundError:
            raise FileNotFoundError(container) from None

    sync(fs.loop, probe, timeout=sum(timeouts))


# -- conditional writes (the lease's compare-and-swap: workload/checkpointing/lease.ConditionalFile) --
# Why by hand: gcsfs's `pipe_file` knows only `ifGenerationMatch=0`, so the JSON API's multipart
# upload and delete are called through gcsfs's own authenticated session (`GCSFileSystem.call`);
# adlfs's `pipe_file` knows only `overwrite=False`, so the blob client of adlfs's own service
# client is called with an ETag condition. Same credentials and endpoint as every other request.
def gcs_read_versioned(fs: Any, target: str) -> tuple[str, str]:
    """(text, generation): the generation read first, so a change before the body fails the
    next `gcs_replace_if`."""
    generation = str(fs.info(target, refresh=True)["generation"])
    return fs.cat_file(f"{target}#{generation}" if fs.version_aware else target).decode(), generation


def gcs_replace_if(fs: Any, target: str, data: bytes, token: str | None) -> str | None:
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


def gcs_remove_if(fs: Any, target: str, token: str) -> bool:
    """A delete with `ifGenerationMatch`; False when the object is at another generation (412)
    or gone."""
    bucket, key, _ = fs.split_path(target)
    try:
        fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=token)
    except (FileExistsError, FileNotFoundError):
        return False
    finally:
        fs.invalidate_cache(target)
    return True


def azure_conditional(fs: Any, target: str, action: str, data: bytes | None = None, token: str | None = None) -> Any:
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
