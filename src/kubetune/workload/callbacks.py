"""Trainer callbacks: visible progress, metrics in storage, checkpoints to object storage.

Only the main process (rank 0) writes to the store; every rank trains.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from kubetune.layout import RunLayout
from kubetune.storage import Store
from kubetune.workload.checkpoint import publish_checkpoint

log = logging.getLogger("kubetune.train")


class ProgressCallback(TrainerCallback):
    """One line per logging step (step, epoch, loss, lr, samples/s, ETA), and the same fields as
    one JSON line in `metrics/train.jsonl`, uploaded after each log so progress is visible in
    the store while the job runs."""

    def __init__(self, store: Store, layout: RunLayout, local_file: Path, samples_per_step: int):
        self.store = store
        self.layout = layout
        self.local_file = local_file
        self.samples_per_step = samples_per_step
        self._last: tuple[float, int] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.monotonic(), state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.monotonic()
        last_time, last_step = self._last or (now, state.global_step)
        steps = state.global_step - last_step
        rate = steps * self.samples_per_step / (now - last_time) if steps > 0 and now > last_time else None
        self._last = (now, state.global_step)
        record: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key, value in logs.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                record[key] = value
        if rate:
            record["samples_per_second"] = round(rate, 2)
            remaining = max(state.max_steps - state.global_step, 0)
            record["eta_seconds"] = round(remaining * self.samples_per_step / rate, 1)
        with self.local_file.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.store.upload_file(self.local_file, self.layout.train_metrics)
        print(format_progress(record, state.max_steps), flush=True, file=sys.stdout)


def format_progress(record: dict[str, Any], max_steps: int) -> str:
    step = record["step"]
    parts = [f"step {step}/{max_steps}", f"epoch {record.get('epoch', 0):.2f}"]
    if "loss" in record:
        parts.append(f"loss {record['loss']:.4f}")
    if "learning_rate" in record:
        parts.append(f"lr {record['learning_rate']:.2e}")
    for key, value in record.items():
        if key.startswith("eval_") and key not in ("eval_runtime",) and isinstance(value, float) and "per_second" not in key:
            parts.append(f"{key} {value:.4f}")
    if "samples_per_second" in record:
        parts.append(f"{record['samples_per_second']:.1f} samples/s")
    if "eta_seconds" in record:
        parts.append(f"eta {datetime.timedelta(seconds=int(record['eta_seconds']))}")
    return "kubetune: " + " | ".join(parts)


class CheckpointUploadCallback(TrainerCallback):
    """After the Trainer writes `checkpoint-N` locally, publish it to the store: files, then the
    commit marker, then LATEST."""

    def __init__(self, store: Store, layout: RunLayout, keep: int):
        self.store = store
        self.layout = layout
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if local.is_dir():
            rel = publish_checkpoint(self.store, self.layout, local, state.global_step, self.keep)
            print(f"kubetune: checkpoint committed: {self.store.url(rel)}", flush=True)
