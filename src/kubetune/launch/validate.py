"""Check Kubernetes objects against the official OpenAPI schemas of a Kubernetes version.

Uses the schemas the `kubernetes-validate` package ships, in their *strict* form: a field the
target version does not know is an error, exactly as `kubectl apply --validate=strict` and the
API server's field validation treat it. Schemas are loaded once per version and kind (the
definitions file is several MB), so validating every job for every version stays fast.

Custom resources (JobSet, TrainJob, ClusterTrainingRuntime) are checked against their projects'
released CRDs (`kubetune.launch.crds`, strict in the same way), and the parts of them that are
built-in Kubernetes objects against that version's schemas too: their `metadata` as an
ObjectMeta and every Job template they embed as a Job, so a pod field the cluster's Kubernetes
version lacks is refused there as well.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

from kubetune.contract.spec.job import SpecError
from kubetune.launch import crds

# The oldest version we render for: podFailurePolicy, podReplacementPolicy and the pods'
# completion-index label (names.COMPLETION_INDEX_KEY) are beta and on by default from 1.29.
MIN_VERSION = (1, 29)


class ValidationError(SpecError):
    """An object does not match its schema: one line naming the version, object and field."""


def _parse(version: str) -> tuple[int, int]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", version.strip())
    if not match:
        raise SpecError(f"--k8s-version {version}: expected MAJOR.MINOR such as 1.31")
    return int(match.group(1)), int(match.group(2))


@functools.lru_cache(maxsize=1)
def supported_versions() -> tuple[str, ...]:
    """Kubernetes minor versions we can validate for: 1.29 up to the newest the installed
    `kubernetes-validate` ships."""
    found = {_parse(v) for v in kv.all_versions()}
    return tuple(f"{a}.{b}" for a, b in sorted(found) if (a, b) >= MIN_VERSION)


def latest_version() -> str:
    return supported_versions()[-1]


def normalize_version(version: str) -> str:
    """`v1.31`, `1.31.4` → `1.31`; one-line SpecError when unsupported."""
    major, minor = _parse(version)
    name = f"{major}.{minor}"
    supported = supported_versions()
    if name not in supported:
        raise SpecError(
            f"--k8s-version {version}: unsupported (supported: {supported[0]} to {supported[-1]})"
        )
    return name


@functools.lru_cache(maxsize=None)
def _registry(version: str) -> Registry:
    definitions = kv.schema_contents(f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json", version)
    return Resource.from_contents(definitions) @ Registry()


@functools.lru_cache(maxsize=None)
def _validator(version: str, kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # networking.k8s.io/v1 -> networking-v1
    path = f"kubernetes-json-schema/v{version}.0-local-strict/{kind.lower()}-{group}.json"
    try:
        schema = kv.schema_contents(path, version)
    except FileNotFoundError:
        raise ValidationError(f"kubernetes {version}: no schema for {kind} {api_version}") from None
    registry = Resource.from_contents(schema) @ _registry(version)
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.lru_cache(maxsize=None)
def _metadata_validator(version: str) -> jsonschema.Draft202012Validator:
    ref = {"$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    return jsonschema.Draft202012Validator(ref, registry=_registry(version))


def _embedded_jobs(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path, Job) for every Job template a JobSet or ClusterTrainingRuntime embeds."""
    spec = obj.get("spec", {})
    jobset = spec.get("template", {}).get("spec", {}) if obj["kind"] == "ClusterTrainingRuntime" else spec
    prefix = "spec.template.spec" if obj["kind"] == "ClusterTrainingRuntime" else "spec"
    out = []
    for i, replicated in enumerate(jobset.get("replicatedJobs", []) if obj["kind"] != "TrainJob" else []):
        template = replicated.get("template", {})
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {**template.get("metadata", {}), "name": replicated.get("name", "job")},
               "spec": template.get("spec", {})}
        out.append((f"{prefix}.replicatedJobs.{i}.template", job))
    return out


def _errors(obj: dict[str, Any], version: str) -> list[tuple[str, jsonschema.ValidationError]]:
    """(path prefix, error) of `obj` for `version`: built-in kinds by their schema; custom
    resources by their CRD, their metadata and the Jobs they embed."""
    if not crds.is_custom(obj):
        return [("", e) for e in _validator(version, obj["kind"], obj["apiVersion"]).iter_errors(obj)]
    errors = [("", e) for e in crds.custom_errors(obj)]
    errors += [("metadata", e) for e in _metadata_validator(version).iter_errors(obj.get("metadata", {}))]
    for path, job in _embedded_jobs(obj):
        errors += [(path, e) for e in _validator(version, "Job", "batch/v1").iter_errors(job)]
    return errors


def validate_object(obj: dict[str, Any], version: str) -> None:
    """Raise ValidationError (one line) unless `obj` is valid for Kubernetes `version`."""
    version = normalize_version(version)
    errors = _errors(obj, version)
    error = jsonschema.exceptions.best_match(e for _, e in errors)
    if error is not None:
        prefix = next(p for p, e in errors if e is error)
        where = ".".join([prefix] * bool(prefix) + [str(p) for p in error.absolute_path]) or "(top level)"
        name = obj.get("metadata", {}).get("name", "?")
        message = error.message.splitlines()[0]
        if len(message) > 200:
            message = message[:200] + "..."
        raise ValidationError(f"kubernetes {version}: {obj['kind']}/{name}: {where}: {message}")


def validate_objects(objs: list[dict[str, Any]], version: str) -> None:
    for obj in objs:
        validate_object(obj, version)
