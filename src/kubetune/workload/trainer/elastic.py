"""The proof that an elastic gang trains exactly: each optimizer step's sample ids, and the world
size over the run.

A run that trains in global batches (`sampler.GlobalBatchSampler`: an elastic gang, or
`train.global_batch_size`) logs every optimizer step as one line of `metrics/samples.jsonl`:
`step`, `world_size` and `samples`, the dataset indices that went through the model in that
step, gathered from every rank in global-batch order. The ids travel with the batch
(`WithSampleIds`, `collate_with_ids`) and are taken out in `KubetuneTrainer.training_step`, so
the log says what was trained, not what a sampler planned.

Steps after the last checkpoint are trained again after a restart: like `metrics/train.jsonl`,
the log restarts from the store's copy up to the resume step, and every checkpoint carries it
(`Uploader.carry`), so the store's log is the committed history, each step once.
`world_size_history` ([[step, world_size], ...] at each change) is read from it for
`metrics/summary.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import TrainerCallback

from kubetune.contract.layout import RunLayout
from kubetune.contract.progress import world_size_history
from kubetune.storage import Store
from kubetune.workload.checkpointing.uploader import Uploader

# The batch key that carries each sample's index to `KubetuneTrainer.training_step`.
SAMPLE_IDS = "kubetune_sample_ids"


class WithSampleIds(torch.utils.data.Dataset):
    """A map-style dataset whose rows also carry their index (SAMPLE_IDS)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], SAMPLE_IDS: int(index)}

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        fetch = getattr(self.dataset, "__getitems__", None)
        rows = fetch(indices) if fetch is not None else [self.dataset[i] for i in indices]
        return [{**row, SAMPLE_IDS: int(i)} for row, i in zip(rows, indices)]


def collate_with_ids(collate: Callable[[list[dict[str, Any]]], Any]) -> Callable[[list[dict[str, Any]]], Any]:
    """The task's collator on rows without their ids; the ids added to the batch as a tensor."""

    def collate_fn(rows: list[dict[str, Any]]) -> Any:
        ids = [row.pop(SAMPLE_IDS) for row in rows]
        batch = collate(rows)
        batch[SAMPLE_IDS] = torch.tensor(ids, dtype=torch.long)
        return batch

    return collate_fn


class SampleLog(TrainerCallback):
    """Collects this rank's sample ids of the step (`add`), gathers every rank's at the step's
    end, and rank 0 appends the step's line to the local log, which checkpoints carry and each
    log and the end of training upload."""

    def __init__(self, store: Store, layout: RunLayout, local_file: Path, uploader: Uploader | None = None):
        self.store = store
        self.layout = layout
        self.local_file = local_file
        self.uploader = uploader
        self._ids: list[int] = []
        if uploader is not None:
            uploader.carry(local_file, layout.samples_log)

    def add(self, ids: list[int]) -> None:
        self._ids.extend(ids)

    def on_train_begin(self, args, state, control, **kwargs):
        self._ids = []
        if state.is_world_process_zero:
            continued = read_log(self.store, self.layout, up_to=state.global_step) if state.global_step else []
            self.local_file.parent.mkdir(parents=True, exist_ok=True)
            self.local_file.write_text("".join(json.dumps(r) + "\n" for r in continued))

    def on_step_end(self, args, state, control, **kwargs):
        ids, self._ids = self._ids, []
        everyone = gather(ids)
        if not state.is_world_process_zero:
            return
        record = {"step": state.global_step, "world_size": len(everyone),
                  "samples": [i for rank_ids in everyone for i in rank_ids]}
        with self.local_file.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_log(self, args, state, control, **kwargs):
        self._upload(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._upload(state)

    def _upload(self, state) -> None:
        if not state.is_world_process_zero or not self.local_file.is_file():
            return
        if self.uploader is not None:
            self.uploader.submit_file(self.local_file, self.layout.samples_log)
        else:
            self.store.upload_file(self.local_file, self.layout.samples_log)


def gather(ids: list[int]) -> list[list[int]]:
    """Every rank's ids, in rank order (rank r's micro-batches are the r-th slice of the step's
    global batch, so the concatenation is the global batch in order)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [ids]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, ids)
    return [list(rank_ids or []) for rank_ids in everyone]


def read_log(store: Store, layout: RunLayout, up_to: int | None = None) -> list[dict[str, Any]]:
    """The store's sample log (the committed history), up to step `up_to` if given."""
    if not store.exists(layout.samples_log):
        return []
    records = [json.loads(line) for line in store.read_text(layout.samples_log).splitlines() if line.strip()]
    return [r for r in records if up_to is None or int(r["step"]) <= up_to]


def local_history(local_file: Path) -> list[list[int]] | None:
    """The world-size history of this run's local sample log; None when it has none."""
    if not local_file.is_file():
        return None
    records = [json.loads(line) for line in local_file.read_text().splitlines() if line.strip()]
    return world_size_history(records)
