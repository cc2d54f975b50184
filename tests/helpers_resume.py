"""Helpers for the checkpoint/resume/streaming tests: a restartable S3 server, small SST-2
jobs, training processes started through the real entrypoint (so kill -9 and SIGTERM are
real signals), and readers for what a run left in the store."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from kubetune.contract.names import TRAIN_MODULE

REPO = Path(__file__).resolve().parents[1]
# One intra-op thread: on a small shared CPU two spinning threads per process are ~3x slower
# (measured), and every run of a comparison must use the same setting to be bit-comparable.
SMALL_CPU_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class RestartableS3:
    """moto's S3 server over HTTP on a fixed port, which can be stopped (connections refused,
    as when a store goes down) and started again on the same port. moto keeps its objects in
    the process, so they survive the restart, like a real store's."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        self._server.stop()
        self._server._server.server_close()  # release the port: clients get "connection refused"
        self._server = None


def s3fs_for(endpoint: str) -> Any:
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)


@contextlib.contextmanager
def restartable_s3(bucket: str) -> Iterator[RestartableS3]:
    """A started RestartableS3 with test credentials in the environment and `bucket` made; a
    module fixture yields from it. Stopped at the end unless a test left it stopped."""
    server = RestartableS3()
    server.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.delenv("AWS_PROFILE", raising=False)
            mp.delenv("AWS_ENDPOINT_URL", raising=False)
            s3fs_for(server.endpoint).mkdir(bucket)
            yield server
    finally:
        if server.running:
            server.stop()


def write_sst2_subset(fs: Any, shared_data: Path, prefix: str, n_train: int, n_val: int, n_test: int) -> dict[str, str]:
    """Real SST-2 rows (header `sentence\tlabel`) as train/validation/test files in the store."""
    train = (shared_data / "sst2" / "train.tsv").read_text().splitlines()
    dev = (shared_data / "sst2" / "dev.tsv").read_text().splitlines()
    header = train[0]
    files = {
        "train": [header] + train[1 : 1 + n_train],
        "validation": [header] + dev[1 : 1 + n_val],
        "test": [header] + dev[1 + n_val : 1 + n_val + n_test],
    }
    uris = {}
    for split, lines in files.items():
        uri = f"s3://{prefix}/data/{split}.tsv"
        with fs.open(uri, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        uris[split] = uri
    return uris


def write_spec(path: Path, name: str, root: str, endpoint: str, model: Path, data: dict[str, str],
               **train: Any) -> Path:
    spec = {
        "name": name,
        "model": {"source": str(model)},
        "data": {**data, "columns": {"text": "sentence"}},
        "train": {"max_seq_length": 64, "batch_size": 8, "logging_steps": 1, "seed": 7,
                  "learning_rate": 1e-4, "keep_checkpoints": 2, **train},
        "storage": {"root": root, "endpoint_url": endpoint},
        "kubernetes": {"termination_grace_period_seconds": 60},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class LineProcess:
    """A child process with its merged output collected line by line, with the time each line
    arrived (tests wait for a line, then act: kill, stop the store, compare timings)."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, timeout: float = 300.0, after: int = 0) -> re.Match:
        """The first output line matching `pattern` from line index `after` on; fails if the
        process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = after
        while time.monotonic() < deadline:
            lines = self.lines[seen:]
            for _, line in lines:
                match = regex.search(line)
                if match:
                    return match
            seen += len(lines)
            if self.proc.poll() is not None and not self._reader.is_alive() and seen >= len(self.lines):
                raise AssertionError(f"process exited ({self.proc.returncode}) before {pattern!r}:\n{self.output[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.output[-4000:]}")

    def wait(self, timeout: float = 600.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code


class TrainProcess(LineProcess):
    """`python -m <TRAIN_MODULE> --spec FILE`, as a pod's container runs it."""

    def __init__(self, spec: Path, workdir: Path, extra_env: dict[str, str] | None = None):
        env = {**os.environ, "KUBETUNE_WORKDIR": str(workdir), "PYTHONUNBUFFERED": "1", **SMALL_CPU_ENV,
               **(extra_env or {})}
        super().__init__([sys.executable, "-m", TRAIN_MODULE, "--spec", str(spec)], env)


def train_to_end(spec: Path, workdir: Path, timeout: float = 600.0) -> TrainProcess:
    proc = TrainProcess(spec, workdir)
    code = proc.wait(timeout)
    assert code == 0, proc.output[-3000:]
    return proc


def step_losses(fs: Any, root: str, job: str) -> dict[int, float]:
    """step -> training loss from the run's metrics/train.jsonl in the store."""
    text = fs.cat_file(f"{root}/runs/{job}/metrics/train.jsonl").decode()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    losses: dict[int, float] = {}
    for record in records:
        if "loss" in record:
            assert record["step"] not in losses, f"step {record['step']} logged twice"
            losses[record["step"]] = record["loss"]
    return losses


def summary(fs: Any, root: str, job: str) -> dict[str, Any]:
    return json.loads(fs.cat_file(f"{root}/runs/{job}/metrics/summary.json"))
