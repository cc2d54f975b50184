"""Every rendered pod sizes its thread pools to its share of the CPU limit (issue 28, point 1):
the limit divided by the processes the pod runs (torchrun's workers included), at least 1, or
`resources.threads_per_process`; a variable the spec's `kubernetes.env` sets wins."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.contract import names as kn
from kubetune.contract.spec.job import SpecError, validate_spec
from kubetune.launch.render import render_objects

BASE: dict[str, Any] = {
    "name": "demo",
    "model": {"source": "models/all-MiniLM-L6-v2"},
    "data": {"train": "datasets/sst2/train.tsv"},
    "storage": {"root": "s3://bucket/prefix"},
}
PREDICT = {"input": "s3://bucket/in.jsonl", "output": "s3://bucket/out"}


def make_spec(resources: dict[str, Any], **kubernetes: Any):
    return validate_spec({**BASE, "resources": resources, "kubernetes": kubernetes})


def every_pod(spec) -> list[tuple[str, dict[str, Any]]]:
    """(object kind and stage, container) of every pod every job kind renders: the train and
    evaluate Jobs, the training CronJob and the predict Job."""
    objs = (render_objects(spec) + render_objects(spec, schedule="0 3 * * *", stage="train")
            + render_objects(spec, stage="predict", predict=PREDICT))
    pods = []
    for obj in objs:
        if obj["kind"] == "Job":
            template = obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        pods.append((f"{obj['kind']} {obj['metadata']['labels'][kn.STAGE_LABEL]}", template["spec"]["containers"][0]))
    assert sorted(kind for kind, _ in pods) == ["CronJob train", "Job evaluate", "Job predict", "Job train"]
    return pods


def env_of(container: dict[str, Any]) -> dict[str, str]:
    names = [item["name"] for item in container["env"]]
    assert len(names) == len(set(names)), names  # no variable twice
    return {item["name"]: item.get("value") for item in container["env"]}


def processes(container: dict[str, Any]) -> int:
    flag = [a for a in container["command"] if a.startswith("--nproc-per-node=")]
    return int(flag[0].split("=")[1]) if flag else 1


def cpu_limit(container: dict[str, Any]) -> float:
    cpu = str(container["resources"]["limits"]["cpu"])
    return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


# (resources, processes per train pod, threads of a train pod, threads of the evaluate pod)
CASES = [
    ({}, 1, 4, 4),                                        # the default: 4 CPUs, one process
    ({"cpu": "500m"}, 1, 1, 1),                           # a fraction of a CPU: still 1 thread
    ({"gpus_per_node": 2}, 2, 8, 8),                      # 16 CPUs, torchrun's 2 workers
    ({"gpus_per_node": 2, "cpu": "3"}, 2, 1, 8),          # 1.5 CPUs a worker: 1; evaluation 1 GPU, 8 CPUs
    ({"profile": "gpu-8"}, 8, 8, 8),                      # 64 CPUs, 8 workers; evaluation 1 GPU, 8 CPUs
    ({"profile": "gpu-8", "cpu": "4"}, 8, 1, 8),          # 0.5 CPU a worker: 1 thread
    ({"profile": "gpu-8x4"}, 8, 8, 8),                    # 4 nodes of 8 workers
    ({"nodes": 2, "cpu": "6"}, 1, 6, 6),                  # 2 CPU nodes, one process each
]


@pytest.mark.parametrize(("resources", "procs", "train_threads", "evaluate_threads"), CASES)
def test_every_pod_sizes_its_threads_to_its_cpu_limit_and_processes(resources, procs, train_threads, evaluate_threads):
    for kind, container in every_pod(make_spec(resources)):
        env = env_of(container)
        expected = max(1, int(cpu_limit(container) // processes(container)))
        assert env[kn.ENV_OMP_THREADS] == env[kn.ENV_MKL_THREADS] == env[kn.ENV_RAYON_THREADS] == str(expected), kind
        if kind.endswith("train"):
            assert processes(container) == procs
            assert expected == train_threads, kind
        if kind == "Job evaluate":
            assert expected == evaluate_threads
        # One thread: the tokenizers' pool off; several: left to them (off in forked workers).
        assert env.get(kn.ENV_TOKENIZERS_PARALLELISM) == ("false" if expected == 1 else None), kind


def test_threads_per_process_overrides_the_share_in_every_pod():
    for kind, container in every_pod(make_spec({"profile": "gpu-8", "threads_per_process": 3})):
        env = env_of(container)
        assert env[kn.ENV_OMP_THREADS] == env[kn.ENV_MKL_THREADS] == "3", kind
        assert kn.ENV_TOKENIZERS_PARALLELISM not in env


def test_a_thread_variable_of_kubernetes_env_wins_and_appears_once():
    spec = make_spec({"cpu": "500m"}, env={"OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "true"})
    for kind, container in every_pod(spec):
        env = env_of(container)
        assert env[kn.ENV_OMP_THREADS] == "2" and env[kn.ENV_TOKENIZERS_PARALLELISM] == "true", kind
        assert env[kn.ENV_MKL_THREADS] == "1"  # the rest still sized


def test_threads_per_process_must_be_positive():
    with pytest.raises(SpecError, match="resources.threads_per_process"):
        make_spec({"threads_per_process": 0})
