"""A later attempt of a run reads the hf:// commits its first attempt pinned (issue 27, point 1):
the train stage's `setup` takes them from the run's attempts.json before it resolves the
splits, so a branch that moved in between changes nothing of what the run trains on, while a
new run reads the branch's newest commit. No weights are needed: `setup` stops before the
model loads (the model folder is a config and a tokenizer file)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from helpers_hub import add_sst2, sst2_files

from kubetune.contract.spec.job import validate_spec
from kubetune.workload.data.pinning import record_attempt
from kubetune.workload.stages.run import PodEnv
from kubetune.workload.stages.training import setup


def _spec(root: Path, repo_id: str, name: str = "hub-pins"):
    return validate_spec({"name": name, "model": {"source": "models/m"}, "storage": {"root": str(root)},
                          "data": {"train": f"hf://datasets/{repo_id}/data/train-*.parquet",
                                   "columns": {"text": "sentence", "label": "label"}}})


def test_a_later_attempt_reads_the_commit_its_run_pinned_and_a_new_run_the_newest(hub_endpoint, shared_data, tmp_path):
    root = tmp_path / "store"
    (root / "models" / "m").mkdir(parents=True)
    (root / "models" / "m" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (root / "models" / "m" / "tokenizer.json").write_text("{}")
    repo = add_sst2(hub_endpoint, shared_data, repo_id=f"stanfordnlp/sst2-{uuid.uuid4().hex[:8]}")
    first_commit = repo.refs["main"]
    env = PodEnv(workdir_root=tmp_path / "work")

    first = setup(_spec(root, repo.repo_id), env)
    assert first.data_records["data.train"][0]["revision"] == first_commit
    record_attempt(first.store, first.layout, first.data_records, None, "2026-12-07T20:00:00Z")  # as train() does
    newer = repo.commit(sst2_files(shared_data, train=100, offset=1000))  # someone pushes to main

    again = setup(_spec(root, repo.repo_id), env)
    assert again.data_records == first.data_records
    assert again.pinned.files["data.train"].uris[0].startswith(f"hf://datasets/{repo.repo_id}@{first_commit}/")
    assert len(again.splits.train) + len(again.splits.validation) == 240  # the first commit's rows

    fresh = setup(_spec(root, repo.repo_id, name="hub-pins-2"), env)
    assert fresh.data_records["data.train"][0]["revision"] == newer
    assert len(fresh.splits.train) + len(fresh.splits.validation) == 100
