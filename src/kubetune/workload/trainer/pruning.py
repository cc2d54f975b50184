"""A sweep's trial stops early when the sweep says so, at the step the sweep judged.

The sweep's controller (the launcher) asks the search (Optuna's pruner) whether a trial should go
on after each of its evaluations. A trial whose sweep prunes (names.ENV_SWEEP_VERDICT_SECONDS is
set) takes part in that exchange at each evaluation, which is also the step of a checkpoint
(evaluations and checkpoints share their schedule, `trainer.build`):

1. rank 0 writes the evaluation's metrics to `RunLayout.sweep_evaluations` at once, not through
   the background uploader that carries `metrics/train.jsonl` (that one may be seconds behind);
2. it waits, a bounded time, for the controller's verdict on this step in
   `RunLayout.sweep_verdicts`: "continue", or "prune" (the controller also writes the run's PRUNE
   marker then);
3. on "prune" the Trainer saves this step's checkpoint and stops, and the train stage leaves with
   EXIT_PRUNED instead of committing a model (`stages.training`).

Why wait rather than look for the marker and go on: a controller that polls the trial's metrics
and answers later lets a fast trial run past the step it was judged at, or to its end (a pruned
trial then finishes as complete, which is not the rule the sweep asked for). The wait is short
(the controller polls every few seconds) and bounded: a controller that is gone (a closed laptop
while trials run on a cluster) costs each evaluation that many seconds, never the run.

Why files in the store rather than a signal or an API: the workload never imports the launcher,
a trial may be a pod on a cluster the controller only reaches through the store, and the store
is where the two sides already meet. A run outside a pruning sweep only looks for the PRUNE
marker (a user may write one by hand to stop a trial). In a multi-process run rank 0 decides and
the ranks agree through one all-reduce of the flag, so they all stop at the same step.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from transformers import TrainerCallback

from kubetune.contract.layout import RunLayout
from kubetune.storage import Store

VERDICT_POLL_S = 0.25


class PruneCallback(TrainerCallback):
    """After each evaluation: stop (and checkpoint this step) when the sweep prunes this run."""

    def __init__(self, store: Store, layout: RunLayout, verdict_s: float | None = None):
        self.store = store
        self.layout = layout
        self.verdict_s = verdict_s  # None: not in a pruning sweep, only the PRUNE marker counts
        self.pruned_at: int | None = None
        self._reported: dict[str, dict[str, float]] | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.pruned_at is not None:
            return
        flag = self._verdict(state.global_step, metrics or {}) if state.is_world_process_zero else False
        if self._any_rank(args, flag):
            self.pruned_at = state.global_step
            control.should_training_stop = True
            control.should_save = True
            print(f"kubetune: pruned by the sweep at step {state.global_step}: leaving at this checkpoint",
                  flush=True)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.pruned_at is not None:  # the step's checkpoint is saved: no second evaluation and save
            control.should_evaluate = False
            control.should_save = False

    def _verdict(self, step: int, metrics: dict[str, Any]) -> bool:
        """Rank 0: whether this step ends the run. A store outage never ends the training: an
        unanswered or unreadable verdict means "go on", asked again at the next evaluation."""
        try:
            if self.verdict_s is not None:
                self._report(step, metrics)
                asked = time.monotonic()
                verdict = self._wait_for_verdict(step)
                if verdict is not None:
                    print(f"kubetune: the sweep's verdict on step {step}: {verdict} "
                          f"(after {time.monotonic() - asked:.1f} s)", flush=True)
                    return verdict == "prune"
                print(f"kubetune: no verdict from the sweep on step {step} within {self.verdict_s:g} s: going on",
                      flush=True)
            return self.store.exists(self.layout.prune_marker)
        except Exception:  # noqa: BLE001 - any store fault: not pruned
            return False

    def _report(self, step: int, metrics: dict[str, Any]) -> None:
        if self._reported is None:  # a resumed trial keeps what it reported before
            try:
                self._reported = self.store.read_json(self.layout.sweep_evaluations)
            except (OSError, ValueError):
                self._reported = {}
        self._reported[str(step)] = {
            k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        self.store.write_text(self.layout.sweep_evaluations, json.dumps(self._reported, sort_keys=True))

    def _wait_for_verdict(self, step: int) -> str | None:
        deadline = time.monotonic() + float(self.verdict_s or 0)
        while True:
            try:
                verdicts = self.store.read_json(self.layout.sweep_verdicts)
            except (OSError, ValueError):  # not written yet, or being replaced
                verdicts = {}
            if str(step) in verdicts:
                return str(verdicts[str(step)])
            if time.monotonic() >= deadline:
                return None
            time.sleep(VERDICT_POLL_S)

    @staticmethod
    def _any_rank(args, flag: bool) -> bool:
        if int(getattr(args, "world_size", 1) or 1) > 1:
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                tensor = torch.tensor([1 if flag else 0], device=args.device)
                dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
                flag = bool(tensor.item())
        return flag


def pruned_step(trainer) -> int | None:
    """The step a trainer's PruneCallback stopped it at, or None when it was not pruned."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, PruneCallback):
            return callback.pruned_at
    return None
