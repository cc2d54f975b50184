"""Changing what is on the cluster: `submit` as a plan, then its application; `cancel`.

Evaluation follows training (see `kubetune.launch.render`): the plan creates the train
objects; with `wait` it follows the train Job to its end and, when it succeeded, creates the
evaluate Job and follows that too. Without `wait`, `submit --stage evaluate` starts evaluation
later. The plan is built first from what exists (so a clash is refused before anything is
changed); `--dry-run` shows it and sends it with the server-side dry-run flag.

Nothing here prints: the application is an iterator of `Note`s the CLI prints; its return
value is the exit code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Generator, Iterator

from kubetune.launch.cluster import api
from kubetune.launch.cluster.api import BY_KIND, Cluster, ClusterError, create_rank, one_line, ref
from kubetune.launch.cluster.logs import Note, follow, prefix
from kubetune.launch.cluster.state import (
    GANG_KINDS,
    JobState,
    current_state,
    duration,
    job_objects,
    no_such_job,
    pod_index,
    pod_started,
    pods_of,
)

# How long `--replace` / `cancel --wait` wait for deleted objects to disappear.
DELETE_TIMEOUT_S = 300.0
# Lines of the failing pod's log shown when a Job fails.
FAILURE_LOG_LINES = 20

Steps = Generator[Note, None, int]


@dataclass(frozen=True)
class Action:
    """One step of a submission: `delete` (replaced), `keep` (exists, reused), `create`, or
    `wait` (follow a Job to its end; the next stage is created only if it succeeded)."""

    verb: str
    ref: str
    obj: dict[str, Any] | None = None

    @property
    def kind_name(self) -> tuple[str, str]:
        kind, _, name = self.ref.partition("/")
        return kind, name


@dataclass
class Plan:
    job: str
    namespace: str
    dry_run: bool
    wait: bool
    stages: int
    source: str
    actions: list[Action] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The plan as a reader checks it before anything is sent."""
        return [f"{a.verb:<7}{a.ref}" for a in self.actions]


def plan_submit(
    cluster: Cluster,
    job: str,
    stages: list[list[dict[str, Any]]],
    *,
    replace: bool = False,
    dry_run: bool = False,
    wait: bool = False,
    reuse: tuple[str, ...] = (),
    source: str = "<job.yaml>",
) -> Plan:
    """What submitting `stages` would do. Objects that exist already are refused (a
    ClusterError), deleted first with `replace`, or, for kinds in `reuse`, kept as they are.
    Later stages are planned only with `wait` (or `dry_run`, which sends every object)."""
    planned: list[list[dict[str, Any]]] = []
    seen: set[str] = set()
    for objects in stages:
        fresh = [o for o in sorted(objects, key=lambda o: create_rank(o.get("kind"))) if ref(o) not in seen]
        seen.update(ref(o) for o in fresh)
        planned.append(fresh)
    everything = [o for stage in planned for o in stage]
    for obj in everything:
        if obj.get("kind") not in BY_KIND:
            raise ClusterError(f"{ref(obj)}: kubetune does not create objects of kind {obj.get('kind')}")
    for kind in sorted({o["kind"] for o in everything if BY_KIND[o["kind"]].custom}):
        cluster.check_served(kind)
    existing = [o for o in everything if cluster.read(o["kind"], o["metadata"]["name"]) is not None]
    kept = {ref(o) for o in existing if o["kind"] in reuse}
    clashing = [ref(o) for o in existing if ref(o) not in kept]
    if clashing and not replace:
        raise ClusterError(
            f"job {job} already exists in namespace {cluster.namespace} ({', '.join(clashing)}); "
            f"pass --replace to delete and submit it again, or run `kubetune cancel {job}`"
        )
    plan = Plan(job, cluster.namespace, dry_run, wait, len(planned), source)
    plan.actions += [Action("delete", r) for r in clashing]
    for number, stage in enumerate(planned):
        if number > 0 and not (wait or dry_run):
            break
        plan.actions += [Action("keep" if ref(o) in kept else "create", ref(o), o) for o in stage]
        if wait and not dry_run:
            plan.actions += [Action("wait", ref(o)) for o in stage if o["kind"] in ("Job", *GANG_KINDS)]
    return plan


def apply(cluster: Cluster, plan: Plan) -> Steps:
    """Carry out `plan`, saying what was done; returns 0 when everything asked for succeeded."""
    replaced = {a.ref for a in plan.actions if a.verb == "delete"}
    if replaced and plan.dry_run:
        for r in sorted(replaced, key=lambda r: create_rank(r.partition("/")[0])):
            cluster.delete(*r.split("/", 1), "Foreground", dry_run=True)
            yield Note(f"{r} would be replaced (server dry run)")
    elif replaced:
        yield from delete_and_wait(cluster, [a.kind_name for a in plan.actions if a.verb == "delete"])
    created: list[str] = []
    for action in plan.actions:
        if action.verb == "keep" and not plan.dry_run:
            yield Note(f"{action.ref} exists, kept")
        elif action.verb == "create" and plan.dry_run:
            if action.ref not in replaced:
                cluster.create(action.obj or {}, dry_run=True)
                yield Note(f"{action.ref} accepted (server dry run, nothing created)")
        elif action.verb == "create":
            _create(cluster, plan.job, action, created)
            created.append(action.ref)
            yield Note(f"{action.ref} created")
        elif action.verb == "wait":
            state = yield from wait_job(cluster, action.kind_name[1], action.kind_name[0])
            if state.phase != "Succeeded":
                yield from report_failure(cluster, state)
                return 1
            yield Note(f"{state.stage} {state.kind} {state.name} succeeded in {duration(state.started, state.finished)}")
    if plan.dry_run:
        return 0
    if plan.wait:
        yield Note(f"job {plan.job} succeeded")
        return 0
    follow_hint = f"submitted {plan.job} in namespace {plan.namespace}; follow with `kubetune logs {plan.job} -f`"
    if plan.stages > 1:
        follow_hint += (". Evaluation is not started without --wait: after training succeeded, run "
                        f"`kubetune submit {plan.source} --stage evaluate`")
    yield Note(follow_hint)
    return 0


def _create(cluster: Cluster, job: str, action: Action, created: list[str]) -> None:
    """Create one object; a failure names what this submission created before it."""
    try:
        cluster.create(action.obj or {})
    except ClusterError as exc:
        if not created:
            raise
        raise ClusterError(
            f"{exc} (created before the failure: {', '.join(created)}; `kubetune cancel {job}` removes them)", exc.status
        ) from None


def wait_job(cluster: Cluster, name: str, kind: str = "Job") -> Generator[Note, None, JobState]:
    """Follow Job `name` (or the gang `kind`/`name`: a JobSet, a TrainJob) until it succeeded
    or failed (a watch), streaming its pods' logs meanwhile; returns its final state."""
    state = current_state(cluster, name, kind)
    yield Note(f"waiting for {state.stage} {kind} {name} ({state.completions} pod{'s' if state.completions > 1 else ''})")
    last_phase = state.phase
    gang = (kind, name) if kind != "Job" else None
    for item in follow(cluster, [state.pods_job or name], gang=gang):
        if isinstance(item, Note):
            yield item
            continue
        state = item
        if state.phase != last_phase:
            last_phase = state.phase
            if state.phase == "Queued":
                yield Note(f"{name}: queued (suspended, e.g. by Kueue); waiting for admission")
    return state


def report_failure(cluster: Cluster, state: JobState) -> Iterator[Note]:
    """The failed Job's reason, after the last log lines of its failing pod."""
    reason = state.reason or "unknown reason"
    message = f": {one_line(state.message)}" if state.message else ""
    pods = pods_of(cluster, state.pods_job or state.name)
    failed = [p for p in pods if p.status and p.status.phase == "Failed"] or [p for p in pods if pod_started(p)]
    if failed:
        pod = failed[-1]
        lines = cluster.pod_log(pod, tail=FAILURE_LOG_LINES)
        yield Note(f"--- last {len(lines)} log lines of pod {pod.metadata.name} [rank {pod_index(pod)}] ---", err=True)
        for line in lines:
            yield Note(f"{prefix(None, pod_index(pod))} {line}", err=True)
    restarts = f" after {state.restarts} restart{'s' if state.restarts != 1 else ''}" if state.restarts else ""
    yield Note(f"{state.stage} {state.kind} {state.name} failed{restarts}: {reason}{message}", err=True)


def delete_and_wait(cluster: Cluster, refs: list[tuple[str, str]], propagation: str = "Foreground") -> Iterator[Note]:
    """Delete objects, then wait until they are gone (with Foreground, a Job goes only after
    its pods). Polls: the objects are of several kinds, and only Jobs and pods are watched."""
    for kind, name in refs:
        if cluster.delete(kind, name, propagation):
            yield Note(f"{kind}/{name} deleted")
    deadline = time.monotonic() + DELETE_TIMEOUT_S
    pending = list(refs)
    while pending:
        pending = [(k, n) for k, n in pending if cluster.read(k, n) is not None]
        if not pending:
            break
        if time.monotonic() > deadline:
            names = ", ".join(f"{k}/{n}" for k, n in pending)
            raise ClusterError(f"timed out after {DELETE_TIMEOUT_S:.0f}s waiting for {names} to be deleted")
        time.sleep(api.POLL_SECONDS)


def cancel(cluster: Cluster, job: str, wait: bool = False) -> Iterator[Note]:
    """Delete everything labelled as part of `job` (Jobs take their pods with them)."""
    found = job_objects(cluster, job)
    if not found:
        raise no_such_job(cluster, job)
    if wait:
        yield from delete_and_wait(cluster, found, "Foreground")
        return
    for kind, name in found:
        if cluster.delete(kind, name, "Background"):
            yield Note(f"{kind}/{name} deleted")
