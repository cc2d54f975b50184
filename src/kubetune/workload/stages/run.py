"""The typed objects a training run passes between its phases: setup → train → finish.

`Run` is what `training.setup` checked (nothing loaded yet); `Trained` is what the training
loop left behind. Plain dataclasses instead of dicts, so every phase says what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kubetune.contract.layout import RunLayout
from kubetune.contract.spec.job import JobSpec
from kubetune.storage import Store
from kubetune.workload.data.tables import SplitFiles, Splits
from kubetune.workload.tasks import Prepared, Task

if TYPE_CHECKING:  # the Trainer stack is loaded only once training starts
    from transformers.trainer_utils import TrainOutput

    from kubetune.workload.trainer.kubetune_trainer import KubetuneTrainer


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
    # The files each split resolved to at setup (pinned for the run; `lineage`), and the
    # registry version a warm start began from.
    resolved: dict[str, SplitFiles] = field(default_factory=dict)
    parent: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def samples_per_step(self) -> int:
        """Samples of one optimizer step across all ranks."""
        t = self.spec.train
        return t.batch_size * t.gradient_accumulation_steps * self.world_size


@dataclass
class Trained:
    """The training loop's outcome: the Trainer (with its best model loaded), the datasets it
    trained on, the Trainer's result, and whether it stopped for SIGTERM."""

    trainer: KubetuneTrainer
    prepared: Prepared
    result: TrainOutput
    preempted: bool
