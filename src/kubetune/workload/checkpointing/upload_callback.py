"""The Trainer's hand in checkpointing: after the Trainer saves `checkpoint-N` locally, the
folder gets its data position and goes to the store (`CheckpointUploadCallback`). The
`Checkpointer` builds it, fully configured, for `build_trainer`.

Only rank 0 publishes a folder; ranks on other nodes than rank 0 upload the files they wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from kubetune.contract.layout import RunLayout
from kubetune.storage import Store
from kubetune.workload.checkpointing.protocol import DATA_POSITION, publish_checkpoint
from kubetune.workload.checkpointing.uploader import Uploader, retrying


class CheckpointUploadCallback(TrainerCallback):
    """After the Trainer writes `checkpoint-N` locally, publish it to the store in the
    background: files, then the commit marker, then LATEST (see `protocol.Uploader`).

    Before the upload starts, the data position (the sampler's epoch and order digest, or the
    stream's position) is written into the folder, so the checkpoint says where in the data
    the run stands. In a multi-process run, ranks on other nodes than rank 0 put the files they
    wrote into the store (their RNG state, so every rank resumes its own dropout stream; their
    FSDP shards), then rank 0 alone queues its folder, which holds its node's files, and, once
    it is whole, decides LATEST."""

    def __init__(self, store: Store, layout: RunLayout, keep: int, uploader: Uploader | None = None,
                 position: Callable[[Any], dict[str, Any]] | None = None):
        self.store = store
        self.layout = layout
        self.keep = keep
        self.uploader = uploader
        self.position = position

    def _publish_rank_files(self, args, state, local: Path) -> dict[str, Any]:
        """A rank on another node than rank 0 puts the files it wrote into the store (its RNG
        state, its FSDP shards: `sharded_state.rank_files`); rank 0's node shares rank 0's
        folder. Every rank then tells the others what it uploaded, which also waits until
        every rank's files are written; rank 0 gets their records (size, sha256, hashed as they
        were uploaded) for the commit marker's manifest."""
        import torch.distributed as dist

        from kubetune.workload.checkpointing.sharded_state import rank_files, shares_rank0_disk

        uploaded: dict[str, Any] = {}
        if not state.is_world_process_zero and not shares_rank0_disk(args.process_index, args.local_process_index):
            folder = self.layout.checkpoint(state.global_step)
            for name in rank_files(local, args.process_index):
                uploaded[name] = retrying(lambda name=name: self.store.upload_file(local / name, f"{folder}/{name}"),
                                          f"upload of {name}", 900.0)
        if not (dist.is_available() and dist.is_initialized()):
            return uploaded
        everyone: list[dict[str, Any] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, uploaded)
        return {name: record for records in everyone for name, record in sorted((records or {}).items())}

    def on_save(self, args, state, control, **kwargs):
        local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        world = max(int(getattr(args, "world_size", 1) or 1), 1)
        extra: dict[str, Any] = {}
        if world > 1:
            extra = self._publish_rank_files(args, state, local)
        if not state.is_world_process_zero or not local.is_dir():
            return
        record = {"global_step": state.global_step, "epoch": state.epoch, "world_size": world,
                  "gradient_accumulation_steps": args.gradient_accumulation_steps,
                  "per_device_train_batch_size": args.per_device_train_batch_size}
        if self.position is not None:
            record.update(self.position(state))
        (local / DATA_POSITION).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if self.uploader is not None:
            self.uploader.submit_checkpoint(local, state.global_step, extra_files=extra,
                                            best=state.best_global_step)
        else:
            rel = publish_checkpoint(self.store, self.layout, local, state.global_step, self.keep, extra)
            print(f"kubetune: checkpoint committed: {self.store.url(rel)}", flush=True)
