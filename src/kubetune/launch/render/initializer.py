"""The initializer: one container that fetches the model and the tokenized data once into the
shared cache volume (`kubernetes.cache_pvc`) before the training gang starts (the workload's
names.INITIALIZE_MODULE; what it does and why: `kubetune.workload.stages.initialization`).

How each engine runs it first:

* `job`: an init container of every train pod, the pods taking turns through a file lock on
  the volume (the first fetches, the others find it complete). Chosen over a separate Job the
  train Job waits on because a plain Job cannot wait for another: the waiting would move into
  `kubetune submit` and every `kubectl apply` recipe, while an init container keeps the stream
  one `kubectl apply -f -`, and what it waits for is seconds once the first pod fetched.
* `jobset`: a replicated job `initializer` (one pod) that the gang `dependsOn` (Complete).
* `trainjob`: the same replicated job in the ClusterTrainingRuntime (k8s/), patched per job
  with the job's volumes and environment (its image is the runtime's).

Rendered only with `kubernetes.cache_pvc`: without a shared volume there is nothing to share.
It asks for a CPU node's resources and no GPU.
"""

from __future__ import annotations

from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.profiles import default_cpu, default_memory
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.render.naming import Names
from kubetune.launch.render.pod import COMPONENT_LABEL, pod_failure_policy, pod_template

GPU = "nvidia.com/gpu"


def initialize_command() -> list[str]:
    return ["python", "-m", kn.INITIALIZE_MODULE, "--spec", kn.SPEC_PATH]


def initializer_pod(spec: JobSpec, n: Names) -> dict[str, Any]:
    """The train pod's template with the initializer as its one container: the same image,
    environment, volumes and security, no GPU, no rendezvous."""
    pod = pod_template(spec, n, kn.STAGE_TRAIN, initialize_command(), container_name=kn.INITIALIZER)
    container = pod["spec"]["containers"][0]
    amount = {"cpu": default_cpu(0), "memory": default_memory(0)}
    container["resources"] = {"requests": dict(amount), "limits": dict(amount)}
    container.pop("ports", None)
    container["env"] = [e for e in container["env"] if e["name"] != kn.ENV_TORCH_NO_SHARED_STORE]
    if not any(e["name"] == "CUDA_VISIBLE_DEVICES" for e in container["env"]):
        container["env"].append({"name": "CUDA_VISIBLE_DEVICES", "value": ""})
    pod["spec"].pop("subdomain", None)
    pod["spec"]["tolerations"] = [t for t in pod["spec"].get("tolerations", []) if t.get("key") != GPU]
    if not pod["spec"]["tolerations"]:
        del pod["spec"]["tolerations"]
    pod["metadata"]["labels"][COMPONENT_LABEL] = kn.INITIALIZER
    return pod


def init_container(spec: JobSpec, n: Names) -> dict[str, Any]:
    """`--engine job`: the initializer as an init container of each train pod."""
    return initializer_pod(spec, n)["spec"]["containers"][0]


def initializer_replicated_job(spec: JobSpec, n: Names) -> dict[str, Any]:
    """`--engine jobset`: the replicated job the gang depends on; a user error (exit 2) fails it
    at once (and the JobSet with it), a transient fault is retried."""
    pod = initializer_pod(spec, n)
    return {
        "name": kn.INITIALIZER,
        "replicas": 1,
        "template": {
            "metadata": {"labels": dict(pod["metadata"]["labels"])},
            "spec": {
                "completions": 1,
                "parallelism": 1,
                "backoffLimit": spec.kubernetes.backoff_limit,
                "activeDeadlineSeconds": spec.kubernetes.active_deadline_seconds,
                "podFailurePolicy": pod_failure_policy(kn.INITIALIZER),
                "podReplacementPolicy": "Failed",
                "template": pod,
            },
        },
    }
