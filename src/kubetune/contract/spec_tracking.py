"""The `tracking:` section of a job spec: which experiment trackers a run reports to.

Split from `kubetune.contract.spec` (which re-exports it) to keep modules small. pydantic only.
"""

from __future__ import annotations

from pydantic import Field

from kubetune.contract.spec_kubernetes import Strict


class TrackingSpec(Strict):
    """Experiment trackers, by configuration. Each tracker's library comes with the
    `tracking` extra; a tracker asked for but not installed is a one-line error before training."""

    tensorboard: bool = Field(
        default=False,
        description="write TensorBoard event files to runs/<run>/tensorboard/ in the store "
        "(synced with each checkpoint upload and at the end): tensorboard --logdir on that folder",
    )
