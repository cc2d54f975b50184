"""Where each artefact of a run lives under `storage.root` (docs/storage-layout.md).

Shared by the launcher (which reports a run's results) and the workload (which writes them),
so the two can never disagree on a path.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

# Beside a dataset's files (not under runs/): where they came from, their licence, and whether
# they are synthetic (`kubetune prepare-quickstart` writes one); a run's lineage.json copies it.
PROVENANCE_FILE = "provenance.json"


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
    def lease(self) -> str:
        """The one writer's lease (holder, expiry): `kubetune.workload.checkpointing.lease`."""
        return self._p("LEASE.json")

    @property
    def checkpoints(self) -> str:
        return self._p("checkpoints")

    def checkpoint(self, step: int) -> str:
        return self._p("checkpoints", checkpoint_name(step))

    @property
    def damaged(self) -> str:
        """Checkpoints set aside because their files did not match their COMMITTED marker
        (`kubetune.integrity`): moved here, never deleted, out of the resume rule's sight."""
        return self._p("damaged")

    def damaged_checkpoint(self, step: int) -> str:
        return self._p("damaged", checkpoint_name(step))

    @property
    def attempts(self) -> str:
        """Each attempt of the run: when it started, where it resumed from, its input files;
        the first attempt's files pin the run's data (`kubetune.workload.data.pinning`)."""
        return self._p("attempts.json")

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
    def samples_log(self) -> str:
        """Each optimizer step's sample ids and world size, of a run that trains in global batches."""
        return self._p("metrics", "samples.jsonl")

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
    def tensorboard(self) -> str:
        return self._p("tensorboard")

    @property
    def tracker_runs(self) -> str:
        """The experiment trackers' run ids (`{"mlflow": ID}`), written with the first
        checkpoint, so that a resumed run (and its evaluate stage) reports to the same run."""
        return self._p("tracking", "runs.json")

    @property
    def eval_metrics(self) -> str:
        return self._p("eval", "metrics.json")

    @property
    def eval_report(self) -> str:
        return self._p("eval", "report.txt")

    def eval_files(self, test: str | None, trained_test: str | None) -> tuple[str, str]:
        """The metrics and report of an evaluation on `test` (a spec's data.test) of the run
        trained with `trained_test`: `eval/metrics.json` for the run's own test data,
        `eval/<name>/metrics.json` for other test data (<name> from its file name), so scoring
        other data never overwrites the run's own scores. Shared so that the workload writes,
        and `kubetune run`'s summary reads, the same file."""
        if test == trained_test:
            return self.eval_metrics, self.eval_report
        folder = self._p("eval", eval_name(test))
        return posixpath.join(folder, "metrics.json"), posixpath.join(folder, "report.txt")

    @property
    def lineage(self) -> str:
        return self._p("lineage.json")

    @property
    def promotion(self) -> str:
        return self._p("promotion.json")

    @property
    def prune_marker(self) -> str:
        """Written by a sweep's controller when the search stops this trial early (docs/sweeps.md):
        the run checks for it at each evaluation and leaves at that checkpoint with
        exitcodes.EXIT_PRUNED. Its content is the controller's reason, one line."""
        return self._p("PRUNE")

    @property
    def sweep_evaluations(self) -> str:
        """A sweep's trial writes each evaluation's metrics here at once, `{step: {metric: value}}`
        (not through the background uploader that carries metrics/train.jsonl), so the sweep's
        controller can judge the step while the trial waits for its verdict (docs/sweeps.md)."""
        return self._p("sweep", "evaluations.json")

    @property
    def sweep_verdicts(self) -> str:
        """The sweep's controller's answer to each of those evaluations, `{step: "continue" | "prune"}`:
        the trial goes on, or leaves at this step's checkpoint."""
        return self._p("sweep", "verdicts.json")


@dataclass(frozen=True)
class SweepLayout:
    """A sweep's results and its study, next to its trials' runs: `sweeps/<job>/`
    (docs/sweeps.md, "What is stored"). The trials themselves are runs: `runs/<job>-tNNN/`."""

    job: str

    @property
    def base(self) -> str:
        return f"sweeps/{self.job}"

    @property
    def trials(self) -> str:
        """One JSON line per trial: number, parameters, state, objective, run folder, steps, times."""
        return f"{self.base}/trials.jsonl"

    @property
    def summary(self) -> str:
        """`best_trial`, `best_params`, `best_value` (and the objective, the counts by state)."""
        return f"{self.base}/summary.json"

    @property
    def journal(self) -> str:
        """The Optuna study: its journal, one object per appended batch of operations."""
        return f"{self.base}/study"

    def journal_entry(self, number: int) -> str:
        return f"{self.base}/study/{number:08d}.json"

    @property
    def plot(self) -> str:
        return f"{self.base}/sweep.png"


def trial_run_name(job: str, number: int) -> str:
    """The run folder (and the spec name) of a sweep's trial: `<job>-t003` (`-tNNN`)."""
    return f"{job}-t{number:03d}"


@dataclass(frozen=True)
class RegistryLayout:
    """A job's model registry, next to its runs: `registry/<job>/` (docs/retraining.md,
    "What is stored"). Versions point at run folders; CURRENT names the one in use."""

    job: str

    @property
    def base(self) -> str:
        return f"registry/{self.job}"

    @property
    def current(self) -> str:
        return f"{self.base}/CURRENT"

    @property
    def versions(self) -> str:
        return f"{self.base}/versions"

    def version(self, name: str) -> str:
        return f"{self.base}/versions/{name}/version.json"

    @property
    def pointers(self) -> str:
        return f"{self.base}/pointers"

    def pointer(self, generation: int) -> str:
        return f"{self.base}/pointers/{generation:08d}.json"

    @property
    def history(self) -> str:
        return f"{self.base}/history"


def version_name(number: int) -> str:
    return f"v{number:04d}"


def version_number(name: str) -> int | None:
    """The number of a `v0007` version name, or None for anything else."""
    if len(name) > 1 and name[0] == "v" and name[1:].isdigit():
        return int(name[1:])
    return None




def eval_name(test: str | None) -> str:
    """The folder name under `eval/` of scores on other test data: its file name without the
    extension, safe as one path part (`datasets/new/dev-other.tsv` -> `dev-other`)."""
    stem = posixpath.basename(str(test or "validation").rstrip("/")).split(".")[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "test"


def run_layout(spec_name: str, run_folder: str | None = None) -> RunLayout:
    """The layout of a run: `runs/<run_folder>/` when the run has a folder of its own (a
    scheduled retrain's Job name: names.ENV_RUN, read by the entrypoint), else `runs/<spec name>/`."""
    return RunLayout(run_folder or spec_name)


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def checkpoint_step(name: str) -> int | None:
    """The step of a `step-000200` folder name, or None for anything else."""
    if name.startswith("step-") and name[5:].isdigit():
        return int(name[5:])
    return None


def resume_step(latest: str | None, committed: Iterable[int]) -> int | None:
    """The checkpoint a resume starts from, decided here once for both sides (the workload
    resumes from it; `kubetune runs` calls a run with one resumable): the checkpoint LATEST
    names when it is committed, else the newest committed one; None when none is. `latest` is
    what the LATEST file says (None: no such file), `committed` the steps of the committed
    checkpoint folders.

    Why not LATEST alone: LATEST moves only after a commit marker, but it can still name a
    folder that is gone or not whole (removed by hand, lost with some of a store's objects),
    and a pod killed between its first checkpoint's marker and LATEST leaves no LATEST at
    all; a committed checkpoint is a place to resume from either way."""
    steps = sorted(set(committed))
    named = checkpoint_step(latest.strip()) if latest is not None else None
    if named is not None and named in steps:
        return named
    return steps[-1] if steps else None
