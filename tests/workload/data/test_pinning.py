"""Data pinned across attempts (issue 23, point 2), against real stores: a folder (size and
sha256) and the moto S3 server over HTTP (size and ETag). A file rewritten between attempts is
refused in one line naming it and what changed, unless nothing trained on the old files would
be resumed; each attempt is recorded. No training: the run folder as attempts leave it."""

from __future__ import annotations

import pytest

from kubetune.contract.layout import RunLayout
from kubetune.contract.spec.job import validate_spec
from kubetune.storage import Store
from kubetune.workload.data.lineage import DATA_FIELDS, data_records, resolve_data
from kubetune.workload.data.pinning import check_inputs, read_attempts, record_attempt
from kubetune.workload.errors import DataError

LAYOUT = RunLayout("reviews")
ROWS = "text\tlabel\ngood film\t1\nbad film\t0\n"
FLIPPED = "text\tlabel\ngood film\t0\nbad film\t1\n"  # the same size: only the content says it changed


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        root, endpoint = str(tmp_path / "store"), None
    else:
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        root = f"s3://{bucket}"
    store = Store(root, endpoint)
    store.write_text("data/train.tsv", ROWS)
    store.write_text("data/validation.tsv", ROWS)
    return store


def _records(store: Store) -> dict:
    spec = validate_spec({"name": "reviews", "model": {"source": "models/m"},
                          "data": {"train": "data/train.tsv", "validation": "data/validation.tsv"},
                          "storage": {"root": store.root, "endpoint_url": store.endpoint_url}})
    return data_records(resolve_data(spec, store), DATA_FIELDS)


def _checkpoint(store: Store, step: int) -> None:
    store.write_text(f"{LAYOUT.checkpoint(step)}/model.safetensors", "w")
    store.commit(LAYOUT.checkpoint(step), ["model.safetensors"])


def test_a_resumed_attempt_on_a_changed_training_file_is_refused_naming_it(store):
    record_attempt(store, LAYOUT, _records(store), None, "2026-12-07T10:00:00+00:00")
    _checkpoint(store, 4)
    check_inputs(store, LAYOUT, _records(store))  # unchanged: goes on
    store.write_text("data/train.tsv", FLIPPED)
    with pytest.raises(DataError) as refused:
        check_inputs(store, LAYOUT, _records(store))
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"data.train: {store.url('data/train.tsv')} changed since the run's "
                                                "first attempt (")
    assert ("etag " if store.protocol == "s3" else "sha256 ") in line and "size" not in line
    assert line.endswith("restore the file, or start a new run (--set name=...)")
    store.write_text("data/train.tsv", ROWS)  # put back: the run goes on
    check_inputs(store, LAYOUT, _records(store))


def test_a_file_added_or_gone_is_named(store):
    record_attempt(store, LAYOUT, _records(store), None, "t1")
    _checkpoint(store, 4)
    now = _records(store)
    gone = {**now, "data.validation": []}
    with pytest.raises(DataError, match=r"^data.validation: .*validation.tsv is gone since the run's first attempt;"):
        check_inputs(store, LAYOUT, gone)


def test_without_a_checkpoint_to_resume_the_new_files_are_pinned(store, capsys):
    record_attempt(store, LAYOUT, _records(store), None, "t1")
    store.write_text("data/train.tsv", FLIPPED)
    check_inputs(store, LAYOUT, _records(store))  # nothing trained on the old files is kept
    assert "no checkpoint to resume, so this attempt pins the files it reads now" in capsys.readouterr().err
    record_attempt(store, LAYOUT, _records(store), None, "t2")
    _checkpoint(store, 2)
    check_inputs(store, LAYOUT, _records(store))  # the new files are the pinned ones now


def test_each_attempt_is_recorded_with_its_resume_point_and_files(store):
    first = _records(store)
    record_attempt(store, LAYOUT, first, None, "t1")
    record_attempt(store, LAYOUT, _records(store), 4, "t2")
    attempts = read_attempts(store, LAYOUT)
    assert [(a["attempt"], a["started"], a["resumed_from"]) for a in attempts["attempts"]] == [(1, "t1", None),
                                                                                                (2, "t2", 4)]
    assert attempts["pinned"] == first and attempts["attempts"][1]["data"] == first
    assert [r["uri"] for r in attempts["pinned"]["data.train"]] == [store.url("data/train.tsv")]
