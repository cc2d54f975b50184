"""Scheduled retraining: each CronJob run trains a new model into a folder of its own and
evaluates it, instead of finding the first run complete."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from helpers import REPO
from kubetune.contract import names as kn
from kubetune.contract.spec.job import load_spec
from kubetune.launch.render import render_objects
from kubetune.launch.quickstart import make_reviews


def test_cronjob_pods_name_their_run_after_their_job():
    spec = load_spec(REPO / "jobs" / "sst2-minilm.yaml")
    (cron,) = [o for o in render_objects(spec, stage="train", schedule="0 3 * * 0") if o["kind"] == "CronJob"]
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["python", "-m", kn.RETRAIN_MODULE]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBETUNE_RUN"]["value"] == "$(KUBETUNE_JOB_NAME)"
    # KUBETUNE_RUN refers to KUBETUNE_JOB_NAME, which must be defined before it.
    names = [e["name"] for e in container["env"]]
    assert names.index("KUBETUNE_JOB_NAME") < names.index("KUBETUNE_RUN")


@pytest.mark.slow
def test_two_scheduled_runs_train_and_evaluate_separately(local_store, tmp_path):
    data = local_store / "datasets" / "reviews"
    data.mkdir(parents=True)
    rows = make_reviews(120, seed=3)
    (data / "train.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows[:100]))
    (data / "test.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows[100:]))
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "nightly",
        "model": {"source": "models/all-MiniLM-L6-v2"},
        "data": {"train": "datasets/reviews/train.tsv", "test": "datasets/reviews/test.tsv"},
        "train": {"max_steps": 4, "batch_size": 8, "max_seq_length": 32, "logging_steps": 2},
        "storage": {"root": str(local_store)},
        "retrain": {"when": "always"},  # the same data twice: train anyway
    }))
    for run in ("nightly-train-1000", "nightly-train-2000"):
        out = subprocess.run(
            [sys.executable, "-m", kn.RETRAIN_MODULE, "--spec", str(spec_file)],
            capture_output=True, text=True, cwd=REPO,
            env={**__import__("os").environ, "KUBETUNE_RUN": run, "KUBETUNE_WORKDIR": str(tmp_path / "work")},
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "already complete" not in out.stdout
    for run in ("nightly-train-1000", "nightly-train-2000"):
        metrics = json.loads((local_store / "runs" / run / "eval" / "metrics.json").read_text())
        assert metrics["num_samples"] == 20
        assert (local_store / "runs" / run / "model" / "COMMITTED").exists()
    assert not (local_store / "runs" / "nightly").exists()
