"""One storage suite, run against every implementation: local folder, memory://, and a real S3
protocol server (moto over HTTP, through s3fs)."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from kubetune.contract.layout import RunLayout
from kubetune.storage import Store, StorageError
from kubetune.workload.checkpointing.protocol import find_resume_step, publish_checkpoint


@pytest.fixture(params=["local", "memory", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "root"))
    if request.param == "memory":
        return Store(f"memory://kubetune-{uuid.uuid4().hex}")
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return Store(f"s3://{bucket}/prefix", endpoint_url=endpoint)


def test_write_read_and_overwrite(store):
    store.write_text("runs/a/spec.yaml", "one")
    store.write_text("runs/a/spec.yaml", "two")
    assert store.read_text("runs/a/spec.yaml") == "two"
    store.write_json("runs/a/eval/metrics.json", {"accuracy": 0.9})
    assert store.read_json("runs/a/eval/metrics.json") == {"accuracy": 0.9}


def test_upload_download_and_list(store, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"\x00\x01")
    (src / "sub" / "b.txt").write_text("b")
    manifest = store.upload_dir(src, "runs/j/model")
    assert list(manifest) == ["a.bin", "sub/b.txt"]
    # Each file's record is hashed from the reads that uploaded it (issue 23, point 1).
    assert manifest["a.bin"] == {"size": 2, "sha256": hashlib.sha256(b"\x00\x01").hexdigest()}
    assert manifest["sub/b.txt"] == {"size": 1, "sha256": hashlib.sha256(b"b").hexdigest()}
    out = store.download_dir("runs/j/model", tmp_path / "out")
    assert (out / "a.bin").read_bytes() == b"\x00\x01"
    assert (out / "sub" / "b.txt").read_text() == "b"
    assert store.list_dirs("runs") == ["j"]
    assert store.list_dirs("nothing-here") == []


def test_commit_marker_and_latest(store, tmp_path):
    layout = RunLayout("job")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"weights")
    for step in (10, 20, 30):
        publish_checkpoint(store, layout, ckpt, step, keep=2)
    assert store.read_text(layout.latest).strip() == "step-000030"
    assert store.list_dirs(layout.checkpoints) == ["step-000020", "step-000030"]
    # A newer folder without its marker (a writer killed mid-upload) is never trusted.
    store.upload_dir(ckpt, layout.checkpoint(40))
    assert not store.is_committed(layout.checkpoint(40))
    assert find_resume_step(store, layout) == 30


def test_relative_and_explicit_uris(store):
    assert store.resolve("datasets/x/train.tsv") == store.url("datasets/x/train.tsv")
    assert store.resolve("s3://other/file.csv") == "s3://other/file.csv"
    assert store.resolve("/abs/file.csv") == "/abs/file.csv"


def test_unreachable_s3_endpoint_fails_fast():
    store = Store("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StorageError, match="storage.root: cannot reach s3://bucket/prefix"):
        store.check_reachable()
