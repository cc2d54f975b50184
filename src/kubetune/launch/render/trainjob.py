"""The training gang as a Kubeflow Trainer v2 TrainJob (`--engine trainjob`,
trainer.kubeflow.org/v1alpha1), on the ClusterTrainingRuntime names.TRAINING_RUNTIME that
kubetune ships in `k8s/trainjob-runtime.yaml`.

One runtime serves every kubetune job: it holds what never changes between jobs (the JobSet
with its `node` replicated job, `mlPolicy.torch`, the failure policy of
`launch.render.jobset`, restartPolicy, the non-root security settings, the initializer). The
TrainJob carries the rest, built from the very pod `--engine job` renders
(`launch.render.pod.pod_template`), so the pods are the same:

* `spec.trainer`: image, command, `numNodes`, `numProcPerNode`, `resourcesPerNode`, env;
* `spec.runtimePatches` (manager names.RUNTIME_PATCH_MANAGER): the pod's labels and annotations,
  volumes and mounts (the job's spec ConfigMap, the storage Secret, the cache PVC),
  security contexts, node selector, tolerations, affinity, pull secrets, service account and
  grace period, the parts Kubeflow Trainer lets a TrainJob patch; the same for the runtime's
  `initializer` (`launch.render.initializer`), with its environment.

What a TrainJob cannot carry: `priorityClassName` (not patchable: the runtime's, or Kueue's
WorkloadPriorityClass, applies; `dropped_settings` names it so the CLI warns) and a storage
Secret given as environment (`storage_credentials: env`, no `envFrom` in a TrainJob: refused).
Kubeflow Trainer names the JobSet after the TrainJob and gives it no other subdomain, so pod 0
is `<trainjob>-node-0-0.<trainjob>`.
"""

from __future__ import annotations

from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.render.initializer import initializer_pod
from kubetune.launch.render.jobset import jobset_master_addr
from kubetune.launch.render.naming import MAX_LABEL, Names, RenderError
from kubetune.launch.render.pod import object_metadata, pod_template, train_command

TRAINER_API_GROUP = "trainer.kubeflow.org"
TRAINJOB_API_VERSION = f"{TRAINER_API_GROUP}/v1alpha1"
# Pod fields a runtime patch may set (the TrainJob CRD's PodSpecPatch), copied from our pod.
_PATCHABLE_POD_FIELDS = ("securityContext", "serviceAccountName", "terminationGracePeriodSeconds", "nodeSelector",
                         "tolerations", "affinity", "imagePullSecrets", "volumes")


def dropped_settings(spec: JobSpec) -> list[str]:
    """Spec settings a TrainJob cannot carry (the runtime's apply instead), for a warning."""
    return ["kubernetes.priority_class"] if spec.kubernetes.priority_class else []


def _replicated_patch(name: str, pod: dict[str, Any], with_env: bool) -> dict[str, Any]:
    """The patch of the runtime's replicated job `name`: this job's pod around its container
    (and its environment where no trainer field carries it)."""
    container = pod["spec"]["containers"][0]
    pod_spec = {key: pod["spec"][key] for key in _PATCHABLE_POD_FIELDS if key in pod["spec"]}
    patched = {"name": container["name"], "securityContext": container["securityContext"],
               "volumeMounts": container["volumeMounts"]}
    if with_env:
        patched = {"name": container["name"], "env": container["env"], **patched}
    pod_spec["containers"] = [patched]
    template = {"metadata": {"labels": pod["metadata"]["labels"], "annotations": pod["metadata"]["annotations"]},
                "spec": pod_spec}
    # The labels on the Job too, so `kubetune status/logs` find the engine's Job as they find ours.
    return {"name": name, "template": {"metadata": {"labels": pod["metadata"]["labels"]}, "spec": {"template": template}}}


def _runtime_patch(pod: dict[str, Any], initializer: dict[str, Any]) -> dict[str, Any]:
    """The TrainJob's patch of the runtime: everything per job but the trainer fields, for the
    `node` pods and the initializer's."""
    replicated = [_replicated_patch(kn.INITIALIZER, initializer, with_env=True),
                  _replicated_patch(kn.TRAINER_NODE, pod, with_env=False)]
    return {"manager": kn.RUNTIME_PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": replicated}}}}


def train_trainjob(spec: JobSpec, n: Names) -> dict[str, Any]:
    """`<name>-train` as a TrainJob on the kubetune ClusterTrainingRuntime."""
    k = spec.kubernetes
    if k.storage_secret and k.storage_credentials == "env":
        raise RenderError("kubernetes.storage_credentials: env cannot be rendered as a TrainJob (no envFrom); use file")
    if len(f"{n.train}-{kn.TRAINER_NODE}-0-{spec.resources.max_nodes - 1}") > MAX_LABEL:
        raise RenderError(f"name: {spec.name!r} is too long for a TrainJob's pod names ({MAX_LABEL} characters)")
    command = train_command(spec, n, master_addr=jobset_master_addr(n.train, n.train))
    pod = pod_template(spec, n, kn.STAGE_TRAIN, command, container_name=kn.TRAINER_NODE)
    container = pod["spec"]["containers"][0]
    trainer = {
        "image": container["image"],
        "command": container["command"],
        "numNodes": spec.resources.max_nodes,
        "numProcPerNode": max(spec.resources.gpus_per_node, 1),
        "resourcesPerNode": container["resources"],
        "env": container["env"],
    }
    queue = {kn.QUEUE_LABEL: k.queue} if k.queue else {}
    body: dict[str, Any] = {
        "runtimeRef": {"apiGroup": TRAINER_API_GROUP, "kind": "ClusterTrainingRuntime", "name": kn.TRAINING_RUNTIME},
        "activeDeadlineSeconds": k.active_deadline_seconds,
        "trainer": trainer,
        "runtimePatches": [_runtime_patch(pod, initializer_pod(spec, n))],
    }
    return {
        "apiVersion": TRAINJOB_API_VERSION,
        "kind": "TrainJob",
        "metadata": object_metadata(spec, n.train, kn.STAGE_TRAIN, {kn.STAGE_LABEL: kn.STAGE_TRAIN, **queue}),
        "spec": body,
    }
