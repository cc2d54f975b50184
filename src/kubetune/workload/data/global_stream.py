"""A streamed training split in global batches: exact at any world size (issue 24, point 2).

`StreamingTrainData` deals the stream's rows out to its consumers (ranks x DataLoader
workers), so which rows meet in a step depends on how many consumers there are, and a resume
at another world size can only skip about as many rows. Here there is one global stream: the
rows of every piece, in the order the epoch's (seed, epoch) shuffle of the pieces gives, epoch
after epoch. It is cut into windows of `window_steps` global batches; a window is tokenized,
sorted by length, cut into global batches of `global_batch` rows and those are shuffled with
(seed, window). Optimizer step s trains global batch s, whatever the world size: rank r takes
its slice of it, as `accumulation` per-device batches. The position is a place in that one
stream (global batches consumed), so a resume at any world size continues at the next unseen
row, rebuilding the window it falls in and skipping whole Parquet row groups before it.

The price: every rank reads (and tokenizes) every row, where the dealt-out stream reads each
once. DataLoader workers of a rank take its per-device batches in turn (each worker reads the
rank's whole share of the stream).
"""

from __future__ import annotations

import random
from itertools import islice
from typing import Any, Iterator

from torch.utils.data import get_worker_info

from kubetune.contract.spec.job import SpecError
from kubetune.workload.data.streaming import StreamingTrainData, _seed, read_piece
from kubetune.workload.trainer.elastic import SAMPLE_IDS

# Row ids in the sample log: the piece's place in the split's (unshuffled) list, then the row's.
PIECE_STRIDE = 1_000_000_000


class GlobalStream(StreamingTrainData):
    """The training stream of one rank in global batches of `global_batch` rows; its per-device
    batches (`batch_size`) carry their rows' ids (SAMPLE_IDS) for the sample log."""

    def __init__(self, *args: Any, global_batch: int, window_steps: int = 8, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.global_batch = global_batch
        self.window_steps = window_steps
        self.start_step = 0  # global batches consumed before (resume)

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.batch_size * self.world_size)

    def global_rows(self, skip_rows: int = 0) -> Iterator[dict[str, Any]]:
        """The one endless row stream, from its `skip_rows`-th row on, each row with its id."""
        places = {piece: index for index, piece in enumerate(self.pieces)}
        epoch = 0
        while True:
            for piece in self._epoch_pieces(epoch):
                if piece.rows is not None and skip_rows >= piece.rows:
                    skip_rows -= piece.rows  # skipped without reading
                    continue
                for row_index, row in enumerate(read_piece(piece, self.fmt, self.options, self.columns)):
                    if skip_rows:
                        skip_rows -= 1
                        continue
                    yield {**row, SAMPLE_IDS: places[piece] * PIECE_STRIDE + row_index}
            epoch += 1

    def global_batches(self, start_step: int = 0) -> Iterator[list[dict[str, Any]]]:
        """The global batches from step `start_step` on (features, with their rows' ids where
        the task makes one feature of each row)."""
        window_rows = self.global_batch * self.window_steps
        window, drop = divmod(start_step, self.window_steps)
        rows = self.global_rows(skip_rows=window * window_rows)
        while True:
            raw = list(islice(rows, window_rows))
            if len(raw) < window_rows:
                return
            ids = [row.pop(SAMPLE_IDS) for row in raw]
            features = self.encode(raw)
            if len(features) == len(ids):
                features = [{**feature, SAMPLE_IDS: i} for feature, i in zip(features, ids)]
            features.sort(key=lambda f: len(f[self.length_key]), reverse=True)
            batches = [features[i : i + self.global_batch] for i in range(0, len(features), self.global_batch)]
            batches = [b for b in batches if len(b) == self.global_batch]
            random.Random(_seed(self.seed, "global-window", window)).shuffle(batches)
            yield from batches[drop:]
            drop = 0
            window += 1

    def rank_batches(self, start_step: int = 0) -> Iterator[list[dict[str, Any]]]:
        """This rank's per-device batches: its slice of each global batch, in `accumulation` parts."""
        share = self.accumulation * self.batch_size
        for batch in self.global_batches(start_step):
            mine = batch[self.rank * share : (self.rank + 1) * share]
            for k in range(self.accumulation):
                yield mine[k * self.batch_size : (k + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The loader asks its workers in turn, worker 0 first: worker w yields the rank's
        # batches w, w + workers, ... counted from where this attempt starts.
        return islice(self.rank_batches(self.start_step), worker, None, workers)

    # -- checkpoint position ---------------------------------------------------------------------
    def position(self, batches_consumed: int) -> dict[str, Any]:
        """`batches_consumed`: this rank's per-device batches (global step x accumulation)."""
        return {"sampler": "global-stream", "global_batches": batches_consumed // self.accumulation,
                "global_batch_size": self.global_batch, "window_steps": self.window_steps, "seed": self.seed,
                "pieces": len(self.pieces), "world_size": self.world_size}

    def restore(self, position: dict[str, Any]) -> None:
        if position.get("sampler") != "global-stream":
            raise SpecError(f"data.streaming: the checkpoint's data position is not a global stream's ({position}); "
                            "a run keeps its way of streaming")
        mine = {"global_batch_size": self.global_batch, "window_steps": self.window_steps, "seed": self.seed,
                "pieces": len(self.pieces)}
        changed = {k: (position.get(k), v) for k, v in mine.items() if position.get(k) != v}
        if changed:
            raise SpecError(f"train.global_batch_size: the stream differs from the checkpoint's ({changed}); "
                            "a run keeps its global batches and its files")
        self.start_step = int(position["global_batches"])
