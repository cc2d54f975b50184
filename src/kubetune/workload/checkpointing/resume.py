"""Wiring for exact resume: background uploads, the resumable sampler, SIGTERM, data position.

`trainer_setup.build_trainer` calls `make_uploader` and `attach`; `training.train` calls
`restore_position` between fetching LATEST and `trainer.train(resume_from_checkpoint=...)`,
and `drain` before the final model is committed or the process leaves after SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerState

from kubetune.contract.exitcodes import EXIT_RETRY_AFTER_CHECKPOINT
from kubetune.contract.names import ENV_DIE_WITH_PARENT, ENV_RETRY_FLAG
from kubetune.workload.trainer.callbacks import CheckpointUploadCallback
from kubetune.workload.checkpointing.protocol import TRAINER_STATE, Uploader, fetch_checkpoint, read_position
from kubetune.workload.checkpointing.preemption import PREEMPTION, PreemptionCallback
from kubetune.workload.stages.run import Run, Trained
from kubetune.workload.checkpointing.sampler import SamplerHolder, order_digest
from kubetune.workload.data.streaming import StreamingTrainData, steps_for_epochs
from kubetune.workload.trainer.kubetune_trainer import KubetuneTrainer, ResumeState

log = logging.getLogger("kubetune.train")


def make_uploader(run: Run) -> Uploader | None:
    """The background uploader of rank 0; other ranks never publish."""
    if not run.is_main:
        return None
    return Uploader(run.store, run.layout, run.spec.train.keep_checkpoints, run.workdir / "upload-staging")


def attach(trainer: KubetuneTrainer, run: Run, uploader: Uploader | None,
           stream: StreamingTrainData | None = None) -> ResumeState:
    """Install the deterministic length-grouped sampler (or the stream's position), the SIGTERM
    callback, and the data-position record of each checkpoint."""
    t = run.spec.train
    holder = None
    if stream is not None:
        _use_stream(trainer, run, stream)
    elif t.group_by_length:
        holder = SamplerHolder(run.samples_per_step, t.seed)
    trainer.add_callback(PreemptionCallback(PREEMPTION))
    state = ResumeState(uploader=uploader, sampler=holder, stream=stream)

    def position(trainer_state: TrainerState) -> dict[str, Any]:
        if stream is not None:
            return stream.position(trainer_state.global_step * t.gradient_accumulation_steps)
        return holder.position() if holder is not None else {"sampler": "random", "seed": t.seed}

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, CheckpointUploadCallback):
            callback.position = position
    trainer.resume_state = state  # KubetuneTrainer reads the sampler / stream from it
    return state


def _use_stream(trainer: KubetuneTrainer, run: Run, stream: StreamingTrainData) -> None:
    """Train from the stream (KubetuneTrainer.get_train_dataloader): ready batches, this
    rank's share, `max_steps` long."""
    trainer.args.ignore_data_skip = True  # the stream skips by itself, without reading
    if trainer.args.max_steps <= 0:
        trainer.args.max_steps = steps_for_epochs(stream, run.spec.train.epochs, run.spec.train.gradient_accumulation_steps)


def restore_position(trainer: KubetuneTrainer, checkpoint: Path | None) -> None:
    """Give the sampler (or stream) the checkpoint's data position before training resumes."""
    state = trainer.resume_state
    if checkpoint is None or state is None:
        return
    position = read_position(checkpoint)
    if not position:
        log.warning("checkpoint %s has no data position; resuming with the Trainer's own skip", checkpoint.name)
        return
    if state.stream is not None:
        state.stream.restore(position)
        return
    if state.sampler is not None:
        state.sampler.restore(position)
        expected = position.get("order_digest")
        if expected and expected != _digest_for(trainer, state.sampler, int(position["epoch"])):
            print("kubetune: warning: the training data's order differs from the checkpoint's "
                  "(data files changed?); resuming anyway", file=sys.stderr, flush=True)


def restore_best(run: Run, checkpoint: Path | None) -> None:
    """Fetch the best checkpoint that the resumed Trainer state names, next to the resume
    point, and point the state at that local copy. The Trainer drops a best folder missing
    from this disk (a new pod's) and would then commit the last weights instead of the ones
    the validation metric chose; the store keeps the best checkpoint (`prune_checkpoints`)."""
    state_file = checkpoint / TRAINER_STATE if checkpoint is not None else None
    if state_file is None or not state_file.is_file():
        return
    state = json.loads(state_file.read_text())
    best = state.get("best_global_step")
    if not best:
        return
    if not run.store.is_committed(run.layout.checkpoint(int(best))):
        print(f"kubetune: warning: the best checkpoint (step {best}) is not in the store; the final model "
              "will be the best of the evaluations from here on", file=sys.stderr, flush=True)
        return
    local = fetch_checkpoint(run.store, run.layout, int(best), checkpoint.parent)
    if state.get("best_model_checkpoint") != str(local):
        state["best_model_checkpoint"] = str(local)
        tmp = state_file.with_name(f"{TRAINER_STATE}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, state_file)  # ranks sharing a disk write the same content


def _digest_for(trainer: KubetuneTrainer, holder: SamplerHolder, epoch: int) -> str:
    sampler = holder.make(trainer.train_dataset)
    holder.sampler = None  # the Trainer makes its own when training starts
    return order_digest(sampler.order(epoch))


def drain(trainer: KubetuneTrainer, timeout_s: float | None = None) -> bool:
    """Wait until every queued upload is in the store; True when all of them made it."""
    state = trainer.resume_state
    if state is None or state.uploader is None:
        return True
    if state.uploader.pending:
        print(f"kubetune: waiting for {state.uploader.pending} upload(s) to finish", flush=True)
    done = state.uploader.close(timeout_s)
    return done and not state.uploader.errors


def leave_after_preemption(run: Run, trained: Trained) -> int:
    """After SIGTERM: commit the checkpoint within the grace period, then exit 75."""
    grace = float(run.spec.kubernetes.termination_grace_period_seconds)
    ok = drain(trained.trainer, PREEMPTION.remaining(grace))
    step = trained.trainer.state.global_step
    if run.is_main and os.environ.get(ENV_DIE_WITH_PARENT):  # a local run: you restart it, not a Job
        print(f"kubetune: interrupted at step {step}: checkpoint {'saved' if ok else 'NOT saved'} in "
              f"{run.store.url(run.layout.checkpoints)}; run the same command again to resume", flush=True)
    elif run.is_main:
        print(f"kubetune: preempted at step {step}: checkpoint {'committed' if ok else 'NOT committed'}; "
              f"exit {EXIT_RETRY_AFTER_CHECKPOINT} (the Job restarts the pod, which resumes)", flush=True)
    flag = os.environ.get(ENV_RETRY_FLAG)
    if flag:  # tell the distrun entrypoint, whose own exit code torchrun's signal handling decides
        Path(flag).touch()
    return EXIT_RETRY_AFTER_CHECKPOINT
