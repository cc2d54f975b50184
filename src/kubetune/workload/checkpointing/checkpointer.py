"""The front door to checkpointing: `Checkpointer`, the one object the train stage asks for
anything about checkpoints, over one `ResumeState`.

What it owns, and which module does the work:
* saving: the callback that writes each `checkpoint-N`'s data position and publishes it
  (`upload_callback`), in the background through rank 0's `Uploader` (`protocol`: files,
  commit marker, LATEST, pruning);
* the resume point: the checkpoint the one resume rule picks (`contract.layout.resume_step`,
  which `kubetune runs` uses too), fetched;
* restoring: the sampler's epoch or the stream's position, the best checkpoint, the loss
  window (`resume`);
* SIGTERM: the callback that saves and stops at the end of the step (`preemption`), and
  leaving with exit 75 once the checkpoint is committed;
* the final weights of a sharded (FSDP) model (`sharded_state`), and the clean-up after the
  model is committed.

Order of use (`stages.training`): `Checkpointer(run, lease=...)`, `catch_sigterm()`;
`build_trainer` calls `track_data` and `callbacks` and builds the Trainer with `state`; then
`resume_point()`, `restore()`, training; then `drain_final()`, `save_model`, `guard` before the
model's commit, `clear_after_success`; or `leave_after_preemption`.
"""

from __future__ import annotations

import shutil
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from kubetune.contract.exitcodes import EXIT_INTERRUPTED_UNSAVED, EXIT_RETRY_AFTER_CHECKPOINT
from kubetune.contract.layout import checkpoint_name
from kubetune.contract.recovery import resumed_line
from kubetune.workload.checkpointing.preemption import PREEMPTION, Preemption, PreemptionCallback
from kubetune.workload.checkpointing.intact import fetch_intact
from kubetune.workload.checkpointing.protocol import clear_after_success
from kubetune.workload.checkpointing.uploader import Uploader
from kubetune.workload.checkpointing.resume import (ResumeState, read_loss_window, restore_best,
                                                    restore_position)
from kubetune.workload.checkpointing.sampler import GlobalBatches, SamplerHolder
from kubetune.workload.checkpointing.upload_callback import CheckpointUploadCallback
from kubetune.workload.stages.run import Run

if TYPE_CHECKING:
    from transformers import Trainer, TrainerState

    from kubetune.workload.checkpointing.lease import RunLease

    from kubetune.workload.tasks import Prepared

# The Trainer's local checkpoint folders are `checkpoint-N` (transformers' PREFIX_CHECKPOINT_DIR).
LOCAL_CHECKPOINT_GLOB = "checkpoint-*"


class Checkpointer:
    """Checkpoints of one run: saved, committed, found, restored, drained, cleared.

    Rank 0 uploads through a background `Uploader`; the other ranks never publish (but upload
    the files only they wrote, `upload_callback`). `preemption` is the process's SIGTERM state
    (`preemption.PREEMPTION`; a test passes its own). `lease` is rank 0's lease of the run
    folder: every commit confirms it first, and losing it aborts the uploads and the training."""

    def __init__(self, run: Run, preemption: Preemption = PREEMPTION, lease: RunLease | None = None):
        self.run = run
        self.preemption = preemption
        self.lease = lease
        # The Trainer's output_dir: where it saves checkpoint-N and where resumes are fetched to.
        self.local_dir = run.workdir / "trainer"
        keep = run.spec.train.keep_checkpoints
        self.uploader = Uploader(run.store, run.layout, keep, run.workdir / "upload-staging") if run.is_main else None
        if lease is not None and self.uploader is not None:
            self.uploader.fenced_by(lease)  # every commit confirms the lease; losing it stops the uploads
        self.state = ResumeState()
        self._train_data: Any = None

    # -- before the Trainer is built --------------------------------------------------------------
    def catch_sigterm(self) -> AbstractContextManager[Preemption]:
        """For the block: SIGTERM means checkpoint at the end of the step, then exit 75 once it
        is committed (before training starts: exit 76 at once, nothing new saved, nothing lost). The process's own handler is back
        after it, so nothing of the run stays installed in a process that goes on."""
        return self.preemption.caught()

    def track_data(self, prepared: Prepared) -> ResumeState:
        """The data order the Trainer trains in, which every checkpoint records and a resume
        restores: the stream's position (a streamed training split), a length-grouped sampler
        whose order is a function of (seed, epoch) (`train.group_by_length`), or the Trainer's
        own seeded random order. Called once, before the Trainer is built; returns the state
        the Trainer subclass is built with."""
        stream = prepared.extra.get("stream")
        t = self.run.spec.train
        self.state.stream = stream
        size = self.run.global_batch
        if stream is None and size is not None:  # an elastic gang: the same global batches at any size
            self.state.global_batches = GlobalBatches(size, t.batch_size, self.run.world_size, t.seed, t.group_by_length)
        grouped = stream is None and size is None and t.group_by_length
        self.state.sampler = SamplerHolder(self.run.samples_per_step, t.seed) if grouped else None
        self._train_data = prepared.train
        return self.state

    def callbacks(self) -> list[TrainerCallback]:
        """The Trainer callbacks of checkpointing, fully configured: publish each checkpoint
        with its data position; save and stop at the end of the step after SIGTERM; stop
        training once nothing more may be written (`StopOnFatal`)."""
        t = self.run.spec.train
        return [
            CheckpointUploadCallback(self.run.store, self.run.layout, t.keep_checkpoints, self.uploader,
                                     position=self.data_position),
            PreemptionCallback(self.preemption),
            StopOnFatal(self),
        ]

    def raise_if_stopped(self) -> None:
        """Raise what stopped the writing for good: a full store (`StoreFullError`, exit
        EXIT_NO_SPACE) or a lost lease (`LeaseLostError`, a retriable exit)."""
        if self.uploader is not None and self.uploader.fatal is not None:
            raise self.uploader.fatal
        if self.lease is not None:
            self.lease.check()

    def guard(self, what: str) -> None:
        """Before a commit outside the uploader (the model's): the lease still ours, confirmed
        in the store (`RunLease.confirm`), else LeaseLostError and nothing is committed."""
        try:
            self.raise_if_stopped()
            if self.lease is not None:
                self.lease.confirm()
        except Exception as exc:
            print(f"kubetune: {what} refused: {exc}", file=sys.stderr, flush=True)
            raise

    def data_position(self, trainer_state: TrainerState) -> dict[str, Any]:
        """Where in the data the run stands at `trainer_state`'s step (written into each
        checkpoint folder)."""
        t = self.run.spec.train
        if self.state.stream is not None:
            return self.state.stream.position(trainer_state.global_step * self.run.accumulation)
        if self.state.global_batches is not None:
            return self.state.global_batches.position(trainer_state.global_step)
        if self.state.sampler is not None:
            return self.state.sampler.position()
        return {"sampler": "random", "seed": t.seed}

    # -- resuming ---------------------------------------------------------------------------------
    def resume_point(self) -> Path | None:
        """The checkpoint this run resumes from (the resume rule: `protocol.find_resume_step`;
        a damaged one set aside for the newest intact one before it: `intact.fetch_intact`),
        fetched and verified into the Trainer's output folder; None for a fresh start."""
        run = self.run
        found = fetch_intact(run.store, run.layout, self.local_dir, run.is_main)
        step = found[0] if found else None
        restart = run.env.restart_count
        if run.is_main and restart is not None and (step is not None or restart > 0):
            # Under torchrun: where a restarted gang resumes (this agent's count stays 0 when another
            # node's worker failed, hence "or step"); `run --local` reports it with the failure.
            print(resumed_line(step or 0, restart), flush=True)
        if found is None:
            return None
        self.state.step, self.state.checkpoint = found
        if run.is_main:
            print(f"kubetune: resuming from {run.store.url(run.layout.checkpoint(step))}", flush=True)
        return self.state.checkpoint

    def restore(self) -> None:
        """Put back what the Trainer's own resume does not: the data position (the sampler's
        epoch, the stream's place), the best checkpoint (which the final model must be) and
        the loss window of the next log. Nothing to do on a fresh start."""
        restore_position(self.state, self._train_data)
        self.state.best_step = restore_best(self.run.store, self.run.layout, self.state.checkpoint)
        self.state.loss_window = read_loss_window(self.state.checkpoint)

    # -- after training ---------------------------------------------------------------------------
    @property
    def preempted(self) -> bool:
        """Whether SIGTERM stopped the training (its checkpoint then still has to land)."""
        return self.preemption.requested

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued upload is in the store, up to `timeout_s`, or until SIGTERM
        arrives (then up to the grace period's rest); True when all of them made it. What did
        not make it is named in one line; a full store or a lost lease is raised."""
        if self.uploader is None:
            return True
        if self.uploader.pending:
            print(f"kubetune: waiting for {self.uploader.pending} upload(s) to finish", flush=True)
        grace = float(self.run.spec.kubernetes.termination_grace_period_seconds)
        done = self.uploader.wait(timeout_s, interrupted=lambda: self.preemption.requested)
        if not done and self.preemption.requested:
            done = self.uploader.wait(self.preemption.remaining(grace))
        left = self.uploader.not_uploaded()
        self.uploader.abort()
        if left and not done:
            print(f"kubetune: not uploaded{' after SIGTERM' if self.preemption.requested else ''} "
                  f"(deadline passed): {', '.join(left)}", file=sys.stderr, flush=True)
        if self.uploader.fatal is not None:
            raise self.uploader.fatal
        return done and not self.uploader.errors

    def drain_final(self) -> bool:
        """The drain after training, before the model is saved: SIGTERM now only sets the flag
        (the handler would otherwise exit at once), and ends the wait (then the grace period's
        rest). True when every upload landed and no SIGTERM came; False: leave with
        `leave_after_preemption`."""
        self.preemption.training = True
        done = self.drain()
        return done and not self.preemption.requested

    def saved_through(self) -> int | None:
        """The newest step committed to the store: by this attempt, else the one it resumed from."""
        steps = list(self.uploader.committed if self.uploader is not None else []) + [self.state.step or 0]
        return max(steps) or None

    def leave_after_preemption(self, step: int) -> int:
        """After SIGTERM stopped training at `step`: commit its checkpoint within the grace
        period and return the exit code that says the truth: EXIT_RETRY_AFTER_CHECKPOINT (the
        Job restarts the pod, which resumes) only when the store now holds a checkpoint of
        `step`, else EXIT_INTERRUPTED_UNSAVED, naming the newest committed one."""
        run = self.run
        grace = float(run.spec.kubernetes.termination_grace_period_seconds)
        self.drain(self.preemption.remaining(grace))
        if not run.is_main:  # rank 0 alone knows what landed; its 75 wins over this (distrun, gang)
            return EXIT_INTERRUPTED_UNSAVED
        newest = self.saved_through()
        saved = newest is not None and newest >= step
        if saved and run.env.die_with_parent is not None:  # a local run: you restart it, not a Job
            print(f"kubetune: interrupted at step {step}: checkpoint saved in "
                  f"{run.store.url(run.layout.checkpoints)}; run the same command again to resume", flush=True)
        elif saved:
            print(f"kubetune: preempted at step {step}: checkpoint committed; "
                  f"exit {EXIT_RETRY_AFTER_CHECKPOINT} (the Job restarts the pod, which resumes)", flush=True)
        else:
            last = checkpoint_name(newest) if newest else "none (a resume starts afresh)"
            print(f"kubetune: interrupted at step {step}: checkpoint NOT saved, nothing new saved; the last "
                  f"committed checkpoint is {last}; exit {EXIT_INTERRUPTED_UNSAVED}", flush=True)
            return EXIT_INTERRUPTED_UNSAVED
        if run.env.retry_flag is not None:  # tell distrun, whose own exit code torchrun's signal handling decides
            run.env.retry_flag.touch()
        return EXIT_RETRY_AFTER_CHECKPOINT

    def save_model(self, trainer: Trainer, folder: Path) -> None:
        """The trained weights into `folder`: the Trainer's own save, or for a sharded (FSDP)
        model, whose save writes no weights, the full weights gathered from every rank
        (`sharded_state.save_consolidated`). Collective: every rank calls it."""
        if trainer.is_fsdp_enabled:
            from kubetune.workload.checkpointing.sharded_state import save_consolidated

            save_consolidated(trainer.accelerator.unwrap_model(trainer.model), folder, self.run.is_main)
        else:
            trainer.save_model(str(folder))

    def clear_after_success(self) -> None:
        """After the model is committed: the store keeps `train.keep_checkpoints_after_success`
        checkpoints, and the local copies in the Trainer's output folder go (they only serve a
        resume)."""
        clear_after_success(self.run.store, self.run.layout, self.run.spec.train.keep_checkpoints_after_success)
        for folder in self.local_dir.glob(LOCAL_CHECKPOINT_GLOB):
            shutil.rmtree(folder, ignore_errors=True)


class StopOnFatal(TrainerCallback):
    """Stops the training at the end of a step once nothing more may be written: the store is
    full, or this writer lost the run's lease (`Checkpointer.raise_if_stopped` raises, and the
    entrypoint turns the error into its exit code). No I/O: it reads what the uploader and the
    lease's renewal already found."""

    def __init__(self, checkpointer: Checkpointer):
        self.checkpointer = checkpointer

    def on_step_end(self, args, state, control, **kwargs):
        self.checkpointer.raise_if_stopped()
