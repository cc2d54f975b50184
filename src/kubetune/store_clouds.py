"""What Google Cloud Storage (gcsfs) and Azure Blob (adlfs) need beyond fsspec's interface:
their options and a single-try probe of the bucket or container. Kept apart from `storage`
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
