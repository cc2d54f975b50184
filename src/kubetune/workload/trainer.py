"""The one place kubetune changes the Hugging Face Trainer's behaviour: `KubetuneTrainer`.

Two methods are overridden, both for exact resume (README.md, "Preemption and exact resume"):

* `_get_train_sampler`: with `train.group_by_length`, the length-grouped order comes from a
  private (seed, epoch) generator (`sampler.SamplerHolder`) instead of torch's global one;
* `get_train_dataloader`: a streamed training split (`streaming`) comes as ready batches of
  this rank's share, through a loader the Trainer treats as endless.

Both are private-ish Trainer API, checked against transformers 5.24.0 (signatures
`_get_train_sampler(self, train_dataset=None)` and `get_train_dataloader(self)`). If an
upgrade changes them, the exact-resume tests (tests/workload/test_resume.py) fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import Seq2SeqTrainer, Trainer

from kubetune.workload.checkpoint import Uploader
from kubetune.workload.sampler import SamplerHolder
from kubetune.workload.streaming import StreamingTrainData, UnsizedLoader, stream_loader

if TYPE_CHECKING:
    from kubetune.workload.tasks import Task


@dataclass
class ResumeState:
    """What the trainer and the resume hooks (`resume`) share: the uploader (rank 0), and the
    source of the training order (a sampler holder, or a stream, or neither)."""

    uploader: Uploader | None
    sampler: SamplerHolder | None
    stream: StreamingTrainData | None = None


class KubetuneTrainer(Trainer):
    """A Trainer whose training order survives a resume. `resume_state` is set by
    `resume.attach`; without a sampler holder or a stream it behaves like the plain Trainer."""

    resume_state: ResumeState | None = None

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        holder = self.resume_state.sampler if self.resume_state is not None else None
        if holder is None:
            return super()._get_train_sampler(train_dataset)
        # The Trainer passes the dataset with unused columns (our `length`) removed; the
        # original, same rows in the same order, still has them.
        dataset = self.train_dataset
        if train_dataset is not None and len(train_dataset) != len(dataset):
            dataset = train_dataset
        return holder.make(dataset)

    def get_train_dataloader(self) -> DataLoader | UnsizedLoader:
        stream = self.resume_state.stream if self.resume_state is not None else None
        if stream is None:
            return super().get_train_dataloader()
        collate = self._get_collator_with_removed_columns(self.data_collator, description="training")
        return stream_loader(stream, collate, self.args.dataloader_pin_memory)


class KubetuneSeq2SeqTrainer(KubetuneTrainer, Seq2SeqTrainer):
    """`KubetuneTrainer` for generative tasks: validation generates text (BLEU, ROUGE)."""


def trainer_class(task: Task) -> type[KubetuneTrainer]:
    return KubetuneSeq2SeqTrainer if task.generative else KubetuneTrainer
