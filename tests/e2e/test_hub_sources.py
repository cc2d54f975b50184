"""The Hugging Face Hub as a source (issue 27, points 1, 2 and 5), through the CLI as a user runs
it, against a local server that answers the Hub's endpoints (`fakes.hub_server`, HF_ENDPOINT):

- a job whose data and model are `hf://` URIs trains (a few steps), and its lineage.json names
  the commit each file was read at;
- `hf://` as `storage.root` or as predictions' `--output` is refused in one line (it is read-only);
- `kubetune prepare-quickstart` fetches SST-2 from the Hub when it answers (its licence and
  source printed, recorded beside the data and in the run's lineage, named in the summary), and
  falls back to the synthetic sentences when it does not, saying so.
"""

from __future__ import annotations

import json
import uuid

import pytest
import yaml
from helpers import REPO, run_cli, succeeded
from helpers_hub import SST2, add_minilm, add_sst2

# The Hub that never answers: a closed port on this machine (connection refused at once).
UNREACHABLE_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9"}
LIGHT = ["--set", "train.max_steps=4", "--set", "train.batch_size=8", "--set", "train.max_seq_length=32",
         "--set", "train.logging_steps=2", "--set", "train.checkpoint_every=4"]


def _hub_job(tmp_path, data_repo: str, model_repo: str) -> str:
    spec = {
        "name": "hub-sources", "task": "text-classification",
        "model": {"source": f"hf://{model_repo}"},
        "data": {"train": f"hf://datasets/{data_repo}/data/train-*.parquet",
                 "test": f"hf://datasets/{data_repo}/data/validation-00000-of-00001.parquet",
                 "columns": {"text": "sentence", "label": "label"}},
        "storage": {"root": str(tmp_path / "store")},
    }
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.slow
def test_a_job_on_hub_data_and_a_hub_model_trains_and_records_the_commits(hub_endpoint, shared_data, minilm_dir,
                                                                          tmp_path):
    data = add_sst2(hub_endpoint, shared_data, repo_id=f"stanfordnlp/sst2-{uuid.uuid4().hex[:8]}")
    model = add_minilm(hub_endpoint, minilm_dir, repo_id=f"sentence-transformers/minilm-{uuid.uuid4().hex[:8]}")
    job = _hub_job(tmp_path, data.repo_id, model.repo_id)
    out = run_cli("run", job, "--local", *LIGHT)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    run = tmp_path / "store" / "runs" / "hub-sources"
    lineage = json.loads((run / "lineage.json").read_text())
    (train,) = lineage["data"]["data.train"]
    commit = data.refs["main"]
    assert train["revision"] == commit and train["hub_ref"] == f"datasets/{data.repo_id}@main"
    assert train["uri"] == f"hf://datasets/{data.repo_id}@{commit}/data/train-00000-of-00001.parquet"
    assert lineage["model"]["uri"] == f"hf://{model.repo_id}@{model.refs['main']}"
    assert lineage["model"]["content_hash"]
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["num_samples"] == 80  # the validation file, read from the Hub at its commit


def test_hf_is_refused_where_kubetune_writes(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "x", "model": {"source": "hf://org/model"},
                                   "data": {"train": "hf://datasets/org/d/train.csv"},
                                   "storage": {"root": "hf://datasets/org/results"}}))
    out = run_cli("validate", str(job))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: {job}: storage.root: hf:// is read-only"), lines[0]
    predict = run_cli("run", "jobs/quickstart.yaml", "--local", "--stage", "predict", "--input", "in.tsv",
                      "--output", "hf://datasets/org/predictions")
    assert predict.returncode == 2 and predict.stderr.count("\n") == 1
    assert predict.stderr.startswith("error: --output: hf:// is read-only"), predict.stderr


def test_prepare_quickstart_offline_says_its_sentences_are_synthetic(tmp_path):
    root = tmp_path / "store"
    out = succeeded(run_cli("prepare-quickstart", "--root", str(root), env=UNREACHABLE_HUB))
    assert "did not answer" in out.stdout and "synthetic" in out.stdout
    provenance = json.loads((root / "datasets" / "quickstart" / "provenance.json").read_text())
    assert provenance["synthetic"] is True and "mechanics, not quality" in provenance["note"]
    assert len((root / "datasets" / "quickstart" / "train.tsv").read_text().splitlines()) == 401


@pytest.mark.slow
def test_prepare_quickstart_trains_on_hub_data_when_the_hub_answers(hub_endpoint, shared_data, tmp_path):
    data = add_sst2(hub_endpoint, shared_data, repo_id=SST2, train=300, validation=60)
    root = tmp_path / "store"
    prepared = succeeded(run_cli("prepare-quickstart", "--root", str(root)))
    source = f"hf://datasets/{SST2}@{data.refs['main']}"
    assert f"{source} (" in prepared.stdout and "licence: unknown" in prepared.stdout, prepared.stdout
    train = (root / "datasets" / "quickstart" / "train.tsv").read_text().splitlines()
    assert train[0] == "text\tlabel" and len(train) == 301
    assert {line.rsplit("\t", 1)[1] for line in train[1:]} == {"positive", "negative"}

    out = succeeded(run_cli("run", "jobs/quickstart.yaml", "--local", "--set", f"storage.root={root}", *LIGHT))
    assert f"origin:  data.train: {source} (licence: unknown)" in out.stdout, out.stdout[-2000:]
    assert "synthetic" not in out.stdout
    lineage = json.loads((root / "runs" / "quickstart" / "lineage.json").read_text())
    assert lineage["provenance"]["data.train"]["source"] == source
    assert json.loads((root / "runs" / "quickstart" / "eval" / "metrics.json").read_text())["num_samples"] == 60


def test_the_hub_job_validates_offline():
    """jobs/sst2-hub.yaml, the README's next step, is a valid job without any Hub reached."""
    spec = yaml.safe_load((REPO / "jobs" / "sst2-hub.yaml").read_text())
    assert spec["data"]["train"].startswith("hf://datasets/")
    succeeded(run_cli("validate", "jobs/sst2-hub.yaml", env=UNREACHABLE_HUB))
