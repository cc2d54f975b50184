"""A local run sizes each process's threads to the cores it may use (its CPU affinity, less what
other work keeps busy: tests/launch/local/test_cores.py) divided by the stage's local
processes, as a pod does with its CPU limit (issue 28, point 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.contract import names as kn
from kubetune.contract.spec.job import validate_spec
from kubetune.launch.local.pods import plan_stage
from kubetune.launch.render import render_objects

REPO = Path(__file__).resolve().parents[3]
NO_THREAD_ENV = {"PATH": os.environ.get("PATH", "")}  # none of names.THREAD_ENV set by you


def make_spec(resources=None, **kubernetes):
    return validate_spec({
        "name": "demo",
        "model": {"source": "models/m"},
        "data": {"train": "datasets/t.tsv"},
        "storage": {"root": "s3://bucket/prefix"},
        "resources": resources or {},
        "kubernetes": kubernetes,
    })


def plan(spec, tmp_path: Path, stage: str = "train", environ=None, cores=6):
    return plan_stage(render_objects(spec, stage=stage), stage, tmp_path / stage,
                      environ=NO_THREAD_ENV if environ is None else environ, gpus=0, cores=cores)


def test_one_process_gets_every_core_it_may_use_not_the_pods_limit(tmp_path):
    for cores in (1, 6):
        for resources in ({}, {"cpu": "500m"}, {"cpu": "64"}):  # the pod's limit does not apply here
            for stage in ("train", "evaluate"):
                (proc,) = plan(make_spec(resources), tmp_path / f"{cores}-{len(resources)}", stage, cores=cores)
                assert proc.env[kn.ENV_OMP_THREADS] == proc.env[kn.ENV_MKL_THREADS] == str(cores)
                assert proc.env.get(kn.ENV_TOKENIZERS_PARALLELISM) == ("false" if cores == 1 else None)


@pytest.mark.parametrize(("nodes", "cores", "threads"), [(2, 6, "3"), (4, 6, "1"), (8, 6, "1"), (2, 1, "1")])
def test_a_gang_shares_the_cores_between_its_processes(tmp_path, nodes, cores, threads):
    procs = plan(make_spec({"nodes": nodes, "cpu": "16"}), tmp_path, cores=cores)
    assert len(procs) == nodes
    assert {p.env[kn.ENV_OMP_THREADS] for p in procs} == {p.env[kn.ENV_RAYON_THREADS] for p in procs} == {threads}


def test_torchruns_workers_count_as_processes(tmp_path):
    objs = render_objects(make_spec({"profile": "gpu-8", "nodes": 2}), stage="train")
    procs = plan_stage(objs, "train", tmp_path, environ=NO_THREAD_ENV, gpus=4, cores=16)
    assert [p.env[kn.ENV_OMP_THREADS] for p in procs] == ["4", "4"]  # 2 pods x 2 workers on 16 cores


def test_threads_per_process_kubernetes_env_and_your_environment_win(tmp_path):
    (proc,) = plan(make_spec({"threads_per_process": 3}), tmp_path / "spec")
    assert proc.env[kn.ENV_OMP_THREADS] == proc.env[kn.ENV_MKL_THREADS] == "3"
    (proc,) = plan(make_spec(env={"MKL_NUM_THREADS": "5"}), tmp_path / "kubernetes-env")
    assert proc.env[kn.ENV_MKL_THREADS] == "5"
    assert proc.env[kn.ENV_OMP_THREADS] == "6"
    mine = {**NO_THREAD_ENV, "OMP_NUM_THREADS": "7"}  # yours wins, and sizes the others
    (proc,) = plan(make_spec({"threads_per_process": 3}, env={"OMP_NUM_THREADS": "5"}), tmp_path / "mine", environ=mine)
    assert proc.env[kn.ENV_OMP_THREADS] == proc.env[kn.ENV_MKL_THREADS] == "7"
    (proc,) = plan(make_spec(), tmp_path / "only-omp", environ={**NO_THREAD_ENV, "OMP_NUM_THREADS": "1"})
    assert proc.env[kn.ENV_MKL_THREADS] == proc.env[kn.ENV_RAYON_THREADS] == "1"  # yours sizes the rest
    assert proc.env[kn.ENV_TOKENIZERS_PARALLELISM] == "false"


def test_the_affinity_a_run_is_started_with_sizes_torch_in_the_process(tmp_path):
    """Under `taskset -c 0` the planned process computes with one torch thread (and the
    tokenizers' parallelism off): the variables reach torch, and the cores counted are the
    ones the run may use, not the machine's."""
    script = (
        "import json, sys\n"
        "from kubetune.launch.local.pods import plan_stage\n"
        "from kubetune.launch.render import render_objects\n"
        "from kubetune.contract.spec.job import validate_spec\n"
        "spec = validate_spec(json.loads(sys.argv[1]))\n"
        "(proc,) = plan_stage(render_objects(spec, stage='train'), 'train', __import__('pathlib').Path(sys.argv[2]),"
        " environ={'PATH': ''}, gpus=0)\n"
        "print(json.dumps(proc.env))\n"
    )
    spec = {"name": "demo", "model": {"source": "models/m"}, "data": {"train": "t.tsv"}, "resources": {"cpu": "8"}}
    env = {k: v for k, v in os.environ.items() if k not in kn.THREAD_ENV}
    planned = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", script, json.dumps(spec), str(tmp_path)],
                             capture_output=True, text=True, check=True, env=env, cwd=REPO, timeout=120)
    child_env = {**env, **{k: v for k, v in json.loads(planned.stdout).items() if k in kn.THREAD_ENV}}
    assert child_env[kn.ENV_OMP_THREADS] == "1" and child_env[kn.ENV_TOKENIZERS_PARALLELISM] == "false"
    torch_threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                                   capture_output=True, text=True, check=True, env=child_env, timeout=120)
    assert torch_threads.stdout.strip() == "1"
