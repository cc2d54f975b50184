"""A streamed split in global batches (issue 24, point 2): the same rows in each optimizer step
at any world size, and a resume at another world size continues at the next unseen row. Parquet
in a local store (the same fsspec reads as S3's, without a server's round trips: the streamed run
from moto's S3 is tests/e2e/test_elastic_gang.py's); the tokenizer is a stand-in (no model)."""

from __future__ import annotations

import io

import pytest
import torch

from kubetune.contract.spec.job import SpecError
from kubetune.storage import Store
from kubetune.workload.data.global_stream import PIECE_STRIDE, GlobalStream
from kubetune.workload.data.streaming import list_pieces, stream_loader
from kubetune.workload.data.tables import split_files
from kubetune.workload.trainer.elastic import SAMPLE_IDS, collate_with_ids

GROUP = 12  # rows per Parquet row group; 4 files x 2 groups = 96 rows


def _write(fs, prefix: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for f in range(4):
        rows = [{"sentence": " ".join(["w"] * ((f * 24 + i) % 7 + 1)), "label": i % 2} for i in range(2 * GROUP)]
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer, row_group_size=GROUP)
        fs.pipe_file(f"{prefix}/part-{f:03d}.parquet", buffer.getvalue())


def _encode(rows: list[dict]) -> list[dict]:
    return [{"input_ids": [1] * len(r["sentence"].split())} for r in rows]


def _stream(store: Store, rank: int, world: int, workers: int = 0) -> GlobalStream:
    files = split_files(store, "data/train", "data.train")
    return GlobalStream(list_pieces(files.uris, "parquet", files.options), "parquet", files.options, _encode,
                        batch_size=4, seed=11, rank=rank, world_size=world, num_workers=workers,
                        global_batch=16, window_steps=3)


def _steps(store: Store, world: int, steps: int, position: dict | None = None, workers: int = 0) -> list[list[int]]:
    """Each step's row ids as the ranks train them: rank r's `accumulation` batches, ranks in order."""
    ranks = []
    for rank in range(world):
        stream = _stream(store, rank, world, workers)
        if position is not None:
            stream.restore(position)
        loader = stream_loader(stream, collate_with_ids(lambda b: {}))
        taken = []
        for i, batch in enumerate(loader):
            if i == steps * stream.accumulation:
                break
            taken.append(batch[SAMPLE_IDS].tolist())
        ranks.append([[i for b in taken[s * stream.accumulation:(s + 1) * stream.accumulation] for i in b]
                      for s in range(steps)])
    return [[i for rank in ranks for i in rank[s]] for s in range(steps)]


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(str(tmp_path / "store"))
    store.fs.makedirs(store.path("data/train"), exist_ok=True)
    _write(store.fs, store.path("data/train"))
    return store


def test_every_world_size_trains_the_same_rows_in_each_step(store):
    one, two = _steps(store, 1, 12), _steps(store, 2, 12)  # 12 steps of 16 = 2 epochs of 96 rows
    assert one == two
    assert _steps(store, 2, 12, workers=2) == one  # two DataLoader workers per rank take turns
    for epoch in range(2):
        rows = [i for step in one[epoch * 6:(epoch + 1) * 6] for i in step]
        assert sorted(rows) == sorted(f * PIECE_STRIDE + r for f in range(8) for r in range(GROUP)), epoch


def test_a_resume_at_another_world_size_continues_at_the_next_unseen_row(store):
    uninterrupted = _steps(store, 1, 10)
    two = _stream(store, 0, 2)
    position = two.position(4 * two.accumulation)  # rank 0 of 2 after 4 steps: what its checkpoint records
    assert position["global_batches"] == 4
    assert _steps(store, 1, 6, position=position) == uninterrupted[4:]
    four = _stream(store, 0, 4)
    with pytest.raises(SpecError, match="train.global_batch_size"):  # the checkpoint's global batch was 16
        GlobalStream(four.pieces, "parquet", four.options, _encode, batch_size=4, seed=11, world_size=1,
                     global_batch=32).restore(position)
