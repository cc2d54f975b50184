"""Where a run stands, and putting it back after a restart: `ResumeState`, the one record of
the resume (the data order the Trainer trains in, the checkpoint resumed from, its data
position, best checkpoint and loss window), and the steps that restore each part from a
fetched checkpoint folder.

The `Checkpointer` fills the state and runs these steps; the Trainer subclass is built with the
state and reads its sampler, stream and loss window from it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune.contract.layout import RunLayout
from kubetune.integrity import DamagedError
from kubetune.storage import Store
from kubetune.workload.checkpointing.protocol import LOSS_WINDOW, TRAINER_STATE, fetch_checkpoint, read_position
from kubetune.workload.checkpointing.sampler import GlobalBatches, SamplerHolder, order_digest

if TYPE_CHECKING:
    import datasets

    from kubetune.workload.data.streaming import StreamingTrainData

log = logging.getLogger("kubetune.train")


@dataclass
class ResumeState:
    """What the Checkpointer and the Trainer subclass share about the resume.

    The source of the training order is set once, before the Trainer is built: a length-grouped
    sampler (`train.group_by_length`), a stream (a streamed training split), or neither (the
    Trainer's own seeded random order). The rest is set when a checkpoint is resumed from."""

    sampler: SamplerHolder | None = None
    global_batches: GlobalBatches | None = None  # an elastic gang: the same global batches at any world size
    stream: StreamingTrainData | None = None
    checkpoint: Path | None = None  # the local copy of the checkpoint resumed from (None: a fresh start)
    step: int | None = None  # its step
    position: dict[str, Any] = field(default_factory=dict)  # where in the data it stood (`DATA_POSITION`)
    best_step: int | None = None  # the best checkpoint its Trainer state names, fetched beside it
    loss_window: dict[str, Any] | None = None  # the loss summed since its last log (`LOSS_WINDOW`)

    @property
    def in_global_batches(self) -> bool:
        """Whether the run trains in global batches, map-style or streamed (an elastic gang)."""
        return self.global_batches is not None or hasattr(self.stream, "global_batch")


def restore_position(state: ResumeState, train_data: datasets.Dataset | None) -> None:
    """Give the sampler (or stream) the checkpoint's data position before training resumes;
    `train_data` (the Trainer's training split) checks the sampler's order against the one the
    checkpoint recorded."""
    if state.checkpoint is None:
        return
    state.position = read_position(state.checkpoint)
    if not state.position:
        log.warning("checkpoint %s has no data position; resuming with the Trainer's own skip", state.checkpoint.name)
        return
    if state.stream is not None:
        state.stream.restore(state.position)
        return
    if state.global_batches is not None:
        state.global_batches.restore(state.position)
        return
    if state.sampler is not None:
        state.sampler.restore(state.position)
        expected = state.position.get("order_digest")
        if expected and train_data is not None and expected != _digest_for(state.sampler, train_data,
                                                                          int(state.position["epoch"])):
            print("kubetune: warning: the training data's order differs from the checkpoint's "
                  "(data files changed?); resuming anyway", file=sys.stderr, flush=True)


def _digest_for(holder: SamplerHolder, train_data: datasets.Dataset, epoch: int) -> str:
    sampler = holder.make(train_data)
    holder.sampler = None  # the Trainer makes its own when training starts
    return order_digest(sampler.order(epoch))


def restore_best(store: Store, layout: RunLayout, checkpoint: Path | None) -> int | None:
    """Fetch the best checkpoint that the resumed Trainer state names, next to the resume
    point, and point the state at that local copy; returns its step. The Trainer drops a best
    folder missing from this disk (a new pod's) and would then commit the last weights instead
    of the ones the validation metric chose; the store keeps the best checkpoint
    (`protocol.prune_checkpoints`)."""
    state_file = checkpoint / TRAINER_STATE if checkpoint is not None else None
    if state_file is None or not state_file.is_file():
        return None
    trainer_state = json.loads(state_file.read_text())
    best = trainer_state.get("best_global_step")
    if not best:
        return None
    if not store.is_committed(layout.checkpoint(int(best))):
        print(f"kubetune: warning: the best checkpoint (step {best}) is not in the store; the final model "
              "will be the best of the evaluations from here on", file=sys.stderr, flush=True)
        return None
    try:
        local = fetch_checkpoint(store, layout, int(best), checkpoint.parent)
    except DamagedError as exc:
        print(f"kubetune: warning: the best checkpoint (step {best}) is damaged ({exc}); the final model "
              "will be the best of the evaluations from here on", file=sys.stderr, flush=True)
        return None
    if trainer_state.get("best_model_checkpoint") != str(local):
        trainer_state["best_model_checkpoint"] = str(local)
        tmp = state_file.with_name(f"{TRAINER_STATE}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(trainer_state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, state_file)  # ranks sharing a disk write the same content
    return int(best)


def read_loss_window(checkpoint: Path | None) -> dict[str, Any] | None:
    """The loss summed since the checkpoint's last log, and that log's step, which the Trainer
    subclass wrote into the folder: the first log after the resume continues that window
    (`KubetuneTrainer._maybe_log_save_evaluate`)."""
    path = checkpoint / LOSS_WINDOW if checkpoint is not None else None
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text())
