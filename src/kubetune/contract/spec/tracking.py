"""The `tracking:` section of a job spec: which experiment trackers a run reports to.

Split from `kubetune.contract.spec.job` (which re-exports it) to keep modules small. pydantic only.
"""

from __future__ import annotations

from pydantic import Field

from kubetune.contract.spec.kubernetes import Strict


class MlflowSpec(Strict):
    """An MLflow tracking server and experiment. Credentials (MLFLOW_TRACKING_TOKEN,
    MLFLOW_TRACKING_USERNAME/PASSWORD) come by reference: `kubernetes.secret_env` on a cluster,
    the user's environment locally."""

    tracking_uri: str = Field(description="the tracking server, e.g. http://mlflow.mlops:5000")
    experiment: str = Field(min_length=1, description="experiment name; created when missing")


class WandbSpec(Strict):
    """A Weights & Biases project. The API key comes only by reference: `kubernetes.secret_env:
    {WANDB_API_KEY: {secret: ..., key: ...}}` on a cluster, the user's environment locally
    (or WANDB_MODE=offline, which writes the run's files without a key)."""

    project: str = Field(min_length=1, description="the W&B project (rendered as WANDB_PROJECT)")
    entity: str | None = Field(default=None, description="team or user (WANDB_ENTITY); unset: the key's default")


class TrackingSpec(Strict):
    """Experiment trackers, by configuration. Each tracker's library comes with the
    `tracking` extra; a tracker asked for but not installed is a one-line error before training."""

    tensorboard: bool = Field(
        default=False,
        description="write TensorBoard event files to runs/<run>/tensorboard/ in the store "
        "(synced with each checkpoint upload and at the end): tensorboard --logdir on that folder",
    )
    mlflow: MlflowSpec | None = Field(
        default=None,
        description="log params, metrics per logging step, the test metrics and the model's store URI "
        "(tag) to an MLflow run; a resumed run continues the same MLflow run",
    )
    wandb: WandbSpec | None = Field(
        default=None,
        description="log the run to Weights & Biases through the Trainer's WandbCallback; a resumed "
        "run continues the same W&B run",
    )
