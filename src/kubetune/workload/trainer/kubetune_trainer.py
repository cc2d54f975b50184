"""The one place kubetune changes the Hugging Face Trainer's behaviour: `KubetuneTrainer`.

It is built with the run's `ResumeState` (`checkpointing.resume`, filled by the
`Checkpointer`), and without the Trainer's PrinterCallback (kubetune's ProgressCallback prints
one readable line per log instead). Three methods are overridden, all for exact resume
(docs/recovery.md#exact-resume):

* `_get_train_sampler`: with `train.group_by_length`, the length-grouped order comes from a
  private (seed, epoch) generator (`sampler.SamplerHolder`) instead of torch's global one;
* `get_train_dataloader`: a streamed training split (`streaming`) comes as ready batches of
  this rank's share, through a loader the Trainer treats as endless; an elastic gang's split
  comes in global batches (`sampler.GlobalBatchSampler`), the same at any world size, and
  `training_step` takes each batch's sample ids out for the sample log (`elastic.SampleLog`).

Three more keep the loss curve of a resumed run identical to an uninterrupted one's:

* `_save_checkpoint` also writes the loss summed since the last log, and that log's step
  (`LOSS_WINDOW`), into each checkpoint;
* `train` takes them when resuming (`Checkpointer.restore` read them from the checkpoint),
  and `_maybe_log_save_evaluate` restores them before the first step after the resume is
  logged. Without this the Trainer restarts its logging window at the resume step: with
  `logging_steps: 20` and a resume from step 10, the step-20 loss averaged steps 11-20 only.

All are private-ish Trainer API, checked against transformers 5.24.0 (signatures
`_get_train_sampler(self, train_dataset=None)`, `get_train_dataloader(self)`,
`_save_checkpoint(self, model, trial)`, `_maybe_log_save_evaluate(self, tr_loss, ...)`, and
the attributes `_tr_loss`, `_total_loss_scalar`, `_globalstep_last_logged` that
`_inner_training_loop` sets). If an upgrade changes them, the exact-resume tests
(tests/workload/checkpointing/test_resume.py, tests/workload/checkpointing/test_resume_best.py) fail.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PrinterCallback, Seq2SeqTrainer, Trainer
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from kubetune.workload.checkpointing.protocol import LOSS_WINDOW
from kubetune.workload.checkpointing.resume import ResumeState
from kubetune.workload.data.streaming import UnsizedLoader, stream_loader
from kubetune.workload.trainer.elastic import SAMPLE_IDS, SampleLog, WithSampleIds, collate_with_ids

if TYPE_CHECKING:
    from kubetune.workload.tasks import Task


class KubetuneTrainer(Trainer):
    """A Trainer whose training order survives a resume: `resume` (given by `build_trainer`,
    filled by the `Checkpointer`) names its sampler or stream and the loss window to continue;
    without a sampler holder or a stream it trains like the plain Trainer."""

    def __init__(self, *args: Any, resume: ResumeState | None = None, sample_log: SampleLog | None = None,
                 **kwargs: Any):
        self.resume = resume if resume is not None else ResumeState()
        self.sample_log = sample_log  # an elastic gang: each step's sample ids (`trainer.elastic`)
        self._loss_window: dict[str, Any] | None = None
        super().__init__(*args, **kwargs)
        if self.resume.in_global_batches:
            # Each per-device batch's own mean loss, divided by the accumulation: the step's
            # gradient is then the mean over its equal-sized batches, whichever rank computed
            # them, so the same at any world size. The Trainer would otherwise pass the rank's
            # item count to any model whose forward takes **kwargs and skip that division,
            # though classification heads ignore the count (their plain mean came out
            # multiplied by the accumulation: the loss of a step on 1 rank of 2 batches doubled).
            self.model_accepts_loss_kwargs = False
        self.remove_callback(PrinterCallback)  # the Trainer adds it with disable_tqdm; ProgressCallback prints

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        holder = self.resume.sampler
        if holder is None:
            return super()._get_train_sampler(train_dataset)
        # The Trainer passes the dataset with unused columns (our `length`) removed; the
        # original, same rows in the same order, still has them.
        dataset = self.train_dataset
        if train_dataset is not None and len(train_dataset) != len(dataset):
            dataset = train_dataset
        return holder.make(dataset)

    def get_train_dataloader(self) -> DataLoader | UnsizedLoader:
        if self.resume.global_batches is not None:
            return self._global_batch_loader()
        stream = self.resume.stream
        if stream is None:
            return super().get_train_dataloader()
        collate = self._get_collator_with_removed_columns(self.data_collator, description="training")
        if self.resume.in_global_batches:  # the rows' ids for the sample log, taken out in `training_step`
            collate = collate_with_ids(collate)
        return stream_loader(stream, collate, self.args.dataloader_pin_memory)

    def _global_batch_loader(self) -> DataLoader:
        """The training loader of an elastic gang: the `GlobalBatchSampler`'s batches of every
        rank, dealt out by accelerate's `BatchSamplerShard` (batch i to rank i % W), each
        sample carrying its index (`SAMPLE_IDS`) for the sample log. Built here rather than in
        the Trainer's `_get_dataloader`, which takes a sampler of indices, not of batches."""
        holder = self.resume.global_batches
        sampler = holder.make(self.train_dataset)
        dataset = self._remove_unused_columns(self.train_dataset, description="training")
        loader = DataLoader(
            WithSampleIds(dataset), batch_sampler=sampler, collate_fn=collate_with_ids(self.data_collator),
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor,
        )
        return self.accelerator.prepare(loader)

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any):
        ids = inputs.pop(SAMPLE_IDS, None)
        if ids is not None and self.sample_log is not None:
            self.sample_log.add(ids.tolist())
        return super().training_step(model, inputs, *args, **kwargs)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """An elastic gang's logs also say the world size of the moment: into `train.jsonl`, the
        progress line and the trackers, at the global step (their step axis stays continuous)."""
        if self.sample_log is not None and "world_size" not in logs:
            logs = {**logs, "world_size": self.args.world_size}
        return super().log(logs, *args, **kwargs)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        self._loss_window = self.resume.loss_window if isinstance(resume_from_checkpoint, str) else None
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if getattr(self, "_tr_loss", None) is None:
            return
        # Every rank takes part in the gather (as at a logging step); rank 0 writes the mean,
        # which each rank restores, so the next log's gathered mean is the same.
        loss_sum = nested_gather(self._tr_loss, self.args.parallel_mode).mean().item()
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            window = {"loss_sum": loss_sum, "last_logged_step": self._globalstep_last_logged}
            with open(os.path.join(folder, LOSS_WINDOW), "w") as handle:
                json.dump(window, handle)

    def _maybe_log_save_evaluate(self, tr_loss: Any, *args: Any, **kwargs: Any) -> None:
        window, self._loss_window = self._loss_window, None
        if window is not None:  # the first step after a resume: continue the checkpoint's window
            tr_loss += window["loss_sum"]  # in place: `tr_loss` is the Trainer's `_tr_loss`
            self._total_loss_scalar -= window["loss_sum"]  # train_loss: this call's steps only, as before
            self._globalstep_last_logged = int(window["last_logged_step"])
        return super()._maybe_log_save_evaluate(tr_loss, *args, **kwargs)


class KubetuneSeq2SeqTrainer(KubetuneTrainer, Seq2SeqTrainer):
    """`KubetuneTrainer` for generative tasks: validation generates text (BLEU, ROUGE)."""


def trainer_class(task: Task) -> type[KubetuneTrainer]:
    return KubetuneSeq2SeqTrainer if task.generative else KubetuneTrainer
