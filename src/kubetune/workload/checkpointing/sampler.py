"""A length-grouped sampler whose order is a pure function of (seed, epoch).

Why not the Trainer's own `group_by_length`: its `LengthGroupedSampler` draws its permutation
from torch's *global* generator at the moment the epoch's iterator is created. After a resume
that generator is in a different state (model loading, the restored RNG files, skipped
batches), so the batches after a resume are not the ones the uninterrupted run would have
seen (measured: per-step losses differ by up to 0.098). Here the permutation comes from a
private generator seeded with `hash(seed, epoch)`: the Trainer's own resume logic (skip the
batches of the current epoch already trained on, `set_epoch` for later epochs) then reproduces
the uninterrupted run exactly.

The grouping itself is the Trainer's: shuffle, cut into mega-batches, sort each by length
(longest first), put the longest sample of the epoch in the first batch so an out-of-memory
error happens at once rather than hours in.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from kubetune.contract.spec.job import SpecError

if TYPE_CHECKING:
    import datasets

LENGTH_COLUMN = "length"


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for one epoch, independent of any global random state."""
    digest = hashlib.sha256(f"kubetune-sampler:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def length_grouped_order(lengths: Sequence[int], group_size: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch: similar lengths in each run of `group_size` indices."""
    n = len(lengths)
    if n == 0:
        return []
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    indices = torch.randperm(n, generator=generator).tolist()
    mega_mult = max(min(n // (group_size * 4), 50), 1)
    mega = mega_mult * group_size
    megabatches = [sorted(indices[i : i + mega], key=lambda k: lengths[k], reverse=True) for i in range(0, n, mega)]
    longest = max(range(len(megabatches)), key=lambda m: lengths[megabatches[m][0]])
    megabatches[0][0], megabatches[longest][0] = megabatches[longest][0], megabatches[0][0]
    return [i for megabatch in megabatches for i in megabatch]


def order_digest(order: Sequence[int]) -> str:
    """A short fingerprint of an epoch's order, stored with a checkpoint and checked on resume."""
    return hashlib.sha256(",".join(map(str, order)).encode()).hexdigest()[:16]


class ResumableLengthGroupedSampler(Sampler[int]):
    """Yields the (seed, epoch) order; `set_epoch` picks the epoch (the Trainer calls it, and
    the resume hook sets the checkpoint's epoch where accelerate's skip wrapper does not
    forward it). `group_size` should be the samples of one optimizer step across all ranks,
    so the per-rank batches that DDP synchronises have similar lengths too."""

    def __init__(self, lengths: Sequence[int], group_size: int, seed: int):
        self.lengths = list(lengths)
        self.group_size = max(int(group_size), 1)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> list[int]:
        return length_grouped_order(self.lengths, self.group_size, self.seed, self.epoch if epoch is None else epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())

    def __len__(self) -> int:
        return len(self.lengths)


class SamplerHolder:
    """Makes the sampler for `KubetuneTrainer._get_train_sampler` and remembers it, so
    callbacks can record its epoch in a checkpoint and the resume hook can restore it."""

    def __init__(self, group_size: int, seed: int, length_column: str = LENGTH_COLUMN):
        self.group_size = group_size
        self.seed = seed
        self.length_column = length_column
        self.sampler: ResumableLengthGroupedSampler | None = None
        self.resume_epoch: int | None = None

    def make(self, dataset: datasets.Dataset) -> ResumableLengthGroupedSampler:
        if self.length_column in getattr(dataset, "column_names", []):
            lengths = list(dataset[self.length_column])
        else:
            lengths = [len(ids) for ids in dataset["input_ids"]]
        self.sampler = ResumableLengthGroupedSampler(lengths, self.group_size, self.seed)
        if self.resume_epoch is not None:
            self.sampler.set_epoch(self.resume_epoch)
        return self.sampler

    def position(self) -> dict[str, Any]:
        """What a checkpoint records about the data order."""
        if self.sampler is None:
            return {}
        return {
            "sampler": "length-grouped",
            "seed": self.seed,
            "group_size": self.group_size,
            "epoch": self.sampler.epoch,
            "num_samples": len(self.sampler),
            "order_digest": order_digest(self.sampler.order()),
        }

    def restore(self, position: dict[str, Any]) -> None:
        if position.get("sampler") == "length-grouped":
            self.resume_epoch = int(position["epoch"])
            if self.sampler is not None:
                self.sampler.set_epoch(self.resume_epoch)


# ---------------------------------------------------------------------------------------------
# Global batches: the same optimizer steps at any world size (an elastic gang, issue 24)


def epoch_order(num_samples: int, seed: int, epoch: int, lengths: Sequence[int] | None = None,
                group_size: int = 1) -> list[int]:
    """One epoch's sample order, a function of (seed, epoch) only: shuffled from a private
    generator, or length-grouped (`lengths`) in runs of `group_size`."""
    if lengths is not None:
        return length_grouped_order(lengths, group_size, seed, epoch)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=generator).tolist()


class GlobalBatchSampler(Sampler[list[int]]):
    """The per-device batches of every rank, for a DataLoader's `batch_sampler`.

    Optimizer step s of an epoch trains the samples `order[s*G:(s+1)*G]` (G: the global batch),
    whatever the world size W: they are cut into W x A batches of B (A = G / (B x W), the
    gradient accumulation of this size) and yielded interleaved, so that accelerate's
    `BatchSamplerShard`, which deals a batch sampler's batches round-robin to the ranks
    (batch i to rank i % W), gives rank r micro-batch k of the step as the batch at k*W + r.
    Every rank iterates the same sequence; none needs to know its rank. An incomplete last
    global batch is left out (it would cut into unequal batches whose mean losses weigh their
    samples differently at each world size); the next epoch reshuffles, so no sample is
    always the one left out.

    Why not the Trainer's samplers: its random and length-grouped orders are cut into batches
    per rank (accelerate shards them), so which samples meet in a step depends on W; the
    Trainer's own `BatchRebalanceSampler` is rank-aware but varies its batch sizes."""

    def __init__(self, num_samples: int, global_batch: int, batch_size: int, world_size: int, seed: int,
                 lengths: Sequence[int] | None = None):
        self.num_samples = int(num_samples)
        self.global_batch = int(global_batch)
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.seed = seed
        self.lengths = list(lengths) if lengths is not None else None
        self.epoch = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> list[int]:
        return epoch_order(self.num_samples, self.seed, self.epoch if epoch is None else epoch, self.lengths,
                           self.global_batch)

    def step_samples(self, step_in_epoch: int, epoch: int | None = None) -> list[int]:
        """The samples of one optimizer step of an epoch (0-based), in order."""
        start = step_in_epoch * self.global_batch
        return self.order(epoch)[start : start + self.global_batch]

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        world, batch, accumulation = self.world_size, self.batch_size, self.accumulation
        for step in range(self.steps_per_epoch):
            chunk = order[step * self.global_batch : (step + 1) * self.global_batch]
            per_rank = [chunk[r * accumulation * batch : (r + 1) * accumulation * batch] for r in range(world)]
            for k in range(accumulation):
                for rank in range(world):
                    yield per_rank[rank][k * batch : (k + 1) * batch]

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accumulation * self.world_size


class GlobalBatches:
    """Makes the `GlobalBatchSampler` for `KubetuneTrainer.get_train_dataloader` and keeps it,
    so a checkpoint records the position (global samples consumed) and a resume restores the
    epoch. `grouped`: the length-grouped order (`train.group_by_length`)."""

    def __init__(self, global_batch: int, batch_size: int, world_size: int, seed: int, grouped: bool,
                 length_column: str = LENGTH_COLUMN):
        self.global_batch = global_batch
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.grouped = grouped
        self.length_column = length_column
        self.sampler: GlobalBatchSampler | None = None
        self.resume_epoch: int | None = None

    def make(self, dataset: datasets.Dataset) -> GlobalBatchSampler:
        lengths = None
        if self.grouped:
            if self.length_column in getattr(dataset, "column_names", []):
                lengths = list(dataset[self.length_column])
            else:
                lengths = [len(ids) for ids in dataset["input_ids"]]
        self.sampler = GlobalBatchSampler(len(dataset), self.global_batch, self.batch_size, self.world_size,
                                          self.seed, lengths)
        if self.resume_epoch is not None:
            self.sampler.set_epoch(self.resume_epoch)
        return self.sampler

    def position(self, global_step: int) -> dict[str, Any]:
        """What a checkpoint records: the global samples consumed (steps x the global batch:
        the place in the one sequence of global batches), the epoch, the order's digest."""
        if self.sampler is None:
            return {}
        return {
            "sampler": "global-batches",
            "order": "length-grouped" if self.grouped else "random",
            "seed": self.seed,
            "global_batch_size": self.global_batch,
            "samples_consumed": global_step * self.global_batch,
            "epoch": global_step // max(self.sampler.steps_per_epoch, 1),
            "num_samples": self.sampler.num_samples,
            "order_digest": order_digest(self.sampler.order(global_step // max(self.sampler.steps_per_epoch, 1))),
        }

    def restore(self, position: dict[str, Any]) -> None:
        if position.get("sampler") != "global-batches":
            return
        recorded = int(position["global_batch_size"])
        if recorded != self.global_batch:
            raise SpecError(f"train.global_batch_size: the checkpoint trained with {recorded} samples per step, "
                            f"this attempt with {self.global_batch}; a run keeps its global batch")
        self.resume_epoch = int(position["epoch"])
        if self.sampler is not None:
            self.sampler.set_epoch(self.resume_epoch)
