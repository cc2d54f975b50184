"""MLflow tracking (issue 15): a real `mlflow server` (sqlite backend, loopback, a free port)
and a tiny MiniLM run logging into it, stopped by SIGTERM after its first committed checkpoint
and resumed by `kubetune run --local`; what the server holds is read back with MlflowClient.

The same run also reports to Weights & Biases in offline mode (no W&B server can run here):
both attempts write their local run files under one W&B run id, the one stored with the
checkpoint. What offline mode cannot show: that W&B's servers accept the key and join the two
attempts' files into one run (`wandb sync` does that, from these files).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from helpers import run_cli
from helpers_resume import SMALL_CPU_ENV, TrainProcess

from kubetune.contract import names as kn

mlflow = pytest.importorskip("mlflow", reason="pip install 'kubetune[tracking]'")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 and a free port, its sqlite database in a temp folder."""
    base = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{base}/mlflow.db",
         "--default-artifact-root", str(base / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=open(base / "server.log", "w"),
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (base / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _tiny_job(root: Path, uri: str) -> dict[str, Any]:
    words = {"positive": "good great fine lovely", "negative": "bad awful poor dreadful"}
    data = root / "datasets" / "tiny"
    data.mkdir(parents=True)
    for split, rows in (("train", 40), ("test", 8)):
        lines = ["text\tlabel"] + [f"{words[label]} film {i}\t{label}"
                                   for i in range(rows) for label in ("positive", "negative")][:rows]
        (data / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return {
        "name": "tracked", "task": "text-classification",
        "model": {"source": "models/all-MiniLM-L6-v2"},
        "data": {"train": "datasets/tiny/train.tsv", "test": "datasets/tiny/test.tsv",
                 "columns": {"text": "text", "label": "label"}},
        "train": {"max_steps": 6, "batch_size": 8, "learning_rate": 1.0e-4, "max_seq_length": 32,
                  "logging_steps": 1, "checkpoint_every": 3},
        "storage": {"root": str(root)},
        "kubernetes": {"env": {"HF_HUB_DISABLE_TELEMETRY": "1"},
                       "secret_env": {"HF_TOKEN": {"secret": "hf", "key": "token"}}},
        "tracking": {"mlflow": {"tracking_uri": uri, "experiment": "kubetune-e2e"},
                     "wandb": {"project": "kubetune-e2e"}},
    }


@pytest.mark.slow
def test_a_stopped_and_resumed_run_logs_into_one_mlflow_run(mlflow_server, local_store, tmp_path):
    from mlflow.tracking import MlflowClient

    spec_file = tmp_path / "tracked.yaml"
    spec_file.write_text(yaml.safe_dump(_tiny_job(local_store, mlflow_server)))
    offline = {kn.ENV_WANDB_MODE: "offline", "WANDB_SILENT": "true"}
    cache = tmp_path / "cache"  # run --local's cache volume: the rendered WANDB_DIR is under it
    first = TrainProcess(spec_file, tmp_path / "work-1", extra_env={**offline, kn.ENV_WANDB_DIR: str(cache / "wandb")})
    first.wait_for(r"checkpoint committed", timeout=300)
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait(120) == 75, first.output[-3000:]
    stored = json.loads((local_store / "runs" / "tracked" / "tracking" / "runs.json").read_text())

    resumed = run_cli("run", str(spec_file), "--local", env={**SMALL_CPU_ENV, **offline, kn.ENV_CACHE: str(cache)},
                      timeout=600)
    assert resumed.returncode == 0, (resumed.stdout[-3000:], resumed.stderr[-3000:])
    assert f"mlflow: continuing run {stored['mlflow']}" in resumed.stdout

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("kubetune-e2e")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [stored["mlflow"]]  # one MLflow run for both attempts
    run = runs[0]
    params = run.data.params
    assert params["train.learning_rate"] == "0.0001" and params["train.max_steps"] == "6"
    assert params["model.source"] == "models/all-MiniLM-L6-v2" and params["task"] == "text-classification"
    assert not [k for k in params if k.startswith("kubernetes.env") or k.startswith("kubernetes.secret_env")]
    assert "output_dir" not in params  # the Trainer's own (unscreened) params are not sent

    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
    assert set(range(1, 7)) <= set(history)  # every logging step, before and after the stop
    logged = [json.loads(line) for line in
              (local_store / "runs" / "tracked" / "metrics" / "train.jsonl").read_text().splitlines()]
    for record in logged:
        if "loss" in record:
            assert history[record["step"]] == pytest.approx(record["loss"], rel=1e-6)
    test_metrics = json.loads((local_store / "runs" / "tracked" / "eval" / "metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(test_metrics["accuracy"])
    assert run.data.tags["kubetune.model_uri"].endswith("runs/tracked/model")

    # W&B, offline: one run id for both attempts, each attempt's files written under it.
    assert f"wandb: continuing run {stored['wandb']}" in resumed.stdout
    attempts = sorted((cache / "wandb" / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and all(a.name.endswith(f"-{stored['wandb']}") for a in attempts), attempts
    assert all(list(a.glob(f"run-{stored['wandb']}.wandb")) for a in attempts)


@pytest.mark.slow  # waits on real processes, timeouts or leases: keeps `-m "not slow"` under 5 minutes
def test_wandb_without_a_key_is_one_line_before_training(local_store, tmp_path):
    """`run --local` with tracking.wandb, no WANDB_API_KEY and no WANDB_MODE: exit 2, one
    `error:` line naming the variable, before the model loads (no run folder written)."""
    job = _tiny_job(local_store, "http://127.0.0.1:1")
    del job["tracking"]["mlflow"]
    spec_file = tmp_path / "nokey.yaml"
    spec_file.write_text(yaml.safe_dump(job))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    result = subprocess.run([sys.executable, "-m", "kubetune.cli.main", "run", str(spec_file), "--local"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"tracking.wandb: {kn.ENV_WANDB_API_KEY} is not set" in errors[0], errors
    assert "kubetune: step" not in result.stdout
    assert not (local_store / "runs" / "tracked" / "spec.yaml").exists()
