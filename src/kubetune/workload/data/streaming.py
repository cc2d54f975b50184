"""Train from files in object storage without downloading the dataset first.

The training split is read piece by piece while training runs: Parquet by row group (only the
files' footers are read up front, for the row counts), CSV/TSV/JSON Lines in chunks. Each
"consumer" (one DataLoader worker of one rank) gets its own share, so no row is read twice in
an epoch across ranks and workers:

* with at least as many pieces (Parquet row groups, text files) as consumers, pieces are dealt
  out: each epoch shuffles the pieces with (seed, epoch) and consumer c takes every C-th one;
* with fewer pieces (one CSV file, 4 consumers), every consumer reads the pieces but keeps
  every C-th row.

A consumer's rows are a deterministic, endless stream over epochs. It cuts them into windows
of `window_batches` batches, tokenizes a window at once, sorts it by length and shuffles the
resulting batches with (seed, consumer, window): length-grouped batches, as in memory. The
dataset yields whole batches, so the position of a consumer is just the number of batches it
produced, and the position of a rank is the number of batches the Trainer consumed
(global_step x gradient_accumulation_steps, dealt round-robin over its workers). That number
is stored in each checkpoint; on resume each consumer skips its share (whole Parquet row
groups without reading them) and rebuilds the window it was in, so the batches after a
resume are exactly the uninterrupted run's.

s3fs is not fork-safe: every worker opens its own file system (`skip_instance_cache`), never
one inherited from the parent process.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

import datasets
import fsspec
import torch
from torch.utils.data import IterableDataset, get_worker_info

from kubetune.contract.spec.job import JobSpec, SpecError
from kubetune.storage import Store
from kubetune.workload.data.tables import PinnedData, data_format, record_rows, split_files, strip_html, text_columns
from kubetune.workload.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from kubetune.workload.tasks import Task

log = logging.getLogger("kubetune.streaming")

# A job streams its training split by default when the split's files add up to this much.
AUTO_STREAM_BYTES = 2 * 1024**3
TEXT_CHUNK_ROWS = 2048


@dataclass(frozen=True)
class Piece:
    """One unit of reading: a Parquet row group, or a whole text file (row_group -1)."""

    url: str
    row_group: int
    rows: int | None  # known for Parquet (footer), unknown for text files


def _seed(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(map(str, ("kubetune-stream",) + parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def list_pieces(urls: list[str], fmt: str, options: dict[str, Any]) -> list[Piece]:
    """The pieces of the split's files. For Parquet this reads each file's footer only."""
    pieces: list[Piece] = []
    for url in urls:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            fs, path = fsspec.core.url_to_fs(url, **options)
            with fs.open(path, "rb") as handle:
                meta = pq.ParquetFile(handle).metadata
            pieces.extend(Piece(url, rg, meta.row_group(rg).num_rows) for rg in range(meta.num_row_groups))
        else:
            pieces.append(Piece(url, -1, None))
    return pieces


def read_piece(piece: Piece, fmt: str, options: dict[str, Any], columns: list[str] | None) -> Iterator[dict[str, Any]]:
    """The rows of one piece, opened with a file system of this process's own."""
    fs, path = fsspec.core.url_to_fs(piece.url, **options)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as handle:
            table = pq.ParquetFile(handle).read_row_group(piece.row_group, columns=columns)
        yield from table.to_pylist()
        return
    import pandas as pd

    with fs.open(path, "rb") as handle:
        if fmt in ("csv", "tsv"):
            chunks = pd.read_csv(handle, sep="\t" if fmt == "tsv" else ",", chunksize=TEXT_CHUNK_ROWS,
                                 usecols=columns, keep_default_na=False, dtype=str)
        else:  # json lines
            chunks = pd.read_json(handle, lines=True, chunksize=TEXT_CHUNK_ROWS, dtype=False)
        for chunk in chunks:
            if columns:
                chunk = chunk[[c for c in columns if c in chunk.columns]]
            yield from chunk.to_dict("records")


class StreamingTrainData(IterableDataset):
    """The training split as a stream of ready (tokenized, length-grouped) batches.

    `encode(rows) -> list[dict]` turns raw rows into model features (the task's tokenization);
    it runs in the DataLoader workers. `rank`/`world_size` are the training processes; the
    workers of each are found at iteration time.
    """

    def __init__(self, pieces: list[Piece], fmt: str, options: dict[str, Any], encode: Callable[[list[dict]], list[dict]],
                 batch_size: int, seed: int, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 columns: list[str] | None = None, window_batches: int = 16, length_key: str = "input_ids"):
        if not pieces:
            raise ValueError("no pieces to stream")
        self.pieces = pieces
        self.fmt = fmt
        self.options = options
        self.encode = encode
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.columns = columns
        self.window_batches = window_batches
        self.length_key = length_key
        self.start_batches = 0  # batches this rank consumed before (resume)

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def consumers(self) -> int:
        return self.world_size * max(self.num_workers, 1)

    @property
    def num_rows(self) -> int | None:
        if any(p.rows is None for p in self.pieces):
            return None
        return sum(p.rows for p in self.pieces)  # type: ignore[misc]

    def __len__(self) -> int:
        """Rows of one epoch, for reports only (the Trainer gets an unsized loader)."""
        return self.num_rows or 0

    # -- the stream of one consumer -------------------------------------------------------------
    def _epoch_pieces(self, epoch: int) -> list[Piece]:
        order = list(self.pieces)
        random.Random(_seed(self.seed, "pieces", epoch)).shuffle(order)
        return order

    def consumer_rows(self, consumer: int, skip_rows: int = 0) -> Iterator[dict[str, Any]]:
        """The endless row stream of one consumer, from its `skip_rows`-th row on."""
        count = self.consumers
        by_piece = len(self.pieces) >= count
        epoch = 0
        while True:
            order = self._epoch_pieces(epoch)
            if by_piece:
                for piece in order[consumer::count]:
                    if piece.rows is not None and skip_rows >= piece.rows:
                        skip_rows -= piece.rows  # skipped without reading
                        continue
                    for row in read_piece(piece, self.fmt, self.options, self.columns):
                        if skip_rows:
                            skip_rows -= 1
                        else:
                            yield row
            else:
                index = 0
                for piece in order:
                    for row in read_piece(piece, self.fmt, self.options, self.columns):
                        if index % count == consumer:
                            if skip_rows:
                                skip_rows -= 1
                            else:
                                yield row
                        index += 1
            epoch += 1

    def consumer_batches(self, consumer: int, skip_batches: int = 0) -> Iterator[list[dict[str, Any]]]:
        """The consumer's batches: windows of rows, tokenized, sorted by length, cut into
        batches, batches shuffled. Resuming rebuilds the window the position falls in."""
        window_rows = self.batch_size * self.window_batches
        window = skip_batches // self.window_batches
        drop = skip_batches % self.window_batches
        rows = self.consumer_rows(consumer, skip_rows=window * window_rows)
        while True:
            raw = list(islice(rows, window_rows))
            if not raw:
                return
            features = self.encode(raw)
            features.sort(key=lambda f: len(f[self.length_key]), reverse=True)
            batches = [features[i : i + self.batch_size] for i in range(0, len(features), self.batch_size)]
            random.Random(_seed(self.seed, "window", consumer, window)).shuffle(batches)
            for batch in batches[drop:]:
                yield batch
            drop = 0
            window += 1

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != max(self.num_workers, 1):
            raise RuntimeError(f"stream built for {self.num_workers} workers, iterated by {workers}")
        # The main process takes batches from its workers in turn, always starting with worker
        # 0: of the first K batches of a run, role r produced those with index % workers == r.
        # After K batches the next one is role K % workers's, so a resumed loader's worker w
        # plays role (w + K) % workers.
        role = (worker + self.start_batches) % workers
        consumer = self.rank * workers + role
        done = len(range(role, self.start_batches, workers))
        return self.consumer_batches(consumer, skip_batches=done)

    # -- checkpoint position ---------------------------------------------------------------------
    def position(self, batches_consumed: int) -> dict[str, Any]:
        return {"sampler": "stream", "batches_per_rank": batches_consumed, "world_size": self.world_size,
                "workers": self.num_workers, "batch_size": self.batch_size, "seed": self.seed,
                "pieces": len(self.pieces)}

    def restore(self, position: dict[str, Any]) -> None:
        if position.get("sampler") != "stream":
            log.warning("checkpoint has no stream position; starting the stream from the beginning")
            return
        same = all(position.get(k) == v for k, v in
                   (("world_size", self.world_size), ("workers", self.num_workers),
                    ("batch_size", self.batch_size), ("pieces", len(self.pieces))))
        if not same:
            # Another layout deals rows out differently; skip the same number of rows per
            # consumer, which is close but not exact.
            log.warning("stream layout changed since the checkpoint (%s); resuming approximately", position)
            rows = int(position["batches_per_rank"]) * int(position["batch_size"]) * int(position["world_size"])
            self.start_batches = rows // (self.batch_size * self.world_size)
            return
        self.start_batches = int(position["batches_per_rank"])


class UnsizedLoader:
    """A DataLoader the Trainer treats as endless (no `__len__`): it then trains for
    `max_steps` and iterates the stream once, without restarting it every epoch."""

    def __init__(self, loader: torch.utils.data.DataLoader):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)


def stream_loader(stream: StreamingTrainData, collate: Callable[[list[dict]], Any], pin_memory: bool = False) -> UnsizedLoader:
    """Batches come ready from the stream (batch_size=None): the collator only pads them.
    Ranks are not re-sharded by accelerate: the stream already gave each rank its share."""
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, collate_fn=collate, num_workers=stream.num_workers, pin_memory=pin_memory,
        persistent_workers=False, prefetch_factor=4 if stream.num_workers else None,
        # Starting an iterator draws a seed; from a private generator, not from torch's global
        # one, which the Trainer has just set to the checkpoint's state (dropout must match).
        generator=torch.Generator().manual_seed(stream.seed),
    )
    return UnsizedLoader(loader)


def total_bytes(urls: list[str], options: dict[str, Any]) -> int:
    total = 0
    for url in urls:
        fs, path = fsspec.core.url_to_fs(url, **options)
        total += int(fs.info(path).get("size") or 0)
    return total


# ---------------------------------------------------------------------------------------------
# Wiring: the spec's choice, the head of the stream (for the checks), the stream itself


class StreamSource(NamedTuple):
    """A streamed training split: its file URIs, their format and fsspec options."""

    urls: list[str]
    fmt: str
    options: dict[str, Any]


def streaming_source(spec: JobSpec, store: Store, pinned: PinnedData | None = None) -> StreamSource | None:
    """The training split's files (in a run, its `pinned` ones) when it is streamed, else None.
    `data.streaming` decides; unset, splits of AUTO_STREAM_BYTES or more stream."""
    choice = spec.data.streaming
    if choice is False:
        return None
    files = split_files(store, spec.data.train, "data.train", pinned)
    # A folder of part files: the format of its files (data.format applies to every split).
    fmt = data_format(files.uris[0], spec.data.format, "data.train")
    if fmt == "squad":
        if choice:
            raise DataError("data.streaming: squad files are single JSON documents; they cannot be streamed")
        return None
    if choice is None and total_bytes(files.uris, files.options) < AUTO_STREAM_BYTES:
        return None
    return StreamSource(files.uris, fmt, files.options)


def read_head(source: StreamSource, rows: int, pinned: PinnedData | None = None) -> list[dict[str, Any]]:
    """The first `rows` rows of a streamed split, in stream-file order (for the checks).

    Counts each file's rows for the lineage (into the run's `pinned`) without a pass of its own:
    Parquet files from their footers, a text file when the head read it to its end (a longer
    text file's count stays unknown: the stream is read by many workers, over epochs)."""
    head: list[dict[str, Any]] = []
    pieces = list_pieces(source.urls, source.fmt, source.options)
    for url in dict.fromkeys(p.url for p in pieces if p.rows is not None):
        record_rows(pinned, url, sum(p.rows or 0 for p in pieces if p.url == url))
    for piece in pieces:
        reader = read_piece(piece, source.fmt, source.options, None)
        taken = list(islice(reader, rows - len(head)))
        head.extend(taken)
        if piece.rows is None and next(reader, None) is None:
            record_rows(pinned, piece.url, len(taken))
        if len(head) >= rows:
            break
    return head


def make_stream(source: StreamSource, spec: JobSpec, task: Task, tokenizer: PreTrainedTokenizerBase,
                labels: list[str] | None, rank: int, world_size: int,
                kind: type[StreamingTrainData] | None = None, **extra: Any) -> StreamingTrainData:
    """The training stream of this rank: the task's own tokenization, run in the workers.
    `kind` and `extra`: another stream class and its arguments (`global_stream.GlobalStream`)."""
    urls, fmt, options = source
    columns = task.columns()
    wanted = sorted({c for c in columns.values() if c is not None})

    def encode(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ds = datasets.Dataset.from_list(rows)
        if spec.data.strip_html:
            ds = strip_html(ds, text_columns(ds, columns))
        return task.prepare_test(ds, tokenizer, labels).to_list()

    t = spec.train
    return (kind or StreamingTrainData)(
        list_pieces(urls, fmt, options), fmt, options, encode, batch_size=t.batch_size, seed=t.seed,
        rank=rank, world_size=world_size, num_workers=t.dataloader_workers,
        columns=wanted if fmt in ("parquet", "csv", "tsv") else None, **extra,
    )


def steps_for_epochs(stream: StreamingTrainData, epochs: float, gradient_accumulation_steps: int) -> int:
    """max_steps for `train.epochs` over a stream whose row count is known (Parquet)."""
    rows = stream.num_rows
    if not rows:
        raise SpecError("train.max_steps: required when data.train is streamed from CSV/JSON files "
                        "(their row count is unknown without reading them all); or use Parquet")
    per_step = stream.batch_size * stream.world_size * gradient_accumulation_steps
    return max(int(epochs * rows) // per_step, 1)
