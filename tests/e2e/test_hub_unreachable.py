"""A model on an unreachable Hub (issue 28, point 2): `kubetune run --local` ends in one
`error:` line and the retriable exit code within `storage.startup_timeout_seconds`, not in
huggingface_hub's 20 retries and a 122-line traceback with exit 1; `validate --data` says
plainly that it did not check the Hub model. The Hub is a closed loopback port (HF_ENDPOINT),
so the fault is the same, and as fast, on every machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from kubetune.contract.exitcodes import EXIT_STORE_UNAVAILABLE

REPO = Path(__file__).resolve().parents[2]
HUB_MODEL = "google-bert/bert-base-uncased"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_job(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    (store / "d").mkdir(parents=True)
    rows = "".join(f"{'good' if i % 2 else 'bad'} movie {i}\t{'positive' if i % 2 else 'negative'}\n" for i in range(20))
    (store / "d" / "train.tsv").write_text("text\tlabel\n" + rows)
    job = tmp_path / "hub.yaml"
    job.write_text(yaml.safe_dump({
        "name": "hub-model", "model": {"source": HUB_MODEL}, "data": {"train": "d/train.tsv"},
        "train": {"max_steps": 1}, "storage": {"root": str(store), "startup_timeout_seconds": 1},
    }))
    return job


def kubetune(*args: str, tmp_path: Path, hub: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub, "HF_HOME": str(tmp_path / "hf"),
           "KUBETUNE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "kubetune.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_a_hub_model_on_an_unreachable_hub_is_one_error_line_and_the_retriable_code(tmp_path):
    job, hub = write_job(tmp_path), f"http://127.0.0.1:{closed_port()}"
    run = kubetune("run", str(job), "--local", tmp_path=tmp_path, hub=hub)
    lines = (run.stdout + run.stderr).splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert run.returncode == EXIT_STORE_UNAVAILABLE, lines
    assert errors == [f"error: model.source: {HUB_MODEL}: the Hugging Face Hub ({hub}) unreachable for 1s "
                      "(storage.startup_timeout_seconds: 1): [Errno 111] Connection refused"], lines
    assert not any("Traceback" in line or "Retry " in line for line in lines), lines
    assert len(lines) < 12, lines  # the run's own lines, a retry notice or two, the error, the exit


def test_validate_data_says_plainly_that_the_hub_model_was_not_checked(tmp_path):
    job = write_job(tmp_path)
    check = kubetune("validate", str(job), "--data", tmp_path=tmp_path, hub=f"http://127.0.0.1:{closed_port()}")
    assert check.returncode == 0, check.stderr
    assert check.stderr.strip().splitlines()[-1] == (
        f"ok: hub-model: data (train 18, validation 2 rows) looks usable; "
        f"model {HUB_MODEL}: not checked (a Hugging Face Hub id)")
