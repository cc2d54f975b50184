"""The typed objects a training run passes between its phases: setup → train → finish.

`Run` is what `training.setup` checked (nothing loaded yet); `Trained` is what the training
loop left behind. Plain dataclasses instead of dicts, so every phase says what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune.contract.layout import RunLayout
from kubetune.contract.spec.job import JobSpec, SpecError
from kubetune.storage import Store
from kubetune.workload.data.tables import PinnedData, Splits
from kubetune.workload.tasks import Prepared, Task

if TYPE_CHECKING:  # the Trainer stack is loaded only once training starts
    from transformers.trainer_utils import TrainOutput

    from kubetune.workload.trainer.kubetune_trainer import KubetuneTrainer


@dataclass(frozen=True)
class PodEnv:
    """What the pod's environment says, read once by the entrypoint (`entrypoints.arguments.
    pod_env`) and passed down, so no module deep inside reads a variable on its own. Rank and
    sizes are torchrun's (1 process: rank 0 of 1); the folders default under the temp dir."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    restart_count: int | None = None  # torchrun's TORCHELASTIC_RESTART_COUNT (None: not under torchrun)
    workdir_root: Path = Path("/tmp/kubetune-work")  # names.ENV_WORKDIR: the Trainer's local scratch
    cache_root: Path = Path("/tmp/kubetune-cache")  # names.ENV_CACHE: downloaded models and data
    run_folder: str | None = None  # names.ENV_RUN: the run folder when it is not the job's name
    spec_file: str | None = None  # names.ENV_SPEC_FILE: the user's spec file, for error lines
    spec_mount: str | None = None  # names.ENV_SPEC: the pod's mounted copy of the spec
    die_with_parent: int | None = None  # names.ENV_DIE_WITH_PARENT: a local run's parent pid
    retry_flag: Path | None = None  # names.ENV_RETRY_FLAG: distrun's "a checkpoint was committed" flag
    pod_name: str = ""  # names.ENV_POD_NAME, else the host name: who holds the lease
    node_rank: int = 0  # names.ENV_NODE_RANK / ENV_NUM_NODES: a prediction shard's place
    num_nodes: int | None = None  # None: not a rendered predict Job (RANK/WORLD_SIZE place the shard)
    sweep: str | None = None  # names.ENV_SWEEP: a sweep's trial: the sweep's job name
    trial: int | None = None  # names.ENV_TRIAL: and the trial's number
    sweep_verdict_s: float | None = None  # names.ENV_SWEEP_VERDICT_SECONDS: wait this long for each verdict
    # W&B's own variables, as far as kubetune looks at them: the mode, whether an API key is
    # there (never the key itself: this object may be printed), and the folder for its files.
    wandb_mode: str = ""  # names.ENV_WANDB_MODE, lower case
    wandb_api_key_set: bool = False  # names.ENV_WANDB_API_KEY
    wandb_dir: Path | None = None  # names.ENV_WANDB_DIR
    kubeflow_status: bool = False  # names.ENV_KUBEFLOW_STATUS_URL: Kubeflow Trainer's status endpoint is given
    # The Job and JobSet engines' progress ConfigMap (names.ENV_PROGRESS_CONFIGMAP), the folder of
    # the pod's projected API credentials (names.ENV_PROGRESS_CREDENTIALS) and the API server
    # (https://names.ENV_KUBERNETES_HOST:ENV_KUBERNETES_PORT); reported only when all are given.
    progress_configmap: str | None = None
    progress_credentials: Path | None = None
    kubernetes_server: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def global_batch(spec: JobSpec, world_size: int) -> int | None:
    """The samples of one optimizer step when the run trains in global batches, else None
    (the Trainer's own batches: batch x accumulation x ranks). Global batches are used when
    `train.global_batch_size` is set or the gang is elastic (`resources.nodes: {min, max}`);
    unset, the global batch is the full gang's: batch x accumulation x `max` nodes x their
    processes. Refuses a world size that cannot split it into whole per-device batches."""
    t, r = spec.train, spec.resources
    if t.global_batch_size is None and not r.elastic:
        return None
    size = t.global_batch_size or t.batch_size * t.gradient_accumulation_steps * r.max_nodes * max(r.gpus_per_node, 1)
    if size % (t.batch_size * world_size):
        raise SpecError(f"train.global_batch_size: {size} samples per step cannot be split over {world_size} "
                        f"rank(s) of train.batch_size {t.batch_size}; choose a multiple of "
                        f"{t.batch_size} x every world size the gang may have")
    return size


@dataclass
class Run:
    """Everything validated and ready; the model is not loaded yet."""

    spec: JobSpec
    store: Store
    layout: RunLayout
    task: Task
    splits: Splits
    model_uri: str
    tokenizer_uri: str
    rank: int
    world_size: int
    workdir: Path
    env: PodEnv
    # The files each split resolved to at setup, pinned for the run, and the rows read from
    # them (`lineage`); the registry version a warm start began from.
    pinned: PinnedData = field(default_factory=PinnedData)
    parent: str | None = None
    # The pinned training files' identities as this attempt found them (`data.pinning`).
    data_records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def samples_per_step(self) -> int:
        """Samples of one optimizer step across all ranks: the global batch when the run trains
        in global batches (an elastic gang, `sampler.global_batch`)."""
        t = self.spec.train
        return self.global_batch or t.batch_size * t.gradient_accumulation_steps * self.world_size

    @property
    def global_batch(self) -> int | None:
        return global_batch(self.spec, self.world_size)

    @property
    def accumulation(self) -> int:
        """Per-device batches of one optimizer step on each rank: the spec's, or what splits the
        global batch over the ranks there are now."""
        t = self.spec.train
        size = self.global_batch
        return size // (t.batch_size * self.world_size) if size else t.gradient_accumulation_steps


@dataclass
class Trained:
    """The training loop's outcome: the Trainer (with its best model loaded), the datasets it
    trained on, the Trainer's result, whether it stopped for SIGTERM (or a sweep's PRUNE), and the speed settings
    the run actually used (for `metrics/summary.json`)."""

    trainer: KubetuneTrainer
    prepared: Prepared
    result: TrainOutput
    preempted: bool
    speed_settings: dict[str, Any] | None = None
    pruned_at: int | None = None  # the step a sweep's PRUNE marker stopped it at (`trainer.pruning`)
