"""The only code that talks to a Kubernetes API server: submit, status, logs, cancel, list.

Built on the official `kubernetes` client (kubeconfig or in-cluster configuration). Every API
failure — forbidden, not found, conflict, invalid, unreachable — becomes a `ClusterError` with a
one-line message (the CLI prints it and exits 1). Nothing here imports torch or
`kubetune.workload`: the launcher must start fast on a laptop.

What a job is on the cluster: every object carries the label `kubetune.io/job=<name>` (the
renderer's contract), so `status`, `logs`, `cancel` and `list` find a job by that label alone,
whatever objects a version of the renderer produced. Pods are found through the labels the Job
controller puts on them (`batch.kubernetes.io/job-name`, `batch.kubernetes.io/job-completion-index`);
the completion index is the rank a line of log is prefixed with.

Evaluation follows training (see `kubetune.launch.render`): `submit` creates the train objects;
with `--wait` it follows the train Job to its end and, when it succeeded, creates the evaluate
Job and follows that too. Without `--wait`, `submit --stage evaluate` starts evaluation later.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import ValidationError

JOB_LABEL = "kubetune.io/job"
COMPONENT_LABEL = "app.kubernetes.io/component"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# Seconds between polls of a Job or its pods while waiting or following logs.
POLL_SECONDS = 2.0
# (connect, read) timeouts of ordinary API calls; log streams have none.
REQUEST_TIMEOUT = (10, 60)
# How long `--replace` / `cancel --wait` wait for deleted objects to disappear.
DELETE_TIMEOUT_S = 300.0
# Lines of the failing pod's log shown when a Job fails.
FAILURE_LOG_LINES = 20
# Lines read to find a pod's last progress line in `status`.
STATUS_TAIL_LINES = 20


class ClusterError(Exception):
    """An API or connection failure, as one line naming what was attempted. Exit code 1.
    `status` is the HTTP status of an API error (None for connection failures)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Kind:
    kind: str
    api_version: str
    api: str  # the client class
    method: str  # `create_namespaced_<method>`
    model: str  # the client model of a body
    resource: str  # plural, as RBAC and messages name it


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("ConfigMap", "v1", "CoreV1Api", "config_map", "V1ConfigMap", "configmaps"),
        Kind("Service", "v1", "CoreV1Api", "service", "V1Service", "services"),
        Kind("NetworkPolicy", "networking.k8s.io/v1", "NetworkingV1Api", "network_policy", "V1NetworkPolicy", "networkpolicies"),
        Kind("CronJob", "batch/v1", "BatchV1Api", "cron_job", "V1CronJob", "cronjobs"),
        Kind("Job", "batch/v1", "BatchV1Api", "job", "V1Job", "jobs"),
    )
}
# Creation order: what pods mount or resolve exists before the pods start. Deletion: reverse.
CREATE_ORDER = ["ConfigMap", "Service", "NetworkPolicy", "CronJob", "Job"]


def ref(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


# ---------------------------------------------------------------------------------------------
# Connecting


def connect(kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None) -> "Cluster":
    """A Cluster from a kubeconfig file (`kubeconfig`, else $KUBECONFIG, else ~/.kube/config)
    or, inside a pod, the in-cluster service account. The namespace is `namespace`, else the
    context's, else the pod's own, else "default"."""
    cfg = client.Configuration()
    if kubeconfig is not None and not Path(kubeconfig).expanduser().is_file():
        raise ClusterError(f"kubeconfig {kubeconfig}: no such file")
    path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    found = kubeconfig is not None or any(Path(p).expanduser().is_file() for p in path.split(os.pathsep) if p)
    try:
        if found:
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg, persist_config=False)
            if namespace is None:
                contexts, current = config.list_kube_config_contexts(config_file=path)
                chosen = next((c for c in contexts if c["name"] == context), current) if context else current
                namespace = ((chosen or {}).get("context") or {}).get("namespace")
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
            if namespace is None and IN_CLUSTER_NAMESPACE.is_file():
                namespace = IN_CLUSTER_NAMESPACE.read_text().strip()
        else:
            raise ClusterError(
                "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG or create ~/.kube/config "
                "(or run inside a cluster)"
            )
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = f"kubeconfig {path}" if found else "in-cluster configuration"
        raise ClusterError(f"{where}: {_one_line(str(exc))}") from None
    cfg.retries = 2  # connection refused fails in well under a second, not after long retries
    return Cluster(client.ApiClient(cfg), namespace or "default")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------
# Job and pod state


@dataclass
class JobState:
    name: str
    stage: str
    phase: str  # Pending, Queued, Running, Succeeded, Failed
    reason: str = ""
    message: str = ""
    completions: int = 1
    succeeded: int = 0
    started: datetime | None = None
    finished: datetime | None = None
    created: datetime | None = None

    @property
    def done(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def job_stage(job: Any) -> str:
    labels = job.metadata.labels or {}
    component = labels.get(COMPONENT_LABEL)
    if component in ("train", "evaluate"):
        return component
    return "evaluate" if job.metadata.name.endswith(("-evaluate", "-eval")) else "train"


def job_state(job: Any) -> JobState:
    """The phase of a V1Job from its conditions, as `kubectl` users read them."""
    status = job.status or client.V1JobStatus()
    true = {c.type: c for c in status.conditions or [] if c.status == "True"}
    state = JobState(
        name=job.metadata.name,
        stage=job_stage(job),
        phase="Pending",
        completions=job.spec.completions or 1,
        succeeded=status.succeeded or 0,
        started=status.start_time,
        created=job.metadata.creation_timestamp,
    )
    if "Complete" in true:
        state.phase, state.finished = "Succeeded", status.completion_time or true["Complete"].last_transition_time
    elif "Failed" in true:
        cond = true["Failed"]
        target = true.get("FailureTarget")
        state.phase, state.finished = "Failed", cond.last_transition_time
        state.reason = cond.reason or (target.reason if target else "") or ""
        state.message = cond.message or (target.message if target else "") or ""
    elif "Suspended" in true or job.spec.suspend:
        state.phase = "Queued"
        state.reason = "Suspended"
    elif status.active:
        state.phase = "Running"
    return state


def pod_index(pod: Any) -> int:
    meta = pod.metadata
    value = (meta.labels or {}).get(INDEX_KEY) or (meta.annotations or {}).get(INDEX_KEY)
    return int(value) if value is not None and str(value).isdigit() else 0


def pod_started(pod: Any) -> bool:
    """Whether a pod's container has logs to read (it is no longer Pending)."""
    return (pod.status.phase if pod.status else None) not in (None, "Pending")


def pod_waiting_reason(pod: Any) -> str:
    for cs in (pod.status.container_statuses if pod.status else None) or []:
        if cs.state and cs.state.waiting and cs.state.waiting.reason:
            return cs.state.waiting.reason
    return (pod.status.reason if pod.status else None) or "Pending"


def pod_restarts(pod: Any) -> int:
    return sum(cs.restart_count or 0 for cs in (pod.status.container_statuses if pod.status else None) or [])


def pod_finished(pod: Any) -> datetime | None:
    ends = [
        cs.state.terminated.finished_at
        for cs in (pod.status.container_statuses if pod.status else None) or []
        if cs.state and cs.state.terminated and cs.state.terminated.finished_at
    ]
    return max(ends) if ends else None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def duration(start: datetime | None, end: datetime | None = None) -> str:
    """`42s`, `5m12s`, `2h03m`, `3d04h`; `-` without a start."""
    if start is None:
        return "-"
    seconds = max(0, int(((end or _now()) - start).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


@dataclass
class PodRow:
    index: int
    pod: str
    phase: str
    attempts: int
    restarts: int
    elapsed: str
    last_line: str


@dataclass
class JobStatus:
    job: str
    namespace: str
    jobs: list[JobState] = field(default_factory=list)
    pods: dict[str, list[PodRow]] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"job {self.job} in namespace {self.namespace}"]
        if self.jobs:
            rows = [["STAGE", "JOB", "PHASE", "COMPLETIONS", "ELAPSED", "REASON"]]
            for s in self.jobs:
                rows.append(
                    [s.stage, s.name, s.phase, f"{s.succeeded}/{s.completions}", duration(s.started, s.finished), s.reason or "-"]
                )
            lines += ["", table(rows)]
        for s in self.jobs:
            pods = self.pods.get(s.name) or []
            lines += ["", f"{s.stage} pods ({s.name}):"]
            if not pods:
                lines.append("  (no pods yet)" if not s.done else "  (no pods left)")
                continue
            rows = [["INDEX", "POD", "PHASE", "PODS", "RESTARTS", "ELAPSED", "LAST LINE"]]
            for p in pods:
                rows.append([str(p.index), p.pod, p.phase, str(p.attempts), str(p.restarts), p.elapsed, p.last_line or "-"])
            lines.append(table(rows))
        if self.other:
            lines += ["", "other objects: " + ", ".join(self.other)]
        return "\n".join(lines)


@dataclass
class ListRow:
    name: str
    train: str = "-"
    evaluate: str = "-"
    schedule: str = "-"
    created: datetime | None = None


# ---------------------------------------------------------------------------------------------
# The cluster


class Cluster:
    def __init__(self, api_client: client.ApiClient, namespace: str, out: TextIO | None = None, err: TextIO | None = None):
        self.api_client = api_client
        self.namespace = namespace
        self._out = out
        self._err = err
        self._apis = {
            "CoreV1Api": client.CoreV1Api(api_client),
            "BatchV1Api": client.BatchV1Api(api_client),
            "NetworkingV1Api": client.NetworkingV1Api(api_client),
        }
        self._print_lock = threading.Lock()

    @property
    def core(self) -> client.CoreV1Api:
        return self._apis["CoreV1Api"]

    @property
    def batch(self) -> client.BatchV1Api:
        return self._apis["BatchV1Api"]

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    def say(self, line: str, err: bool = False) -> None:
        with self._print_lock:
            stream = self.err if err else self.out
            print(line, file=stream, flush=True)

    # -- errors ------------------------------------------------------------------------------

    @contextmanager
    def _api(self, action: str) -> Iterator[None]:
        """Turn an API or connection failure into a one-line ClusterError naming `action`."""
        try:
            yield
        except ApiException as exc:
            raise ClusterError(self._explain(exc, action), exc.status or None) from None
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            if isinstance(reason, urllib3.exceptions.NewConnectionError):
                reason = "connection refused" if "refused" in str(reason).lower() else str(reason).split(": ", 1)[-1]
            raise ClusterError(
                f"{action}: cannot reach the Kubernetes API server at {self.api_client.configuration.host}: {_one_line(str(reason))}"
            ) from None
        except ValidationError as exc:  # an answer this client version cannot read
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ClusterError(f"{action}: unexpected answer from the API server: {where}: {first['msg']}") from None

    @staticmethod
    def _explain(exc: ApiException, action: str) -> str:
        message = ""
        if exc.body:
            try:
                message = json.loads(exc.body).get("message") or ""
            except (ValueError, AttributeError):
                message = str(exc.body)
        if exc.status == 0 or exc.status is None:
            return f"{action}: {_one_line(exc.reason or 'no response from the API server')}"
        label = {
            400: "bad request",
            401: "unauthorized (check the credentials in your kubeconfig)",
            403: "forbidden",
            404: "not found",
            409: "already exists",
            422: "invalid",
        }.get(exc.status, f"HTTP {exc.status} {exc.reason or ''}".strip())
        return f"{action}: {label}" + (f": {_one_line(message)}" if message else "")

    # -- generic object verbs ----------------------------------------------------------------

    def _method(self, kind: str, verb: str) -> Callable[..., Any]:
        k = KINDS[kind]
        return getattr(self._apis[k.api], f"{verb}_namespaced_{k.method}")

    def _body(self, obj: dict[str, Any]) -> Any:
        """A client model of a rendered dict, in this namespace. Quantities the renderer gave
        as numbers become strings, as the API's schema has them."""
        body = copy.deepcopy(obj)
        body.setdefault("metadata", {})["namespace"] = self.namespace
        _stringify_quantities(body)
        model = getattr(client, KINDS[obj["kind"]].model)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ClusterError(f"{ref(obj)} is not a valid {obj['kind']}: {where}: {first['msg']}") from None

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> Any:
        kind = obj.get("kind")
        if kind not in KINDS:
            raise ClusterError(f"{ref(obj)}: kubetune does not create objects of kind {kind}")
        body = self._body(obj)
        what = f"create {ref(obj)} in namespace {self.namespace}" + (" (dry run)" if dry_run else "")
        with self._api(what):
            return self._method(kind, "create")(self.namespace, body, dry_run="All" if dry_run else None, _request_timeout=REQUEST_TIMEOUT)

    def read(self, kind: str, name: str) -> Any | None:
        """The object, or None when it does not exist."""
        try:
            with self._api(f"read {kind}/{name} in namespace {self.namespace}"):
                return self._method(kind, "read")(name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, selector: str) -> list[Any]:
        with self._api(f"list {KINDS[kind].resource} in namespace {self.namespace}"):
            return self._method(kind, "list")(self.namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT).items

    def delete(self, kind: str, name: str, propagation: str = "Background", dry_run: bool = False) -> bool:
        """Delete one object; False when it was already gone."""
        what = f"delete {kind}/{name} in namespace {self.namespace}" + (" (dry run)" if dry_run else "")
        try:
            with self._api(what):
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

    def job_objects(self, job: str) -> list[tuple[str, str]]:
        """(kind, name) of everything labelled as part of `job`, in deletion order."""
        found = []
        for kind in reversed(CREATE_ORDER):
            for obj in self.list(kind, f"{JOB_LABEL}={job}"):
                found.append((kind, obj.metadata.name))
        return found

    def jobs_of(self, job: str) -> list[Any]:
        """The batch Jobs of a kubetune job, train before evaluate, oldest first."""
        jobs = self.list("Job", f"{JOB_LABEL}={job}")
        return sorted(jobs, key=lambda j: (job_stage(j) != "train", j.metadata.creation_timestamp or _now(), j.metadata.name))

    def pods_of(self, job_name: str) -> list[Any]:
        """The pods of one batch Job, by completion index, oldest first."""
        pods = self.list_pods(f"{JOB_NAME_LABELS[0]}={job_name}")
        return sorted(pods, key=lambda p: (pod_index(p), p.metadata.creation_timestamp or _now(), p.metadata.name))

    def list_pods(self, selector: str) -> list[Any]:
        with self._api(f"list pods in namespace {self.namespace}"):
            return self.core.list_namespaced_pod(self.namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT).items

    def read_job(self, name: str) -> Any:
        job = self.read("Job", name)
        if job is None:
            raise ClusterError(f"Job {name} in namespace {self.namespace} no longer exists (cancelled?)")
        return job

    # -- submit ------------------------------------------------------------------------------

    def submit(
        self,
        job: str,
        stages: list[list[dict[str, Any]]],
        *,
        replace: bool = False,
        dry_run: bool = False,
        wait: bool = False,
        reuse: tuple[str, ...] = (),
        source: str = "<job.yaml>",
    ) -> int:
        """Create the objects of the first stage (and, with `wait`, each later stage once the
        Job of the stage before succeeded). Objects that exist already are refused, deleted
        first with `replace`, or, for kinds in `reuse`, kept as they are. With `dry_run` every
        stage is sent with the server-side dry-run flag and nothing is stored. Returns the
        exit code: 0 when everything asked for succeeded. `source` names the spec file in hints."""
        planned: list[list[dict[str, Any]]] = []
        seen: set[str] = set()
        for objects in stages:
            fresh = [o for o in sorted(objects, key=_create_rank) if ref(o) not in seen]
            seen.update(ref(o) for o in fresh)
            planned.append(fresh)
        everything = [o for stage in planned for o in stage]
        for obj in everything:
            if obj.get("kind") not in KINDS:
                raise ClusterError(f"{ref(obj)}: kubetune does not create objects of kind {obj.get('kind')}")
        existing = [o for o in everything if self.read(o["kind"], o["metadata"]["name"]) is not None]
        kept = {ref(o) for o in existing if o["kind"] in reuse}
        clashing = [o for o in existing if ref(o) not in kept]
        if clashing and not replace:
            names = ", ".join(ref(o) for o in clashing)
            raise ClusterError(
                f"job {job} already exists in namespace {self.namespace} ({names}); "
                f"pass --replace to delete and submit it again, or run `kubetune cancel {job}`"
            )
        skip = set(kept)
        if clashing:
            if dry_run:
                for obj in clashing:
                    self.delete(obj["kind"], obj["metadata"]["name"], "Foreground", dry_run=True)
                    self.say(f"{ref(obj)} would be replaced (server dry run)")
                skip |= {ref(o) for o in clashing}
            else:
                self._delete_and_wait([(o["kind"], o["metadata"]["name"]) for o in clashing])
        if dry_run:
            for obj in everything:
                if ref(obj) not in skip:
                    self.create(obj, dry_run=True)
                    self.say(f"{ref(obj)} accepted (server dry run, nothing created)")
            return 0
        self._create_stage(job, planned[0], skip)
        if not wait:
            if len(planned) > 1:
                self.say(
                    f"submitted {job} in namespace {self.namespace}; follow with `kubetune logs {job} -f`. "
                    "Evaluation is not started without --wait: after training succeeded, run "
                    f"`kubetune submit {source} --stage evaluate`"
                )
            else:
                self.say(f"submitted {job} in namespace {self.namespace}; follow with `kubetune logs {job} -f`")
            return 0
        for number, stage in enumerate(planned):
            if number > 0:
                self._create_stage(job, stage, skip)
            for obj in stage:
                if obj["kind"] != "Job":
                    continue
                state = self.wait_job(obj["metadata"]["name"])
                if state.phase != "Succeeded":
                    self.report_failure(state)
                    return 1
                self.say(f"{state.stage} Job {state.name} succeeded in {duration(state.started, state.finished)}")
        self.say(f"job {job} succeeded")
        return 0

    def _create_stage(self, job: str, objects: list[dict[str, Any]], skip: set[str]) -> None:
        created: list[str] = []
        for obj in objects:
            if ref(obj) in skip:
                self.say(f"{ref(obj)} exists, kept")
                continue
            try:
                self.create(obj)
            except ClusterError as exc:
                if not created:
                    raise
                raise ClusterError(
                    f"{exc} (created before the failure: {', '.join(created)}; `kubetune cancel {job}` removes them)", exc.status
                ) from None
            created.append(ref(obj))
            self.say(f"{ref(obj)} created")

    def _delete_and_wait(self, refs: list[tuple[str, str]], propagation: str = "Foreground") -> None:
        for kind, name in refs:
            if self.delete(kind, name, propagation):
                self.say(f"{kind}/{name} deleted")
        deadline = time.monotonic() + DELETE_TIMEOUT_S
        pending = list(refs)
        while pending:
            pending = [(k, n) for k, n in pending if self.read(k, n) is not None]
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ", ".join(f"{k}/{n}" for k, n in pending)
                raise ClusterError(f"timed out after {DELETE_TIMEOUT_S:.0f}s waiting for {names} to be deleted")
            time.sleep(POLL_SECONDS)

    # -- waiting and failure reports ---------------------------------------------------------

    def wait_job(self, name: str, stream: bool = True) -> JobState:
        """Poll Job `name` until it succeeded or failed, streaming its pods' logs meanwhile."""
        job = self.read_job(name)
        state = job_state(job)
        self.say(f"waiting for {state.stage} Job {name} ({state.completions} pod{'s' if state.completions > 1 else ''})")
        follower = LogFollower(self, [name], stage_prefix=False) if stream else None
        if follower:
            follower.start()
        last_phase = state.phase
        try:
            while not state.done:
                time.sleep(POLL_SECONDS)
                state = job_state(self.read_job(name))
                if state.phase != last_phase:
                    last_phase = state.phase
                    if state.phase == "Queued":
                        self.say(f"{name}: queued (suspended, e.g. by Kueue); waiting for admission")
        except KeyboardInterrupt:
            owner = (job.metadata.labels or {}).get(JOB_LABEL, name)
            self.say(
                f"stopped following {name}; it keeps running on the cluster "
                f"(`kubetune status {owner}`, `kubetune cancel {owner}`)",
                err=True,
            )
            raise
        finally:
            if follower:  # let finished pods' streams drain; don't hang on running ones
                follower.stop(timeout=10.0 if state.done else 0.5)
        return state

    def report_failure(self, state: JobState) -> None:
        reason = state.reason or "unknown reason"
        message = f": {_one_line(state.message)}" if state.message else ""
        pods = self.pods_of(state.name)
        failed = [p for p in pods if p.status and p.status.phase == "Failed"] or [p for p in pods if pod_started(p)]
        if failed:
            pod = failed[-1]
            lines = self.pod_log(pod, tail=FAILURE_LOG_LINES)
            self.say(f"--- last {len(lines)} log lines of pod {pod.metadata.name} [rank {pod_index(pod)}] ---", err=True)
            for line in lines:
                self.say(f"[rank {pod_index(pod)}] {line}", err=True)
        self.say(f"{state.stage} Job {state.name} failed: {reason}{message}", err=True)

    # -- logs --------------------------------------------------------------------------------

    def pod_log(self, pod: Any, tail: int | None = None) -> list[str]:
        name = pod.metadata.name
        container = pod.spec.containers[0].name if pod.spec and pod.spec.containers else None
        with self._api(f"read the log of pod {name} in namespace {self.namespace}"):
            text = self.core.read_namespaced_pod_log(
                name, self.namespace, container=container, tail_lines=tail, _request_timeout=REQUEST_TIMEOUT
            )
        return (text or "").splitlines()

    def stream_pod_log(self, pod: Any, emit: Callable[[str], None], stop: threading.Event | None = None) -> None:
        """Follow one pod's log until its container ends, calling `emit` per line."""
        name = pod.metadata.name
        container = pod.spec.containers[0].name if pod.spec and pod.spec.containers else None
        with self._api(f"follow the log of pod {name} in namespace {self.namespace}"):
            resp = self.core.read_namespaced_pod_log(
                name,
                self.namespace,
                container=container,
                follow=True,
                _preload_content=False,  # a stream: no read timeout, a quiet rank is not an error
            )
            try:
                for raw in resp:
                    emit(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
                    if stop is not None and stop.is_set():
                        break
            finally:
                resp.release_conn()

    def logs(self, job: str, follow: bool = False, rank: int | None = None) -> int:
        """Print the logs of every rank of the job's Jobs (train, then evaluate), each line
        prefixed with its rank; waits for pods that have not started."""
        jobs = self.jobs_of(job)
        if not jobs:
            raise ClusterError(f"no job {job} in namespace {self.namespace} (see `kubetune list`)")
        several = len(jobs) > 1
        if rank is not None:
            jobs = [j for j in jobs if 0 <= rank < job_state(j).completions]
            if not jobs:
                raise ClusterError(f"--rank {rank}: job {job} has no such rank (ranks are 0 to nodes - 1)")
        if follow:
            follower = LogFollower(self, [j.metadata.name for j in jobs], rank=rank, stage_prefix=several)
            follower.start()
            follower.join_until_done()
            return 0
        for j in jobs:
            state = job_state(j)
            indices = [rank] if rank is not None else list(range(state.completions))
            for index in indices:
                pod = self._wait_for_pod(j.metadata.name, index)
                if pod is None:
                    continue
                prefix = _prefix(state.stage if several else None, index)
                for line in self.pod_log(pod):
                    self.say(f"{prefix} {line}")
        return 0

    def _wait_for_pod(self, job_name: str, index: int) -> Any | None:
        """The newest started pod of a completion index; waits while it is pending. None when
        the Job finished without one (or its pods were cleaned up)."""
        told = ""
        while True:
            pods = [p for p in self.pods_of(job_name) if pod_index(p) == index]
            started = [p for p in pods if pod_started(p)]
            if started:
                return started[-1]
            state = job_state(self.read_job(job_name))
            if state.done:
                self.say(f"{job_name}: no logs for rank {index} (the Job is {state.phase.lower()} and has no pod for it)", err=True)
                return None
            why = pod_waiting_reason(pods[-1]) if pods else ("queued" if state.phase == "Queued" else "no pod yet")
            note = f"waiting for rank {index} of {job_name} to start: {why}"
            if note != told:
                self.say(note, err=True)
                told = note
            time.sleep(POLL_SECONDS)

    # -- status, list, cancel ----------------------------------------------------------------

    def status(self, job: str) -> JobStatus:
        jobs = self.jobs_of(job)
        others = [f"{k}/{n}" for k, n in self.job_objects(job) if k != "Job"]
        if not jobs and not others:
            raise ClusterError(f"no job {job} in namespace {self.namespace} (see `kubetune list`)")
        result = JobStatus(job, self.namespace, other=others)
        for j in jobs:
            state = job_state(j)
            result.jobs.append(state)
            by_index: dict[int, list[Any]] = {}
            for pod in self.pods_of(j.metadata.name):
                by_index.setdefault(pod_index(pod), []).append(pod)
            rows = []
            for index, pods in sorted(by_index.items()):
                pod = pods[-1]
                rows.append(
                    PodRow(
                        index=index,
                        pod=pod.metadata.name,
                        phase=(pod.status.phase if pod.status else None) or "Pending",
                        attempts=len(pods),
                        restarts=sum(pod_restarts(p) for p in pods),
                        elapsed=duration(pod.status.start_time if pod.status else None, pod_finished(pod)),
                        last_line=self._last_line(pod),
                    )
                )
            result.pods[j.metadata.name] = rows
        return result

    def _last_line(self, pod: Any) -> str:
        if not pod_started(pod):
            return f"(waiting: {pod_waiting_reason(pod)})"
        try:
            lines = [line for line in self.pod_log(pod, tail=STATUS_TAIL_LINES) if line.strip()]
        except ClusterError as exc:
            return f"(no log: {str(exc).rsplit(': ', 1)[-1][:60]})"
        line = lines[-1].strip() if lines else ""
        return line if len(line) <= 100 else line[:97] + "..."

    def list_jobs(self) -> list[ListRow]:
        rows: dict[str, ListRow] = {}
        for j in self.list("Job", JOB_LABEL):
            name = (j.metadata.labels or {})[JOB_LABEL]
            row = rows.setdefault(name, ListRow(name))
            state = job_state(j)
            text = state.phase + (f" ({state.reason})" if state.reason and state.phase == "Failed" else "")
            if state.stage == "evaluate":
                row.evaluate = text
            else:
                row.train = text
            created = j.metadata.creation_timestamp
            if created and (row.created is None or created < row.created):
                row.created = created
        for cj in self.list("CronJob", JOB_LABEL):
            name = (cj.metadata.labels or {})[JOB_LABEL]
            row = rows.setdefault(name, ListRow(name))
            row.schedule = cj.spec.schedule
            row.created = row.created or cj.metadata.creation_timestamp
        return [rows[k] for k in sorted(rows)]

    def cancel(self, job: str, wait: bool = False) -> list[str]:
        """Delete everything labelled as part of `job` (Jobs take their pods with them)."""
        found = self.job_objects(job)
        if not found:
            raise ClusterError(f"no job {job} in namespace {self.namespace} (see `kubetune list`)")
        if wait:
            self._delete_and_wait(found, "Foreground")
        else:
            for kind, name in found:
                if self.delete(kind, name, "Background"):
                    self.say(f"{kind}/{name} deleted")
        return [f"{k}/{n}" for k, n in found]


def _create_rank(obj: dict[str, Any]) -> int:
    kind = obj.get("kind")
    return CREATE_ORDER.index(kind) if kind in CREATE_ORDER else len(CREATE_ORDER)


def _prefix(stage: str | None, index: int) -> str:
    return f"[{stage} rank {index}]" if stage else f"[rank {index}]"


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


class LogFollower:
    """Follow the logs of every pod of some Jobs as the pods start, one thread per pod, each
    line prefixed with its rank. New pods (a retry after a failure) are picked up too."""

    def __init__(self, cluster: Cluster, jobs: list[str], rank: int | None = None, stage_prefix: bool = False):
        self.cluster = cluster
        self.jobs = jobs
        self.rank = rank
        self.stage_prefix = stage_prefix
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._discoverer: threading.Thread | None = None
        self._told: set[str] = set()
        self.errors: list[str] = []

    def start(self) -> None:
        self._discoverer = threading.Thread(target=self._discover_loop, daemon=True)
        self._discoverer.start()

    def _discover_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.discover()
            except ClusterError as exc:  # reported once; the waiting loop reports fatal errors itself
                if str(exc) not in self.errors:
                    self.errors.append(str(exc))
                    self.cluster.say(f"logs: {exc}", err=True)
            self._stop.wait(POLL_SECONDS)

    def discover(self) -> None:
        for job_name in self.jobs:
            stage = None
            for pod in self.cluster.pods_of(job_name):
                index = pod_index(pod)
                name = pod.metadata.name
                if (self.rank is not None and index != self.rank) or name in self._threads:
                    continue
                if not pod_started(pod):
                    note = f"waiting for rank {index} ({name}) to start: {pod_waiting_reason(pod)}"
                    if note not in self._told:
                        self._told.add(note)
                        self.cluster.say(note, err=True)
                    continue
                if self.stage_prefix and stage is None:
                    stage = job_stage(self.cluster.read_job(job_name))
                prefix = _prefix(stage if self.stage_prefix else None, index)
                thread = threading.Thread(target=self._follow, args=(pod, prefix), daemon=True)
                self._threads[name] = thread
                thread.start()

    def _follow(self, pod: Any, prefix: str) -> None:
        try:
            self.cluster.stream_pod_log(pod, lambda line: self.cluster.say(f"{prefix} {line}"))
        except ClusterError as exc:
            if exc.status != 404:  # a pod deleted meanwhile has nothing more to say
                self.cluster.say(f"logs: {exc}", err=True)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop looking for pods, pick up the ones that started since the last look, and let
        the streams of finished pods drain."""
        self._stop.set()
        if self._discoverer is not None:
            self._discoverer.join(timeout)
        try:
            self.discover()
        except ClusterError:
            pass
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    def join_until_done(self) -> None:
        """Follow until every Job finished and its streams ended."""
        while True:
            states = [job_state(self.cluster.read_job(name)) for name in self.jobs]
            if all(s.done for s in states):
                break
            time.sleep(POLL_SECONDS)
        self.stop()
