"""`run --local --container` sizes a pod's threads as a local process's, from its CPU limit
capped at the cores the run may use here (issue 28, point 1)."""

from __future__ import annotations

import os
from pathlib import Path

from kubetune.contract import names as kn
from kubetune.contract.spec.job import load_spec
from kubetune.launch.local.container import plan_container_stage
from kubetune.launch.render import render_objects

REPO = Path(__file__).resolve().parents[3]


def plan_env(tmp_path: Path, *sets: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The `-e NAME=VALUE` variables of the quickstart's train container."""
    objs = render_objects(load_spec(REPO / "jobs" / "quickstart.yaml", list(sets)), stage=kn.STAGE_TRAIN)
    base = {"PATH": os.environ["PATH"], kn.ENV_CACHE: str(tmp_path / "cache")}
    (proc,) = plan_container_stage(objs, kn.STAGE_TRAIN, tmp_path, "localhost/img", "/usr/bin/podman",
                                   environ={**base, **(environ or {})})
    pairs = [proc.argv[i + 1] for i, word in enumerate(proc.argv[:-1]) if word == "-e" and "=" in proc.argv[i + 1]]
    return dict(pair.split("=", 1) for pair in pairs)


def test_a_containers_threads_follow_its_cpu_limit_capped_by_this_machine(tmp_path):
    env = plan_env(tmp_path / "one", "resources.cpu=1")
    assert env[kn.ENV_OMP_THREADS] == env[kn.ENV_MKL_THREADS] == "1" and env[kn.ENV_TOKENIZERS_PARALLELISM] == "false"
    env = plan_env(tmp_path / "many", "resources.cpu=64")  # never more than the cores this run may use
    assert 1 <= int(env[kn.ENV_OMP_THREADS]) <= len(os.sched_getaffinity(0))


def test_threads_per_process_and_your_variable_win_in_a_container(tmp_path):
    assert plan_env(tmp_path / "spec", "resources.threads_per_process=3")[kn.ENV_OMP_THREADS] == "3"
    env = plan_env(tmp_path / "mine", "resources.threads_per_process=3", environ={"OMP_NUM_THREADS": "2"})
    assert env[kn.ENV_OMP_THREADS] == env[kn.ENV_MKL_THREADS] == "2"
