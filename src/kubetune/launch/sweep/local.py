"""Trials on this machine: each trial's train stage as the local processes `kubetune run
--local --stage train` would start, at most `sweep.parallel` at once.

Each trial runs in a thread of the controller that runs its rendered pods
(`launch.local.pods.plan_stage`, `gang.run_processes`), so its processes are the controller's
children and die with it (names.ENV_DIE_WITH_PARENT): a stopped controller leaves no trial
behind, and its restart starts the trial again in its run folder, where it resumes from its
checkpoint (after the dead writer's lease runs out: `storage.lease_seconds`). Trials train only:
the objective is a validation metric, and the test split is the promotion gate's to score.
"""

from __future__ import annotations

import queue
import sys
import tempfile
import threading
from pathlib import Path

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec


def run_trial_locally(spec: JobSpec, sweep: str, number: int, verdict_s: float | None = None) -> int:
    """The train stage of trial `number` of `sweep` (its spec: `trials.trial_spec`) as local
    processes, marked as the trial (`trials.mark_trial`); its exit code."""
    from kubetune.launch.local.pods import plan_stage, run_processes
    from kubetune.launch.render import render_objects
    from kubetune.launch.sweep.trials import mark_trial

    objs = render_objects(spec, stage=kn.STAGE_TRAIN)
    mark_trial(objs, sweep, number, verdict_s)
    with tempfile.TemporaryDirectory(prefix=f"kubetune-{spec.name}-") as tmp:
        procs = plan_stage(objs, kn.STAGE_TRAIN, Path(tmp))
        return run_processes(procs, grace_s=spec.kubernetes.termination_grace_period_seconds)


class LocalTrials:
    """The controller's runner for the local trials of the sweep of job `sweep` (`controller.Runner`)."""

    def __init__(self, sweep: str, verdict_s: float | None = None) -> None:
        self.sweep = sweep
        self.verdict_s = verdict_s  # trials.verdict_wait: set when the sweep prunes
        self._threads: dict[int, threading.Thread] = {}
        self._ended: queue.Queue[tuple[int, int]] = queue.Queue()

    def start(self, number: int, spec: JobSpec) -> None:
        thread = threading.Thread(target=self._run, args=(number, spec), name=f"trial-{number}", daemon=True)
        self._threads[number] = thread
        thread.start()

    def _run(self, number: int, spec: JobSpec) -> None:
        try:
            code = run_trial_locally(spec, self.sweep, number, self.verdict_s)
        except Exception as exc:  # a trial that cannot start is a failed trial, not a dead sweep
            print(f"kubetune: trial {number} could not start: {exc}", file=sys.stderr, flush=True)
            code = 1
        self._ended.put((number, code))

    def finished(self) -> dict[int, int]:
        ended: dict[int, int] = {}
        while True:
            try:
                number, code = self._ended.get_nowait()
            except queue.Empty:
                return ended
            self._threads.pop(number, None)
            ended[number] = code

    def adopt(self, number: int, spec: JobSpec) -> bool:
        return False  # a local trial's processes died with the controller that started them

    def stop(self) -> None:
        """Nothing to do: the trials' processes die with this process (their parent-death signal)."""
