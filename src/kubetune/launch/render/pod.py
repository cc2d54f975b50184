"""One pod of a job: its command, environment, volumes, resources and security settings.

Every name the pod reads back (environment variables, in-pod paths, entrypoint modules, label
keys) comes from `kubetune.contract.names`, so the renderer and the entrypoints cannot drift.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_BAD_INPUT, EXIT_NO_SPACE, EXIT_RETRY_AFTER_CHECKPOINT
from kubetune.contract.profiles import cpu_cores, default_cpu, default_memory, threads_per_process
from kubetune.contract.spec.job import JobSpec
from kubetune.contract.spec.credentials import GCS_SCHEMES
from kubetune.launch.render.naming import Names

# The user the images run as (docker/Dockerfile); high, so it matches no host user.
RUN_AS_USER = 10001
# Workload identity (kubernetes.workload_identity): the pod label Azure's webhook selects on, and
# the ServiceAccount annotations GKE and Azure read (`jobs.identity_service_account`).
AZURE_IDENTITY_LABEL = "azure.workload.identity/use"
AZURE_CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
GKE_SERVICE_ACCOUNT_ANNOTATION = "iam.gke.io/gcp-service-account"
# Label keys of the app.kubernetes.io family (recommended labels), on every object.
COMPONENT_LABEL = "app.kubernetes.io/component"


def spec_text(spec: JobSpec) -> str:
    """The resolved spec as the ConfigMap carries it (and its hash is taken of)."""
    return spec.to_yaml()


def resolved_spec_hash(spec: JobSpec) -> str:
    """The SHA-256 of the resolved spec the ConfigMap carries (`spec_text`), annotated on every
    pod (names.SPEC_HASH_ANNOTATION), so a changed spec is visible on the cluster. Not the
    workload's lineage hash of a run's spec, which leaves out the fields that do not change
    what a run computes."""
    return hashlib.sha256(spec_text(spec).encode()).hexdigest()


def common_labels(spec: JobSpec, component: str) -> dict[str, str]:
    """Labels of every object: `kubetune status/list/cancel` find a job by JOB_LABEL alone."""
    labels = {
        "app.kubernetes.io/name": "kubetune",
        "app.kubernetes.io/instance": spec.name,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/managed-by": "kubetune",
        kn.JOB_LABEL: spec.name,
    }
    return {**spec.kubernetes.labels, **labels}


def object_metadata(spec: JobSpec, name: str, component: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """`metadata` of one object: its name, the spec's namespace (if any) and the labels."""
    meta: dict[str, Any] = {"name": name}
    if spec.kubernetes.namespace:
        meta["namespace"] = spec.kubernetes.namespace
    meta["labels"] = {**common_labels(spec, component), **(extra or {})}
    return meta



def _entry(module: str, *args: str) -> list[str]:
    """`-m MODULE --spec SPEC_PATH ARGS`: how every entrypoint is started."""
    return ["-m", module, "--spec", kn.SPEC_PATH, *args]


def _standalone(gpus: int, entry: list[str]) -> list[str]:
    """Several processes in one pod: distrun (torchrun keeping the workers' exit codes)."""
    return ["python", "-m", kn.DISTRUN_MODULE, "--standalone", "--nnodes=1", f"--nproc-per-node={gpus}", *entry]


def train_command(
    spec: JobSpec, n: Names, job_name: str | None = None, single_process_module: str = kn.TRAIN_MODULE,
    master_addr: str | None = None,
) -> list[str]:
    """The train container's command. `job_name` is a literal Job name, or an env reference
    (to names.ENV_JOB_NAME) when the Job's name is not known in advance (CronJob).
    `single_process_module` is what one process per pod runs (a CronJob's retrain entrypoint);
    distributed runs always train only. `master_addr`: rank 0's DNS name where the engine
    names pods its own way (JobSet, TrainJob); default the Indexed Job's."""
    nodes, gpus = spec.resources.max_nodes, spec.resources.gpus_per_node
    if nodes == 1 and gpus <= 1:
        return ["python", *_entry(single_process_module)]
    entry = _entry(kn.TRAIN_MODULE)
    if nodes == 1:
        return _standalone(gpus, entry)
    # Whole-gang recovery (docs/recovery.md, "Recovery of multi-node runs"): torchrun's elastic agents meet
    # in a c10d rendezvous whose store pod 0 hosts (the endpoint is its name; distrun tells the
    # agent of completion index 0 to host it); when a worker fails, or a replaced pod's agent
    # joins, every agent stops its workers and the gang restarts from LATEST, up to
    # `train.max_restarts` times.
    # An elastic range (docs/elastic.md): `--nnodes=MIN:MAX`, the same rendezvous; the agents
    # also restart for each node lost, so their budget grows by `elastic_restarts`.
    r = spec.resources
    return [
        "python",
        "-m",
        kn.DISTRUN_MODULE,
        f"--nnodes={r.min_nodes}:{nodes}" if r.elastic else f"--nnodes={nodes}",
        f"--nproc-per-node={max(gpus, 1)}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={master_addr or n.master_addr(job_name)}:{spec.kubernetes.rendezvous_port}",
        f"--rdzv-id={job_name or n.train}",
        f"--max-restarts={spec.train.max_restarts + (elastic_restarts(nodes) if r.elastic else 0)}",
        *entry,
    ]


# An elastic gang's agents restart their workers once for each node lost (its peers' collectives
# fail; torch counts that against --max-restarts, while a node joining does not count). The
# budget for that: this many losses per node of the range's max, over one agent's life. An agent
# that spends it exits, and the Job replaces its pod with a fresh budget (one failure of its index).
LOSSES_PER_NODE = 8


def elastic_restarts(max_nodes: int) -> int:
    """The restarts an elastic gang's agents get on top of `train.max_restarts`: node losses."""
    return LOSSES_PER_NODE * max_nodes


def predict_command(spec: JobSpec, predict: dict[str, str]) -> list[str]:
    """Batch prediction: every pod (and, with several GPUs, every GPU's process) predicts its
    own shard of the input; no rendezvous, the shard comes from names.ENV_NODE_RANK/ENV_NUM_NODES
    and torchrun's LOCAL_RANK/LOCAL_WORLD_SIZE (see the predict entrypoint)."""
    args = ["--input", predict["input"], "--output", predict["output"]]
    if predict.get("format"):
        args += ["--format", predict["format"]]
    if predict.get("model"):  # a registry reference: current, vNNNN or a run name
        args += ["--model", predict["model"]]
    entry = _entry(kn.PREDICT_MODULE, *args)
    gpus = spec.resources.gpus_per_node
    return ["python", *entry] if gpus <= 1 else _standalone(gpus, entry)


def evaluate_command(model: str | None = None) -> list[str]:
    """Evaluation is one process on at most one GPU; `model` is a registry reference (current,
    vNNNN or a run name), passed as the evaluate entrypoint's `--model`."""
    return ["python", *_entry(kn.EVALUATE_MODULE, *(["--model", model] if model else []))]


def _resources(spec: JobSpec, stage: str) -> dict[str, Any]:
    gpus = spec.resources.gpus_per_node
    cpu, memory = spec.resources.cpu, spec.resources.memory
    if stage == kn.STAGE_EVALUATE and gpus > 1:
        # Evaluation is one process on one GPU: a whole 8-GPU node's CPU and memory would idle.
        gpus, cpu, memory = 1, None, None
    cpu = cpu or default_cpu(gpus)
    memory = memory or default_memory(gpus)
    requests: dict[str, Any] = {"cpu": cpu, "memory": memory}
    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        requests["nvidia.com/gpu"] = gpus
        limits["nvidia.com/gpu"] = gpus
    return {"requests": requests, "limits": limits}


def _gpus(spec: JobSpec, stage: str) -> int:
    gpus = spec.resources.gpus_per_node
    return min(gpus, 1) if stage == kn.STAGE_EVALUATE else gpus


def processes_per_pod(spec: JobSpec, stage: str) -> int:
    """The processes one pod of `stage` runs: torchrun's workers (one per GPU) or 1. Evaluation
    is one process (on at most one GPU)."""
    return max(_gpus(spec, stage), 1)


def pod_threads(spec: JobSpec, stage: str) -> int:
    """Threads per process: `resources.threads_per_process`, or the pod's CPU limit divided by
    its processes (at least 1). Without it torch and the tokenizers start one thread per core
    of the node: 64 threads against a quota of 4 on a 64-core node."""
    if spec.resources.threads_per_process is not None:
        return spec.resources.threads_per_process
    cpus = cpu_cores(str(_resources(spec, stage)["limits"]["cpu"]))
    return threads_per_process(cpus, processes_per_pod(spec, stage))


def thread_env(threads: int, user_env: dict[str, str]) -> list[dict[str, Any]]:
    """names.THREAD_ENV sized to `threads`; a variable the spec's `kubernetes.env` sets wins.
    One thread: the tokenizers' parallelism off (names.ENV_TOKENIZERS_PARALLELISM=false).
    Several: their pool sized (names.ENV_RAYON_THREADS) and the parallelism variable left
    unset, so the tokenizers keep turning it off in forked DataLoader workers (set to true it
    would stay on there, which can deadlock)."""
    values = {kn.ENV_OMP_THREADS: str(threads), kn.ENV_MKL_THREADS: str(threads), kn.ENV_RAYON_THREADS: str(threads)}
    if threads == 1:
        values[kn.ENV_TOKENIZERS_PARALLELISM] = "false"
    return [{"name": name, "value": value} for name, value in values.items() if name not in user_env]


def _env(spec: JobSpec, stage: str) -> list[dict[str, Any]]:
    """The container's environment: where the entrypoints and their libraries read and write."""
    k = spec.kubernetes
    env: list[dict[str, Any]] = [
        {"name": kn.ENV_SPEC, "value": kn.SPEC_PATH},
        {"name": kn.ENV_JOB_NAME, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{kn.JOB_NAME_LABEL}']"}}},
        {"name": kn.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        # Read-only root file system: everything a library writes goes to the emptyDirs.
        {"name": kn.ENV_HOME, "value": kn.SCRATCH_DIR},
        {"name": kn.ENV_TMPDIR, "value": kn.SCRATCH_DIR},
        # The entrypoints' own folders: downloaded models and tokenized data on the cache
        # volume (kept across runs with `kubernetes.cache_pvc`), Trainer output on scratch.
        {"name": kn.ENV_CACHE, "value": kn.CACHE_DIR},
        {"name": kn.ENV_WORKDIR, "value": kn.SCRATCH_DIR},
        {"name": "XDG_CACHE_HOME", "value": kn.CACHE_DIR},
        {"name": kn.ENV_HF_HOME, "value": f"{kn.CACHE_DIR}/huggingface"},
        {"name": "TRITON_CACHE_DIR", "value": f"{kn.CACHE_DIR}/triton"},
        {"name": "MPLCONFIGDIR", "value": f"{kn.SCRATCH_DIR}/matplotlib"},
        # torchrun forwards SIGTERM to the workers and waits this long before SIGKILL: most of
        # the grace period, so a checkpoint can be committed.
        {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": str(max(k.termination_grace_period_seconds - 15, 5))},
    ]
    if k.storage_secret and k.storage_credentials == "file":
        key_file = kn.ENV_GCP_CREDENTIALS_FILE if spec.storage.root.split("://", 1)[0] in GCS_SCHEMES \
            else kn.ENV_AWS_CREDENTIALS_FILE
        env.append({"name": key_file, "value": f"{kn.CREDENTIALS_DIR}/{kn.CREDENTIALS_KEY}"})
    if _gpus(spec, stage) == 0:
        env.append({"name": "CUDA_VISIBLE_DEVICES", "value": ""})
    if spec.spec_file:  # the pod's error lines name the user's file, not the mounted copy
        env.append({"name": kn.ENV_SPEC_FILE, "value": spec.spec_file})
    env += thread_env(pod_threads(spec, stage), k.env)
    return env + _wandb_env(spec) + _user_env(spec)


def _wandb_env(spec: JobSpec) -> list[dict[str, Any]]:
    """`tracking.wandb`: the variables the wandb library reads (its API key is the user's, by
    `kubernetes.secret_env`). Its files go to the cache volume (the root file system is
    read-only), which `run --local` keeps across runs, so an offline run's files stay there
    for `wandb sync`."""
    wandb = spec.tracking.wandb if spec.tracking is not None else None
    if wandb is None:
        return []
    env = [{"name": kn.ENV_WANDB_PROJECT, "value": wandb.project},
           {"name": kn.ENV_WANDB_DIR, "value": f"{kn.CACHE_DIR}/wandb"}]
    if wandb.entity:
        env.append({"name": kn.ENV_WANDB_ENTITY, "value": wandb.entity})
    return env


def _user_env(spec: JobSpec) -> list[dict[str, Any]]:
    """`kubernetes.env` as plain values and `kubernetes.secret_env` as secretKeyRef: a secret's
    value never appears in a manifest, only the Secret's name and key (the kubelet resolves
    it in the pod; a missing Secret keeps the pod from starting, which is the honest failure)."""
    k = spec.kubernetes
    env: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in k.env.items()]
    for name, ref in k.secret_env.items():
        key_ref: dict[str, Any] = {"name": ref.secret, "key": ref.key}
        if ref.optional:
            key_ref["optional"] = True
        env.append({"name": name, "valueFrom": {"secretKeyRef": key_ref}})
    return env


def _volumes(spec: JobSpec, n: Names, stage: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts: the root file system is read-only, so every path written is here."""
    k = spec.kubernetes
    gpus = _gpus(spec, stage)
    shm = k.shm_size or (f"{8 * gpus}Gi" if gpus else "1Gi")
    volumes: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": n.configmap, "items": [{"key": kn.SPEC_KEY, "path": kn.SPEC_KEY}]}},
        {"name": "scratch", "emptyDir": {"sizeLimit": k.scratch_size}},
        (
            {"name": "cache", "persistentVolumeClaim": {"claimName": k.cache_pvc}}
            if k.cache_pvc
            else {"name": "cache", "emptyDir": {"sizeLimit": k.cache_size}}
        ),
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": kn.SPEC_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": kn.SCRATCH_DIR},
        {"name": "cache", "mountPath": kn.CACHE_DIR},
        {"name": "shm", "mountPath": kn.SHM_DIR},
    ]
    if k.storage_secret and k.storage_credentials == "file":
        volumes.append(
            {
                "name": "storage-credentials",
                "secret": {
                    "secretName": k.storage_secret,
                    "items": [{"key": kn.CREDENTIALS_KEY, "path": kn.CREDENTIALS_KEY}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "storage-credentials", "mountPath": kn.CREDENTIALS_DIR, "readOnly": True})
    return volumes, mounts


def pod_template(spec: JobSpec, n: Names, stage: str, command: list[str], container_name: str | None = None) -> dict[str, Any]:
    """The pod of a stage's Job: one container running `command`, non-root on a read-only root.
    `container_name`: default the stage's (Kubeflow Trainer names its trainer container)."""
    k = spec.kubernetes
    volumes, mounts = _volumes(spec, n, stage)
    container: dict[str, Any] = {
        "name": container_name or stage,
        "image": spec.image,
        "imagePullPolicy": k.image_pull_policy,
        "command": command,
        "env": _env(spec, stage),
    }
    if k.storage_secret and k.storage_credentials == "env":
        container["envFrom"] = [{"secretRef": {"name": k.storage_secret}}]
    container["resources"] = _resources(spec, stage)
    if stage == kn.STAGE_TRAIN and spec.resources.max_nodes > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": k.rendezvous_port, "protocol": "TCP"}]
        # A restarted gang must not read the previous round's keys (names.ENV_TORCH_NO_SHARED_STORE).
        container["env"].append({"name": kn.ENV_TORCH_NO_SHARED_STORE, "value": "1"})
    container["volumeMounts"] = mounts
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": k.termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if stage == kn.STAGE_TRAIN and spec.resources.max_nodes > 1:
        pod["subdomain"] = n.service
    pod.update(_scheduling(spec, stage))
    pod["containers"] = [container]
    pod["volumes"] = volumes
    labels = {**common_labels(spec, stage), kn.STAGE_LABEL: stage}
    if k.workload_identity is not None and k.workload_identity.azure_client_id:
        labels[AZURE_IDENTITY_LABEL] = "true"  # Azure Workload Identity's webhook gives these pods the token
    annotations = {**k.annotations, kn.SPEC_HASH_ANNOTATION: resolved_spec_hash(spec)}
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod}


def _scheduling(spec: JobSpec, stage: str) -> dict[str, Any]:
    """Where and as whom the pod runs: the spec's service account, priority, node selection
    and pull secrets, plus the GPU toleration GPU pods need."""
    k = spec.kubernetes
    pod: dict[str, Any] = {}
    if k.service_account:
        pod["serviceAccountName"] = k.service_account
    if k.priority_class:
        pod["priorityClassName"] = k.priority_class
    if k.node_selector:
        pod["nodeSelector"] = dict(k.node_selector)
    tolerations = list(k.tolerations)
    if _gpus(spec, stage) and not any(t.get("key") == "nvidia.com/gpu" for t in tolerations):
        # GPU nodes are commonly tainted so that only GPU pods land there.
        tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        pod["tolerations"] = tolerations
    if k.affinity:
        pod["affinity"] = k.affinity
    if k.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in k.image_pull_secrets]
    return pod


def pod_failure_policy(container: str) -> dict[str, Any]:
    """Exit codes and disruptions decide between retrying, resuming for free and failing."""
    return {
        "rules": [
            # Preemption, eviction, node drain: not the job's fault; replace the pod for free.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            # Bad spec, data or model, or a full store: retrying cannot help (a full volume loops).
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": container, "operator": "In",
                                "values": [EXIT_BAD_INPUT, EXIT_NO_SPACE]},
            },
            # SIGTERM arrived and a checkpoint was committed: resume without spending a retry
            # (EXIT_INTERRUPTED_UNSAVED, nothing new saved, counts against backoffLimit).
            {
                "action": "Ignore",
                "onExitCodes": {
                    "containerName": container,
                    "operator": "In",
                    "values": [EXIT_RETRY_AFTER_CHECKPOINT],
                },
            },
        ]
    }

