"""An elastic node range (`resources.nodes: {min, max}`, issue 24, point 1): the train Job's
torchrun command and per-index retries, strictly valid for every supported Kubernetes version
that runs it, and one-line refusals (exit 2) of what cannot run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.cli.main import main
from kubetune.contract import names as kn
from kubetune.contract.spec.job import SpecError, validate_spec
from kubetune.launch.render import RenderError, render_objects
from kubetune.launch.render.pod import LOSSES_PER_NODE
from kubetune.launch.validate import supported_versions, validate_objects

BASE: dict[str, Any] = {
    "name": "demo",
    "model": {"source": "models/all-MiniLM-L6-v2"},
    "data": {"train": "datasets/sst2/train.tsv"},
    "storage": {"root": "s3://bucket/prefix"},
}
ELASTIC_VERSIONS = [v for v in supported_versions() if tuple(map(int, v.split("."))) >= (1, 31)]
OLDER_VERSIONS = [v for v in supported_versions() if v not in ELASTIC_VERSIONS]


def spec_with(nodes: Any, **resources: Any):
    return validate_spec({**BASE, "resources": {"nodes": nodes, **resources}})


def train_job(objs: list[dict]) -> dict:
    return next(o for o in objs if o["kind"] == "Job" and o["metadata"]["labels"][kn.STAGE_LABEL] == kn.STAGE_TRAIN)


def flag(command: list[str], name: str) -> str:
    return next(arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}="))


@pytest.mark.parametrize("version", ELASTIC_VERSIONS)
def test_a_range_renders_an_indexed_job_valid_for_each_version_that_runs_it(version: str):
    spec = spec_with({"min": 1, "max": 4}, gpus_per_node=2)
    objs = render_objects(spec, stage="all", k8s_version=version)
    validate_objects(objs, version)  # explicit: every object, strict schemas of this version
    job = train_job(objs)["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 4, 4)
    assert job["backoffLimitPerIndex"] == spec.kubernetes.backoff_limit  # one failure per index per incident
    assert job["maxFailedIndexes"] == 3  # max - min indexes may be given up while the rest trains
    assert job["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    assert job["podReplacementPolicy"] == "Failed"
    rules = job["podFailurePolicy"]["rules"]
    assert {"type": "DisruptionTarget", "status": "True"} in rules[0]["onPodConditions"]  # preemption is free
    command = job["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", kn.DISTRUN_MODULE]
    assert flag(command, "nnodes") == "1:4"
    assert flag(command, "nproc-per-node") == "2"
    assert flag(command, "rdzv-backend") == "c10d"
    assert flag(command, "rdzv-endpoint") == f"demo-train-0.demo-workers:{spec.kubernetes.rendezvous_port}"
    assert int(flag(command, "max-restarts")) == spec.train.max_restarts + LOSSES_PER_NODE * 4
    assert any(o["kind"] == "Service" for o in objs)  # pod 0's stable name: the rendezvous endpoint
    evaluate = next(o for o in objs if o["metadata"]["name"] == "demo-evaluate")["spec"]
    assert "successPolicy" not in evaluate and "backoffLimitPerIndex" not in evaluate


def test_a_fixed_size_and_an_equal_range_render_as_before():
    fixed = train_job(render_objects(spec_with(4), stage="train"))["spec"]
    same = train_job(render_objects(spec_with({"min": 4, "max": 4}), stage="train"))["spec"]
    for job in (fixed, same):  # the resolved spec's hash differs: the spec says nodes two ways
        job["template"]["metadata"]["annotations"].pop(kn.SPEC_HASH_ANNOTATION)
    assert fixed == same
    assert not {"backoffLimitPerIndex", "maxFailedIndexes", "successPolicy"} & set(fixed)
    command = fixed["template"]["spec"]["containers"][0]["command"]
    assert flag(command, "nnodes") == "4" and flag(command, "max-restarts") == "3"


def test_the_default_version_of_a_range_is_the_oldest_that_runs_it():
    objs = render_objects(spec_with({"min": 2, "max": 3}), stage="train")  # no --k8s-version
    assert train_job(objs)["spec"]["maxFailedIndexes"] == 1
    # evaluate alone has no elastic Job: the oldest supported version still applies
    assert render_objects(spec_with({"min": 2, "max": 3}), stage="evaluate", k8s_version=supported_versions()[0])


@pytest.mark.parametrize("version", OLDER_VERSIONS)
def test_a_range_is_refused_for_a_version_without_success_policy(version: str):
    with pytest.raises(RenderError, match=rf"^resources.nodes {{min: 1, max: 2}}: .*1\.31.*--k8s-version {version}$"):
        render_objects(spec_with({"min": 1, "max": 2}), stage="train", k8s_version=version)


def test_a_range_is_refused_for_another_engine_when_rendering():
    with pytest.raises(RenderError, match=r"^resources.nodes {min: 1, max: 2}: .*--engine jobset"):
        render_objects(spec_with({"min": 1, "max": 2}), stage="train", engine=kn.ENGINE_JOBSET)


def test_a_scheduled_range_renders_a_valid_cronjob():
    objs = render_objects(spec_with({"min": 1, "max": 2}), stage="train", schedule="0 3 * * 0",
                          k8s_version=ELASTIC_VERSIONS[-1])
    cron = objs[-1]["spec"]["jobTemplate"]["spec"]
    assert cron["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    assert flag(cron["template"]["spec"]["containers"][0]["command"], "nnodes") == "1:2"


def _job_file(tmp_path: Path, resources: dict, **sections: Any) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**BASE, "resources": resources, **sections}))
    return path


REFUSED = [
    # (id, resources, extra sections, the one line's field and cause)
    ("min-above-max", {"nodes": {"min": 3, "max": 2}}, {}, "resources.nodes: min (3) is greater than max (2)"),
    ("min-below-1", {"nodes": {"min": 0, "max": 2}}, {}, "resources.nodes: min: Input should be greater than or equal to 1"),
    ("max-below-1", {"nodes": {"min": 1, "max": 0}}, {}, "resources.nodes: max: Input should be greater than or equal to 1"),
    ("gpus-above-profile", {"profile": "gpu-1", "gpus_per_node": 8, "nodes": {"min": 1, "max": 4}}, {},
     "resources: gpus_per_node 8 with nodes {min: 1, max: 4}: profile gpu-1's nodes have 1 GPUs"),
    ("gpus-on-cpu-profile", {"profile": "cpu", "gpus_per_node": 1, "nodes": {"min": 1, "max": 2}}, {},
     "resources: gpus_per_node 1 with nodes {min: 1, max: 2}: profile cpu's nodes have 0 GPUs"),
    ("max-above-profile-nodes", {"profile": "gpu-8x4", "nodes": {"min": 2, "max": 8}}, {},
     "resources: nodes {min: 2, max: 8}: profile gpu-8x4 has 4 nodes; max must be at most 4"),
    ("jobset-engine", {"nodes": {"min": 1, "max": 2}}, {"kubernetes": {"engine": "jobset"}},
     "resources.nodes: a range {min: 1, max: 2} runs only with kubernetes.engine job, not jobset (docs/elastic.md#engines)"),
    ("trainjob-engine", {"nodes": {"min": 1, "max": 2}}, {"kubernetes": {"engine": "trainjob"}},
     "resources.nodes: a range {min: 1, max: 2} runs only with kubernetes.engine job, not trainjob (docs/elastic.md#engines)"),
]


@pytest.mark.parametrize("verb", ["validate", "render"])
@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_what_cannot_run_is_one_line_and_exit_2(case, verb: str, tmp_path, capsys):
    _, resources, sections, expected = case
    job = _job_file(tmp_path, resources, **sections)
    assert main([verb, str(job)]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"error: {job}: {expected}"], err
    assert out == ""


def test_a_profile_that_meets_the_range_is_accepted():
    spec = spec_with({"min": 2, "max": 4}, profile="gpu-8x4")  # the profile's 4 nodes of 8 GPUs
    assert (spec.resources.min_nodes, spec.resources.max_nodes, spec.resources.gpus_per_node) == (2, 4, 8)
    assert spec_with({"min": 1, "max": 6}, profile="gpu-8").resources.max_nodes == 6  # a one-node profile: a shape
    with pytest.raises(SpecError):
        spec_with({"min": 1, "max": 6}, profile="gpu-8", gpus_per_node=16)


def test_a_range_of_the_cli_render_is_the_elastic_command(tmp_path, capsys):
    job = _job_file(tmp_path, {"nodes": {"min": 2, "max": 3}})
    assert main(["render", str(job), "--stage", "train"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    command = train_job(docs)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--nnodes=2:3" in command
