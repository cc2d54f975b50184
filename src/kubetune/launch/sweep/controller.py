"""The sweep's loop: ask Optuna for a trial, start it as a run, watch its validation metrics,
prune it through its PRUNE marker, tell Optuna how it ended, until the budget is spent.

The controller is the launcher process (`kubetune sweep`), not a Job on the cluster: it needs
nothing but the store (and, for cluster trials, the API server), and everything it knows is in
the store: the study (`study.StoreJournal`) and the trials' run folders. Stopped at any moment
(Ctrl-C, SIGKILL, a closed laptop) and started again with the same command, it continues:

* trials the study holds as finished are never run again;
* a trial the study holds as running is found again: a cluster trial by its Job
  (`Runner.adopt`), else started again in its own run folder, where it resumes from its last
  checkpoint (a local trial's processes die with the controller);
* the budget counts every trial the study has ever asked for, so none is lost or added.

Why not a controller Job on the cluster: it would need RBAC to create Jobs, an image with the
sweep extra, and its own restart story, for a loop that is idle between polls; the launcher's
loop, restartable from the store, runs the same trials with none of that.

Pruning needs the trial's validation metric at each evaluation: a trial of a pruning sweep
writes each evaluation to its `sweep/evaluations.json` and waits for the controller's verdict on
that step (`workload.trainer.pruning`). The controller reports every new evaluation to Optuna in
step order and answers each in the trial's `sweep/verdicts.json`: "continue", or "prune" with
the trial's PRUNE marker; a pruned trial leaves at that step's checkpoint with EXIT_PRUNED,
recorded as pruned, not failed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from kubetune.contract.exitcodes import EXIT_PRUNED, EXIT_RETRY_AFTER_CHECKPOINT
from kubetune.contract.layout import RunLayout, trial_run_name
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.sweep.results import write_results
from kubetune.launch.sweep.study import distributions, grid_size, open_study
from kubetune.launch.sweep.trials import evaluations, objective_value, read_verdicts, trial_spec
from kubetune.storage import Store

POLL_SECONDS = 2.0


class Runner(Protocol):
    """Where trials run: local processes (`sweep.local`) or Jobs (`sweep.cluster`)."""

    def start(self, number: int, spec: JobSpec) -> None: ...

    def finished(self) -> dict[int, int]:
        """Trials that ended since the last call: number -> exit code."""
        ...

    def adopt(self, number: int, spec: JobSpec) -> bool:
        """After a restart: True when trial `number` still runs (or has ended) where this runner
        can see it, so it need not be started again."""
        ...

    def stop(self) -> None: ...


def budget(spec: JobSpec) -> int | None:
    """How many trials the sweep runs in all (None: until the wall-clock limit)."""
    sweep = spec.sweep
    assert sweep is not None
    if sweep.sampler == "grid":
        return min(sweep.trials or grid_size(sweep), grid_size(sweep))
    return sweep.trials


class Controller:
    """One sweep's loop over one runner (see the module's docstring)."""

    def __init__(self, spec: JobSpec, store: Store, runner: Runner, log: Callable[[str], None] | None = None,
                 poll_s: float | None = None, clock: Callable[[], datetime] = datetime.now):
        assert spec.sweep is not None
        self.spec, self.sweep, self.store, self.runner = spec, spec.sweep, store, runner
        self.log = log or (lambda line: print(f"kubetune: sweep {spec.name}: {line}", file=sys.stderr, flush=True))
        self.poll_s = POLL_SECONDS if poll_s is None else poll_s
        self.study = open_study(store, spec.name, spec.sweep)
        self.dists = distributions(spec.sweep)
        self.active: dict[int, optuna.trial.Trial] = {}
        self.clock = clock  # the wall clock `timeout_minutes` is measured on (a test's is faster)
        self.spent: str | None = None  # which budget stopped new trials: "trials", "timeout_minutes"

    def run(self) -> dict[str, Any]:
        """Run the sweep to the end of its budget; the summary (summary.json's content)."""
        self._recover()
        try:
            while True:
                for number, code in self.runner.finished().items():
                    self._finish(number, code)
                for number in list(self.active):
                    self._report(number)
                while len(self.active) < self.sweep.parallel and self._budget_left():
                    self._start_new()
                if not self.active:
                    break
                time.sleep(self.poll_s)
        finally:
            self.runner.stop()
            self._write()
        return self._write()

    def _write(self) -> dict[str, Any]:
        return write_results(self.store, self.spec.name, self.sweep, self.study, spent=self.spent)

    # -- the budget ------------------------------------------------------------------------------
    def _budget_left(self) -> bool:
        trials = self.study.get_trials(deepcopy=False)
        total = budget(self.spec)
        if total is not None and len(trials) >= total:
            self.spent = "trials"
            return False
        if self.sweep.timeout_minutes is not None:
            starts = [t.datetime_start for t in trials if t.datetime_start]
            now = self.clock()
            began = min(starts) if starts else now
            if (now - began).total_seconds() >= self.sweep.timeout_minutes * 60:
                if self.spent is None:
                    self.log(f"timeout_minutes ({self.sweep.timeout_minutes:g}) spent: no new trial starts")
                self.spent = "timeout_minutes"
                return False
        return True

    # -- starting ----------------------------------------------------------------------------------
    def _start_new(self) -> None:
        trial = self.study.ask(self.dists)
        spec = trial_spec(self.spec, trial.number, trial.params)
        self.log(f"trial {trial.number} starts: {_params(trial.params)} (run {RunLayout(spec.name).base})")
        self.active[trial.number] = trial
        self.runner.start(trial.number, spec)
        self._write()

    def _recover(self) -> None:
        """Trials the study holds as running: found again by the runner, else started again in
        their run folders (they resume from their checkpoints)."""
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial = optuna.trial.Trial(self.study, frozen._trial_id)  # Optuna's way back to a running trial
            spec = trial_spec(self.spec, frozen.number, frozen.params)
            self.active[frozen.number] = trial
            if self.runner.adopt(frozen.number, spec):
                self.log(f"trial {frozen.number} found again, still running")
            else:
                self.log(f"trial {frozen.number} started again: it resumes from its last checkpoint")
                self.runner.start(frozen.number, spec)

    # -- watching ----------------------------------------------------------------------------------
    def _report(self, number: int) -> None:
        """Report the trial's new evaluations to Optuna, in step order, and answer each one in its
        verdicts (the trial waits for them: `workload.trainer.pruning`): "prune", with the
        trial's PRUNE marker, when the pruner says stop, else "continue"."""
        trial = self.active[number]
        run = trial_run_name(self.spec.name, number)
        frozen = self._frozen(number)
        seen = set(frozen.intermediate_values)
        layout = RunLayout(run)
        verdicts = read_verdicts(self.store, run)
        answered = dict(verdicts)
        metric = self.sweep.objective.metric
        for step, value in sorted(evaluations(self.store, run, metric).items()):
            pruned_at = frozen.user_attrs.get("pruned_at_step")
            if step in seen:  # reported before a restart: answer it again if the answer was lost
                verdicts.setdefault(str(step), "prune" if pruned_at is not None and pruned_at <= step else "continue")
                continue
            trial.report(value, step)
            seen.add(step)
            if pruned_at is not None:
                verdicts[str(step)] = "prune"
            elif trial.should_prune():
                trial.set_user_attr("pruned_at_step", step)
                frozen = self._frozen(number)
                self.store.write_text(layout.prune_marker, f"pruned by the sweep's {self.sweep.pruner} pruner at "
                                                           f"step {step} ({metric} {value:.4f})\n")
                verdicts[str(step)] = "prune"
                self.log(f"trial {number}: pruned at step {step} ({metric} {value:.4f}); it stops at this checkpoint")
            else:
                verdicts[str(step)] = "continue"
        if verdicts != answered:
            self.store.write_json(layout.sweep_verdicts, verdicts)

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial:
        """Trial `number` as the study holds it now (a study's trials are numbered from 0)."""
        return self.study.get_trials(deepcopy=False)[number]

    def _finish(self, number: int, code: int) -> None:
        trial = self.active.get(number)
        if trial is None:
            return
        run = trial_run_name(self.spec.name, number)
        if code == EXIT_RETRY_AFTER_CHECKPOINT:  # interrupted with its checkpoint saved: it resumes
            self.log(f"trial {number} was interrupted; starting it again (it resumes)")
            self.runner.start(number, trial_spec(self.spec, number, trial.params))
            return
        self._report(number)  # its last evaluations, before the verdict
        del self.active[number]
        trial.set_user_attr("exit_code", code)
        values = evaluations(self.store, run, self.sweep.objective.metric)
        if code == EXIT_PRUNED:
            self.study.tell(trial, state=TrialState.PRUNED)
            self.log(f"trial {number} pruned (exit {code})")
        elif code == 0 and (value := objective_value(values, self.sweep.objective.direction)) is not None:
            self.study.tell(trial, value)
            self.log(f"trial {number} complete: {self.sweep.objective.metric} {value:.4f}")
        else:
            self.study.tell(trial, state=TrialState.FAIL)
            self.log(f"trial {number} failed (exit code {code}); its run: {RunLayout(run).base}")
        self._write()


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


