"""Pure rendering: a job spec → the Kubernetes objects that run it (plain dicts, no I/O).

How evaluation follows training (the decision every launcher path follows)
--------------------------------------------------------------------------
Training and evaluation are two Jobs: `<name>-train` and `<name>-evaluate`. Evaluation starts
only after the train Job has completed (its `Complete` condition); nothing inside a pod waits,
so no GPU sits idle while training runs.

* `stage="train"`: the ConfigMap, NetworkPolicy, headless Service (multi-node) and train Job.
* `stage="evaluate"`: the ConfigMap, NetworkPolicy and the evaluate Job, ready to run.
* `stage="all"` (the default of `kubetune render`): everything, with the evaluate Job
  *parked*: `spec.suspend: true` and no Kueue queue label, so `kubectl apply -f -` of the
  whole stream is safe and evaluation never races training. It is released by applying
  `stage="evaluate"` (the same Job, now `suspend: false` and with the queue label).
* `kubetune submit` (launch/cluster): applies `stage="train"`, waits for the train Job's
  `Complete` condition (stops on `Failed`), then applies `stage="evaluate"`.
* kubectl users: `kubetune render JOB --stage train | kubectl apply -f -`;
  `kubectl wait --for=condition=complete --timeout=24h job/<name>-train`;
  `kubetune render JOB --stage evaluate | kubectl apply -f -` (see README.md, "Run on a cluster: kubectl").
* `kubetune run --local` (launch/local) runs the train stage's pods, then the evaluate stage's.
* `--schedule CRON` renders the training as a CronJob (concurrencyPolicy Forbid) instead of a
  Job. Each scheduled run trains into `runs/<its Job's name>/` (env KUBETUNE_RUN); a
  single-process run then evaluates its new model in the same pod (`kubetune.workload.retrain`),
  a distributed one trains only.

Objects
-------
ConfigMap `<name>-spec` with the resolved spec (mounted at /etc/kubetune/spec.yaml); the train
Job (an Indexed Job with `completions = parallelism = nodes` and a headless Service
`<name>-workers` as the pods' subdomain when `resources.nodes > 1`); the evaluate Job; a
NetworkPolicy `<name>` (ingress only from the job's own pods; egress open unless
`kubernetes.egress` lists destinations). Every object carries `app.kubernetes.io/*` labels and
`kubetune.io/job`; pods also `kubetune.io/stage`.

Commands: one process per pod runs `python -m kubetune.workload.<stage> --spec FILE`; several
processes per pod or several pods run `python -m kubetune.distrun` (torchrun with the workers'
exit codes kept, see distrun.py) with `--node-rank=$(JOB_COMPLETION_INDEX)` and
`--master-addr=<name>-train-0.<name>-workers`.

Exit codes (kubetune.contract.exitcodes) drive the podFailurePolicy: pods hit by a disruption
(preemption, eviction, node drain: the `DisruptionTarget` condition) and pods that exit
EXIT_RETRY_AFTER_CHECKPOINT after saving a checkpoint on SIGTERM are replaced without spending
`backoffLimit`; EXIT_BAD_INPUT fails the Job at once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from kubetune.contract.exitcodes import EXIT_BAD_INPUT, EXIT_RETRY_AFTER_CHECKPOINT
from kubetune.contract.names import ENV_RUN as RUN_ENV
from kubetune.contract.profiles import default_cpu, default_memory
from kubetune.contract.spec import JobSpec, SpecError

STAGES = ("train", "evaluate", "all", "predict")

SPEC_DIR = "/etc/kubetune"
SPEC_KEY = "spec.yaml"
SPEC_PATH = f"{SPEC_DIR}/{SPEC_KEY}"
CREDENTIALS_DIR = "/var/run/secrets/kubetune/storage"
CREDENTIALS_KEY = "credentials"
CACHE_DIR = "/cache"
SCRATCH_DIR = "/tmp"
SHM_DIR = "/dev/shm"

# The user the images run as (docker/Dockerfile); high, so it matches no host user.
RUN_AS_USER = 10001

# Kubernetes annotation/label that carries an Indexed Job pod's index.
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_LABEL = "kubetune.io/job"
STAGE_LABEL = "kubetune.io/stage"
SPEC_HASH_ANNOTATION = "kubetune.io/spec-sha256"

# The newest schema version we render `CronJob.spec.timeZone` for is every supported one.
CRON_TIME_ZONE = "Etc/UTC"

# Pod names (`<job>-<index>-xxxxx`) and hostnames must stay DNS labels: 63 characters.
MAX_LABEL = 63
# CronJob names are limited to 52 characters (the controller appends 11).
MAX_CRONJOB_NAME = 52


class RenderError(SpecError):
    """The spec cannot become valid Kubernetes objects; one line, exit code 2."""


@dataclass(frozen=True)
class Names:
    """Object names of one job. The launcher, cluster client and local executor use these,
    never their own string formatting."""

    job: str
    configmap: str
    train: str
    evaluate: str
    service: str
    network_policy: str
    cronjob: str
    predict: str

    def pod_hostname(self, index: int) -> str:
        """Hostname of a train pod of the Indexed Job (`<job>-<index>`)."""
        return f"{self.train}-{index}"

    def master_addr(self, job_name: str | None = None) -> str:
        """DNS name of rank 0's pod through the headless Service."""
        return f"{job_name or self.train}-0.{self.service}"


def names(spec: JobSpec) -> Names:
    name = spec.name
    # A Service name must be a DNS-1035 label (start with a letter).
    service = f"{name}-workers" if name[0].isalpha() else f"kt-{name}-workers"
    out = Names(
        job=name,
        configmap=f"{name}-spec",
        train=f"{name}-train",
        evaluate=f"{name}-evaluate",
        service=service,
        network_policy=name,
        cronjob=f"{name}-train",
        predict=f"{name}-predict",
    )
    for value in (out.configmap, out.train, out.evaluate, out.service, out.pod_hostname(spec.resources.nodes - 1)):
        if len(value) > MAX_LABEL:
            raise RenderError(f"name: {name!r} is too long: {value!r} exceeds {MAX_LABEL} characters")
    if len(out.cronjob) > MAX_CRONJOB_NAME:
        raise RenderError(f"name: {name!r} is too long for a CronJob ({MAX_CRONJOB_NAME} characters)")
    return out


# ---------------------------------------------------------------------------------------------
# Schedules


_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}),
    ("day of week", 0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}),
)


def validate_schedule(schedule: str) -> str:
    """A standard 5-field cron expression (or @daily-style macro), as the CronJob controller
    parses it; one-line SpecError naming the bad field otherwise."""
    text = " ".join(schedule.split())
    if text.lower() in _CRON_MACROS:
        return text
    if text.upper().startswith(("TZ=", "CRON_TZ=")):
        raise SpecError(f"--schedule {schedule!r}: time zones are not allowed in the schedule (it runs in UTC)")
    fields = text.split(" ")
    if len(fields) != 5:
        raise SpecError(
            f"--schedule {schedule!r}: expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    for value, (what, low, high, words) in zip(fields, _CRON_FIELDS):
        for item in value.split(","):
            if not _cron_item_ok(item.lower(), low, high, words, what):
                raise SpecError(f"--schedule {schedule!r}: bad {what} field {value!r} (allowed {low}-{high})")
    return text


def _cron_item_ok(item: str, low: int, high: int, words: dict[str, int], what: str) -> bool:
    match = re.fullmatch(r"(\*|\?|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?", item)
    if not match:
        return False
    base, step = match.group(1), match.group(2)
    if step is not None and int(step) == 0:
        return False
    if base == "?":
        return what in ("day of month", "day of week")
    if base == "*":
        return True
    bounds = []
    for part in base.split("-"):
        if part.isdigit():
            bounds.append(int(part))
        elif part in words:
            bounds.append(words[part])
        else:
            return False
    return all(low <= b <= high for b in bounds) and bounds == sorted(bounds)


# ---------------------------------------------------------------------------------------------
# Rendering


def render_objects(
    spec: JobSpec,
    stage: str = "all",
    k8s_version: str | None = None,
    schedule: str | None = None,
    predict: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The objects for `stage` (train | evaluate | all), schema-checked for `k8s_version`
    (default: the oldest supported, so the objects apply on every supported cluster).

    With `schedule`, the train Job becomes a CronJob (stage must be train or all)."""
    from kubetune.launch.validate import supported_versions, validate_objects

    if stage not in STAGES:
        raise RenderError(f"--stage {stage}: must be one of {', '.join(STAGES)}")
    if (stage == "predict") != bool(predict and predict.get("input") and predict.get("output")):
        raise RenderError("--stage predict needs --input URI and --output URI (and they need --stage predict)")
    if schedule is not None:
        schedule = validate_schedule(schedule)
        if stage == "evaluate":
            raise RenderError("--schedule renders the training CronJob; use it with --stage train or all")
    version = k8s_version or supported_versions()[0]
    objs = json.loads(json.dumps(_build(spec, stage, schedule, predict)))  # plain data, no shared sub-dicts
    validate_objects(objs, version)
    return objs


def _build(spec: JobSpec, stage: str, schedule: str | None, predict: dict[str, str] | None = None) -> list[dict[str, Any]]:
    n = names(spec)
    multi = spec.resources.nodes > 1
    objs: list[dict[str, Any]] = [configmap(spec, n)]
    if spec.kubernetes.network_policy:
        objs.append(network_policy(spec, n))
    if stage == "predict":
        objs.append(predict_job(spec, n, predict or {}))
        return objs
    if stage in ("train", "all"):
        if multi:
            objs.append(headless_service(spec, n))
        if schedule is not None:
            objs.append(train_cronjob(spec, n, schedule))
        else:
            objs.append(train_job(spec, n))
    if stage == "evaluate" or (stage == "all" and schedule is None):
        objs.append(evaluate_job(spec, n, parked=stage == "all"))
    return objs


def spec_text(spec: JobSpec) -> str:
    return spec.to_yaml()


def spec_hash(spec: JobSpec) -> str:
    return hashlib.sha256(spec_text(spec).encode()).hexdigest()


def common_labels(spec: JobSpec, component: str) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "kubetune",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "kubetune",
        JOB_LABEL: spec.name,
    }
    return {**spec.kubernetes.labels, **labels}


def _metadata(spec: JobSpec, name: str, component: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if spec.kubernetes.namespace:
        meta["namespace"] = spec.kubernetes.namespace
    meta["labels"] = {**common_labels(spec, component), **(extra or {})}
    return meta


def configmap(spec: JobSpec, n: Names) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, n.configmap, "spec"),
        "data": {SPEC_KEY: spec_text(spec)},
    }


def headless_service(spec: JobSpec, n: Names) -> dict[str, Any]:
    """Stable DNS names `<job>-train-<i>.<service>` for the train pods, ready or not (rank 0
    must be resolvable before it is Ready, or rendezvous deadlocks)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, n.service, "rendezvous"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_LABEL: spec.name, STAGE_LABEL: "train"},
            "ports": [
                {
                    "name": "rendezvous",
                    "port": spec.kubernetes.rendezvous_port,
                    "targetPort": spec.kubernetes.rendezvous_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def network_policy(spec: JobSpec, n: Names) -> dict[str, Any]:
    """Ingress only from the same job's pods (rendezvous and NCCL/gloo collectives use many
    ports). Egress: all, unless `kubernetes.egress` lists destinations; then those, DNS (port
    53) and the job's own pods."""
    own = {"podSelector": {"matchLabels": {JOB_LABEL: spec.name}}}
    policy: dict[str, Any] = {
        "podSelector": {"matchLabels": {JOB_LABEL: spec.name}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [own]}],
    }
    if spec.kubernetes.egress is None:
        policy["egress"] = [{}]
    else:
        rules: list[dict[str, Any]] = [
            {"to": [own]},
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        ]
        for rule in spec.kubernetes.egress:
            out: dict[str, Any] = {"to": [{"ipBlock": {"cidr": rule.cidr}}]}
            if rule.ports:
                out["ports"] = [{"protocol": "TCP", "port": p} for p in rule.ports]
            rules.append(out)
        policy["egress"] = rules
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(spec, n.network_policy, "network"),
        "spec": policy,
    }


def train_command(spec: JobSpec, n: Names, job_name: str | None = None) -> list[str]:
    """The train container's command. `job_name` is a literal Job name, or an env reference
    (`$(KUBETUNE_JOB_NAME)`) when the Job's name is not known in advance (CronJob)."""
    nodes, gpus = spec.resources.nodes, spec.resources.gpus_per_node
    entry = ["-m", "kubetune.workload.train", "--spec", SPEC_PATH]
    if nodes == 1 and gpus <= 1:
        return ["python", *entry]
    if nodes == 1:
        return ["python", "-m", "kubetune.distrun", "--standalone", "--nnodes=1", f"--nproc-per-node={gpus}", *entry]
    return [
        "python",
        "-m",
        "kubetune.distrun",
        f"--nnodes={nodes}",
        f"--nproc-per-node={max(gpus, 1)}",
        f"--node-rank=$({COMPLETION_INDEX_ENV})",
        f"--master-addr={n.master_addr(job_name)}",
        f"--master-port={spec.kubernetes.rendezvous_port}",
        *entry,
    ]


def predict_command(spec: JobSpec, predict: dict[str, str]) -> list[str]:
    """Batch prediction: every pod (and, with several GPUs, every GPU's process) predicts its
    own shard of the input; no rendezvous, the shard comes from KUBETUNE_NODE_RANK/NUM_NODES
    and torchrun's LOCAL_RANK/LOCAL_WORLD_SIZE (see workload/predict.py)."""
    entry = ["-m", "kubetune.workload.predict", "--spec", SPEC_PATH, "--input", predict["input"],
             "--output", predict["output"]]
    if predict.get("format"):
        entry += ["--format", predict["format"]]
    gpus = spec.resources.gpus_per_node
    if gpus <= 1:
        return ["python", *entry]
    return ["python", "-m", "kubetune.distrun", "--standalone", "--nnodes=1", f"--nproc-per-node={gpus}", *entry]


def evaluate_command() -> list[str]:
    return ["python", "-m", "kubetune.workload.evaluate", "--spec", SPEC_PATH]


def _resources(spec: JobSpec, stage: str) -> dict[str, Any]:
    gpus = spec.resources.gpus_per_node
    cpu, memory = spec.resources.cpu, spec.resources.memory
    if stage == "evaluate" and gpus > 1:
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
    return min(gpus, 1) if stage == "evaluate" else gpus


def _env(spec: JobSpec, stage: str) -> list[dict[str, Any]]:
    k = spec.kubernetes
    env: list[dict[str, Any]] = [
        {"name": "KUBETUNE_SPEC", "value": SPEC_PATH},
        {"name": "KUBETUNE_JOB_NAME", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}},
        {"name": "KUBETUNE_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        # Read-only root file system: everything a library writes goes to the emptyDirs.
        {"name": "HOME", "value": SCRATCH_DIR},
        {"name": "TMPDIR", "value": SCRATCH_DIR},
        {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
        {"name": "TRITON_CACHE_DIR", "value": f"{CACHE_DIR}/triton"},
        {"name": "MPLCONFIGDIR", "value": f"{SCRATCH_DIR}/matplotlib"},
        # torchrun forwards SIGTERM to the workers and waits this long before SIGKILL: most of
        # the grace period, so a checkpoint can be committed.
        {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": str(max(k.termination_grace_period_seconds - 15, 5))},
    ]
    if k.storage_secret and k.storage_credentials == "file":
        env.append({"name": "AWS_SHARED_CREDENTIALS_FILE", "value": f"{CREDENTIALS_DIR}/{CREDENTIALS_KEY}"})
    if _gpus(spec, stage) == 0:
        env.append({"name": "CUDA_VISIBLE_DEVICES", "value": ""})
    return env


def _volumes(spec: JobSpec, n: Names, stage: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    k = spec.kubernetes
    gpus = _gpus(spec, stage)
    shm = k.shm_size or (f"{8 * gpus}Gi" if gpus else "1Gi")
    volumes: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": n.configmap, "items": [{"key": SPEC_KEY, "path": SPEC_KEY}]}},
        {"name": "scratch", "emptyDir": {"sizeLimit": k.scratch_size}},
        (
            {"name": "cache", "persistentVolumeClaim": {"claimName": k.cache_pvc}}
            if k.cache_pvc
            else {"name": "cache", "emptyDir": {"sizeLimit": k.cache_size}}
        ),
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "shm", "mountPath": SHM_DIR},
    ]
    if k.storage_secret and k.storage_credentials == "file":
        volumes.append(
            {
                "name": "storage-credentials",
                "secret": {
                    "secretName": k.storage_secret,
                    "items": [{"key": CREDENTIALS_KEY, "path": CREDENTIALS_KEY}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "storage-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True})
    return volumes, mounts


def pod_template(spec: JobSpec, n: Names, stage: str, command: list[str]) -> dict[str, Any]:
    k = spec.kubernetes
    volumes, mounts = _volumes(spec, n, stage)
    container: dict[str, Any] = {
        "name": stage,
        "image": spec.image,
        "imagePullPolicy": k.image_pull_policy,
        "command": command,
        "env": _env(spec, stage),
    }
    if k.storage_secret and k.storage_credentials == "env":
        container["envFrom"] = [{"secretRef": {"name": k.storage_secret}}]
    container["resources"] = _resources(spec, stage)
    if stage == "train" and spec.resources.nodes > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": k.rendezvous_port, "protocol": "TCP"}]
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
    if stage == "train" and spec.resources.nodes > 1:
        pod["subdomain"] = n.service
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
    pod["containers"] = [container]
    pod["volumes"] = volumes
    labels = {**common_labels(spec, stage), STAGE_LABEL: stage}
    annotations = {**k.annotations, SPEC_HASH_ANNOTATION: spec_hash(spec)}
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod}


def pod_failure_policy(container: str) -> dict[str, Any]:
    return {
        "rules": [
            # Preemption, eviction, node drain: not the job's fault; replace the pod for free.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            # Bad spec, data or model: retrying cannot help.
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": container, "operator": "In", "values": [EXIT_BAD_INPUT]},
            },
            # SIGTERM arrived and a checkpoint was committed: resume without spending a retry.
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


def _job_spec(spec: JobSpec, n: Names, stage: str, command: list[str]) -> dict[str, Any]:
    k = spec.kubernetes
    nodes = spec.resources.nodes if stage in ("train", "predict") else 1
    body: dict[str, Any] = {}
    if nodes > 1:
        body["completionMode"] = "Indexed"
    body["completions"] = nodes
    body["parallelism"] = nodes
    # One failure of a gang member fails the others (collectives time out): budget per gang.
    body["backoffLimit"] = k.backoff_limit * nodes
    body["activeDeadlineSeconds"] = k.active_deadline_seconds
    if k.ttl_seconds_after_finished is not None:
        body["ttlSecondsAfterFinished"] = k.ttl_seconds_after_finished
    body["podFailurePolicy"] = pod_failure_policy(stage)
    # A replacement pod starts only once the old one is gone: two pods never hold one rank.
    body["podReplacementPolicy"] = "Failed"
    body["template"] = pod_template(spec, n, stage, command)
    return body


def _queue_label(spec: JobSpec) -> dict[str, str]:
    return {QUEUE_LABEL: spec.kubernetes.queue} if spec.kubernetes.queue else {}


def train_job(spec: JobSpec, n: Names) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(spec, n.train, "train", {STAGE_LABEL: "train", **_queue_label(spec)}),
        "spec": _job_spec(spec, n, "train", train_command(spec, n)),
    }


def evaluate_job(spec: JobSpec, n: Names, parked: bool = False) -> dict[str, Any]:
    """`parked`: created suspended and outside any Kueue queue, released by applying the
    evaluate stage after training completed (see the module docstring)."""
    extra = {STAGE_LABEL: "evaluate", **({} if parked else _queue_label(spec))}
    body = _job_spec(spec, n, "evaluate", evaluate_command())
    if parked:
        body = {"suspend": True, **body}
    else:
        body = {"suspend": False, **body}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(spec, n.evaluate, "evaluate", extra),
        "spec": body,
    }


def predict_job(spec: JobSpec, n: Names, predict: dict[str, str]) -> dict[str, Any]:
    """`<name>-predict`: `resources.nodes` pods (an Indexed Job when more than one), each
    predicting its shard of `predict["input"]` into a part under `predict["output"]`."""
    body = _job_spec(spec, n, "predict", predict_command(spec, predict))
    nodes = spec.resources.nodes
    container = body["template"]["spec"]["containers"][0]
    container["env"] += [
        {"name": "KUBETUNE_NUM_NODES", "value": str(nodes)},
        {"name": "KUBETUNE_NODE_RANK", "value": f"$({COMPLETION_INDEX_ENV})" if nodes > 1 else "0"},
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(spec, n.predict, "predict", {STAGE_LABEL: "predict", **_queue_label(spec)}),
        "spec": body,
    }


def train_cronjob(spec: JobSpec, n: Names, schedule: str) -> dict[str, Any]:
    """Scheduled retraining. The Jobs it creates get generated names, so multi-node pods find
    rank 0 through their own Job name (`$(KUBETUNE_JOB_NAME)`, from the pod's
    batch.kubernetes.io/job-name label)."""
    labels = {STAGE_LABEL: "train", **_queue_label(spec)}
    command = train_command(spec, n, job_name="$(KUBETUNE_JOB_NAME)")
    if command[:3] == ["python", "-m", "kubetune.workload.train"]:
        # One process: train, then evaluate the new model, in the same pod.
        command = ["python", "-m", "kubetune.workload.retrain", *command[3:]]
    job_spec = _job_spec(spec, n, "train", command)
    for pod_container in job_spec["template"]["spec"]["containers"]:
        # Every scheduled run trains into runs/<its Job's name>/ instead of reporting the first
        # run as already complete.
        pod_container["env"].append({"name": RUN_ENV, "value": "$(KUBETUNE_JOB_NAME)"})
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _metadata(spec, n.cronjob, "train", {STAGE_LABEL: "train"}),
        "spec": {
            "schedule": schedule,
            "timeZone": CRON_TIME_ZONE,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": {**common_labels(spec, "train"), **labels}},
                "spec": job_spec,
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# Output


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # no &id001 anchors: kubectl users read this
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml_stream(objs: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream `kubectl apply -f -` accepts."""
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, explicit_start=True, width=120)
