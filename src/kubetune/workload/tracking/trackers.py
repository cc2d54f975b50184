"""Experiment trackers from the spec's `tracking:` section, as Trainer callbacks (MLflow in
`tracking_mlflow`, Weights & Biases in `tracking_wandb`, their shared run ids in `tracker_runs`).

TensorBoard: the Hugging Face Trainer's own `TensorBoardCallback`, given a writer on a local
folder of the pod's scratch; `TensorBoardSync` copies that folder to `runs/<run>/tensorboard/`
in the store after each checkpoint save and at the end of training, so `tensorboard --logdir`
on the store folder (or bucket) shows the run while it trains. A resumed run writes a new
event file into the same store folder, and TensorBoard joins them by step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubetune.contract.errors import UserError
from kubetune.workload.stages.run import Run


def check_trackers(run: Run) -> None:
    """Before any training: a tracker asked for must be importable."""
    tracking = run.spec.tracking
    if tracking is not None and tracking.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise UserError("tracking.tensorboard: needs the tensorboard package: pip install 'kubetune[tracking]'") from None
    if tracking is not None and tracking.mlflow is not None:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise UserError("tracking.mlflow: needs the mlflow package: pip install 'kubetune[tracking]'") from None
        from kubetune.workload.tracking.mlflow_run import check_mlflow

        check_mlflow(run.spec)  # the server answers, before the model loads
    if tracking is not None and tracking.wandb is not None:
        from kubetune.workload.tracking.wandb_run import check_wandb

        check_wandb(run.env)


def tracking_callbacks(run: Run) -> list[Any]:
    """The callbacks of the configured trackers; rank 0 only writes (the others get none)."""
    if not run.is_main or run.spec.tracking is None:
        return []
    callbacks: list[Any] = []
    if run.spec.tracking.mlflow is not None:
        from kubetune.workload.tracking.mlflow_run import mlflow_callbacks

        callbacks += mlflow_callbacks(run)
    if run.spec.tracking.wandb is not None:
        from kubetune.workload.tracking.wandb_run import wandb_callbacks

        callbacks += wandb_callbacks(run)
    if run.spec.tracking.tensorboard:
        callbacks += _tensorboard_callbacks(run)
    return callbacks


def _tensorboard_callbacks(run: Run) -> list[Any]:
    """TensorBoard's callback on a scratch folder, and the sync of that folder to the store."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers import TrainerCallback
    from transformers.integrations import TensorBoardCallback

    local = Path(run.workdir) / "tensorboard"
    local.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(local))
    store, rel = run.store, run.layout.tensorboard

    class TensorBoardSync(TrainerCallback):
        def _sync(self) -> None:
            writer.flush()
            try:
                store.upload_dir(local, rel)
            except Exception as exc:  # noqa: BLE001 - a tracker never fails a training
                print(f"kubetune: warning: tensorboard sync to {store.url(rel)} failed: {exc}", flush=True)

        def on_save(self, args, state, control, **kwargs):
            self._sync()

        def on_train_end(self, args, state, control, **kwargs):
            writer.flush()
            self._sync()

    return [TensorBoardCallback(tb_writer=writer), TensorBoardSync()]
