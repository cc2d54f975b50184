"""Check custom resources (JobSet, TrainJob, ClusterTrainingRuntime) against the CRDs their
projects release, vendored in `crd_yaml/` (versions and how to update them: its SOURCES.md).

A CRD's `openAPIV3Schema` is a structural schema in OpenAPI v3 dialect; the API server prunes
unknown fields of it, or refuses them under `kubectl apply --validate=strict`. We validate the
strict way: every object schema that lists `properties` (and does not say
`x-kubernetes-preserve-unknown-fields`) is closed with `additionalProperties: false`, and
`nullable: true` admits null. The CEL rules (`x-kubernetes-validations`) are not evaluated:
that needs a CEL interpreter the launcher does not carry.

Hand-written because no library turns a CRD into a strict JSON Schema: `kubernetes-validate`
ships only the built-in kinds, and the conversion is the few lines of `_strict`.
"""

from __future__ import annotations

import copy
import functools
import gzip
from importlib import resources
from typing import Any

import jsonschema
import yaml

# kind -> (apiVersion, vendored CRD file)
CRD_FILES: dict[str, tuple[str, str]] = {
    "JobSet": ("jobset.x-k8s.io/v1alpha2", "jobset.x-k8s.io_jobsets.yaml.gz"),
    "TrainJob": ("trainer.kubeflow.org/v1alpha1", "trainer.kubeflow.org_trainjobs.yaml.gz"),
    "ClusterTrainingRuntime": ("trainer.kubeflow.org/v1alpha1", "trainer.kubeflow.org_clustertrainingruntimes.yaml.gz"),
}


def is_custom(obj: dict[str, Any]) -> bool:
    """True when `obj` is a kind these CRDs define (validated here, not by kubernetes-validate)."""
    return CRD_FILES.get(obj.get("kind", ""), ("", ""))[0] == obj.get("apiVersion")


@functools.lru_cache(maxsize=None)
def crd(kind: str) -> dict[str, Any]:
    """The vendored CRD document of `kind`, as released."""
    data = resources.files("kubetune.launch").joinpath("crd_yaml", CRD_FILES[kind][1]).read_bytes()
    return yaml.load(gzip.decompress(data), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _strict(schema: Any) -> Any:
    """The CRD schema as strict JSON Schema: closed objects, `nullable` as a null type."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=None)
def _validator(kind: str) -> jsonschema.Draft7Validator:
    api_version = CRD_FILES[kind][0]
    group, version = api_version.split("/")
    doc = crd(kind)
    for served in doc["spec"]["versions"]:
        if served["name"] == version and served.get("served"):
            schema = copy.deepcopy(served["schema"]["openAPIV3Schema"])
            break
    else:  # the vendored CRD no longer serves what we render: caught by the golden tests
        raise LookupError(f"{doc['metadata']['name']} serves no {version}")
    assert doc["spec"]["group"] == group
    schema = _strict(schema)
    # The top level's apiVersion/kind/metadata are the API server's: name them exactly.
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return jsonschema.Draft7Validator(schema)


def custom_errors(obj: dict[str, Any]) -> list[jsonschema.ValidationError]:
    """Every error of `obj` against its kind's vendored CRD schema (none: valid)."""
    return list(_validator(obj["kind"]).iter_errors(obj))


def served_version(kind: str) -> str:
    """`group/version` the renderers write for `kind`."""
    return CRD_FILES[kind][0]
