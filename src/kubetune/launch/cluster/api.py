"""The Kubernetes API as kubetune uses it: create, read, list, delete, watch and pod logs.

Built on the official `kubernetes` client. Every API failure (forbidden, not found, conflict,
invalid, unreachable) becomes a `ClusterError` with one line naming what was attempted; the CLI
prints it and exits 1. Nothing here prints.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

# Seconds between polls where no watch applies (objects of several kinds being deleted, a pod
# and its Job at once).
POLL_SECONDS = 2.0
# (connect, read) timeouts of ordinary API calls; log streams have none.
REQUEST_TIMEOUT = (10, 60)
# How long the server keeps one watch request open; the client then starts the next one from
# the last resourceVersion it saw, so nothing is missed.
WATCH_SECONDS = 60


class ClusterError(Exception):
    """An API or connection failure, as one line naming what was attempted. Exit code 1.
    `status` is the HTTP status of an API error (None for connection failures)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Kind:
    """How the client reaches one kind of object kubetune creates. A custom resource (the
    JobSet and TrainJob engines) has a `group_version` and goes through CustomObjectsApi as a
    plain dict, read back as a `CustomObject`."""

    kind: str
    api: str  # the client class
    method: str  # `create_namespaced_<method>`
    model: str  # the client model of a body
    resource: str  # plural, as RBAC and messages name it
    group_version: str = ""  # custom resources: `group/version`

    @property
    def custom(self) -> bool:
        return bool(self.group_version)


# The one ordering table: objects are created in this order (what pods mount or resolve exists
# before the pods start) and deleted in the reverse order (Jobs and their pods first).
KINDS: tuple[Kind, ...] = (
    Kind("ConfigMap", "CoreV1Api", "config_map", "V1ConfigMap", "configmaps"),
    Kind("ServiceAccount", "CoreV1Api", "service_account", "V1ServiceAccount", "serviceaccounts"),
    Kind("Service", "CoreV1Api", "service", "V1Service", "services"),
    Kind("NetworkPolicy", "NetworkingV1Api", "network_policy", "V1NetworkPolicy", "networkpolicies"),
    Kind("Role", "RbacAuthorizationV1Api", "role", "V1Role", "roles"),
    Kind("RoleBinding", "RbacAuthorizationV1Api", "role_binding", "V1RoleBinding", "rolebindings"),
    Kind("CronJob", "BatchV1Api", "cron_job", "V1CronJob", "cronjobs"),
    Kind("Job", "BatchV1Api", "job", "V1Job", "jobs"),
    Kind("JobSet", "CustomObjectsApi", "custom_object", "", "jobsets", "jobset.x-k8s.io/v1alpha2"),
    Kind("TrainJob", "CustomObjectsApi", "custom_object", "", "trainjobs", "trainer.kubeflow.org/v1alpha1"),
)
BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}
# Kinds that are waited on with a watch (RBAC grants `watch` on exactly these).
WATCHED = {"Job": ("BatchV1Api", "list_namespaced_job"), "Pod": ("CoreV1Api", "list_namespaced_pod"),
           "JobSet": ("CustomObjectsApi", "list_namespaced_custom_object"),
           "TrainJob": ("CustomObjectsApi", "list_namespaced_custom_object")}


class CustomObject:
    """A custom resource as read from the API server, with the attributes the state code reads
    of the client's models (`metadata.name`, `.labels`, `.creation_timestamp`); the rest
    stays in `raw`. Hand-written: the client has no models for other projects' kinds."""

    def __init__(self, raw: dict[str, Any]):
        self.raw = raw
        meta = raw.get("metadata") or {}
        created = meta.get("creationTimestamp")
        self.metadata = SimpleNamespace(
            name=meta.get("name"), labels=meta.get("labels") or {}, annotations=meta.get("annotations") or {},
            creation_timestamp=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
        )
        self.kind = raw.get("kind")


def create_rank(kind: str | None) -> int:
    """Position of `kind` in KINDS (unknown kinds last)."""
    order = [k.kind for k in KINDS]
    return order.index(kind) if kind in order else len(order)


def deletion_order() -> list[str]:
    """The kinds in the order they are deleted: the reverse of creation."""
    return [k.kind for k in reversed(KINDS)]


def ref(obj: dict[str, Any]) -> str:
    """`Kind/name` of a rendered object, as every message names it."""
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def one_line(text: str) -> str:
    """Collapse a multi-line server or client message into one line."""
    return " ".join(str(text).split())


class Cluster:
    """One namespace of one cluster, through an authenticated `ApiClient`."""

    def __init__(self, api_client: client.ApiClient, namespace: str):
        self.api_client = api_client
        self.namespace = namespace
        self._apis = {
            "CoreV1Api": client.CoreV1Api(api_client),
            "BatchV1Api": client.BatchV1Api(api_client),
            "NetworkingV1Api": client.NetworkingV1Api(api_client),
            "RbacAuthorizationV1Api": client.RbacAuthorizationV1Api(api_client),
            "CustomObjectsApi": client.CustomObjectsApi(api_client),
        }

    @property
    def core(self) -> client.CoreV1Api:
        return self._apis["CoreV1Api"]

    # -- errors ------------------------------------------------------------------------------

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Turn an API or connection failure into a one-line ClusterError naming `action`."""
        try:
            yield
        except ApiException as exc:
            raise ClusterError(explain(exc, action), exc.status or None) from None
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            if isinstance(reason, urllib3.exceptions.NewConnectionError):
                reason = "connection refused" if "refused" in str(reason).lower() else str(reason).split(": ", 1)[-1]
            raise ClusterError(
                f"{action}: cannot reach the Kubernetes API server at {self.api_client.configuration.host}: {one_line(str(reason))}"
            ) from None
        except ValidationError as exc:  # an answer this client version cannot read
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ClusterError(f"{action}: unexpected answer from the API server: {where}: {first['msg']}") from None

    # -- objects -----------------------------------------------------------------------------

    def _method(self, kind: str, verb: str) -> Callable[..., Any]:
        """`verb_namespaced_<kind>` of the kind's API; for a custom resource, the
        CustomObjectsApi call with its group, version and plural bound, and what it reads
        wrapped as a CustomObject."""
        k = BY_KIND[kind]
        if not k.custom:
            return getattr(self._apis[k.api], f"{verb}_namespaced_{k.method}")
        group, version = k.group_version.split("/")
        call = getattr(self._apis[k.api], f"{'get' if verb == 'read' else verb}_namespaced_custom_object")

        def custom(*args: Any, **kwargs: Any) -> Any:
            if verb == "create":  # (namespace, body): the client's order is group, version, namespace, plural, body
                namespace, body = args
                return CustomObject(call(group, version, namespace, k.resource, body, **kwargs))
            if verb == "list":
                (namespace,) = args
                answer = call(group, version, namespace, k.resource, **kwargs)
                return SimpleNamespace(items=[CustomObject(o) for o in answer.get("items", [])])
            name, namespace = args
            answer = call(group, version, namespace, k.resource, name, **kwargs)
            return CustomObject(answer) if verb == "read" else answer
        return custom

    def body(self, obj: dict[str, Any]) -> Any:
        """A client model of a rendered dict, in this namespace. Quantities the renderer gave
        as numbers become strings, as the API's schema has them."""
        if obj.get("kind") not in BY_KIND:
            raise ClusterError(f"{ref(obj)}: kubetune does not create objects of kind {obj.get('kind')}")
        body = copy.deepcopy(obj)
        body.setdefault("metadata", {})["namespace"] = self.namespace
        _stringify_quantities(body)
        if BY_KIND[obj["kind"]].custom:  # validated against its CRD when rendered
            return body
        model = getattr(client, BY_KIND[obj["kind"]].model)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ClusterError(f"{ref(obj)} is not a valid {obj['kind']}: {where}: {first['msg']}") from None

    def check_served(self, kind: str) -> None:
        """A one-line ClusterError unless the cluster serves custom resource `kind` (its CRD is
        installed), asked through discovery, which every authenticated user may read."""
        group, version = BY_KIND[kind].group_version.split("/")
        with self.errors(f"discover the API groups of the cluster for {kind}"):
            groups = client.ApisApi(self.api_client).get_api_versions(_request_timeout=REQUEST_TIMEOUT).groups
        if not any(g.name == group and any(v.version == version for v in g.versions) for g in groups):
            project = {"JobSet": "JobSet (jobset.x-k8s.io)", "TrainJob": "Kubeflow Trainer v2"}.get(kind, group)
            raise ClusterError(f"the cluster does not serve {kind} {group}/{version}: install {project}, "
                               f"or submit with --engine job")

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> Any:
        body = self.body(obj)
        what = f"create {ref(obj)} in namespace {self.namespace}" + (" (dry run)" if dry_run else "")
        with self.errors(what):
            return self._method(obj["kind"], "create")(
                self.namespace, body, dry_run="All" if dry_run else None, _request_timeout=REQUEST_TIMEOUT
            )

    def read(self, kind: str, name: str) -> Any | None:
        """The object, or None when it does not exist."""
        try:
            with self.errors(f"read {kind}/{name} in namespace {self.namespace}"):
                return self._method(kind, "read")(name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, selector: str) -> list[Any]:
        """Objects of `kind` with the labels; for a custom resource the cluster does not serve
        (404: that engine is not installed) or this user may not list (403: its Role is not
        bound, so nothing of ours is there), none."""
        try:
            with self.errors(f"list {BY_KIND[kind].resource} in namespace {self.namespace}"):
                return self._method(kind, "list")(self.namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT).items
        except ClusterError as exc:
            if BY_KIND[kind].custom and exc.status in (403, 404):
                return []
            raise

    def delete(self, kind: str, name: str, propagation: str = "Background", dry_run: bool = False) -> bool:
        """Delete one object; False when it was already gone."""
        what = f"delete {kind}/{name} in namespace {self.namespace}" + (" (dry run)" if dry_run else "")
        try:
            with self.errors(what):
                self._method(kind, "delete")(
                    name,
                    self.namespace,
                    propagation_policy=propagation,
                    dry_run="All" if dry_run else None,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            return True
        except ClusterError as exc:
            if exc.status == 404:
                return False
            raise

    def list_pods(self, selector: str) -> list[Any]:
        with self.errors(f"list pods in namespace {self.namespace}"):
            return self.core.list_namespaced_pod(self.namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT).items

    def read_job(self, name: str) -> Any:
        """Job `name`; a ClusterError when it is gone (someone cancelled it)."""
        job = self.read("Job", name)
        if job is None:
            raise ClusterError(job_gone(name, self.namespace))
        return job

    def watch(self, kind: str, selector: str | None = None, name: str | None = None) -> Iterator[tuple[str, Any]]:
        """(event type, object) for Jobs or pods as they change: first ADDED for what exists,
        then ADDED / MODIFIED / DELETED. Endless: the caller stops reading when it has what it
        waits for. The client renews the request from the last resourceVersion it saw."""
        api, method = WATCHED[kind]
        watcher = watch.Watch()
        what = f"watch {kind.lower()}s in namespace {self.namespace}"
        custom = kind in BY_KIND and BY_KIND[kind].custom
        group_version = BY_KIND[kind].group_version.split("/") if custom else []
        plural = [BY_KIND[kind].resource] if custom else []
        with self.errors(what):
            stream = watcher.stream(
                getattr(self._apis[api], method),
                *group_version,
                self.namespace,
                *plural,
                label_selector=selector,
                field_selector=f"metadata.name={name}" if name else None,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=(REQUEST_TIMEOUT[0], WATCH_SECONDS + REQUEST_TIMEOUT[1]),
            )
            try:
                for event in stream:
                    obj = event["object"]
                    yield event["type"], CustomObject(obj) if custom else obj
            finally:
                watcher.stop()

    # -- logs --------------------------------------------------------------------------------

    def pod_log(self, pod: Any, tail: int | None = None) -> list[str]:
        name = pod.metadata.name
        with self.errors(f"read the log of pod {name} in namespace {self.namespace}"):
            text = self.core.read_namespaced_pod_log(
                name, self.namespace, container=_container(pod), tail_lines=tail, _request_timeout=REQUEST_TIMEOUT
            )
        return (text or "").splitlines()

    def pod_log_lines(self, pod: Any) -> Iterator[str]:
        """Follow one pod's log until its container ends, line by line."""
        name = pod.metadata.name
        with self.errors(f"follow the log of pod {name} in namespace {self.namespace}"):
            resp = self.core.read_namespaced_pod_log(
                name,
                self.namespace,
                container=_container(pod),
                follow=True,
                _preload_content=False,  # a stream: no read timeout, a quiet rank is not an error
            )
            try:
                for raw in resp:
                    yield raw.decode("utf-8", errors="replace").rstrip("\r\n")
            finally:
                resp.release_conn()


def job_gone(name: str, namespace: str) -> str:
    return f"Job {name} in namespace {namespace} no longer exists (cancelled?)"


def explain(exc: ApiException, action: str) -> str:
    """`action: <what the status means>: <the server's message>`, on one line."""
    message = ""
    if exc.body:
        try:
            message = json.loads(exc.body).get("message") or ""
        except (ValueError, AttributeError):
            message = str(exc.body)
    if exc.status == 0 or exc.status is None:
        return f"{action}: {one_line(exc.reason or 'no response from the API server')}"
    label = {
        400: "bad request",
        401: "unauthorized (check the credentials in your kubeconfig)",
        403: "forbidden",
        404: "not found",
        409: "already exists",
        422: "invalid",
    }.get(exc.status, f"HTTP {exc.status} {exc.reason or ''}".strip())
    return f"{action}: {label}" + (f": {one_line(message)}" if message else "")


def _container(pod: Any) -> str | None:
    return pod.spec.containers[0].name if pod.spec and pod.spec.containers else None


def _stringify_quantities(node: Any, key: str = "") -> None:
    """Resource quantities as strings: `limits: {nvidia.com/gpu: 1}` -> "1"."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("limits", "requests") and isinstance(v, dict):
                for q, amount in v.items():
                    if isinstance(amount, (int, float)) and not isinstance(amount, bool):
                        v[q] = str(amount)
            elif k == "sizeLimit" and isinstance(v, (int, float)) and not isinstance(v, bool):
                node[k] = str(v)
            else:
                _stringify_quantities(v, k)
    elif isinstance(node, list):
        for item in node:
            _stringify_quantities(item, key)
