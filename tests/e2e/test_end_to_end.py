"""End to end on one machine: real pretrained MiniLM, real datasets, real S3 protocol server.

These train real models to the quality bars of the end-to-end issue; they are marked slow
(minutes on 2 CPU cores) and run in CI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import s3fs

from helpers import run_cli

# On the held-out dev set (10% of train picks the best checkpoint; until issue 28 dev picked it,
# which flattered it). Measured 2026-12-07 on 2 shared CPU cores: 0.853 after one epoch, 0.875
# after the shipped two, so the test trains the shipped two and keeps the bar of 0.86.
SST2_MIN_ACCURACY = 0.86
IMDB_MIN_ACCURACY = 0.82


def s3(endpoint: str) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)


@pytest.mark.slow
def test_sst2_on_two_nodes_and_s3_reaches_quality_bar_and_writes_the_run_layout(s3_bucket, shared_data, minilm_dir):
    """The full SST-2 job from a bucket, as a 2-node gang (two local processes on gloo, as the
    Indexed Job's pods would run): one model, the quality bar, the run layout in the store."""
    endpoint, bucket = s3_bucket
    fs = s3(endpoint)
    fs.put(str(shared_data / "sst2" / "train.tsv"), f"{bucket}/datasets/sst2/train.tsv")
    fs.put(str(shared_data / "sst2" / "dev.tsv"), f"{bucket}/datasets/sst2/dev.tsv")
    for f in Path(minilm_dir).iterdir():
        fs.put(str(f), f"{bucket}/models/all-MiniLM-L6-v2/{f.name}")

    out = run_cli(
        "run", "jobs/sst2-minilm.yaml", "--local",
        "--set", f"storage.root=s3://{bucket}",
        "--set", f"storage.endpoint_url={endpoint}",
        "--set", "resources.nodes=2",
        "--set", "train.batch_size=16",  # per process: the global batch of the 1-process job (32)
        "--set", "train.checkpoint_every=150",
        "--set", "train.keep_checkpoints_after_success=1",  # read below
        # The shipped two epochs: one reaches only 0.853 on the held-out dev set (see above).
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[sst2-minilm-train-0]" in out.stdout  # the gang's output, prefixed per pod
    assert "world size 2" in out.stdout  # both processes joined one process group

    run = f"{bucket}/runs/sst2-minilm"
    fs.invalidate_cache()
    assert fs.exists(f"{run}/spec.yaml")
    latest = fs.cat(f"{run}/checkpoints/LATEST").decode().strip()
    assert latest.startswith("step-")
    assert fs.exists(f"{run}/checkpoints/{latest}/COMMITTED")
    assert fs.exists(f"{run}/checkpoints/{latest}/optimizer.pt")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "labels.json", "spec.yaml", "COMMITTED"):
        assert fs.exists(f"{run}/model/{name}"), name
    assert json.loads(fs.cat(f"{run}/model/labels.json")) == ["0", "1"]

    lines = [json.loads(line) for line in fs.cat(f"{run}/metrics/train.jsonl").decode().splitlines()]
    train_lines = [line for line in lines if "loss" in line]
    assert len(train_lines) >= 10
    assert {"step", "epoch", "loss", "learning_rate", "samples_per_second", "eta_seconds"} <= set(train_lines[-1])
    assert train_lines[-1]["loss"] < train_lines[0]["loss"]
    # Losses are per-sample means (about ln 2 = 0.69 at the start for two balanced classes),
    # not multiplied by the world size.
    assert train_lines[0]["loss"] < 0.8

    metrics = json.loads(fs.cat(f"{run}/eval/metrics.json"))
    for key in ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_weighted", "loss"):
        assert key in metrics
    assert metrics["num_samples"] == 872
    print(f"SST-2 dev accuracy {metrics['accuracy']:.4f}")
    assert metrics["accuracy"] >= SST2_MIN_ACCURACY, metrics
    assert metrics["loss"] < 0.7
    report = fs.cat(f"{run}/eval/report.txt").decode()
    assert "precision" in report and "support" in report

    # Credentials live only in the environment: never in the stored spec or the logs.
    stored = fs.cat(f"{run}/spec.yaml").decode() + fs.cat(f"{run}/model/spec.yaml").decode()
    assert "testing-secret" not in stored + out.stdout + out.stderr


@pytest.mark.slow
def test_imdb_reaches_quality_bar_by_column_mapping_alone(tmp_path, shared_data, minilm_dir):
    root = tmp_path / "store"
    shutil.copytree(minilm_dir, root / "models" / "all-MiniLM-L6-v2")
    shutil.copytree(shared_data / "imdb", root / "datasets" / "imdb")
    # The GPU job as shipped, sized for 2 CPU cores: MiniLM from the store instead of BERT
    # from the hub, shorter sequences, one epoch, no early stopping. Measured on 2 CPU cores:
    # test accuracy 0.8545 after one epoch (107 steps), against the bar of 0.82.
    out = run_cli(
        "run", "jobs/imdb-bert.yaml", "--local",
        "--set", f"storage.root={root}", "--set", "storage.endpoint_url=null",
        "--set", "model.source=models/all-MiniLM-L6-v2", "--set", "model.revision=null",
        "--set", "train.max_seq_length=128", "--set", "train.epochs=1", "--set", "train.batch_size=16",
        "--set", "train.learning_rate=1e-4", "--set", "train.early_stopping=null",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((root / "runs" / "imdb-bert" / "eval" / "metrics.json").read_text())
    assert metrics["num_samples"] == 488
    assert metrics["split"] == "data.test"
    print(f"IMDb test accuracy {metrics['accuracy']:.4f}")
    assert metrics["accuracy"] >= IMDB_MIN_ACCURACY, metrics
    labels = json.loads((root / "runs" / "imdb-bert" / "model" / "labels.json").read_text())
    assert labels == ["Negative", "Positive"]
