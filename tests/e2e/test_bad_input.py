"""Bad input: one line naming the file and the field or cause, exit code 2, before any model is
loaded, and nothing stored is written or changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from kubetune.contract.exitcodes import EXIT_STORE_UNAVAILABLE

from helpers import run_cli

from helpers_bad_input import _DELETE, HEAD, ROWS, base_job, mutate, tree_digest


@pytest.fixture(scope="module")
def store(tmp_path_factory, minilm_dir) -> Path:
    root = tmp_path_factory.mktemp("bad-input") / "store"
    shutil.copytree(minilm_dir, root / "models" / "all-MiniLM-L6-v2")
    (root / "models" / "no-config").mkdir(parents=True)
    (root / "models" / "no-config" / "vocab.txt").write_text("[PAD]\n")
    data = root / "datasets" / "toy"
    data.mkdir(parents=True)
    (data / "train.tsv").write_text("text\tlabel\n" + ROWS)
    (data / "test.tsv").write_text("text\tlabel\n" + HEAD)
    (data / "test-unknown-label.tsv").write_text("text\tlabel\nfine movie\tneutral\n" + HEAD)
    (data / "empty.tsv").write_text("text\tlabel\n")
    (data / "broken.json").write_text('{"text": "a", "label": ')
    # A finished run that no failure may touch.
    done = root / "runs" / "finished"
    done.mkdir(parents=True)
    (done / "spec.yaml").write_text("name: finished\n")
    (done / "eval").mkdir()
    (done / "eval" / "metrics.json").write_text('{"accuracy": 0.9}\n')
    return root



CASES = [
    # (id, field path, value, expected fragment of the one-line error)
    ("unknown-field", "train.learning_rat", 1e-4, "train.learning_rat: unknown field"),
    ("wrong-type", "train.batch_size", "big", "train.batch_size:"),
    ("missing-train-uri", "data.train", _DELETE, "data.train: required field is missing"),
    ("negative-learning-rate", "train.learning_rate", -0.001, "train.learning_rate: must be > 0"),
    ("name-not-dns-safe", "name", "Bad_Name", "name: must be a DNS-1123 label"),
    ("unknown-metric", "train.metric", "acc", "train.metric: unknown metric 'acc'"),
    ("unreadable-file", "data.train", "datasets/toy/nope.tsv", "data.train:"),
    ("label-column-absent", "data.columns", {"label": "sentiment"}, "data.columns.label: column 'sentiment' not in data.train"),
    ("unknown-test-label", "data.test", "datasets/toy/test-unknown-label.tsv", "data.test: label 'neutral' is not among the training labels"),
    ("empty-dataset", "data.train", "datasets/toy/empty.tsv", "data.train:"),
    ("unparseable-file", "data.train", "datasets/toy/broken.json", "data.train: cannot parse"),
    ("model-without-config", "model.source", "models/no-config", "model.source:"),
    ("model-folder-missing", "model.source", "./no/such/folder", "model.source:"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(store, tmp_path, case):
    name, path, value, expected = case
    job_name = f"bad-{name}"[:40]
    job = mutate(base_job(store, job_name), path, value)
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(job))
    before = tree_digest(store)

    out = run_cli("run", str(spec_file), "--local")

    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    assert expected in errors[0]
    # Failed before the model was loaded (the train entrypoint prints this line right after).
    assert "trainable params" not in out.stdout
    assert tree_digest(store) == before
    assert not (store / "runs" / job_name).exists()


def test_unreachable_s3_endpoint(tmp_path, store):
    job = base_job(store, "bad-unreachable-s3")
    # An unreachable store is a transient fault: retried up to startup_timeout_seconds, then the
    # retriable exit code (the Job retries the pod), never exit 2.
    job["storage"] = {"root": "s3://bucket/prefix", "endpoint_url": "http://127.0.0.1:9", "startup_timeout_seconds": 2}
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(job))
    out = run_cli("run", str(spec_file), "--local", env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
    assert out.returncode == EXIT_STORE_UNAVAILABLE, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "storage.root: s3://bucket/prefix unreachable" in errors[0], out.stderr
    assert "Traceback" not in out.stderr


def test_malformed_yaml(tmp_path):
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("name: x\ntrain: {epochs: 1\n")
    out = run_cli("run", str(spec_file), "--local")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert f"{spec_file}: malformed YAML: line" in out.stderr


def test_changed_spec_does_not_overwrite_a_finished_run(tmp_path, store):
    job = base_job(store, "finished")
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(job))
    before = tree_digest(store)
    out = run_cli("run", str(spec_file), "--local")
    assert out.returncode == 2
    assert "already exists with a different" in out.stderr
    assert tree_digest(store) == before
