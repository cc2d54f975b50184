"""The Jobs of a job (train, evaluate, predict), the training CronJob and the spec ConfigMap
they mount. How evaluation follows training is described in `kubetune.launch.render`.
"""

from __future__ import annotations

from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec, SpecError
from kubetune.launch.render.naming import Names
from kubetune.launch.render.pod import (
    AZURE_CLIENT_ID_ANNOTATION,
    GKE_SERVICE_ACCOUNT_ANNOTATION,
    common_labels,
    evaluate_command,
    object_metadata,
    pod_failure_policy,
    pod_template,
    predict_command,
    spec_text,
    train_command,
)

# CronJob schedules run in UTC whatever the controller's local time zone.
CRON_TIME_ZONE = "Etc/UTC"
# `$(VAR)` reference to the pod's own Job name (set from the Job controller's label).
JOB_NAME_REF = f"$({kn.ENV_JOB_NAME})"


# Kubernetes stores an object in etcd only up to 1 MiB; a ConfigMap's data is capped at that.
MAX_CONFIGMAP_BYTES = 1024 * 1024


def configmap(spec: JobSpec, n: Names) -> dict[str, Any]:
    """The resolved spec, mounted read-only into every pod of the job. Refused (SpecError)
    when it is larger than a ConfigMap may hold, before anything is printed or submitted."""
    text = spec_text(spec)
    if len(text.encode()) > MAX_CONFIGMAP_BYTES:
        raise SpecError(f"the resolved spec is {len(text.encode())} bytes; a ConfigMap holds at most "
                        f"{MAX_CONFIGMAP_BYTES} (1 MiB): shorten kubernetes.annotations or other long values")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(spec, n.configmap, "spec"),
        "data": {kn.SPEC_KEY: text},
    }



def _job_spec(spec: JobSpec, n: Names, stage: str, command: list[str]) -> dict[str, Any]:
    """A stage's Job body: one pod per node (Indexed when several), retries per gang."""
    k = spec.kubernetes
    nodes = spec.resources.max_nodes if stage in (kn.STAGE_TRAIN, kn.STAGE_PREDICT) else 1
    body: dict[str, Any] = {}
    if nodes > 1:
        body["completionMode"] = "Indexed"
    body["completions"] = nodes
    body["parallelism"] = nodes
    # Budget per gang. A failed worker costs no pod (torchrun's agents restart the gang, see
    # train_command); a lost pod costs one (the survivors wait for its replacement), but a lost
    # rank-0 pod takes the rendezvous store with it and fails every pod: `nodes` per incident.
    body["backoffLimit"] = k.backoff_limit * nodes
    if stage == kn.STAGE_TRAIN and spec.resources.elastic:
        body.update(elastic_fields(spec))
    body["activeDeadlineSeconds"] = k.active_deadline_seconds
    if k.ttl_seconds_after_finished is not None:
        body["ttlSecondsAfterFinished"] = k.ttl_seconds_after_finished
    body["podFailurePolicy"] = pod_failure_policy(stage)
    # A replacement pod starts only once the old one is gone: two pods never hold one rank.
    body["podReplacementPolicy"] = "Failed"
    body["template"] = pod_template(spec, n, stage, command)
    return body


# Job fields an elastic gang needs and the Kubernetes version that has them on by default:
# backoffLimitPerIndex and maxFailedIndexes (beta 1.29, GA 1.33), successPolicy (beta 1.31, GA 1.33).
ELASTIC_MIN_K8S = (1, 31)


def elastic_fields(spec: JobSpec) -> dict[str, Any]:
    """The train Job of a node range (docs/elastic.md): each index retried on its own
    (`backoffLimitPerIndex`: one failure per index per incident, where a fixed gang's shared
    budget is `nodes` per incident), up to `max - min` indexes given up for good while the rest
    trains on (`maxFailedIndexes`), and success when index 0 succeeds (`successPolicy`): its
    agent hosts the rendezvous and its rank 0 commits the model, so its exit 0 means the gang
    finished; the lingering pods (a replacement still pending, say) are then terminated instead
    of keeping the Job open."""
    r = spec.resources
    return {
        "backoffLimitPerIndex": spec.kubernetes.backoff_limit,
        "maxFailedIndexes": r.max_nodes - r.min_nodes,
        "successPolicy": {"rules": [{"succeededIndexes": "0"}]},
    }


def _queue_label(spec: JobSpec) -> dict[str, str]:
    """Kueue admits a Job through its queue label; parked Jobs go without it."""
    return {kn.QUEUE_LABEL: spec.kubernetes.queue} if spec.kubernetes.queue else {}


def train_job(spec: JobSpec, n: Names) -> dict[str, Any]:
    """`<name>-train`: every node's pod of the training (one gang)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_metadata(spec, n.train, kn.STAGE_TRAIN, {kn.STAGE_LABEL: kn.STAGE_TRAIN, **_queue_label(spec)}),
        "spec": _job_spec(spec, n, kn.STAGE_TRAIN, train_command(spec, n)),
    }


def evaluate_job(spec: JobSpec, n: Names, parked: bool = False, model: str | None = None) -> dict[str, Any]:
    """`parked`: created suspended and outside any Kueue queue, released by applying the
    evaluate stage after training completed (see the module docstring). `model`: a `--model`
    reference the pod scores instead of this run's model."""
    extra = {kn.STAGE_LABEL: kn.STAGE_EVALUATE, **({} if parked else _queue_label(spec))}
    body = _job_spec(spec, n, kn.STAGE_EVALUATE, evaluate_command(model))
    if parked:
        body = {"suspend": True, **body}
    else:
        body = {"suspend": False, **body}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_metadata(spec, n.evaluate, kn.STAGE_EVALUATE, extra),
        "spec": body,
    }


def predict_job(spec: JobSpec, n: Names, predict: dict[str, str]) -> dict[str, Any]:
    """`<name>-predict`: `resources.nodes` pods (an Indexed Job when more than one), each
    predicting its shard of `predict["input"]` into a part under `predict["output"]`."""
    body = _job_spec(spec, n, kn.STAGE_PREDICT, predict_command(spec, predict))
    nodes = spec.resources.max_nodes
    container = body["template"]["spec"]["containers"][0]
    container["env"] += [
        {"name": kn.ENV_NUM_NODES, "value": str(nodes)},
        {"name": kn.ENV_NODE_RANK, "value": f"$({kn.ENV_COMPLETION_INDEX})" if nodes > 1 else "0"},
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_metadata(spec, n.predict, kn.STAGE_PREDICT, {kn.STAGE_LABEL: kn.STAGE_PREDICT, **_queue_label(spec)}),
        "spec": body,
    }


def train_cronjob(spec: JobSpec, n: Names, schedule: str) -> dict[str, Any]:
    """Scheduled retraining. The Jobs it creates get generated names, so multi-node pods find
    rank 0 through their own Job name (JOB_NAME_REF, from the Job controller's job-name label
    on the pod). A single-process run evaluates its new model in the same pod (the retrain
    entrypoint); a distributed one trains only."""
    labels = {kn.STAGE_LABEL: kn.STAGE_TRAIN, **_queue_label(spec)}
    command = train_command(spec, n, job_name=JOB_NAME_REF, single_process_module=kn.RETRAIN_MODULE)
    job_spec = _job_spec(spec, n, kn.STAGE_TRAIN, command)
    for pod_container in job_spec["template"]["spec"]["containers"]:
        # Every scheduled run trains into runs/<its Job's name>/ instead of reporting the first
        # run as already complete.
        pod_container["env"].append({"name": kn.ENV_RUN, "value": JOB_NAME_REF})
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": object_metadata(spec, n.cronjob, kn.STAGE_TRAIN, {kn.STAGE_LABEL: kn.STAGE_TRAIN}),
        "spec": {
            "schedule": schedule,
            "timeZone": CRON_TIME_ZONE,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": {**common_labels(spec, kn.STAGE_TRAIN), **labels}},
                "spec": job_spec,
            },
        },
    }


def identity_service_account(spec: JobSpec, n: Names) -> dict[str, Any]:
    """`kubernetes.service_account`, annotated for `kubernetes.workload_identity`: GKE maps it
    to a Google service account, Azure to a client id (its pods also carry the label,
    `pod.pod_template`). No token is mounted from it: the platform's own metadata server (GKE)
    or projected token (Azure's webhook) gives the pods their identity. `kubetune submit` keeps
    one that exists already (another job's)."""
    identity = spec.kubernetes.workload_identity
    assert identity is not None and spec.kubernetes.service_account
    annotations = ({GKE_SERVICE_ACCOUNT_ANNOTATION: identity.gcp_service_account} if identity.gcp_service_account
                   else {AZURE_CLIENT_ID_ANNOTATION: identity.azure_client_id})
    metadata = object_metadata(spec, spec.kubernetes.service_account, "identity")
    metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata, "automountServiceAccountToken": False}
