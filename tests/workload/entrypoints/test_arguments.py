"""`pod_env`: the pod's environment read once at the entrypoint, into the PodEnv passed down."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from kubetune.contract import names as kn
from kubetune.workload.entrypoints.arguments import pod_env
from kubetune.workload.stages.run import PodEnv


def test_an_empty_environment_is_one_process_with_folders_under_the_temp_dir():
    env = pod_env({})
    temp = Path(tempfile.gettempdir())
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (0, 1, 0, 1) and env.is_main
    assert env.workdir_root == temp / "kubetune-work" and env.cache_root == temp / "kubetune-cache"
    assert env.restart_count is None and env.die_with_parent is None and env.retry_flag is None
    assert env.run_folder is None and env.spec_file is None and env.spec_mount is None
    assert env.num_nodes is None and env.node_rank == 0  # not a rendered predict Job
    assert env.pod_name == socket.gethostname()
    assert (env.wandb_mode, env.wandb_api_key_set, env.wandb_dir) == ("", False, None)


def test_every_variable_lands_in_its_field(tmp_path):
    env = pod_env({
        "RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "TORCHELASTIC_RESTART_COUNT": "2",
        kn.ENV_WORKDIR: str(tmp_path / "work"), kn.ENV_CACHE: str(tmp_path / "cache"), kn.ENV_RUN: "reviews-28",
        kn.ENV_SPEC_FILE: "jobs/x.yaml", kn.ENV_SPEC: kn.SPEC_PATH, kn.ENV_DIE_WITH_PARENT: "4242",
        kn.ENV_RETRY_FLAG: str(tmp_path / "flag"), kn.ENV_POD_NAME: "job-0-abc", kn.ENV_NODE_RANK: "1",
        kn.ENV_NUM_NODES: "2", kn.ENV_WANDB_MODE: " Offline ", kn.ENV_WANDB_API_KEY: "k" * 40,
        kn.ENV_WANDB_DIR: str(tmp_path / "wandb"),
    })
    assert env == PodEnv(
        rank=3, world_size=8, local_rank=1, local_world_size=4, restart_count=2, workdir_root=tmp_path / "work",
        cache_root=tmp_path / "cache", run_folder="reviews-28", spec_file="jobs/x.yaml", spec_mount=kn.SPEC_PATH,
        die_with_parent=4242, retry_flag=tmp_path / "flag", pod_name="job-0-abc", node_rank=1, num_nodes=2,
        wandb_mode="offline", wandb_api_key_set=True, wandb_dir=tmp_path / "wandb",
    )
    assert not env.is_main
    assert "k" * 40 not in repr(env)  # the key's presence travels, never the key


def test_empty_variables_count_as_unset():
    empty = pod_env({name: "" for name in ("RANK", "WORLD_SIZE", kn.ENV_WORKDIR, kn.ENV_RUN, kn.ENV_NUM_NODES,
                                           kn.ENV_DIE_WITH_PARENT, kn.ENV_RETRY_FLAG, kn.ENV_WANDB_API_KEY)})
    assert empty == pod_env({})


def test_without_a_mapping_the_process_environment_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv(kn.ENV_CACHE, str(tmp_path / "pvc"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    env = pod_env()
    assert env.cache_root == tmp_path / "pvc" and env.world_size == 2
