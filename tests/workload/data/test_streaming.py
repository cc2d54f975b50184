"""Streaming the training split from object storage (moto's S3 server over HTTP): every row
once per epoch across 2 ranks x 2 forked DataLoader workers, exact mid-epoch resume from the
position a checkpoint stores, and the spec's choice between streaming and in-memory."""

from __future__ import annotations

import io

import pytest
import torch

from kubetune.contract.spec.job import SpecError, validate_spec
from kubetune.storage import Store
from kubetune.workload.data.tables import split_files
from kubetune.workload.data.streaming import StreamingTrainData, list_pieces, stream_loader, streaming_source

ROWS_PER_GROUP = 12


def _rows(start: int, n: int) -> list[dict]:
    return [{"id": i, "sentence": " ".join(["word"] * (i % 7 + 1)), "label": i % 2} for i in range(start, start + n)]


def _write_parquet(fs, prefix: str, files: int = 4, groups_per_file: int = 2) -> list[int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = []
    for f in range(files):
        rows = _rows(f * groups_per_file * ROWS_PER_GROUP, groups_per_file * ROWS_PER_GROUP)
        ids += [r["id"] for r in rows]
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer, row_group_size=ROWS_PER_GROUP)
        fs.pipe_file(f"{prefix}/part-{f:03d}.parquet", buffer.getvalue())
    return ids


def _encode(rows: list[dict]) -> list[dict]:
    """Stands in for the tokenizer: one token per word, and the row id to check coverage."""
    return [{"input_ids": [1] * len(r["sentence"].split()), "id": int(r["id"])} for r in rows]


def _collate(batch: list[dict]) -> dict:
    return {"id": torch.tensor([f["id"] for f in batch])}


def _stream(store: Store, uri: str, rank: int, world: int, workers: int, batch: int = 4, window: int = 3) -> StreamingTrainData:
    files = split_files(store, uri, "data.train")
    urls, options = files.uris, files.options
    fmt = "parquet" if urls[0].endswith(".parquet") else "tsv"
    return StreamingTrainData(list_pieces(urls, fmt, options), fmt, options, _encode, batch_size=batch, seed=11,
                              rank=rank, world_size=world, num_workers=workers, window_batches=window)


def _take(stream: StreamingTrainData, batches: int) -> list[list[int]]:
    out = []
    for i, batch in enumerate(stream_loader(stream, _collate)):
        if i == batches:
            break
        out.append(batch["id"].tolist())
    return out


@pytest.fixture
def s3_store(s3_bucket) -> Store:
    endpoint, bucket = s3_bucket
    return Store(f"s3://{bucket}/root", endpoint_url=endpoint)


@pytest.mark.slow  # waits on real processes, timeouts or leases: keeps `-m "not slow"` under 5 minutes
def test_two_ranks_two_workers_read_every_row_once_per_epoch(s3_store: Store):
    ids = _write_parquet(s3_store.fs, s3_store.path("data/train"))  # 8 row groups of 12 rows
    # 4 consumers x 2 row groups x 12 rows = 24 rows each = 6 batches of 4; a rank: 12 batches.
    seen: list[int] = []
    for rank in range(2):
        stream = _stream(s3_store, "data/train", rank, world=2, workers=2, window=3)
        batches = _take(stream, 12)
        assert all(len(b) == 4 for b in batches)
        seen += [i for b in batches for i in b]
    assert len(seen) == len(ids) == 96
    assert sorted(seen) == sorted(ids), "every row exactly once across ranks and workers"


def test_few_files_are_split_by_rows_without_duplicates(s3_store: Store):
    rows = _rows(0, 40)
    text = "id\tsentence\tlabel\n" + "".join(f"{r['id']}\t{r['sentence']}\t{r['label']}\n" for r in rows)
    s3_store.write_text("data/one.tsv", text)  # one file, 4 consumers: every 4th row each
    seen = []
    for rank in range(2):
        seen += [i for b in _take(_stream(s3_store, "data/one.tsv", rank, 2, 2, batch=5, window=2), 4) for i in b]
    assert sorted(seen) == list(range(40))


@pytest.mark.slow  # waits on real processes, timeouts or leases: keeps `-m "not slow"` under 5 minutes
def test_mid_epoch_resume_continues_exactly(s3_store: Store):
    _write_parquet(s3_store.fs, s3_store.path("data/train"))
    uninterrupted = _take(_stream(s3_store, "data/train", 0, world=2, workers=2), 20)  # crosses an epoch

    first = _stream(s3_store, "data/train", 0, world=2, workers=2)
    before = _take(first, 7)
    position = first.position(7)  # what the checkpoint stores (global_step x grad. accumulation)
    assert position["batches_per_rank"] == 7

    resumed = _stream(s3_store, "data/train", 0, world=2, workers=2)
    resumed.restore(position)
    after = _take(resumed, 13)
    assert before + after == uninterrupted


def test_spec_chooses_streaming(s3_store: Store):
    s3_store.write_text("data/small.tsv", "sentence\tlabel\na\t0\nb\t1\n")
    base = {"name": "s", "model": {"source": "m"}, "data": {"train": "data/small.tsv"}}
    spec = validate_spec(base)
    assert streaming_source(spec, s3_store) is None  # small: in memory by default
    forced = validate_spec({**base, "data": {"train": "data/small.tsv", "streaming": True}})
    urls, fmt, _ = streaming_source(forced, s3_store)
    assert fmt == "tsv" and urls == [s3_store.url("data/small.tsv")]
    with pytest.raises(SpecError, match="data.streaming"):
        validate_spec({**base, "data": {"train": "x.tsv", "streaming": "sometimes"}})


@pytest.mark.slow
def test_streamed_training_resumes_exactly_after_kill9(s3_bucket, shared_data, minilm_dir, tmp_path):
    """Through the entrypoint: SST-2 rows as Parquet parts in S3, streamed by 2 DataLoader
    workers; kill -9 after the first committed checkpoint, restart on a fresh disk: the
    losses after the resume are the uninterrupted run's."""
    import os
    import signal

    import pyarrow as pa
    import pyarrow.parquet as pq

    from helpers_resume import TrainProcess, s3fs_for, step_losses, train_to_end, write_spec

    endpoint, bucket = s3_bucket
    fs = s3fs_for(endpoint)
    lines = (shared_data / "sst2" / "train.tsv").read_text().splitlines()[1:97]
    rows = [{"sentence": line.split("\t")[0], "label": int(line.split("\t")[1])} for line in lines]
    for part in range(4):
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows[part * 24 : (part + 1) * 24]), buffer, row_group_size=12)
        fs.pipe_file(f"{bucket}/data/train/part-{part}.parquet", buffer.getvalue())
    dev = (shared_data / "sst2" / "dev.tsv").read_text().splitlines()
    fs.pipe_file(f"{bucket}/data/validation.tsv", ("\n".join(dev[:33]) + "\n").encode())
    data = {"train": f"s3://{bucket}/data/train", "validation": f"s3://{bucket}/data/validation.tsv",
            "streaming": True, "labels": ["0", "1"]}
    train = {"max_steps": 10, "checkpoint_every": 4, "dataloader_workers": 2}
    root = f"s3://{bucket}/store"

    reference = write_spec(tmp_path / "ref.yaml", "stream-ref", root, endpoint, minilm_dir, data, **train)
    train_to_end(reference, tmp_path / "ref")
    spec = write_spec(tmp_path / "killed.yaml", "stream-killed", root, endpoint, minilm_dir, data, **train)
    first = TrainProcess(spec, tmp_path / "pod-1")
    first.wait_for(r"checkpoint committed: .*step-000004")
    os.kill(first.proc.pid, signal.SIGKILL)
    first.wait(60)
    second = train_to_end(spec, tmp_path / "pod-2")
    resumed_from = int(second.wait_for(r"resuming from .*step-(\d+)").group(1))
    assert 4 <= resumed_from < 10

    expected = step_losses(fs, f"{bucket}/store", "stream-ref")
    losses = step_losses(fs, f"{bucket}/store", "stream-killed")
    assert sorted(losses) == list(range(1, 11))
    for step in range(resumed_from + 1, 11):
        assert losses[step] == pytest.approx(expected[step], abs=1e-4), f"step {step}"
