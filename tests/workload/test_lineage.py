"""Lineage (issue 14, points 2-3): a split's glob is resolved once and pinned; the records name
each file with its size and ETag (S3, the moto server over HTTP) or mtime and sha256 (a folder)."""

from __future__ import annotations

import hashlib

import pytest

from kubetune.contract.spec import validate_spec
from kubetune.storage import Store
from kubetune.workload.data import split_files, unpin_split_files
from kubetune.workload.lineage import data_fingerprint, data_records, resolve_data


def _spec(root: str, endpoint: str | None = None):
    return validate_spec({"name": "reviews", "model": {"source": "models/m"},
                          "data": {"train": "reviews/2026-*/part-*.tsv", "test": "gate/dev.tsv"},
                          "storage": {"root": root, "endpoint_url": endpoint}})


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        root, endpoint = str(tmp_path / "store"), None
    else:
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        root = f"s3://{bucket}"
    store = Store(root, endpoint)
    store.write_text("reviews/2026-01/part-0001.tsv", "text\tlabel\na\t0\n")
    store.write_text("reviews/2026-02/part-0001.tsv", "text\tlabel\nb\t1\nc\t0\n")
    store.write_text("gate/dev.tsv", "text\tlabel\nd\t1\n")
    yield store
    unpin_split_files()


def test_a_glob_is_resolved_once_and_recorded_with_content_ids(store):
    spec = _spec(store.root, store.endpoint_url)
    resolved = resolve_data(spec, store)
    records = data_records(resolved)
    train = records["data.train"]
    assert [r["uri"] for r in train] == [store.url("reviews/2026-01/part-0001.tsv"),
                                         store.url("reviews/2026-02/part-0001.tsv")]
    assert [r["size"] for r in train] == [len("text\tlabel\na\t0\n"), len("text\tlabel\nb\t1\nc\t0\n")]
    if store.protocol == "s3":
        info = store.fs.info(store.path("reviews/2026-01/part-0001.tsv"))
        assert train[0]["etag"] == info["ETag"].strip('"')
    else:
        assert train[0]["sha256"] == hashlib.sha256(b"text\tlabel\na\t0\n").hexdigest()
        assert train[0]["mtime"] > 0
    before = data_fingerprint(records)

    # A part landing mid-run is not read by this run ...
    store.write_text("reviews/2026-03/part-0001.tsv", "text\tlabel\ne\t1\n")
    assert len(split_files(store, spec.data.train, "data.train").paths) == 2
    # ... and the next run sees it, with a different fingerprint.
    unpin_split_files()
    later = data_records(resolve_data(spec, store))
    assert len(later["data.train"]) == 3 and data_fingerprint(later) != before
    # The gate set alone does not change the training data's fingerprint.
    store.write_text("gate/dev.tsv", "text\tlabel\nd\t1\nf\t0\n")
    unpin_split_files()
    assert data_fingerprint(data_records(resolve_data(spec, store))) == data_fingerprint(later)
