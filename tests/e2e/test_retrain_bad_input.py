"""A retrain run's bad input (issue 14, point 7): one `error:` line, exit 2 (a retriable exit for
an unreachable store), before any training, and CURRENT never moves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from helpers import REPO
from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_BAD_INPUT, EXIT_STORE_UNAVAILABLE
from kubetune.contract.layout import RunLayout
from kubetune.launch.quickstart import make_reviews
from kubetune.registry import Registry
from kubetune.storage import Store


@pytest.fixture
def job(local_store, tmp_path):
    """A job over a local store whose registry already has a current version (v0001)."""
    data = local_store / "datasets" / "reviews"
    data.mkdir(parents=True)
    rows = make_reviews(60, seed=5)
    (data / "part-1.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows[:40]))
    (data / "test.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows[40:]))
    one_label = [r for r in rows[40:] if r[1] == "positive"]
    (data / "gate-positive.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in one_label))
    extra = rows[40:] + [("neither good nor bad", "neutral")]
    (data / "gate-extra.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in extra))
    store = Store(str(local_store))
    layout = RunLayout("earlier")
    store.write_text(f"{layout.model}/config.json", "{}")
    store.commit(layout.model, ["config.json"])
    Registry(store, "reviews").promote("earlier", {"reason": "seeded"}, None)
    spec = {
        "name": "reviews",
        "model": {"source": "models/all-MiniLM-L6-v2"},
        "data": {"train": "datasets/reviews/part-*.tsv", "test": "datasets/reviews/test.tsv",
                 "labels": ["negative", "positive"]},
        "train": {"max_steps": 2, "batch_size": 8, "max_seq_length": 16},
        "storage": {"root": str(local_store)},
    }
    path = tmp_path / "reviews.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, store


def _retrain(spec_file, *overrides: str, tmp_path):
    args = [a for o in overrides for a in ("--set", o)]
    return subprocess.run([sys.executable, "-m", kn.RETRAIN_MODULE, "--spec", str(spec_file), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, kn.ENV_RUN: "reviews-bad", kn.ENV_WORKDIR: str(tmp_path / "work"),
                               # credentials present, so a refused connection is the fault
                               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"})


@pytest.mark.parametrize("overrides, code, message", [
    (["data.train=datasets/reviews/2099-*/part-*.tsv"], EXIT_BAD_INPUT, "data.train: "),
    (["promotion.metric=bleu"], EXIT_BAD_INPUT, "promotion.metric: task text-classification does not produce"),
    (["promotion.gate_data=datasets/reviews/gate-positive.tsv"], EXIT_BAD_INPUT,
     "promotion.gate_data: gate data has no rows labelled 'negative'"),
    # Labels inferred from the training files (no data.labels): still checked before training.
    (["data.labels=null", "promotion.gate_data=datasets/reviews/gate-positive.tsv"], EXIT_BAD_INPUT,
     "promotion.gate_data: "),
    (["data.labels=null", "promotion.gate_data=datasets/reviews/gate-extra.tsv"], EXIT_BAD_INPUT,
     "gate-extra.tsv: label 'neutral' is not among the labels the model will know ['negative', 'positive']"),
    (["storage.root=s3://kubetune-nowhere/x", "storage.endpoint_url=http://127.0.0.1:9",
      "storage.startup_timeout_seconds=0"], EXIT_STORE_UNAVAILABLE, "storage.root: "),
])
def test_bad_retrain_input_is_one_line_and_current_stays(job, tmp_path, overrides, code, message):
    spec_file, store = job
    before = store.read_text("registry/reviews/CURRENT")
    out = _retrain(spec_file, *overrides, tmp_path=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code, out.stderr[-2000:]
    assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
    assert "Traceback" not in out.stderr
    assert store.read_text("registry/reviews/CURRENT") == before
    assert not store.exists(RunLayout("reviews-bad").model)
    if "2099" in overrides[0]:
        assert "no file matches" in lines[-1]
    if "gate-positive.tsv" in overrides[-1] and "data.labels=null" in overrides:
        assert "gate-positive.tsv: no rows labelled 'negative', which the model will know" in lines[-1]


def test_validate_data_checks_a_retrain_jobs_gate_labels(job):
    """`kubetune validate --data`'s check (in process here) refuses the same gate sets, with labels
    inferred from the train files' label column, and passes a gate with every label."""
    from kubetune.contract.spec.job import load_spec
    from kubetune.workload.errors import DataError
    from kubetune.workload.stages.preflight import check_job

    spec_file, _ = job
    for gate, says in (("gate-positive.tsv", "no rows labelled 'negative'"), ("gate-extra.tsv", "label 'neutral'")):
        spec = load_spec(spec_file, ["data.labels=null", f"promotion.gate_data=datasets/reviews/{gate}"])
        with pytest.raises(DataError, match=f"^promotion.gate_data: .*{gate}: {says}"):
            check_job(spec)
    assert check_job(load_spec(spec_file, ["data.labels=null", "promotion.min_delta=0"])).startswith("ok: ")


def test_models_verbs_on_a_store_without_an_earlier_version(job):
    from helpers import run_cli

    spec_file, store = job
    out = run_cli("models", "rollback", str(spec_file))
    assert out.returncode == EXIT_BAD_INPUT and out.stderr.startswith("error: ") and "no earlier version" in out.stderr
    out = run_cli("models", "show", str(spec_file), "v0042")
    assert out.returncode == EXIT_BAD_INPUT and "no version 'v0042'" in out.stderr
    listing = run_cli("models", "list", str(spec_file))
    assert listing.returncode == 0 and listing.stdout.startswith("* v0001") and "run earlier" in listing.stdout
    assert store.read_json("registry/reviews/CURRENT")["version"] == "v0001"


def test_nothing_new_names_no_run(job, tmp_path):
    """A retrain whose data is the current version's (the fingerprint in its lineage) trains
    nothing and makes no run folder, so the summary names no run (issue 28: it printed one that
    `kubetune show` could not find)."""
    from helpers import run_cli
    from kubetune.contract.spec.job import load_spec
    from kubetune.workload.data.lineage import data_fingerprint, data_records
    from kubetune.workload.entrypoints.arguments import pod_env
    from kubetune.workload.stages.retraining import prepare

    spec_file, store = job
    pinned = prepare(load_spec(spec_file), with_training_data=True, env=pod_env({})).pinned
    store.write_json(RunLayout("earlier").lineage, {"data_fingerprint": data_fingerprint(data_records(pinned))})
    registry = Registry(store, "reviews")
    registry.promote("earlier", {"reason": "seeded with its lineage"}, registry.current())
    before = sorted(p.name for p in (tmp_path / "store" / "runs").iterdir())
    out = run_cli("retrain", str(spec_file), "--local", env={"KUBETUNE_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "kubetune: nothing new: the data is unchanged since v0002 (run earlier)" in out.stdout
    assert sorted(p.name for p in (tmp_path / "store" / "runs").iterdir()) == before  # no run folder made
    assert not [line for line in out.stdout.splitlines() if line.startswith("run:")], out.stdout
