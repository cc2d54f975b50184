"""A later attempt of a run reads the hf:// commits its first attempt pinned (issue 27, point 1):
the train stage's `setup` takes them from the run's attempts.json before it resolves the
splits, so a branch that moved in between changes nothing of what the run trains on, while a
new run reads the branch's newest commit; the same for an hf:// model source. No weights are
needed: `setup` stops before the model loads (the model repository is a config and a tokenizer
file)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from helpers_hub import add_sst2, sst2_files

from kubetune.contract.spec.job import validate_spec
from kubetune.workload.data.pinning import record_attempt
from kubetune.workload.stages.run import PodEnv
from kubetune.workload.stages.training import setup


def _spec(root: Path, repo_id: str, model_id: str, name: str = "hub-pins"):
    return validate_spec({"name": name, "model": {"source": f"hf://{model_id}"}, "storage": {"root": str(root)},
                          "data": {"train": f"hf://datasets/{repo_id}/data/train-*.parquet",
                                   "columns": {"text": "sentence", "label": "label"}}})


def test_a_later_attempt_reads_the_commit_its_run_pinned_and_a_new_run_the_newest(hub_endpoint, shared_data, tmp_path):
    root = tmp_path / "store"
    model_files = {"config.json": json.dumps({"model_type": "bert"}).encode(), "tokenizer.json": b"{}"}
    model = hub_endpoint.add_repo("model", f"org/m-{uuid.uuid4().hex[:8]}", model_files)
    repo = add_sst2(hub_endpoint, shared_data, repo_id=f"stanfordnlp/sst2-{uuid.uuid4().hex[:8]}")
    first_commit, first_model = repo.refs["main"], model.refs["main"]
    env = PodEnv(workdir_root=tmp_path / "work")
    spec = _spec(root, repo.repo_id, model.repo_id)

    first = setup(spec, env)
    assert first.data_records["data.train"][0]["revision"] == first_commit
    assert first.model_uri == f"hf://{model.repo_id}@{first_model}"
    record_attempt(first.store, first.layout, first.data_records, None, "2026-12-07T20:00:00Z",
                   first.pinned.hub_commits)  # as train() does
    newer = repo.commit(sst2_files(shared_data, train=100, offset=1000))  # someone pushes to main
    newer_model = model.commit({**model_files, "tokenizer.json": b'{"version": "2"}'})

    again = setup(spec, env)
    assert again.model_uri == first.model_uri
    assert again.data_records == first.data_records
    assert again.pinned.files["data.train"].uris[0].startswith(f"hf://datasets/{repo.repo_id}@{first_commit}/")
    assert len(again.splits.train) + len(again.splits.validation) == 240  # the first commit's rows

    fresh = setup(_spec(root, repo.repo_id, model.repo_id, name="hub-pins-2"), env)
    assert fresh.data_records["data.train"][0]["revision"] == newer
    assert fresh.model_uri == f"hf://{model.repo_id}@{newer_model}"
    assert len(fresh.splits.train) + len(fresh.splits.validation) == 100
