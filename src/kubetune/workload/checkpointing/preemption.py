"""SIGTERM (preemption, eviction, node drain): save a checkpoint, then exit 75 if it landed.

Kubernetes sends SIGTERM and, `terminationGracePeriodSeconds` later, SIGKILL. The handler only
sets a flag; at the end of the current optimizer step the callback asks the Trainer to save a
checkpoint and stop. The entrypoint then waits (within the grace period) for the background
upload to commit it and exits with EXIT_RETRY_AFTER_CHECKPOINT, which the rendered
podFailurePolicy treats as retryable; the restarted pod resumes from LATEST. When nothing new
was committed on the way out (SIGTERM before training, an upload that did not land in time) the
exit is EXIT_INTERRUPTED_UNSAVED instead: 75 always means "saved" (`Checkpointer.
leave_after_preemption`).

Why not `TrainingArguments(enable_jit_checkpoint=True)` (transformers 5): it waits a fixed
3 s before acting, saves from `on_pre_optimizer_step` (gradients computed, step not taken)
without firing `on_save` (so nothing reaches the object store), and then lets `train()`
return normally, which the entrypoint would take for a finished run and commit as the final
model. It also does not agree across ranks, so one rank could stop while the others wait in
an all-reduce.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from transformers import TrainerCallback, TrainingArguments

from kubetune.contract.exitcodes import EXIT_INTERRUPTED_UNSAVED


class Preemption:
    """Process-wide SIGTERM state. Before training starts nothing is lost by leaving at once,
    and nothing new is saved, so the handler exits EXIT_INTERRUPTED_UNSAVED right away; once
    the training loop (or the final drain of uploads, `Checkpointer.drain_final`) runs it only
    sets the flag."""

    def __init__(self) -> None:
        self.requested = False
        self.received_at: float | None = None
        self.training = False
        self._installed = False
        self._previous: Any = None

    def install(self) -> Preemption:
        if not self._installed:
            self._previous = signal.signal(signal.SIGTERM, self._handler)
            self._installed = True
        return self

    def uninstall(self) -> None:
        """Put back the SIGTERM handler `install` found, and forget this run's signal: a
        process that runs the workload in-process (a test, a library caller) must not keep a
        handler that exits 75 on its own SIGTERM (issue 28)."""
        if self._installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)
            self._installed, self._previous = False, None
        self.requested, self.received_at, self.training = False, None, False

    @contextmanager
    def caught(self) -> Iterator[Preemption]:
        """SIGTERM handled by this object for the length of the block, whatever ends it."""
        self.install()
        try:
            yield self
        finally:
            self.uninstall()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            return
        self.requested = True
        self.received_at = time.monotonic()
        if not self.training:
            print("kubetune: SIGTERM received before training: interrupted, nothing new saved", file=sys.stderr,
                  flush=True)
            raise SystemExit(EXIT_INTERRUPTED_UNSAVED)
        print("kubetune: SIGTERM received: saving a checkpoint at the end of this step", file=sys.stderr, flush=True)

    def remaining(self, grace_s: float, margin_s: float = 5.0) -> float:
        """Seconds left of the grace period (less a margin for the process to exit)."""
        if self.received_at is None:
            return grace_s - margin_s
        return max(grace_s - margin_s - (time.monotonic() - self.received_at), 0.0)


PREEMPTION = Preemption()


class PreemptionCallback(TrainerCallback):
    """Turns the SIGTERM flag into 'save now and stop' at the end of an optimizer step. In a
    multi-process run the ranks agree first (one all-reduce of a flag per step), so they all
    save and stop at the same step."""

    def __init__(self, preemption: Preemption = PREEMPTION):
        self.preemption = preemption

    def on_train_begin(self, args, state, control, **kwargs):
        self.preemption.training = True
        if self.preemption.requested:  # arrived while the Trainer was being set up
            control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_rank_requested(args):
            control.should_save = True
            control.should_evaluate = False
            control.should_training_stop = True

    def on_epoch_end(self, args, state, control, **kwargs):
        # Stopping mid-epoch still ends the epoch: the Trainer leaves its step loop, fires
        # on_epoch_end, and with an epoch schedule the default flow then asks for a full
        # evaluation and a second save of the step just checkpointed (a second upload), which
        # delayed the exit after SIGTERM by half a minute. The step's checkpoint is already saved.
        if self.preemption.requested:
            control.should_evaluate = False
            control.should_save = False

    def on_train_end(self, args, state, control, **kwargs):
        # `training` stays set: a SIGTERM between the loop's end and the final drain
        # (`Checkpointer.drain_final`) must set the flag, not exit at once with nothing saved.
        # `Preemption.caught` clears it when the run leaves.
        pass

    def _any_rank_requested(self, args: TrainingArguments) -> bool:
        flag = self.preemption.requested
        if int(getattr(args, "world_size", 1) or 1) > 1:
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                tensor = torch.tensor([1 if flag else 0], device=args.device)
                dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
                flag = bool(tensor.item())
                if flag and not self.preemption.requested:
                    self.preemption.requested = True
                    self.preemption.received_at = time.monotonic()
        return flag
