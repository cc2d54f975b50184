"""Pure rendering: a job spec → the Kubernetes objects that run it (plain dicts, no I/O).

How evaluation follows training (the decision every launcher path follows)
--------------------------------------------------------------------------
Training and evaluation are two Jobs: `<name>-train` and `<name>-evaluate`. Evaluation starts
only after the train Job has completed (its `Complete` condition); nothing inside a pod waits,
so no GPU sits idle while training runs.

* `stage="train"`: the ConfigMap, NetworkPolicy, the progress ConfigMap with its Role,
  RoleBinding and ServiceAccount (`progress`; not for a TrainJob), headless Service (multi-node) and train Job.
* `stage="evaluate"`: the ConfigMap, NetworkPolicy and the evaluate Job, ready to run.
* `stage="all"` (the default of `kubetune render`): everything, with the evaluate Job
  *parked*: `spec.suspend: true` and no Kueue queue label, so `kubectl apply -f -` of the
  whole stream is safe and evaluation never races training. It is released by applying
  `stage="evaluate"` (the same Job, now `suspend: false` and with the queue label).
* `kubetune submit` (launch/cluster): applies `stage="train"`, waits for the train Job's
  `Complete` condition (stops on `Failed`), then applies `stage="evaluate"`.
* kubectl users: `kubetune render JOB --stage train | kubectl apply -f -`;
  `kubectl wait --for=condition=complete --timeout=24h job/<name>-train`;
  `kubetune render JOB --stage evaluate | kubectl apply -f -` (see docs/cluster.md, "How evaluation follows training").
* `kubetune run --local` (launch/local) runs the train stage's pods, then the evaluate stage's.
* `--schedule CRON` renders the training as a CronJob (concurrencyPolicy Forbid) instead of a
  Job. Each scheduled run trains into `runs/<its Job's name>/` (the run-name variable,
  names.ENV_RUN); a single-process run then evaluates its new model in the same pod (the retrain
  entrypoint, names.RETRAIN_MODULE), a distributed one trains only.

Objects
-------
ConfigMap `<name>-spec` with the resolved spec (mounted at names.SPEC_PATH); the train
Job (an Indexed Job with `completions = parallelism = nodes` and a headless Service
`<name>-workers` as the pods' subdomain when `resources.nodes > 1`); the evaluate Job; a
NetworkPolicy `<name>` (ingress only from the job's own pods; egress open unless
`kubernetes.egress` lists destinations). Every object carries `app.kubernetes.io/*` labels and
names.JOB_LABEL; pods also names.STAGE_LABEL.

Commands: one process per pod runs `python -m <the stage's entrypoint module> --spec FILE`
(names.STAGE_MODULES); several processes per pod or several pods run names.DISTRUN_MODULE
(torchrun with the workers' exit codes kept); several pods meet in a c10d rendezvous at
`<name>-train-0.<name>-workers:<rendezvous_port>` with `--max-restarts=<train.max_restarts>`, so a
failed rank restarts the whole gang from LATEST (docs/recovery.md, "Recovery of multi-node runs").
A node range (`resources.nodes: {min, max}`) renders `--nnodes=MIN:MAX` and the train Job's
per-index retries and success rule (`jobs.elastic_fields`), for Kubernetes 1.31 or newer and
the job engine only (docs/elastic.md).

Exit codes (kubetune.contract.exitcodes) drive the podFailurePolicy: pods hit by a disruption
(preemption, eviction, node drain: the `DisruptionTarget` condition) and pods that exit
EXIT_RETRY_AFTER_CHECKPOINT after saving a checkpoint on SIGTERM are replaced without spending
`backoffLimit`; EXIT_BAD_INPUT and EXIT_NO_SPACE (a full store: a retry loops on the same
volume) fail the Job at once; the other codes are retried against `backoffLimit`.

Engines (`engine`, default `kubernetes.engine`): `job` renders the train stage as above;
`jobset` as a JobSet (`jobset`: failures counted once per incident, JobSet's own headless
Service) and `trainjob` as a Kubeflow Trainer TrainJob on the ClusterTrainingRuntime in `k8s/`
(`trainjob`). The pods are the same; the evaluate and predict stages stay plain Jobs (one pod,
no gang to count), and `--schedule` stays a CronJob of Jobs (`--engine job` only).

Modules: `naming` (object names, schedules), `pod` (a pod's command, environment, volumes),
`jobs` (Jobs, CronJob, ConfigMap), `network` (Service, NetworkPolicy), `progress` (the Job and
JobSet engines' progress ConfigMap and the RBAC to patch it), `jobset` and `trainjob`
(the training gang for those engines), `initializer` (with `kubernetes.cache_pvc`: the model and
tokenized data fetched once for the whole gang, first, by every engine). This package is the
stable import place for the CLI and the other launch modules.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from kubetune.contract import names as kn
from kubetune.contract.model_ref import check_model_ref, check_model_stage
from kubetune.contract.spec.credentials import credentials_problem
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.render.jobs import (ELASTIC_MIN_K8S, configmap, evaluate_job, identity_service_account, predict_job,
                                         train_cronjob, train_job)
from kubetune.launch.render.initializer import init_container, initializer_replicated_job
from kubetune.launch.render.jobset import train_jobset
from kubetune.launch.render.naming import Names, RenderError, names, validate_schedule
from kubetune.launch.render.network import headless_service, network_policy
from kubetune.launch.render.pod import RUN_AS_USER, evaluate_command
from kubetune.launch.render.progress import grant_progress, progress_objects
from kubetune.launch.render.trainjob import train_trainjob

__all__ = [
    "Names",
    "RUN_AS_USER",
    "RenderError",
    "default_k8s_version",
    "evaluate_command",
    "names",
    "render_objects",
    "to_yaml_stream",
    "validate_schedule",
]


def render_objects(
    spec: JobSpec,
    stage: str = kn.STAGE_ALL,
    k8s_version: str | None = None,
    schedule: str | None = None,
    predict: dict[str, str] | None = None,
    model: str | None = None,
    engine: str | None = None,
) -> list[dict[str, Any]]:
    """The objects for `stage` (train | evaluate | all), schema-checked for `k8s_version`
    (default: the oldest supported, so the objects apply on every supported cluster), the
    training gang as `engine` runs it (default: the spec's `kubernetes.engine`).

    With `schedule`, the train Job becomes a CronJob (stage must be train or all). `model` (a
    `--model` reference: current, vNNNN or a run) is whose model the evaluate or predict Job
    uses (the predict Job's may also come in `predict["model"]`); a stage that trains refuses
    it (`check_model_stage`). Either is checked before anything is built."""
    from kubetune.launch.validate import validate_objects

    if stage not in kn.RENDER_STAGES:
        raise RenderError(f"--stage {stage}: must be one of {', '.join(kn.RENDER_STAGES)}")
    check_model_stage(stage, model)
    if model is not None and stage == kn.STAGE_PREDICT:  # the predict Job's model, as `predict["model"]`
        predict = {**(predict or {}), "model": (predict or {}).get("model") or model}
    for ref in (model, (predict or {}).get("model")):
        if ref is not None:
            check_model_ref(ref)
    if (stage == kn.STAGE_PREDICT) != bool(predict and predict.get("input") and predict.get("output")):
        raise RenderError("--stage predict needs --input URI and --output URI (and they need --stage predict)")
    engine = engine or spec.kubernetes.engine
    if engine not in kn.ENGINES:
        raise RenderError(f"--engine {engine}: must be one of {', '.join(kn.ENGINES)}")
    if schedule is not None:
        schedule = validate_schedule(schedule)
        if stage == kn.STAGE_EVALUATE:
            raise RenderError("--schedule renders the training CronJob; use it with --stage train or all")
        if engine != kn.ENGINE_JOB:
            raise RenderError(f"--schedule renders a CronJob of Jobs; it does not take --engine {engine}")
    problem = credentials_problem(spec.storage.root, spec.kubernetes)
    if problem:
        raise RenderError(problem)
    version = k8s_version or default_k8s_version(spec, stage)
    if spec.resources.elastic and stage in (kn.STAGE_TRAIN, kn.STAGE_ALL):
        _check_elastic(spec, engine, version)
    objs = json.loads(json.dumps(_build(spec, stage, schedule, predict, model, engine)))  # plain data, no shared sub-dicts
    validate_objects(objs, version)
    return objs


def default_k8s_version(spec: JobSpec, stage: str = kn.STAGE_ALL) -> str:
    """The version objects are checked against without `--k8s-version`: the oldest supported,
    so they apply on every supported cluster; for a node range's train Job the oldest that runs
    it (`jobs.ELASTIC_MIN_K8S`, docs/elastic.md)."""
    from kubetune.launch.validate import supported_versions

    if spec.resources.elastic and stage in (kn.STAGE_TRAIN, kn.STAGE_ALL):
        return ".".join(map(str, ELASTIC_MIN_K8S))
    return supported_versions()[0]


def _check_elastic(spec: JobSpec, engine: str, version: str) -> None:
    """A node range renders only as a Job, on Kubernetes 1.31 or newer (`jobs.elastic_fields`);
    anything else is one line. JobSet and TrainJob have no elastic form that follows lost pods
    (docs/elastic.md#engines)."""
    from kubetune.launch.validate import normalize_version

    nodes = f"resources.nodes {{min: {spec.resources.min_nodes}, max: {spec.resources.max_nodes}}}"
    if engine != kn.ENGINE_JOB:
        raise RenderError(f"{nodes}: a range runs only with the job engine, not --engine {engine} "
                          "(docs/elastic.md#engines)")
    if tuple(int(part) for part in normalize_version(version).split(".")) < ELASTIC_MIN_K8S:
        raise RenderError(f"{nodes}: an elastic Job needs Kubernetes {'.'.join(map(str, ELASTIC_MIN_K8S))} "
                          f"or newer (successPolicy); --k8s-version {version}")


def _build(spec: JobSpec, stage: str, schedule: str | None, predict: dict[str, str] | None = None,
           model: str | None = None, engine: str = kn.ENGINE_JOB) -> list[dict[str, Any]]:
    """The objects of `stage`, in the order `kubectl apply -f -` should create them."""
    n = names(spec)
    multi = spec.resources.max_nodes > 1
    objs: list[dict[str, Any]] = [configmap(spec, n)]
    if spec.kubernetes.workload_identity is not None:  # every stage's pods run as it
        objs.insert(0, identity_service_account(spec, n))
    if spec.kubernetes.network_policy:
        objs.append(network_policy(spec, n))
    if stage == kn.STAGE_PREDICT:
        objs.append(predict_job(spec, n, predict or {}))
        return objs
    initializer = spec.kubernetes.cache_pvc is not None and stage in (kn.STAGE_TRAIN, kn.STAGE_ALL)
    if stage in (kn.STAGE_TRAIN, kn.STAGE_ALL) and engine != kn.ENGINE_TRAINJOB:
        objs += progress_objects(spec, n)  # the TrainJob reports through its own status
    if stage in (kn.STAGE_TRAIN, kn.STAGE_ALL) and engine == kn.ENGINE_JOBSET:
        objs.append(train_jobset(spec, n, initializer_replicated_job(spec, n) if initializer else None))
        node = next(r for r in objs[-1]["spec"]["replicatedJobs"] if r["name"] == kn.TRAINER_NODE)
        grant_progress(spec, node["template"]["spec"]["template"]["spec"], n)
    elif stage in (kn.STAGE_TRAIN, kn.STAGE_ALL) and engine == kn.ENGINE_TRAINJOB:
        objs.append(train_trainjob(spec, n))
    elif stage in (kn.STAGE_TRAIN, kn.STAGE_ALL):
        if multi:
            objs.append(headless_service(spec, n))
        objs.append(train_cronjob(spec, n, schedule) if schedule is not None else train_job(spec, n))
        job_spec = objs[-1]["spec"].get("jobTemplate", objs[-1])["spec"]
        grant_progress(spec, job_spec["template"]["spec"], n)
        if initializer:  # every train pod's init container fetches once, under a lock on the volume
            job_spec["template"]["spec"]["initContainers"] = [init_container(spec, n)]
    if stage == kn.STAGE_EVALUATE or (stage == kn.STAGE_ALL and schedule is None):
        objs.append(evaluate_job(spec, n, parked=stage == kn.STAGE_ALL, model=model))
    return objs


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
