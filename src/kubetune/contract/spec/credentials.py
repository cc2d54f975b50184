"""How a cluster's pods get the store's credentials without holding them: the
`kubernetes.workload_identity` section (GKE and Azure Workload Identity), and the one-line
check of what a cluster's pods would lack for a store (`credentials_problem`, run by `validate`
and `render`; a local run has your own credentials). Secrets are only ever named
(`kubernetes.storage_secret`, `kubernetes.secret_env`), never held (docs/storage.md#credentials-on-a-cluster).
pydantic only: the launcher imports it on a laptop.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

class WorkloadIdentity(BaseModel):
    """The pods' cloud identity by the platform's own mechanism, so no key is kept in a Secret:
    GKE Workload Identity or Azure Workload Identity. kubetune renders the ServiceAccount of
    `kubernetes.service_account` with the annotation the platform reads (and, for Azure, the
    label its webhook looks for on each pod); the cloud side (the IAM binding, the federated
    credential naming that ServiceAccount) is yours (docs/storage.md#credentials-on-a-cluster)."""

    # kubernetes.Strict's settings (that module imports this one, so not its class).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)

    gcp_service_account: str | None = Field(
        default=None,
        description="GKE: the Google service account the pods act as (NAME@PROJECT.iam.gserviceaccount.com), "
        "rendered as the ServiceAccount's iam.gke.io/gcp-service-account annotation",
    )
    azure_client_id: str | None = Field(
        default=None,
        description="AKS: the client id of the managed identity or app the pods act as, rendered as the "
        "ServiceAccount's azure.workload.identity/client-id annotation and the pods' azure.workload.identity/use label",
    )

    @field_validator("gcp_service_account")
    @classmethod
    def _google_account(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]@[-a-z0-9.]+\.gserviceaccount\.com$", value):
            raise ValueError(f"must be a Google service account email (NAME@PROJECT.iam.gserviceaccount.com), got {value!r}")
        return value

    @field_validator("azure_client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", value):
            raise ValueError(f"must be a client id (a GUID), got {value!r}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> WorkloadIdentity:
        if (self.gcp_service_account is None) == (self.azure_client_id is None):
            raise ValueError("set exactly one of gcp_service_account (GKE) and azure_client_id (AKS)")
        return self


# The schemes of the stores whose credentials the pods take one way only (storage_credentials).
GCS_SCHEMES = ("gs", "gcs")
AZURE_SCHEMES = ("az", "abfs", "abfss")


def credentials_problem(root: str, k: Any) -> str | None:
    """What a cluster's pods would lack to reach `root` (one line naming the fields), or None;
    `k` is the spec's `KubernetesSpec` (not imported: that module imports this one). A Google Cloud Storage root takes a key file from `storage_secret` (storage_credentials:
    file) or GKE Workload Identity; an Azure root takes environment variables from
    `storage_secret` (storage_credentials: env) or Azure Workload Identity. A local run ignores
    this (it has your own credentials)."""
    scheme = root.split("://", 1)[0].lower() if "://" in root else ""
    identity = k.workload_identity
    if scheme in GCS_SCHEMES:
        if identity is not None and identity.gcp_service_account:
            return None
        if k.storage_secret and k.storage_credentials == "file":
            return None
        if k.storage_secret:
            return (f"kubernetes.storage_credentials: a {scheme}:// root takes a key file from the Secret "
                    f"(storage_credentials: file), not environment variables")
        return (f"storage.root {root}: the pods would have no Google Cloud credentials: set "
                f"kubernetes.storage_secret (a Secret holding a key file) or kubernetes.workload_identity.gcp_service_account")
    if scheme in AZURE_SCHEMES:
        if identity is not None and identity.azure_client_id:
            return None
        if k.storage_secret and k.storage_credentials == "env":
            return None
        if k.storage_secret:
            return (f"kubernetes.storage_credentials: an {scheme}:// root takes its credentials as environment "
                    f"variables from the Secret (storage_credentials: env, keys AZURE_STORAGE_*), not a file")
        return (f"storage.root {root}: the pods would have no Azure credentials: set kubernetes.storage_secret "
                f"(storage_credentials: env) or kubernetes.workload_identity.azure_client_id")
    return None
