"""Where each artefact of a run lives under `storage.root` (README.md, "What a run leaves in storage").

Shared by the launcher (which reports a run's results) and the workload (which writes them),
so the two can never disagree on a path.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from kubetune.contract.names import ENV_RUN


@dataclass(frozen=True)
class RunLayout:
    job: str

    @property
    def base(self) -> str:
        return f"runs/{self.job}"

    def _p(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts)

    @property
    def spec(self) -> str:
        return self._p("spec.yaml")

    @property
    def checkpoints(self) -> str:
        return self._p("checkpoints")

    def checkpoint(self, step: int) -> str:
        return self._p("checkpoints", checkpoint_name(step))

    @property
    def latest(self) -> str:
        return self._p("checkpoints", "LATEST")

    @property
    def model(self) -> str:
        return self._p("model")

    @property
    def train_metrics(self) -> str:
        return self._p("metrics", "train.jsonl")

    @property
    def summary(self) -> str:
        return self._p("metrics", "summary.json")

    @property
    def status(self) -> str:
        """The train stage's own account of the run (running, preempted, complete), read by
        `kubetune runs` and `kubetune show`; a killed pod leaves `running` with a stale time."""
        return self._p("metrics", "status.json")

    @property
    def curves(self) -> str:
        return self._p("metrics", "curves.png")

    @property
    def eval_metrics(self) -> str:
        return self._p("eval", "metrics.json")

    @property
    def eval_report(self) -> str:
        return self._p("eval", "report.txt")




def run_layout(spec_name: str) -> RunLayout:
    """The layout of this process's run: `runs/$KUBETUNE_RUN/` when set, else `runs/<spec name>/`."""
    return RunLayout(os.environ.get(ENV_RUN) or spec_name)


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def checkpoint_step(name: str) -> int | None:
    """The step of a `step-000200` folder name, or None for anything else."""
    if name.startswith("step-") and name[5:].isdigit():
        return int(name[5:])
    return None
