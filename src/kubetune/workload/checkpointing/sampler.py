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
