"""Lineage (issue 14, points 2-3): a split's glob is resolved once and pinned for the run (in the
run's PinnedData, not in the process); the records name each file with its size and ETag (S3,
the moto server over HTTP) or mtime and sha256 (a folder)."""

from __future__ import annotations

import hashlib

import pytest

from kubetune.contract.spec.job import validate_spec
from kubetune.storage import Store
from kubetune.workload.data.tables import PinnedData, read_table, split_files
from kubetune.workload.data.lineage import data_fingerprint, data_records, resolve_data
from kubetune.workload.data.streaming import StreamSource, read_head


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
    return store


def test_a_glob_is_resolved_once_and_recorded_with_content_ids(store):
    spec = _spec(store.root, store.endpoint_url)
    pinned = resolve_data(spec, store)
    assert data_records(pinned)["data.train"][0]["rows"] is None  # not read yet
    train_rows = read_table(store, spec.data.train, None, "data.train", pinned)
    assert train_rows["text"] == ["a", "b", "c"]  # both parts, in order, read once
    records = data_records(pinned)
    train = records["data.train"]
    assert [r["rows"] for r in train] == [1, 2]  # counted per file as it was read
    assert records["data.test"][0]["rows"] is None  # the gate set was not read
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
    assert len(split_files(store, spec.data.train, "data.train", pinned).paths) == 2
    assert read_table(store, spec.data.train, None, "data.train", pinned)["text"] == ["a", "b", "c"]
    # ... while a read outside the run (and the next run) sees it, with a different fingerprint.
    assert len(split_files(store, spec.data.train, "data.train").paths) == 3
    later = data_records(resolve_data(spec, store))
    assert len(later["data.train"]) == 3 and data_fingerprint(later) != before
    assert [r["rows"] for r in data_records(pinned)["data.train"]] == [1, 2]  # the first run's, untouched
    # The gate set alone does not change the training data's fingerprint.
    store.write_text("gate/dev.tsv", "text\tlabel\nd\t1\nf\t0\n")
    assert data_fingerprint(data_records(resolve_data(spec, store))) == data_fingerprint(later)


def test_a_streamed_split_counts_rows_per_file_from_footers_and_the_head(tmp_path):
    """Streaming: a Parquet file's rows come from its footer, a text file's when the head read
    it to its end; a text file longer than the head stays unknown (no second pass)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = Store(str(tmp_path / "store"))
    store.write_text("s/a.tsv", "text\tlabel\n" + "".join(f"r{i}\t{i % 2}\n" for i in range(5)))
    store.write_text("s/b.tsv", "text\tlabel\n" + "".join(f"q{i}\t{i % 2}\n" for i in range(9)))
    table = pa.table({"text": [f"p{i}" for i in range(7)], "label": [i % 2 for i in range(7)]})
    pq.write_table(table, str(tmp_path / "store" / "p.parquet"), row_group_size=3)
    files = split_files(store, "s/*.tsv", "data.train")
    pinned = PinnedData({"data.train": files})
    assert len(read_head(StreamSource(files.uris, "tsv", files.options), 8, pinned)) == 8
    assert [r["rows"] for r in data_records(pinned)["data.train"]] == [5, None]
    parquet = split_files(store, "p.parquet", "data.train")
    pinned = PinnedData({"data.train": parquet})
    assert len(read_head(StreamSource(parquet.uris, "parquet", parquet.options), 2, pinned)) == 2
    assert data_records(pinned)["data.train"][0]["rows"] == 7
