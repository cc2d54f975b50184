"""What every entrypoint starts from: its command line (`--spec FILE` and repeated `--set
KEY.PATH=VALUE`) and the pod's environment (`pod_env`), the only place the workload reads
variables; everything below an entrypoint gets them passed down."""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec, load_spec
from kubetune.workload.stages.run import PodEnv


def spec_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser named after the entrypoint module, described by its docstring's first line."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--spec", required=True, help="resolved job spec YAML (the mounted ConfigMap)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    return parser


def load_spec_from(args: argparse.Namespace) -> JobSpec:
    return load_spec(args.spec, args.overrides)


def pod_env(environ: Mapping[str, str] | None = None) -> PodEnv:
    """The pod's environment (`environ`, else the process's), read here once for the
    entrypoint: torchrun's rank variables, kubetune's own (`contract.names`) and the W&B ones
    kubetune checks. An empty variable counts as unset."""
    env = os.environ if environ is None else environ

    def number(name: str, default: int | None) -> int | None:
        value = env.get(name, "")
        return int(value) if value.strip() else default

    temp = Path(tempfile.gettempdir())
    return PodEnv(
        rank=number("RANK", 0),
        world_size=number("WORLD_SIZE", 1),
        local_rank=number("LOCAL_RANK", 0),
        local_world_size=number("LOCAL_WORLD_SIZE", 1),
        restart_count=number("TORCHELASTIC_RESTART_COUNT", None),
        workdir_root=Path(env.get(kn.ENV_WORKDIR) or temp / "kubetune-work"),
        cache_root=Path(env.get(kn.ENV_CACHE) or temp / "kubetune-cache"),
        run_folder=env.get(kn.ENV_RUN) or None,
        spec_file=env.get(kn.ENV_SPEC_FILE) or None,
        spec_mount=env.get(kn.ENV_SPEC) or None,
        die_with_parent=number(kn.ENV_DIE_WITH_PARENT, None),
        retry_flag=Path(env[kn.ENV_RETRY_FLAG]) if env.get(kn.ENV_RETRY_FLAG) else None,
        pod_name=env.get(kn.ENV_POD_NAME) or socket.gethostname(),
        node_rank=number(kn.ENV_NODE_RANK, 0),
        num_nodes=number(kn.ENV_NUM_NODES, None),
        sweep=env.get(kn.ENV_SWEEP) or None,
        trial=number(kn.ENV_TRIAL, None),
        sweep_verdict_s=float(env[kn.ENV_SWEEP_VERDICT_SECONDS]) if env.get(kn.ENV_SWEEP_VERDICT_SECONDS) else None,
        wandb_mode=env.get(kn.ENV_WANDB_MODE, "").strip().lower(),
        wandb_api_key_set=bool(env.get(kn.ENV_WANDB_API_KEY)),
        wandb_dir=Path(env[kn.ENV_WANDB_DIR]) if env.get(kn.ENV_WANDB_DIR) else None,
        kubeflow_status=bool(env.get(kn.ENV_KUBEFLOW_STATUS_URL)),
        progress_configmap=env.get(kn.ENV_PROGRESS_CONFIGMAP) or None,
        progress_credentials=Path(env[kn.ENV_PROGRESS_CREDENTIALS]) if env.get(kn.ENV_PROGRESS_CREDENTIALS) else None,
        kubernetes_server=_kubernetes_server(env),
    )


def _kubernetes_server(env: Mapping[str, str]) -> str | None:
    """The API server's address the kubelet gives every pod (an IPv6 host in brackets)."""
    host, port = env.get(kn.ENV_KUBERNETES_HOST, "").strip(), env.get(kn.ENV_KUBERNETES_PORT, "").strip()
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
