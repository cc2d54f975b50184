"""The distrun entrypoint (names.DISTRUN_MODULE): torchrun that keeps the workers' exit codes for podFailurePolicy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kubetune.contract.names import DISTRUN_MODULE
from kubetune.workload.entrypoints.distrun import merge_exit_codes, rendezvous_conf
from kubetune.contract.exitcodes import EXIT_BAD_INPUT, EXIT_RETRY_AFTER_CHECKPOINT, EXIT_STORE_UNAVAILABLE


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([], 0),
        ([0, 0], 0),
        ([EXIT_BAD_INPUT, EXIT_BAD_INPUT], EXIT_BAD_INPUT),
        ([EXIT_BAD_INPUT, 1], 1),  # a crash beside bad input: not certainly a config error
        ([EXIT_BAD_INPUT, -15], EXIT_BAD_INPUT),  # the other rank was stopped by torchrun
        ([EXIT_RETRY_AFTER_CHECKPOINT, -15], EXIT_RETRY_AFTER_CHECKPOINT),
        ([EXIT_RETRY_AFTER_CHECKPOINT, EXIT_BAD_INPUT], EXIT_RETRY_AFTER_CHECKPOINT),
        ([-9], 1),
        ([EXIT_STORE_UNAVAILABLE, -15], EXIT_STORE_UNAVAILABLE),  # the store stayed unreachable: retried
        ([EXIT_STORE_UNAVAILABLE, EXIT_BAD_INPUT], 1),
    ],
)
def test_merge_exit_codes(codes, expected):
    assert merge_exit_codes(codes) == expected


WORKER = """
import os, sys, time
rank = int(os.environ["RANK"])
codes = [int(c) for c in sys.argv[1].split(",")]
time.sleep(0.2 * rank)
sys.exit(codes[rank])
"""


@pytest.mark.parametrize(
    ("codes", "expected"),
    [("2,2", EXIT_BAD_INPUT), ("0,75", EXIT_RETRY_AFTER_CHECKPOINT), ("0,0", 0)],
)
def test_workers_exit_codes_reach_the_pod(tmp_path, codes, expected):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = subprocess.run(
        [sys.executable, "-m", DISTRUN_MODULE, "--standalone", "--nproc-per-node=2", str(script), codes],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == expected, result.stderr[-2000:]


SIGTERM_WORKER = """
import os, pathlib, signal, sys, time
def leave(*_):
    if sys.argv[1] == "checkpointed":
        pathlib.Path(os.environ["KUBETUNE_RETRY_FLAG"]).touch()
    sys.exit(75)
signal.signal(signal.SIGTERM, leave)
pathlib.Path(sys.argv[2]).touch()
time.sleep(60)
"""


@pytest.mark.parametrize(("worker_says", "expected"), [("checkpointed", EXIT_RETRY_AFTER_CHECKPOINT), ("nothing", 143)])
def test_sigterm_to_torchrun_keeps_the_retry_code(tmp_path, worker_says, expected):
    """Preemption SIGTERMs the pod's PID 1 (torchrun): its own exit would be 143 whatever the
    workers did; a worker that committed its checkpoint makes the pod exit 75 instead."""
    import signal
    import time

    script = tmp_path / "worker.py"
    script.write_text(SIGTERM_WORKER)
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", DISTRUN_MODULE, "--standalone", "--nproc-per-node=1", str(script), worker_says, str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == expected, stderr.decode()[-3000:]


FLAG_THEN_CRASH_WORKER = """
import os, pathlib, sys
pathlib.Path(os.environ["KUBETUNE_RETRY_FLAG"]).touch()
sys.exit(1)
"""


def test_a_committed_checkpoint_outranks_a_worker_crash(tmp_path):
    """A worker that said it committed its checkpoint on SIGTERM and then failed: the pod still
    exits with the retry code, so the Job resumes from LATEST instead of spending a retry."""
    script = tmp_path / "worker.py"
    script.write_text(FLAG_THEN_CRASH_WORKER)
    result = subprocess.run(
        [sys.executable, "-m", DISTRUN_MODULE, "--standalone", "--nproc-per-node=1", str(script)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == EXIT_RETRY_AFTER_CHECKPOINT, result.stderr[-2000:]


@pytest.mark.parametrize("worker_committed", [True, False])
def test_an_agent_error_keeps_the_retry_code_only_after_a_commit(monkeypatch, worker_committed):
    """torchrun's agent can end in an error of its own while it stops the gang: with a committed
    checkpoint the pod exits with the retry code; without one the error propagates."""
    import os
    from pathlib import Path

    import torch.distributed.run as torchrun

    from kubetune.contract.names import ENV_RETRY_FLAG
    from kubetune.workload.entrypoints import distrun

    monkeypatch.setenv(ENV_RETRY_FLAG, "restored-after-the-test")

    def agent_fails(args):
        if worker_committed:
            Path(os.environ[ENV_RETRY_FLAG]).touch()
        raise RuntimeError("rendezvous closed while stopping")

    monkeypatch.setattr(torchrun, "run", agent_fails)
    argv = ["--standalone", "--nproc-per-node=1", "worker.py"]
    if worker_committed:
        assert distrun.main(argv) == EXIT_RETRY_AFTER_CHECKPOINT
    else:
        with pytest.raises(RuntimeError, match="rendezvous closed"):
            distrun.main(argv)


@pytest.mark.parametrize(
    ("backend", "conf", "index", "expected"),
    [
        ("c10d", "", "0", {"is_host": "true"}),  # pod 0 hosts the rendezvous store
        ("c10d", "", "1", {"is_host": "false"}),
        ("c10d", "", "3", {"is_host": "false"}),
        ("c10d", "read_timeout=120", "0", {"read_timeout": "120", "is_host": "true"}),  # merged
        ("c10d", "is_host=false,join_timeout=30", "0", {"is_host": "false", "join_timeout": "30"}),  # yours wins
        ("c10d", " is_host = true ", "2", {"is_host": "true"}),
        ("c10d", "", None, {}),  # not an Indexed Job's pod: torch decides
        ("etcd-v2", "", "0", {}),  # another backend: untouched
        ("static", "", "0", {}),
    ],
)
def test_the_pod_of_index_0_hosts_the_c10d_store(backend, conf, index, expected):
    """torchrun reads the merged `--rdzv-conf` (its own parser) as meant."""
    from torch.distributed.elastic.rendezvous.utils import _parse_rendezvous_config
    from torch.distributed.run import parse_args

    merged = rendezvous_conf(backend, conf, index)
    assert _parse_rendezvous_config(merged) == expected
    args = parse_args([f"--rdzv-backend={backend}", f"--rdzv-conf={merged}", "train.py"])
    assert args.rdzv_conf == merged


@pytest.mark.parametrize(("index", "hosts"), [("0", "true"), ("1", "false")])
def test_distrun_hands_the_decision_to_torchrun(monkeypatch, index, hosts):
    """What torchrun's agent is configured with (torch's `config_from_args`) in pod `index`."""
    import torch.distributed.run as torchrun

    from kubetune.contract.names import ENV_COMPLETION_INDEX, ENV_DIE_WITH_PARENT
    from kubetune.workload.entrypoints import distrun

    monkeypatch.setenv(ENV_COMPLETION_INDEX, index)
    monkeypatch.delenv(ENV_DIE_WITH_PARENT, raising=False)
    configs = []
    monkeypatch.setattr(torchrun, "run", lambda args: configs.append(torchrun.config_from_args(args)[0].rdzv_configs))
    argv = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", "--rdzv-endpoint=job-train-0.job:29500",
            "--rdzv-id=job-train", "worker.py"]
    assert distrun.main(argv) == 0
    assert configs[0]["is_host"] == hosts


@pytest.mark.parametrize(
    "nnodes, conf, expected",
    [
        ("1:2", "is_host=true", {"is_host": "true", "keep_alive_interval": "2", "keep_alive_max_attempt": "3",
                                 "last_call_timeout": "10"}),
        ("1:4", "last_call_timeout=60", {"last_call_timeout": "60", "keep_alive_interval": "2",
                                         "keep_alive_max_attempt": "3"}),  # the user's own wins
        ("2", "is_host=false", {"is_host": "false"}),  # a fixed size: torch's defaults
        ("2:2", "", {}),
    ],
)
def test_an_elastic_gang_finds_a_lost_node_in_seconds(nnodes, conf, expected):
    """Issue 24: `--nnodes=MIN:MAX` gets the elastic rendezvous timings, as torchrun parses them."""
    from torch.distributed.elastic.rendezvous.utils import _parse_rendezvous_config

    from kubetune.workload.entrypoints.distrun import elastic_conf

    assert _parse_rendezvous_config(elastic_conf(nnodes, conf)) == expected
