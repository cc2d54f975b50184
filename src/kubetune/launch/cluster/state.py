"""What a job is doing on the cluster: the phase of its Jobs, its pods per completion index, and
the rows `status` and `list` show. Data only; the CLI formats and prints it.

A job is found by the label every object of it carries (names.JOB_LABEL, the renderer's
contract), whatever objects a version of the renderer produced. A training gang run by another
engine (a JobSet, a TrainJob: GANG_KINDS) has its own phase, from its conditions, and its pods
belong to the batch Job the engine creates for its `node` replicated job (`gang_pods_job`),
which carries the same labels. Pods are found through the
labels the Job controller puts on them (names.JOB_NAME_LABEL, names.COMPLETION_INDEX_KEY); the
completion index is the rank a line of log is prefixed with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

from kubernetes import client

from kubetune.contract import names as kn
from kubetune.launch.cluster.api import Cluster, ClusterError, CustomObject, deletion_order, job_gone
from kubetune.launch.render.pod import COMPONENT_LABEL

# Lines read to find a pod's last progress line in `status`.
STATUS_TAIL_LINES = 20


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
    kind: str = "Job"
    restarts: int = 0  # a gang's restarts (JobSet: one per incident)
    pods_job: str = ""  # the batch Job whose pods these are, when not `name`

    @property
    def done(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass
class PodRow:
    index: int
    pod: str
    phase: str
    attempts: int
    restarts: int
    started: datetime | None
    finished: datetime | None
    last_line: str


@dataclass
class JobStatus:
    job: str
    namespace: str
    jobs: list[JobState] = field(default_factory=list)
    pods: dict[str, list[PodRow]] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)


@dataclass
class ListRow:
    name: str
    train: str = "-"
    evaluate: str = "-"
    schedule: str = "-"
    created: datetime | None = None


def now() -> datetime:
    return datetime.now(timezone.utc)


def job_stage(job: Any) -> str:
    """train or evaluate: the stage label the renderer sets, else (objects of older
    renderers) the component label, else the name."""
    labels = job.metadata.labels or {}
    for key in (kn.STAGE_LABEL, COMPONENT_LABEL):
        if labels.get(key) in (kn.STAGE_TRAIN, kn.STAGE_EVALUATE):
            return labels[key]
    return kn.STAGE_EVALUATE if job.metadata.name.endswith(("-evaluate", "-eval")) else kn.STAGE_TRAIN


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


# Kinds whose object is a whole training gang (`--engine jobset`, `--engine trainjob`).
GANG_KINDS: tuple[str, ...] = ("JobSet", "TrainJob")
# The conditions that end a gang, by kind: (succeeded, failed).
_GANG_END = {"JobSet": ("Completed", "Failed"), "TrainJob": ("Complete", "Failed")}


def gang_pods_job(name: str) -> str:
    """The batch Job of a gang's pods: JobSet names it `<jobset>-<replicated job>-<index>`, and
    Kubeflow Trainer names the JobSet after the TrainJob."""
    return f"{name}-{kn.TRAINER_NODE}-0"


def gang_state(obj: CustomObject) -> JobState:
    """The phase of a JobSet or TrainJob from its conditions."""
    raw = obj.raw
    status = raw.get("status") or {}
    true = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    spec = raw.get("spec") or {}
    nodes = (spec.get("trainer") or {}).get("numNodes") or next(
        (r["template"]["spec"].get("completions", 1) for r in spec.get("replicatedJobs", []) if r.get("name") == kn.TRAINER_NODE), 1)
    succeeded, failed = _GANG_END[raw["kind"]]
    state = JobState(name=obj.metadata.name, stage=job_stage(obj), phase="Pending", completions=nodes,
                     created=obj.metadata.creation_timestamp, started=obj.metadata.creation_timestamp,
                     kind=raw["kind"], restarts=status.get("restarts") or 0, pods_job=gang_pods_job(obj.metadata.name))
    if succeeded in true:
        state.phase, state.succeeded = "Succeeded", nodes
        state.finished = _time(true[succeeded].get("lastTransitionTime"))
    elif failed in true:
        state.phase, state.finished = "Failed", _time(true[failed].get("lastTransitionTime"))
        state.reason, state.message = true[failed].get("reason") or "", true[failed].get("message") or ""
    elif "Suspended" in true or spec.get("suspend"):
        state.phase, state.reason = "Queued", "Suspended"
    elif status:
        state.phase = "Running"
    return state


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def current_state(cluster: Cluster, name: str, kind: str = "Job") -> JobState:
    """The state of Job `name`, or of the gang `kind`/`name`; a ClusterError when it is gone."""
    if kind == "Job":
        return job_state(cluster.read_job(name))
    obj = cluster.read(kind, name)
    if obj is None:
        raise ClusterError(f"{kind} {name} in namespace {cluster.namespace} no longer exists (cancelled?)")
    return gang_state(obj)


def job_states(cluster: Cluster, name: str, kind: str = "Job") -> Iterator[JobState]:
    """Job `name`'s (or gang `kind`/`name`'s) state now and at every change, until it
    succeeded or failed (a watch, not polling). A ClusterError when it is deleted meanwhile."""
    state = current_state(cluster, name, kind)
    yield state
    if state.done:
        return
    for event, obj in cluster.watch(kind, name=name):
        if event == "DELETED":
            raise ClusterError(job_gone(name, cluster.namespace) if kind == "Job" else
                               f"{kind} {name} in namespace {cluster.namespace} no longer exists (cancelled?)")
        state = job_state(obj) if kind == "Job" else gang_state(obj)
        yield state
        if state.done:
            return


def gangs_of(cluster: Cluster, job: str) -> list[Any]:
    """The JobSets and TrainJobs of a kubetune job (none where those engines are not installed)."""
    return [obj for kind in GANG_KINDS for obj in cluster.list(kind, f"{kn.JOB_LABEL}={job}") if not _owned_gang(obj)]


def _owned_gang(obj: CustomObject) -> bool:
    """A JobSet a TrainJob made: the TrainJob is the gang we report."""
    return any(o.get("kind") in GANG_KINDS for o in obj.raw.get("metadata", {}).get("ownerReferences") or [])


def pod_index(pod: Any) -> int:
    meta = pod.metadata
    value = (meta.labels or {}).get(kn.COMPLETION_INDEX_KEY) or (meta.annotations or {}).get(kn.COMPLETION_INDEX_KEY)
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


def pods_selector(job_names: list[str]) -> str:
    """Label selector of the pods of some batch Jobs."""
    if len(job_names) == 1:
        return f"{kn.JOB_NAME_LABEL}={job_names[0]}"
    return f"{kn.JOB_NAME_LABEL} in ({','.join(job_names)})"


def job_objects(cluster: Cluster, job: str) -> list[tuple[str, str]]:
    """(kind, name) of everything labelled as part of `job`, in deletion order."""
    return [(kind, obj.metadata.name) for kind in deletion_order() for obj in cluster.list(kind, f"{kn.JOB_LABEL}={job}")]


def jobs_of(cluster: Cluster, job: str) -> list[Any]:
    """The batch Jobs of a kubetune job, train before evaluate, oldest first."""
    jobs = cluster.list("Job", f"{kn.JOB_LABEL}={job}")
    return sorted(jobs, key=lambda j: (job_stage(j) != kn.STAGE_TRAIN, j.metadata.creation_timestamp or now(), j.metadata.name))


def pods_of(cluster: Cluster, job_name: str) -> list[Any]:
    """The pods of one batch Job, by completion index, oldest first."""
    pods = cluster.list_pods(pods_selector([job_name]))
    return sorted(pods, key=lambda p: (pod_index(p), p.metadata.creation_timestamp or now(), p.metadata.name))


def no_such_job(cluster: Cluster, job: str) -> ClusterError:
    return ClusterError(f"no job {job} in namespace {cluster.namespace} (see `kubetune list`)")


def job_status(cluster: Cluster, job: str) -> JobStatus:
    """Every Job of `job` with its pods per completion index, and its other objects."""
    jobs = jobs_of(cluster, job)
    others = [f"{k}/{n}" for k, n in job_objects(cluster, job) if k != "Job" and k not in GANG_KINDS]
    gangs = gangs_of(cluster, job)
    if not jobs and not others and not gangs:
        raise no_such_job(cluster, job)
    result = JobStatus(job, cluster.namespace, other=others)
    result.jobs += [gang_state(g) for g in gangs]
    for j in jobs:
        result.jobs.append(job_state(j))
        by_index: dict[int, list[Any]] = {}
        for pod in pods_of(cluster, j.metadata.name):
            by_index.setdefault(pod_index(pod), []).append(pod)
        result.pods[j.metadata.name] = [
            PodRow(
                index=index,
                pod=pods[-1].metadata.name,
                phase=(pods[-1].status.phase if pods[-1].status else None) or "Pending",
                attempts=len(pods),
                restarts=sum(pod_restarts(p) for p in pods),
                started=pods[-1].status.start_time if pods[-1].status else None,
                finished=pod_finished(pods[-1]),
                last_line=_last_line(cluster, pods[-1]),
            )
            for index, pods in sorted(by_index.items())
        ]
    return result


def _last_line(cluster: Cluster, pod: Any) -> str:
    if not pod_started(pod):
        return f"(waiting: {pod_waiting_reason(pod)})"
    try:
        lines = [line for line in cluster.pod_log(pod, tail=STATUS_TAIL_LINES) if line.strip()]
    except ClusterError as exc:
        return f"(no log: {str(exc).rsplit(': ', 1)[-1][:60]})"
    line = lines[-1].strip() if lines else ""
    return line if len(line) <= 100 else line[:97] + "..."


def list_jobs(cluster: Cluster) -> list[ListRow]:
    """One row per kubetune job in the namespace: its train and evaluate phase, schedule, age."""
    rows: dict[str, ListRow] = {}
    for j in cluster.list("Job", kn.JOB_LABEL):
        name = (j.metadata.labels or {})[kn.JOB_LABEL]
        row = rows.setdefault(name, ListRow(name))
        state = job_state(j)
        text = state.phase + (f" ({state.reason})" if state.reason and state.phase == "Failed" else "")
        if state.stage == kn.STAGE_EVALUATE:
            row.evaluate = text
        else:
            row.train = text
        created = j.metadata.creation_timestamp
        if created and (row.created is None or created < row.created):
            row.created = created
    for gang in (obj for kind in GANG_KINDS for obj in cluster.list(kind, kn.JOB_LABEL) if not _owned_gang(obj)):
        state = gang_state(gang)
        row = rows.setdefault(gang.metadata.labels[kn.JOB_LABEL], ListRow(gang.metadata.labels[kn.JOB_LABEL]))
        row.train = f"{state.kind} {state.phase}" + (f" ({state.reason})" if state.reason and state.phase == "Failed" else "")
        row.train += f", {state.restarts} restarts" if state.restarts else ""
        row.created = min(filter(None, [row.created, gang.metadata.creation_timestamp]), default=None)
    for cj in cluster.list("CronJob", kn.JOB_LABEL):
        name = (cj.metadata.labels or {})[kn.JOB_LABEL]
        row = rows.setdefault(name, ListRow(name))
        row.schedule = cj.spec.schedule
        row.created = row.created or cj.metadata.creation_timestamp
    return [rows[k] for k in sorted(rows)]


def duration(start: datetime | None, end: datetime | None = None) -> str:
    """`42s`, `5m12s`, `2h03m`, `3d04h`; `-` without a start (the way kubectl shows ages)."""
    if start is None:
        return "-"
    seconds = max(0, int(((end or now()) - start).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
