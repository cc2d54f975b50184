"""`--engine trainjob`: a TrainJob on the ClusterTrainingRuntime shipped in k8s/, whose pods,
once Kubeflow Trainer has merged the TrainJob into the runtime, are the pods `--engine job`
renders."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.contract import names as kn
from kubetune.contract.spec.job import load_spec
from kubetune.launch.render import RenderError, render_objects
from kubetune.launch.render.trainjob import dropped_settings
from kubetune.launch.render.progress import VOLUME as PROGRESS_VOLUME
from kubetune.launch.validate import supported_versions, validate_object

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "imdb-bert-multinode.yaml"
RUNTIME = REPO / "k8s" / "trainjob-runtime.yaml"


def _runtime() -> dict[str, Any]:
    return yaml.safe_load(RUNTIME.read_text())


@pytest.mark.parametrize("version", supported_versions())
def test_runtime_validates_strictly(version: str):
    validate_object(_runtime(), version)


def test_runtime_is_the_one_trainjobs_reference():
    trainjob = render_objects(load_spec(JOB), stage="train", engine="trainjob")[-1]
    runtime = _runtime()
    assert trainjob["spec"]["runtimeRef"]["name"] == runtime["metadata"]["name"] == kn.TRAINING_RUNTIME
    assert "torch" in runtime["spec"]["mlPolicy"]
    initializer, node = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["dependsOn"] == [{"name": initializer["name"], "status": "Complete"}]
    assert initializer["name"] == kn.INITIALIZER
    assert node["name"] == kn.TRAINER_NODE
    assert node["template"]["spec"]["template"]["spec"]["containers"][0]["name"] == kn.TRAINER_NODE


def _merged_pod(runtime: dict[str, Any], trainjob: dict[str, Any], name: str = kn.TRAINER_NODE) -> dict[str, Any]:
    """The pod of replicated job `name` as Kubeflow Trainer builds it: the runtime's, the
    TrainJob's trainer fields (for `node`) and its runtime patch applied (labels merged, listed
    pod fields replaced, containers patched by name, env merged)."""
    (node,) = [r for r in runtime["spec"]["template"]["spec"]["replicatedJobs"] if r["name"] == name]
    pod = copy.deepcopy(node["template"]["spec"]["template"])
    (patch,) = trainjob["spec"]["runtimePatches"]
    (replicated,) = [r for r in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"] if r["name"] == name]
    template = replicated["template"]["spec"]["template"]
    pod.setdefault("metadata", {})
    for key in ("labels", "annotations"):
        pod["metadata"][key] = {**pod["metadata"].get(key, {}), **template["metadata"].get(key, {})}
    for key, value in template["spec"].items():
        if key != "containers":
            pod["spec"][key] = value
    (container,) = pod["spec"]["containers"]
    for patched in template["spec"]["containers"]:
        assert patched["name"] == container["name"]
        container.update({k: v for k, v in patched.items() if k != "name"})
    if name == kn.TRAINER_NODE:
        trainer = trainjob["spec"]["trainer"]
        container.update(image=trainer["image"], command=trainer["command"], env=trainer["env"],
                         resources=trainer["resourcesPerNode"])
    return pod


def test_trainjob_initializer_pod_is_the_jobset_engines():
    spec = load_spec(JOB)
    jobset = render_objects(spec, stage="train", engine="jobset")[-1]
    want = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    got = _merged_pod(_runtime(), render_objects(spec, stage="train", engine="trainjob")[-1], kn.INITIALIZER)
    for pod in (want, got):
        pod["spec"].pop("priorityClassName", None)
    assert got == want


def test_trainjob_pods_are_the_job_engines_pods():
    spec = load_spec(JOB)
    job = next(o for o in render_objects(spec, stage="train", engine="job") if o["kind"] == "Job")
    trainjob = render_objects(spec, stage="train", engine="trainjob")[-1]
    want = copy.deepcopy(job["spec"]["template"])
    got = _merged_pod(_runtime(), trainjob)
    # What differs by design: the engine's names for the container and rank 0, the Service
    # JobSet provides, the priority class a TrainJob cannot carry (dropped_settings), and the
    # initializer, an init container there and the runtime's `initializer` job here; the Job
    # engine's progress ConfigMap channel (a TrainJob reports through its own status).
    assert want["spec"].pop("initContainers")[0]["name"] == kn.INITIALIZER
    assert want["spec"].pop("serviceAccountName") == "imdb-bert-multinode-progress"
    want["spec"]["volumes"] = [v for v in want["spec"]["volumes"] if v["name"] != PROGRESS_VOLUME]
    trainer = want["spec"]["containers"][0]
    trainer["volumeMounts"] = [m for m in trainer["volumeMounts"] if m["name"] != PROGRESS_VOLUME]
    trainer["env"] = [e for e in trainer["env"] if e["name"] not in (kn.ENV_PROGRESS_CONFIGMAP, kn.ENV_PROGRESS_CREDENTIALS)]
    for pod in (want, got):
        container = pod["spec"]["containers"][0]
        container["name"] = "<trainer>"
        container["command"] = [a for a in container["command"] if not a.startswith("--rdzv-endpoint=")]
        for key in ("subdomain", "priorityClassName"):
            pod["spec"].pop(key, None)
        pod["metadata"]["labels"].pop("trainer.kubeflow.org/trainjob-ancestor-step", None)
    assert dropped_settings(spec) == ["kubernetes.priority_class"]
    assert got == want
    endpoint = "--rdzv-endpoint=imdb-bert-multinode-train-node-0-0.imdb-bert-multinode-train:29500"
    assert endpoint in trainjob["spec"]["trainer"]["command"]
    assert trainjob["spec"]["trainer"]["numNodes"] == 4


def test_storage_credentials_as_env_are_refused():
    spec = load_spec(JOB)
    spec.kubernetes.storage_credentials = "env"
    with pytest.raises(RenderError, match="kubernetes.storage_credentials"):
        render_objects(spec, stage="train", engine="trainjob")
