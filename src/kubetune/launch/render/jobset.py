"""The training gang as a JobSet (`--engine jobset`, jobset.x-k8s.io/v1alpha2): the same pods as
the Indexed Job, but failures counted per incident instead of per pod.

One replicated job, `node` (names.TRAINER_NODE), is the gang: an Indexed Job of `nodes` pods
with `backoffLimit: 0`, so any failed pod fails the Job at once, and the JobSet's failure
policy decides what that incident means:

* the pod exited names' user-error code (exitcodes.EXIT_BAD_INPUT: the Job's podFailurePolicy
  fails it with reason `PodFailurePolicy`), or the Job ran past its deadline
  (`DeadlineExceeded`): `FailJobSet`, no restart;
* anything else: `RestartJobSet`, the whole gang recreated once, counted against
  `failurePolicy.maxRestarts` = `kubernetes.backoff_limit`. The new gang resumes from LATEST.

Disruptions (preemption, drain) and a pod that exits EXIT_RETRY_AFTER_CHECKPOINT stay `Ignore`d
by the Job's podFailurePolicy: the pod is replaced, the gang re-forms its rendezvous (torchrun),
no restart is spent. JobSet's own headless Service (`spec.network`) gives pod 0 its stable name
`<jobset>-node-0-0.<subdomain>`, so kubetune renders no Service for this engine. With
`kubernetes.cache_pvc`, an `initializer` replicated job (`launch.render.initializer`) runs
first and the gang `dependsOn` its completion.
"""

from __future__ import annotations

from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.render.naming import MAX_LABEL, Names, RenderError
from kubetune.launch.render.pod import object_metadata, pod_failure_policy, pod_template, train_command

JOBSET_API_VERSION = "jobset.x-k8s.io/v1alpha2"
# Reasons the Job controller gives a failed Job that a restart cannot help.
FINAL_FAILURE_REASONS = ["PodFailurePolicy", "DeadlineExceeded"]


def jobset_master_addr(jobset: str, subdomain: str) -> str:
    """Pod 0 of the gang: JobSet names pods `<jobset>-<replicated job>-<job index>-<pod index>`."""
    return f"{jobset}-{kn.TRAINER_NODE}-0-0.{subdomain}"


def gang_job_spec(spec: JobSpec, template: dict[str, Any], container: str) -> dict[str, Any]:
    """The Job of the gang inside a JobSet: every pod at once, failing at the first failed pod
    (the JobSet counts the incident), `Ignore` for disruptions and checkpointed exits."""
    nodes = spec.resources.max_nodes
    body: dict[str, Any] = {}
    if nodes > 1:
        body["completionMode"] = "Indexed"
    body["completions"] = nodes
    body["parallelism"] = nodes
    body["backoffLimit"] = 0
    body["activeDeadlineSeconds"] = spec.kubernetes.active_deadline_seconds
    body["podFailurePolicy"] = pod_failure_policy(container)
    body["podReplacementPolicy"] = "Failed"
    body["template"] = template
    return body


def failure_policy(spec: JobSpec) -> dict[str, Any]:
    """User errors and deadlines end the JobSet; any other failure restarts the whole gang, once
    per incident, up to `kubernetes.backoff_limit` times."""
    return {
        "maxRestarts": spec.kubernetes.backoff_limit,
        "restartStrategy": "Recreate",
        "rules": [
            {"name": "final", "action": "FailJobSet", "onJobFailureReasons": list(FINAL_FAILURE_REASONS)},
            {"name": "incident", "action": "RestartJobSet"},
        ],
    }


def train_jobset(spec: JobSpec, n: Names, initializer: dict[str, Any] | None = None) -> dict[str, Any]:
    """`<name>-train` as a JobSet; `initializer` (a replicated job) runs before the gang."""
    if len(f"{n.train}-{kn.TRAINER_NODE}-0-{spec.resources.max_nodes - 1}") > MAX_LABEL:
        raise RenderError(f"name: {spec.name!r} is too long for a JobSet's pod names ({MAX_LABEL} characters)")
    command = train_command(spec, n, master_addr=jobset_master_addr(n.train, n.service))
    template = pod_template(spec, n, kn.STAGE_TRAIN, command)
    template["spec"].pop("subdomain", None)  # the JobSet sets it from spec.network
    node: dict[str, Any] = {"name": kn.TRAINER_NODE, "replicas": 1}
    replicated = [node]
    if initializer is not None:
        node["dependsOn"] = [{"name": initializer["name"], "status": "Complete"}]
        replicated.insert(0, initializer)
    node["template"] = {
        "metadata": {"labels": dict(template["metadata"]["labels"])},
        "spec": gang_job_spec(spec, template, kn.STAGE_TRAIN),
    }
    queue = {kn.QUEUE_LABEL: spec.kubernetes.queue} if spec.kubernetes.queue else {}
    body: dict[str, Any] = {
        "network": {"enableDNSHostnames": True, "subdomain": n.service, "publishNotReadyAddresses": True},
        "replicatedJobs": replicated,
        "successPolicy": {"operator": "All", "targetReplicatedJobs": [kn.TRAINER_NODE]},
        "failurePolicy": failure_policy(spec),
    }
    if spec.kubernetes.ttl_seconds_after_finished is not None:
        body["ttlSecondsAfterFinished"] = spec.kubernetes.ttl_seconds_after_finished
    return {
        "apiVersion": JOBSET_API_VERSION,
        "kind": "JobSet",
        "metadata": object_metadata(spec, n.train, kn.STAGE_TRAIN, {kn.STAGE_LABEL: kn.STAGE_TRAIN, **queue}),
        "spec": body,
    }
