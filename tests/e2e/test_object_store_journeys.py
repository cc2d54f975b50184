"""Issue 27's acceptance: the quickstart's journey on each object store, a real server on a
loopback port: S3 (moto), Google Cloud Storage (fake-gcs-server), Azure Blob (Azurite).

One journey per store, as pods and a person live it: train (a pod killed with SIGKILL after its
first checkpoint, the next attempt resuming from it), evaluate, `kubetune models promote`, then
predict with the registry's CURRENT. The data (a glob of two parts), checkpoints, LATEST, the
COMMITTED markers, the lease, the model, the registry and the predictions all live in the
store; gcsfs and adlfs find their servers through their SDKs' own environment only.

Light on purpose (CI allowance): 32 real SST-2 rows, LoRA on the pretrained MiniLM (so a
checkpoint is a few MB, not 270 MB of weights and optimizer state), 6 steps of 4 rows, a
checkpoint every 2 steps; the MiniLM base is read from its local folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, run_cli
from helpers_emulators import AZURITE_KEY, azure_fs, gcs_fs
from helpers_resume import SMALL_CPU_ENV, TrainProcess, s3fs_for, train_to_end
from kubetune.contract import names as kn


def _store(request, store: str) -> tuple[str, str, object, str | None]:
    """(storage.root, bucket, an fsspec file system on it, storage.endpoint_url)."""
    if store == "s3":
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        return f"s3://{bucket}/store", bucket, s3fs_for(endpoint), endpoint
    if store == "gcs":
        env, bucket = request.getfixturevalue("gcs_bucket")
        return f"gs://{bucket}/store", bucket, gcs_fs(env), None
    env, container = request.getfixturevalue("azure_container")
    return f"az://{container}/store", container, azure_fs(env), None


def _write_data(fs, bucket: str, shared_data: Path) -> None:
    train = (shared_data / "sst2" / "train.tsv").read_text().splitlines()
    dev = (shared_data / "sst2" / "dev.tsv").read_text().splitlines()
    header = train[0]
    parts = {"train-1.tsv": train[1:17], "train-2.tsv": train[17:33], "validation.tsv": dev[1:17],
             "test.tsv": dev[17:41], "new.tsv": [row.rsplit("\t", 1)[0] for row in dev[41:46]]}
    for name, rows in parts.items():
        head = "sentence" if name == "new.tsv" else header
        fs.pipe_file(f"{bucket}/store/data/{name}", ("\n".join([head] + rows) + "\n").encode())


def _module(stage: str, spec: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", kn.STAGE_MODULES[stage], "--spec", str(spec), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, **SMALL_CPU_ENV, "PYTHONUNBUFFERED": "1", **env})


@pytest.mark.slow
@pytest.mark.parametrize("store", ["s3", "gcs", "azure"])
def test_train_resume_after_kill_evaluate_promote_and_predict_on_each_store(store, request, shared_data, minilm_dir,
                                                                            tmp_path):
    root, bucket, fs, endpoint = _store(request, store)
    _write_data(fs, bucket, shared_data)
    spec = tmp_path / "journey.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "journey", "model": {"source": str(minilm_dir)},
        "data": {"train": "data/train-*.tsv", "validation": "data/validation.tsv", "test": "data/test.tsv",
                 "columns": {"text": "sentence"}},
        "train": {"max_steps": 6, "batch_size": 4, "max_seq_length": 16, "checkpoint_every": 2, "logging_steps": 1,
                  "seed": 7, "learning_rate": 1e-3, "lora": {"r": 4}, "keep_checkpoints_after_success": 1},
        "storage": {"root": root, **({"endpoint_url": endpoint} if endpoint else {})},
    }, sort_keys=False))
    run = f"{bucket}/store/runs/journey"

    first = TrainProcess(spec, tmp_path / "pod-1")
    first.wait_for(r"checkpoint committed: .*step-000002")
    os.kill(first.proc.pid, signal.SIGKILL)
    assert first.wait(60) == -signal.SIGKILL
    resumed = train_to_end(spec, tmp_path / "pod-2")
    step = int(resumed.wait_for(r"resuming from \S+/runs/journey/checkpoints/step-(\d+)").group(1))
    assert step >= 2
    fs.invalidate_cache()
    latest = fs.cat_file(f"{run}/checkpoints/LATEST").decode().strip()
    assert latest == "step-000006" and fs.exists(f"{run}/checkpoints/{latest}/COMMITTED")
    marker = json.loads(fs.cat_file(f"{run}/model/COMMITTED"))
    assert "adapter_model.safetensors" in marker["manifest"]
    lineage = json.loads(fs.cat_file(f"{run}/model/lineage.json"))
    assert [a["resumed_from"] for a in lineage["attempts"]] == [None, step]
    assert [r["uri"] for r in lineage["data"]["data.train"]] == [f"{root}/data/train-1.tsv", f"{root}/data/train-2.tsv"]

    work = {kn.ENV_WORKDIR: str(tmp_path / "work")}
    evaluated = _module("evaluate", spec, env=work)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(fs.cat_file(f"{run}/eval/metrics.json"))
    assert metrics["num_samples"] == 24 and 0.0 <= metrics["accuracy"] <= 1.0

    promoted = run_cli("models", "promote", str(spec), "journey", env=work)
    assert promoted.returncode == 0 and "promoted v0001" in promoted.stdout, promoted.stdout + promoted.stderr[-3000:]
    fs.invalidate_cache()
    current = json.loads(fs.cat_file(f"{bucket}/store/registry/journey/CURRENT"))
    assert (current["version"], current["run"]) == ("v0001", "journey")

    predicted = _module("predict", spec, "--input", "data/new.tsv", "--output", f"{root}/predictions/new.jsonl",
                        "--model", "current", env={**work, kn.ENV_RUN: "scoring"})
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    fs.invalidate_cache()
    records = [json.loads(line) for line in fs.cat_file(f"{bucket}/store/predictions/new.jsonl").decode().splitlines()]
    assert len(records) == 5 and {r["model_version"] for r in records} == {"v0001"}
    assert {r["prediction"] for r in records} <= {"0", "1"}

    # Credentials live in the environment only: never in a stored spec or a log.
    stored = fs.cat_file(f"{run}/spec.yaml").decode() + fs.cat_file(f"{run}/model/spec.yaml").decode()
    logs = first.output + resumed.output + evaluated.stdout + evaluated.stderr + predicted.stdout + predicted.stderr
    for secret in ("testing-secret", AZURITE_KEY):
        assert secret not in stored + logs + promoted.stdout + promoted.stderr
