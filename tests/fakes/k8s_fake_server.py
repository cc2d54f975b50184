"""A small, in-memory Kubernetes API server for tests of `kubetune.launch.cluster`.

It speaks the subset of the REST API the launcher uses, over real HTTP on 127.0.0.1 (port 0),
so tests drive the official `kubernetes` client end to end without patching it:

- create / get / list (labelSelector: `k=v`, `k!=v`, `k`, `!k`, `k in (a,b)`) / delete for
  v1 ConfigMaps, Services, Pods; batch/v1 Jobs and CronJobs; networking.k8s.io/v1
  NetworkPolicies; namespaced and (for list) all-namespaces paths;
- `dryRun=All` on create and delete: validated (and 409 on a clash) but nothing is stored;
- pod logs, with `tailLines`, `container` and `follow=true` streamed with chunked transfer
  encoding until the pod terminates; a 400 for a pod whose container has not started;
- `watch=true` on list paths (labelSelector, fieldSelector `metadata.name=X`, resourceVersion,
  timeoutSeconds): ADDED events for what exists (without a resourceVersion), then every
  ADDED / MODIFIED / DELETED as it happens, one JSON object per line, chunked, as the real API
  server streams them to the official client's `watch.Watch`;
- `PATCH` with `application/merge-patch+json` (RFC 7386: null removes a key), as the progress
  reporter of the train pods sends it; Roles and RoleBindings stored like any object;
- `tls=(certificate, key)`: served over HTTPS, as an in-cluster pod reaches the API server;
- errors as `Status` objects: 401 without the bearer token, 403 for verbs a test denies,
  404, 409 AlreadyExists, 422 Invalid;
- deleting an object deletes what it owns, recursively, unless `propagationPolicy=Orphan`
  (the garbage collector's cascade: a TrainJob its JobSet, a JobSet its Jobs, a Job its pods);
- the custom resources of the JobSet and Kubeflow Trainer engines (`jobsets`, `trainjobs`), as
  the API server serves an installed CRD: discovery (`/apis`, `/apis/GROUP/VERSION`), create,
  get, list, watch, delete; `crds=False` is a cluster without them (404, as when not installed).

`fakes.k8s_fake_engines` plays their controllers (a JobSet's Jobs, restarts per incident; a
TrainJob's JobSet from its runtime) when a test attaches them.

Tests drive the state a controller and the kubelet would: `add_pod`, `log`, `finish_pod`,
`set_job_condition`, or `script_job` to play a whole Job run (pods pending -> running with
log lines -> succeeded, or failed with a condition reason) as soon as the launcher creates it.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from kubetune.launch import crds

# plural -> (group/version path prefix, kind, API group for messages)
RESOURCES: dict[str, tuple[str, str, str]] = {
    "configmaps": ("api/v1", "ConfigMap", ""),
    "serviceaccounts": ("api/v1", "ServiceAccount", ""),
    "services": ("api/v1", "Service", ""),
    "pods": ("api/v1", "Pod", ""),
    "jobs": ("apis/batch/v1", "Job", "batch"),
    "cronjobs": ("apis/batch/v1", "CronJob", "batch"),
    "networkpolicies": ("apis/networking.k8s.io/v1", "NetworkPolicy", "networking.k8s.io"),
    "roles": ("apis/rbac.authorization.k8s.io/v1", "Role", "rbac.authorization.k8s.io"),
    "rolebindings": ("apis/rbac.authorization.k8s.io/v1", "RoleBinding", "rbac.authorization.k8s.io"),
    "jobsets": ("apis/jobset.x-k8s.io/v1alpha2", "JobSet", "jobset.x-k8s.io"),
    "trainjobs": ("apis/trainer.kubeflow.org/v1alpha1", "TrainJob", "trainer.kubeflow.org"),
}
# Served only while their CRDs are installed (`FakeKubeAPI(crds=...)`).
CUSTOM = {"jobsets", "trainjobs"}
PATH = re.compile(
    r"^/(?P<prefix>api/v1|apis/[^/]+/[^/]+)/(?:namespaces/(?P<ns>[^/]+)/)?(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>log))?$"
)
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
INDEX_KEY = "batch.kubernetes.io/job-completion-index"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: Any):
        super().__init__(message)
        self.code = code
        self.body = status_body(code, reason, message, **details)


def parse_selector(selector: str) -> list[tuple[str, str, Any]]:
    """`a=b,c!=d,e,!f,g in (x,y)` -> [(op, key, value)]."""
    terms = []
    for part in re.findall(r"[^,(]+(?:\([^)]*\))?", selector):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^(\S+)\s+(in|notin)\s+\((.*)\)$", part)
        if m:
            terms.append((m.group(2), m.group(1), {v.strip() for v in m.group(3).split(",")}))
        elif "!=" in part:
            k, v = part.split("!=", 1)
            terms.append(("!=", k.strip(), v.strip()))
        elif "=" in part:
            k, v = part.replace("==", "=").split("=", 1)
            terms.append(("=", k.strip(), v.strip()))
        elif part.startswith("!"):
            terms.append(("!", part[1:].strip(), None))
        else:
            terms.append(("exists", part, None))
    return terms


def matches(labels: dict[str, str], terms: list[tuple[str, str, Any]]) -> bool:
    for op, key, value in terms:
        have = labels.get(key)
        ok = {
            "=": have == value,
            "!=": have != value,
            "exists": key in labels,
            "!": key not in labels,
            "in": op == "in" and have in value,
            "notin": op == "notin" and have not in value,
        }[op]
        if not ok:
            return False
    return True


@dataclass
class PodRun:
    """What one completion index does in a scripted Job run."""

    lines: list[str] = field(default_factory=list)
    exit_code: int = 0


@dataclass
class JobScript:
    """A Job run the fake controller plays once the Job is created (not for dry runs).

    `outcome` is "Complete" or a failure reason (BackoffLimitExceeded, DeadlineExceeded,
    PodFailurePolicy); `pods` maps a completion index to its run (default: one quiet pod per
    completion that exits 0, or 1 when the Job fails)."""

    outcome: str = "Complete"
    pods: dict[int, PodRun] = field(default_factory=dict)
    pending_s: float = 0.05
    line_s: float = 0.01
    message: str = ""


class FakeKubeAPI:
    def __init__(self, token: str = "test-token", lifetime_s: float = 120.0, crds: bool = True,
                 tls: tuple[Path, Path] | None = None):
        self.token = token
        self.tls = tls
        self.crds = crds
        # Called as hook(api, plural, ns, obj) after every (not dry-run) create, outside the lock:
        # how fakes.k8s_fake_engines plays a controller.
        self.create_hooks: list[Any] = []
        self.lifetime_s = lifetime_s
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str], list[str]] = {}
        self.denied: set[tuple[str, str]] = set()
        # RBAC: when set, only these (api group, resource, verb) are allowed; `used` records
        # every (group, resource, verb) a request needed.
        self.allowed: set[tuple[str, str, str]] | None = None
        # Rules with resourceNames: (group, resource, verb) -> the names they allow.
        self.allowed_names: dict[tuple[str, str, str], set[str]] = {}
        self.used: set[tuple[str, str, str]] = set()
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []
        self.answered: list[tuple[str, str, dict[str, list[str]], Any]] = []
        self.scripts: dict[str, JobScript] = {}
        # Every change, for watches: (resourceVersion, ADDED|MODIFIED|DELETED, plural, ns, object).
        self.events: list[tuple[int, str, str, str, dict[str, Any]]] = []
        self.closing = False
        self._rv = itertools.count(1)
        self._threads: list[threading.Thread] = []
        self.httpd: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "FakeKubeAPI":
        api = self

        class Handler(_Handler):
            server_api = api

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if self.tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        # Stops itself even if a test forgets to.
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        with self.lock:
            if self.closing:
                return
            self.closing = True
            self.changed.notify_all()
        self._timer.cancel()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> "FakeKubeAPI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.httpd.server_address[1]}"

    def kubeconfig(self, path: Path, namespace: str | None = "ml", token: str | None = None) -> Path:
        context: dict[str, Any] = {"cluster": "fake", "user": "launcher"}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "launcher", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake", "context": context}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- state, for tests ------------------------------------------------------------------

    def deny(self, verb: str, plural: str) -> None:
        """Answer 403 Forbidden to `verb` (create/get/list/delete) on `plural` (e.g. "jobs",
        "pods/log")."""
        self.denied.add((verb, plural))

    def wait_for_request(self, method: str, path_suffix: str, timeout: float = 20.0) -> None:
        """Block until a request `method` on a path ending in `path_suffix` has been answered
        (or at least its answer computed), so a test can change state after the launcher saw it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(m == method and path.endswith(path_suffix) for m, path, _, _ in self.answered):
                    return
            time.sleep(0.005)
        raise TimeoutError(f"no {method} ...{path_suffix} within {timeout}s")

    def enforce_role(self, rules: list[dict[str, Any]]) -> None:
        """Allow only what a Role's rules grant (as the RBAC authorizer would); anything else
        is 403 Forbidden."""
        granted = [
            ((group, resource, verb), rule.get("resourceNames"))
            for rule in rules
            for group in rule.get("apiGroups", [])
            for resource in rule.get("resources", [])
            for verb in rule.get("verbs", [])
        ]
        self.allowed = {key for key, only in granted if not only}
        self.allowed_names = {}
        for key, only in granted:
            if only:
                self.allowed_names.setdefault(key, set()).update(only)

    def get(self, plural: str, name: str, ns: str = "ml") -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.get((plural, ns, name))
            return copy.deepcopy(obj) if obj else None

    def names(self, plural: str, ns: str = "ml") -> list[str]:
        with self.lock:
            return sorted(n for (p, s, n) in self.objects if p == plural and s == ns)

    def put(self, plural: str, obj: dict[str, Any], ns: str = "ml") -> dict[str, Any]:
        """Store an object as if created earlier (no checks)."""
        with self.lock:
            obj = copy.deepcopy(obj)
            self._fill_metadata(obj, plural, ns)
            key = (plural, ns, obj["metadata"]["name"])
            event = "MODIFIED" if key in self.objects else "ADDED"
            self.objects[key] = obj
            self._emit(event, plural, ns, obj)
            return obj

    def add_pod(
        self,
        job: str,
        index: int = 0,
        phase: str = "Running",
        lines: list[str] | tuple[str, ...] = (),
        restarts: int = 0,
        ns: str = "ml",
        name: str | None = None,
        waiting_reason: str = "ContainerCreating",
    ) -> str:
        """A pod of Job `job` for completion `index`, as the Job controller would create it."""
        with self.lock:
            owner = self.objects.get(("jobs", ns, job))
            template = (owner or {}).get("spec", {}).get("template", {})
            labels = dict(template.get("metadata", {}).get("labels", {}))
            labels.update({"batch.kubernetes.io/job-name": job, "job-name": job, INDEX_KEY: str(index)})
            containers = template.get("spec", {}).get("containers") or [{"name": "main", "image": "x"}]
            pod_name = name or f"{job}-{index}-{uuid.uuid4().hex[:5]}"
            metadata: dict[str, Any] = {
                "name": pod_name,
                "labels": labels,
                "annotations": {INDEX_KEY: str(index)},
            }
            if owner:
                metadata["ownerReferences"] = [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": owner["metadata"]["uid"], "controller": True}
                ]
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": metadata,
                "spec": {"containers": [{"name": c["name"], "image": c.get("image", "x")} for c in containers]},
                "status": {},
            }
            self.put("pods", pod, ns)
            self.logs[(ns, pod_name)] = list(lines)
            self._set_pod_phase(ns, pod_name, phase, restarts=restarts, waiting_reason=waiting_reason)
            return pod_name

    def _set_pod_phase(
        self, ns: str, pod: str, phase: str, exit_code: int = 0, restarts: int = 0, waiting_reason: str = "ContainerCreating"
    ) -> None:
        obj = self.objects[("pods", ns, pod)]
        container = obj["spec"]["containers"][0]["name"]
        if phase == "Pending":
            state: dict[str, Any] = {"waiting": {"reason": waiting_reason}}
        elif phase == "Running":
            state = {"running": {"startedAt": now()}}
        else:
            state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if phase == "Succeeded" else "Error",
                    "startedAt": now(),
                    "finishedAt": now(),
                }
            }
        status = obj["status"]
        status["phase"] = phase
        if phase != "Pending":
            status.setdefault("startTime", now())
        previous = (status.get("containerStatuses") or [{}])[0].get("restartCount", 0)
        status["containerStatuses"] = [
            {
                "name": container,
                "image": obj["spec"]["containers"][0]["image"],
                "imageID": "",
                "ready": phase == "Running",
                "restartCount": max(restarts, previous),
                "state": state,
            }
        ]
        self._emit("MODIFIED", "pods", ns, obj)

    def set_pod_phase(self, pod: str, phase: str, exit_code: int = 0, ns: str = "ml") -> None:
        with self.lock:
            self._set_pod_phase(ns, pod, phase, exit_code)

    def log(self, pod: str, *lines: str, ns: str = "ml") -> None:
        with self.lock:
            self.logs.setdefault((ns, pod), []).extend(lines)
            self.changed.notify_all()

    def finish_pod(self, pod: str, exit_code: int = 0, ns: str = "ml") -> None:
        self.set_pod_phase(pod, "Succeeded" if exit_code == 0 else "Failed", exit_code, ns)

    def set_job_condition(self, job: str, kind: str, reason: str = "", message: str = "", ns: str = "ml") -> None:
        """Finish a Job: kind "Complete" (adds SuccessCriteriaMet too) or "Failed" (adds
        FailureTarget first, as Kubernetes 1.31+ does)."""
        with self.lock:
            obj = self.objects[("jobs", ns, job)]
            status = obj.setdefault("status", {})
            status.setdefault("startTime", now())
            types = ["SuccessCriteriaMet", "Complete"] if kind == "Complete" else ["FailureTarget", "Failed"]
            conditions = status.setdefault("conditions", [])
            for t in types:
                conditions.append(
                    {"type": t, "status": "True", "reason": reason or None, "message": message or None,
                     "lastProbeTime": now(), "lastTransitionTime": now()}
                )
            status["active"] = 0
            if kind == "Complete":
                status["succeeded"] = obj["spec"].get("completions") or 1
                status["completionTime"] = now()
            else:
                status["failed"] = status.get("failed", 0) + 1
            self._emit("MODIFIED", "jobs", ns, obj)

    def script_job(self, job: str, script: JobScript | list[JobScript]) -> None:
        """Play `script` as soon as Job `job` is created (not for dry-run creates); a list: one
        script per creation of a Job of that name (a gang recreated after a restart)."""
        self.scripts[job] = script

    def _play(self, ns: str, job: str, script: JobScript) -> None:
        with self.lock:
            spec = self.objects[("jobs", ns, job)]["spec"]
            completions = spec.get("completions") or 1
            status = self.objects[("jobs", ns, job)].setdefault("status", {})
            status["startTime"] = now()
            failed = script.outcome != "Complete"
            runs = {i: script.pods.get(i, PodRun(exit_code=1 if failed else 0)) for i in range(completions)}
            pods = {i: self.add_pod(job, i, "Pending", ns=ns) for i in runs}
        time.sleep(script.pending_s)
        with self.lock:
            if self.closing or ("jobs", ns, job) not in self.objects:
                return
            for pod in pods.values():
                self._set_pod_phase(ns, pod, "Running")
            status["active"] = completions
            self._emit("MODIFIED", "jobs", ns, self.objects[("jobs", ns, job)])
        longest = max((len(r.lines) for r in runs.values()), default=0)
        for i in range(longest):
            time.sleep(script.line_s)
            with self.lock:
                if self.closing or ("jobs", ns, job) not in self.objects:
                    return
                for index, run in runs.items():
                    if i < len(run.lines):
                        self.logs[(ns, pods[index])].append(run.lines[i])
                self.changed.notify_all()
        with self.lock:
            if self.closing or ("jobs", ns, job) not in self.objects:
                return
            for index, run in runs.items():
                self._set_pod_phase(ns, pods[index], "Succeeded" if run.exit_code == 0 else "Failed", run.exit_code)
            if failed:
                self.set_job_condition(job, "Failed", script.outcome, script.message or f"Job failed: {script.outcome}", ns)
            else:
                self.set_job_condition(job, "Complete", ns=ns)

    # -- API semantics ---------------------------------------------------------------------

    def _emit(self, event: str, plural: str, ns: str, obj: dict[str, Any]) -> None:
        """Record a change for watches (a new resourceVersion, as every write gets) and wake
        the streams. Call with the lock held."""
        rv = next(self._rv)
        if event != "DELETED":
            obj["metadata"]["resourceVersion"] = str(rv)
        self.events.append((rv, event, plural, ns, copy.deepcopy(obj)))
        self.changed.notify_all()

    def watch_start(
        self, plural: str, ns: str | None, selector: str, field: str, resource_version: str
    ) -> tuple[list[dict[str, Any]], int]:
        """The synthetic ADDED events a watch starts with (none when it names a
        resourceVersion to continue from) and the position in `events` it continues at."""
        with self.lock:
            if resource_version not in ("", "0"):
                start = next((i for i, e in enumerate(self.events) if e[0] > int(resource_version)), len(self.events))
                return [], start
            items = self.list(plural, ns, selector)["items"]
            return [{"type": "ADDED", "object": o} for o in items if field_matches(o, field)], len(self.events)

    def _fill_metadata(self, obj: dict[str, Any], plural: str, ns: str) -> None:
        _canonical_quantities(obj)
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        meta["resourceVersion"] = str(next(self._rv))
        prefix, kind, _ = RESOURCES[plural]
        obj.setdefault("apiVersion", prefix.split("/", 1)[1] if prefix.startswith("apis/") else "v1")
        obj.setdefault("kind", kind)

    def check_denied(self, verb: str, plural: str, ns: str | None, sub: str | None = None, name: str | None = None) -> None:
        resource = f"{plural}/{sub}" if sub else plural
        group = RESOURCES[plural][2]
        key = (group, resource, verb)
        with self.lock:
            self.used.add(key)
        by_name = name is not None and name in self.allowed_names.get(key, set())
        if (verb, resource) in self.denied or (self.allowed is not None and key not in self.allowed and not by_name):
            where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
            qualified = f"{resource}.{group}" if group else resource
            raise ApiError(
                403,
                "Forbidden",
                f'{qualified} is forbidden: User "system:serviceaccount:ml:kubetune" cannot {verb} '
                f'resource "{plural}"{" subresource " + repr(sub) if sub else ""} in API group "{group}"{where}',
                group=group,
                kind=plural,
            )

    def create(self, plural: str, ns: str, body: Any, dry_run: bool) -> dict[str, Any]:
        prefix, kind, group = RESOURCES[plural]
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        if body.get("kind") != kind:
            raise ApiError(400, "BadRequest", f"the API version in the data ({body.get('apiVersion')}) does not match the expected kind {kind}")
        meta = body.get("metadata") or {}
        name = meta.get("name")
        if meta.get("namespace") not in (None, ns):
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
        if not name:
            raise ApiError(422, "Invalid", f"{kind} \"\" is invalid: metadata.name: Required value: name or generateName is required")
        if not DNS_SUBDOMAIN.match(name) or len(name) > 253:
            raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters')
        if kind == "Job" and not body.get("spec", {}).get("template", {}).get("spec", {}).get("containers"):
            raise ApiError(422, "Invalid", f'Job.batch "{name}" is invalid: spec.template.spec.containers: Required value')
        if plural in CUSTOM:  # the API server validates a custom resource against its CRD's schema
            errors = crds.custom_errors(body)
            if errors:
                where = ".".join(str(p) for p in errors[0].absolute_path)
                raise ApiError(422, "Invalid", f'{kind}.{group} "{name}" is invalid: {where}: {errors[0].message}')
        if plural in ("roles", "rolebindings"):
            self.check_escalation(plural, ns, body)
        with self.lock:
            if (plural, ns, name) in self.objects:
                qualified = f"{plural}.{group}" if group else plural
                raise ApiError(409, "AlreadyExists", f'{qualified} "{name}" already exists', name=name, group=group, kind=plural)
            obj = copy.deepcopy(body)
            self._fill_metadata(obj, plural, ns)
            if kind == "Job":
                obj.setdefault("status", {})
            if dry_run:
                return obj
            self.objects[(plural, ns, name)] = obj
            self._emit("ADDED", plural, ns, obj)
            script = self.scripts.get(name) if kind == "Job" else None
            if isinstance(script, list):  # one per creation: a Job recreated by a restart plays the next
                script = script.pop(0) if script else None
        for hook in self.create_hooks:
            hook(self, plural, ns, copy.deepcopy(obj))
        if script is not None:
            t = threading.Thread(target=self._play, args=(ns, name, script), daemon=True)
            self._threads.append(t)
            t.start()
        return obj

    def check_escalation(self, plural: str, ns: str, body: dict[str, Any]) -> None:
        """The RBAC API's escalation check: whoever creates a Role, or binds one, must hold every
        permission it grants (a resourceNames rule: for those names); the permissions are
        recorded in `used` as the authorizer would consult them."""
        if self.allowed is None:
            return
        if plural == "roles":
            rules = body.get("rules") or []
        else:
            role = self.objects.get(("roles", ns, body.get("roleRef", {}).get("name", "")))
            rules = (role or {}).get("rules") or []
        for rule in rules:
            for key in {(g, r, v) for g in rule.get("apiGroups", []) for r in rule.get("resources", []) for v in rule.get("verbs", [])}:
                with self.lock:
                    self.used.add(key)
                only = set(rule.get("resourceNames") or [])
                if key not in self.allowed and not (only and only <= self.allowed_names.get(key, set())):
                    raise ApiError(403, "Forbidden", f'{plural}.rbac.authorization.k8s.io "{body["metadata"].get("name")}" is forbidden: '
                                   f"user is attempting to grant RBAC permissions not currently held: {key}")

    def merge_patch(self, plural: str, ns: str, name: str, patch: Any) -> dict[str, Any]:
        """RFC 7386 merge patch of a stored object (null removes a key); MODIFIED to watchers."""

        def merged(target: Any, change: Any) -> Any:
            if not isinstance(change, dict):
                return change
            out = dict(target) if isinstance(target, dict) else {}
            for key, value in change.items():
                if value is None:
                    out.pop(key, None)
                else:
                    out[key] = merged(out.get(key), value)
            return out

        with self.lock:
            obj = self.read(plural, ns, name)
            obj = merged(obj, patch)
            obj["metadata"]["resourceVersion"] = str(next(self._rv))
            self.objects[(plural, ns, name)] = obj
            self._emit("MODIFIED", plural, ns, obj)
            return copy.deepcopy(obj)

    def read(self, plural: str, ns: str, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get((plural, ns, name))
            if obj is None:
                group = RESOURCES[plural][2]
                qualified = f"{plural}.{group}" if group else plural
                raise ApiError(404, "NotFound", f'{qualified} "{name}" not found', name=name, group=group, kind=plural)
            return copy.deepcopy(obj)

    def list(self, plural: str, ns: str | None, selector: str) -> dict[str, Any]:
        terms = parse_selector(selector)
        with self.lock:
            items = [
                copy.deepcopy(o)
                for (p, s, _), o in sorted(self.objects.items(), key=lambda kv: kv[0])
                if p == plural and (ns is None or s == ns) and matches(o["metadata"].get("labels") or {}, terms)
            ]
        prefix, kind, _ = RESOURCES[plural]
        return {
            "apiVersion": prefix.split("/", 1)[1] if prefix.startswith("apis/") else "v1",
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(next(self._rv))},
            "items": items,
        }

    def delete(self, plural: str, ns: str, name: str, dry_run: bool, options: dict[str, Any]) -> dict[str, Any]:
        obj = self.read(plural, ns, name)
        if dry_run:
            return obj
        with self.lock:
            del self.objects[(plural, ns, name)]
            if plural == "pods":
                self.logs.pop((ns, name), None)
            if options.get("propagationPolicy") != "Orphan":
                self._delete_dependents(ns, obj["metadata"]["uid"])
            self._emit("DELETED", plural, ns, obj)
        return obj

    def _delete_dependents(self, ns: str, uid: str) -> None:
        """The garbage collector: everything owned by `uid`, and what that owns. Lock held."""
        for key, dependent in list(self.objects.items()):
            owners = dependent["metadata"].get("ownerReferences") or []
            if key[1] == ns and key in self.objects and any(o.get("uid") == uid for o in owners):
                del self.objects[key]
                if key[0] == "pods":
                    self.logs.pop((ns, key[2]), None)
                self._delete_dependents(ns, dependent["metadata"]["uid"])
                self._emit("DELETED", key[0], ns, dependent)

    def pod_log(self, ns: str, name: str, query: dict[str, list[str]]) -> tuple[list[str], bool]:
        """(lines so far, whether the pod still runs); raises for pods that have not started."""
        with self.lock:
            pod = self.read("pods", ns, name)
            containers = [c["name"] for c in pod["spec"]["containers"]]
            container = (query.get("container") or [None])[0]
            if container is None and len(containers) > 1:
                raise ApiError(400, "BadRequest", f"a container name must be specified for pod {name}, choose one of: {containers}")
            if container is not None and container not in containers:
                raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
            phase = pod["status"].get("phase", "Pending")
            if phase == "Pending":
                reason = pod["status"]["containerStatuses"][0]["state"].get("waiting", {}).get("reason", "ContainerCreating")
                raise ApiError(400, "BadRequest", f'container "{containers[0]}" in pod "{name}" is waiting to start: {reason}')
            return list(self.logs.get((ns, name), [])), phase == "Running"


def discovery(path: str, crds: bool) -> dict[str, Any]:
    """`/api`, `/apis` and `/apis/GROUP/VERSION` as the API server answers them: the groups and
    resources it serves (custom ones only while their CRDs are installed)."""
    served = {plural: entry for plural, entry in RESOURCES.items() if crds or plural not in CUSTOM}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        groups: dict[str, str] = {}
        for prefix, _, group in served.values():
            if group:
                groups[group] = prefix.split("/", 1)[1]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
             "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}} for g, gv in sorted(groups.items())]}
    resources = [{"name": plural, "singularName": kind.lower(), "namespaced": True, "kind": kind,
                  "verbs": ["create", "delete", "get", "list", "watch"]}
                 for plural, (prefix, kind, _) in served.items() if f"/{prefix}" == path]
    if not resources:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": path.split("/", 2)[2], "resources": resources}


def field_matches(obj: dict[str, Any], field: str) -> bool:
    """The one field selector the launcher sends: `metadata.name=NAME` (empty: everything)."""
    if not field:
        return True
    key, _, value = field.partition("=")
    if key != "metadata.name":
        raise ApiError(400, "BadRequest", f'"{key}" is not a known field selector: only "metadata.name"')
    return obj["metadata"]["name"] == value


def _canonical_quantities(node: Any) -> None:
    """The API server returns resource quantities as strings, whatever a client sent."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("limits", "requests") and isinstance(value, dict):
                node[key] = {q: str(v) for q, v in value.items()}
            else:
                _canonical_quantities(value)
    elif isinstance(node, list):
        for item in node:
            _canonical_quantities(item)


class _Handler(BaseHTTPRequestHandler):
    server_api: FakeKubeAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output quiet
        pass

    def _answered(self) -> None:
        api = self.server_api
        with api.lock:
            api.answered.append(api.requests[self._request_number])

    def _send_json(self, code: int, body: dict[str, Any]) -> None:
        self._answered()
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _handle(self, method: str) -> None:
        api = self.server_api
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        body = self._body() if method in ("POST", "DELETE", "PATCH") else None
        with api.lock:
            self._request_number = len(api.requests)
            api.requests.append((method, url.path, query, body))
        try:
            if self.headers.get("Authorization") != f"Bearer {api.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if method == "GET" and (url.path.rstrip("/") in ("/apis", "/api") or (url.path.count("/") == 3 and url.path.startswith("/apis/"))):
                return self._send_json(200, discovery(url.path.rstrip("/"), api.crds))
            m = PATH.match(url.path)
            if m and m.group("plural") in CUSTOM and not api.crds:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if not m or m.group("plural") not in RESOURCES or RESOURCES[m.group("plural")][0] != m.group("prefix"):
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({url.path})")
            plural, ns, name, sub = m.group("plural"), m.group("ns"), m.group("name"), m.group("sub")
            dry_run = query.get("dryRun") == ["All"]
            if sub == "log" and method == "GET" and plural == "pods" and ns and name:
                api.check_denied("get", plural, ns, sub)
                return self._stream_log(ns, name, query)
            if method == "POST" and ns and not name:
                api.check_denied("create", plural, ns)
                return self._send_json(201, api.create(plural, ns, body, dry_run))
            if method == "PATCH" and name and ns:
                api.check_denied("patch", plural, ns, name=name)
                if self.headers.get("Content-Type", "").split(";")[0] != "application/merge-patch+json":
                    raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format; accepted: application/merge-patch+json")
                return self._send_json(200, api.merge_patch(plural, ns, name, body))
            if method == "GET" and name and ns:
                api.check_denied("get", plural, ns, name=name)
                return self._send_json(200, api.read(plural, ns, name))
            if method == "GET" and not name and query.get("watch") == ["true"]:
                api.check_denied("watch", plural, ns)
                return self._stream_watch(plural, ns, query)
            if method == "GET" and not name:
                api.check_denied("list", plural, ns)
                return self._send_json(200, api.list(plural, ns, (query.get("labelSelector") or [""])[0]))
            if method == "DELETE" and name and ns:
                api.check_denied("delete", plural, ns)
                options = dict(body or {})
                if "propagationPolicy" in query:
                    options["propagationPolicy"] = query["propagationPolicy"][0]
                return self._send_json(200, api.delete(plural, ns, name, dry_run, options))
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {url.path}")
        except ApiError as exc:
            self._send_json(exc.code, exc.body)

    def _stream_log(self, ns: str, name: str, query: dict[str, list[str]]) -> None:
        api = self.server_api
        with api.lock:  # the snapshot and its length together: a line logged later is streamed, not skipped
            lines, running = api.pod_log(ns, name, query)
            total = len(api.logs.get((ns, name), []))
        self._answered()
        tail = query.get("tailLines")
        if tail:
            lines = lines[-int(tail[0]):] if int(tail[0]) else []
        follow = query.get("follow") == ["true"]
        if not follow:
            data = "".join(f"{line}\n" for line in lines).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        # follow: chunked, as the real API server streams, until the pod terminates
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sent = total - len(lines)
        while True:
            with api.lock:
                current = api.logs.get((ns, name))
                pod = api.objects.get(("pods", ns, name))
                new = (current or [])[sent:]
                done = api.closing or pod is None or pod["status"].get("phase") in ("Succeeded", "Failed")
                if not new and not done:
                    api.changed.wait(timeout=0.5)
                    continue
            sent += len(new)
            if new:
                chunk = "".join(f"{line}\n" for line in new).encode()
                try:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                except OSError:
                    return
            if done and not new:
                break
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass

    def _chunk(self, data: bytes) -> bool:
        """Write one chunk of a chunked answer; False when the client has gone."""
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            return True
        except OSError:
            return False

    def _stream_watch(self, plural: str, ns: str | None, query: dict[str, list[str]]) -> None:
        api = self.server_api
        selector = (query.get("labelSelector") or [""])[0]
        field = (query.get("fieldSelector") or [""])[0]
        terms = parse_selector(selector)
        initial, position = api.watch_start(plural, ns, selector, field, (query.get("resourceVersion") or [""])[0])
        deadline = time.monotonic() + float((query.get("timeoutSeconds") or ["1800"])[0])
        self._answered()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        pending = [json.dumps(e).encode() + b"\n" for e in initial]
        while True:
            for data in pending:
                if not self._chunk(data):
                    return
            with api.lock:
                while position == len(api.events) and not api.closing and time.monotonic() < deadline:
                    api.changed.wait(timeout=0.2)
                new, position = api.events[position:], len(api.events)
                done = api.closing or time.monotonic() >= deadline
            pending = [
                json.dumps({"type": event, "object": obj}).encode() + b"\n"
                for _, event, p, s, obj in new
                if p == plural and (ns is None or s == ns)
                and matches(obj["metadata"].get("labels") or {}, terms) and field_matches(obj, field)
            ]
            if done and not pending:
                break
        self._chunk(b"")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")


def closed_port() -> int:
    """A local port that nothing listens on (for an unreachable API server)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
