"""Trials on a cluster: each trial's train Job, submitted to the job's Kueue queue
(`kubernetes.queue`), at most `sweep.parallel` at once (the controller starts no more).

A trial's objects are the train stage its spec renders (`launch.render`), with two changes:
every object carries the sweep's labels (names.SWEEP_LABEL, names.TRIAL_LABEL), so a restarted
controller finds its trials, and its pods the sweep and trial number for their trackers
(`trials.mark_trial`); and the Job's podFailurePolicy ends the Job at once on
EXIT_PRUNED (a pruned trial is done, not to be retried). They are validated again against the
Kubernetes schemas after the change.

Jobs outlive the controller: a stopped controller leaves them running, and its restart adopts
them by name (`adopt`). A trial's end is its Job's: Complete is exit 0; Failed with the run's
PRUNE marker and its status `pruned` is EXIT_PRUNED; any other failure is a failed trial.
"""

from __future__ import annotations

from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_BAD_INPUT, EXIT_PRUNED
from kubetune.contract.layout import RunLayout
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.sweep.trials import mark_trial
from kubetune.storage import Store

# The exit code a Job that failed for no reason the store explains is reported with.
EXIT_JOB_FAILED = 1


def trial_objects(spec: JobSpec, sweep: str, number: int, k8s_version: str | None = None,
                  verdict_s: float | None = None) -> list[dict[str, Any]]:
    """The objects of trial `number` of `sweep` (its spec: `trials.trial_spec`)."""
    from kubetune.launch.render import default_k8s_version, render_objects
    from kubetune.launch.validate import validate_objects

    objs = render_objects(spec, stage=kn.STAGE_TRAIN, k8s_version=k8s_version)
    mark_trial(objs, sweep, number, verdict_s)
    for obj in objs:
        if obj["kind"] == "Job":
            for rule in obj["spec"].get("podFailurePolicy", {}).get("rules", []):
                codes = rule.get("onExitCodes")
                if rule["action"] == "FailJob" and codes and EXIT_BAD_INPUT in codes["values"]:
                    codes["values"] = sorted({*codes["values"], EXIT_PRUNED})
    validate_objects(objs, k8s_version or default_k8s_version(spec, kn.STAGE_TRAIN))
    return objs


class ClusterTrials:
    """The controller's runner for trials as Jobs (`controller.Runner`)."""

    def __init__(self, cluster: Any, store: Store, sweep: str, k8s_version: str | None = None,
                 verdict_s: float | None = None):
        self.cluster = cluster
        self.verdict_s = verdict_s  # trials.verdict_wait: set when the sweep prunes
        self.store = store
        self.sweep = sweep
        self.k8s_version = k8s_version
        self._jobs: dict[int, tuple[str, str]] = {}  # trial number -> (train Job name, run folder)

    def start(self, number: int, spec: JobSpec) -> None:
        from kubetune.launch.render import names

        for obj in trial_objects(spec, self.sweep, number, self.k8s_version, self.verdict_s):
            if self.cluster.read(obj["kind"], obj["metadata"]["name"]) is not None:
                self.cluster.delete(obj["kind"], obj["metadata"]["name"], "Foreground")  # a failed attempt's
            self.cluster.create(obj)
        self._jobs[number] = (names(spec).train, spec.name)

    def adopt(self, number: int, spec: JobSpec) -> bool:
        from kubetune.launch.render import names

        job = names(spec).train
        if self.cluster.read("Job", job) is None:
            return False
        self._jobs[number] = (job, spec.name)
        return True

    def finished(self) -> dict[int, int]:
        from kubetune.launch.cluster.state import job_state

        ended: dict[int, int] = {}
        for number, (job, run) in list(self._jobs.items()):
            obj = self.cluster.read("Job", job)
            if obj is None:
                ended[number] = EXIT_JOB_FAILED
            else:
                state = job_state(obj)
                if not state.done:
                    continue
                ended[number] = 0 if state.phase == "Succeeded" else self._failure_code(run)
            del self._jobs[number]
        return ended

    def _failure_code(self, run: str) -> int:
        layout = RunLayout(run)
        if self.store.exists(layout.prune_marker) and self.store.exists(layout.status):
            if self.store.read_json(layout.status).get("state") == "pruned":
                return EXIT_PRUNED
        return EXIT_JOB_FAILED

    def stop(self) -> None:
        """Nothing to do: the Jobs keep running, and a restarted controller adopts them."""
