"""Consumers of the registry (issue 14, point 6): `--model current|vNNNN|RUN` for predict and
evaluate, and predictions that say which version made them. A tiny real MiniLM retrain makes
v0001 in a local store; the entrypoints run as child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from helpers import REPO
from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_BAD_INPUT
from kubetune.launch.quickstart import make_reviews

# A real MiniLM retrain makes v0001 (issue 28, point 6).
pytestmark = pytest.mark.slow


def _module(module: str, spec_file, *args: str, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", module, "--spec", str(spec_file), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=900, env={**os.environ, **(env or {})})


def test_predict_and_evaluate_take_a_registry_reference(local_store, tmp_path):
    data = local_store / "datasets" / "reviews"
    data.mkdir(parents=True)
    rows = make_reviews(60, seed=9)
    (data / "part-1.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows[:40]))
    (data / "test.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows[40:]))
    (data / "new.tsv").write_text("text\n" + "".join(f"{t}\n" for t, _ in rows[40:45]))
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "reviews", "model": {"source": "models/all-MiniLM-L6-v2"},
        "data": {"train": "datasets/reviews/part-*.tsv", "test": "datasets/reviews/test.tsv"},
        "train": {"max_steps": 2, "batch_size": 8, "max_seq_length": 16},
        "storage": {"root": str(local_store)},
    }))
    work = {kn.ENV_WORKDIR: str(tmp_path / "work")}
    out = _module(kn.RETRAIN_MODULE, spec_file, env={**work, kn.ENV_RUN: "reviews-1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "promoted v0001" in out.stdout
    lineage = json.loads((local_store / "runs" / "reviews-1" / "lineage.json").read_text())
    (part,) = lineage["data"]["data.train"]
    assert part["size"] == (data / "part-1.tsv").stat().st_size and len(part["sha256"]) == 64

    output = tmp_path / "preds.jsonl"
    out = _module(kn.PREDICT_MODULE, spec_file, "--input", str(data / "new.tsv"), "--output", str(output),
                  "--model", "current", env={**work, kn.ENV_RUN: "elsewhere"})
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 5 and {r["model_version"] for r in records} == {"v0001"}

    out = _module(kn.EVALUATE_MODULE, spec_file, "--model", "v0001", env={**work, kn.ENV_RUN: "scoring"})
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((local_store / "runs" / "scoring" / "eval" / "metrics.json").read_text())
    assert (metrics["model_version"], metrics["model_run"], metrics["num_samples"]) == ("v0001", "reviews-1", 20)

    out = _module(kn.PREDICT_MODULE, spec_file, "--input", str(data / "new.tsv"), "--output", str(output),
                  "--model", "v0009", env=work)
    assert out.returncode == EXIT_BAD_INPUT and "no version 'v0009'" in out.stderr.strip().splitlines()[-1]

    # `kubetune models promote` scores the run against CURRENT: the same model is no better.
    from helpers import run_cli

    out = run_cli("models", "promote", str(spec_file), "reviews-1", env=work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "not promoted" in out.stdout and "does not beat v0001" in out.stdout
    decision = json.loads((local_store / "runs" / "reviews-1" / "promotion.json").read_text())
    assert decision["candidate"]["accuracy"] == decision["current"]["accuracy"]
    out = run_cli("models", "promote", str(spec_file), "reviews-1", "--force", env=work)
    assert out.returncode == 0 and "promoted v0002: forced by hand" in out.stdout, out.stdout + out.stderr[-2000:]

    # A warm start from the current version records it as the parent.
    out = _module(kn.RETRAIN_MODULE, spec_file, "--set", "retrain.when=always", "--set", "retrain.init=current",
                  env={**work, kn.ENV_RUN: "reviews-2"})
    assert out.returncode == 0, out.stderr[-3000:]
    lineage = json.loads((local_store / "runs" / "reviews-2" / "lineage.json").read_text())
    assert lineage["parent_version"] == "v0002"
    assert lineage["model"]["uri"] == str(local_store / "runs" / "reviews-1" / "model")
