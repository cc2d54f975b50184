"""A sweep's trial stops early when the sweep says so: the PRUNE marker in its run folder.

The sweep's controller (the launcher) reads each trial's validation metrics from the store and
asks the search (Optuna's pruner) whether to go on; when not, it writes the run's PRUNE marker
(`contract.layout.RunLayout.prune_marker`). This callback looks for it after each evaluation,
which is the step of a checkpoint (evaluations and checkpoints share their schedule,
`trainer.build`): when it is there, the Trainer saves that step's checkpoint and stops, and the
train stage leaves with EXIT_PRUNED instead of committing a model (`stages.training`).

Why a marker in the store rather than a signal or an API: the workload never imports the
launcher, a trial may be a pod on a cluster the controller only reaches through the store, and
the store is where the two sides already meet. In a multi-process run the ranks agree first
(one all-reduce of a flag), so they all stop at the same step.
"""

from __future__ import annotations

from transformers import TrainerCallback

from kubetune.contract.layout import RunLayout
from kubetune.storage import Store


class PruneCallback(TrainerCallback):
    """After each evaluation: stop (and checkpoint this step) when the run's PRUNE marker exists."""

    def __init__(self, store: Store, layout: RunLayout):
        self.store = store
        self.layout = layout
        self.pruned_at: int | None = None

    def on_evaluate(self, args, state, control, **kwargs):
        if self.pruned_at is not None:
            return
        if self._any_rank_marked(args):
            self.pruned_at = state.global_step
            control.should_training_stop = True
            control.should_save = True
            print(f"kubetune: pruned by the sweep at step {state.global_step}: leaving at this checkpoint",
                  flush=True)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.pruned_at is not None:  # the step's checkpoint is saved: no second evaluation and save
            control.should_evaluate = False
            control.should_save = False

    def _any_rank_marked(self, args) -> bool:
        try:
            flag = self.store.exists(self.layout.prune_marker)
        except Exception:  # a store outage must not end the training: not pruned, asked again next time
            flag = False
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
