"""The controller's budget and its ASHA pruning, with real Optuna studies in a real store and
the trials scripted at the controller's `Runner` boundary: each scripted trial reports the
validation values a trial's pod would report, one evaluation at a time, and waits for the
controller's verdict on each before the next (as `workload.trainer.pruning` makes a real trial
do). No process runs: the point is the controller's decisions.

* `pruner: asha` is Optuna's SuccessiveHalvingPruner with rungs from `pruner_warmup_steps` and
  `asha_reduction_factor`, and the trials it stops are those its rule stops (checked by an
  independent reading of the rule over the recorded values, and against what median would do).
* `timeout_minutes` stops new trials once that long has passed since the first trial started
  (a clock that runs a minute per finished trial), lets the running ones finish, and says so in
  summary.json.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import optuna
import pytest

from kubetune.contract.exitcodes import EXIT_PRUNED
from kubetune.contract.layout import RunLayout, SweepLayout
from kubetune.contract.spec.job import validate_spec
from kubetune.launch.sweep.controller import Controller
from kubetune.launch.sweep.study import make_pruner
from kubetune.storage import Store


def job_spec(tmp_path, **sweep: Any):
    return validate_spec({
        "name": "sst",
        "model": {"source": "models/m"},
        "data": {"train": "datasets/train.tsv"},
        "storage": {"root": str(tmp_path / "store")},
        "train": {"checkpoint_every": 2, "max_steps": 8},
        "sweep": {
            "parameters": {"train.learning_rate": {"type": "loguniform", "low": 1.0e-5, "high": 1.0e-3}},
            "objective": {"metric": "accuracy", "direction": "maximize"},
            "sampler": "random", "seed": 3, "parallel": 1, **sweep,
        },
    })


class ScriptedTrials:
    """Trials whose pods are scripted as `workload.trainer.pruning` makes a real trial behave:
    trial N reports `evals[N]` (step -> eval_accuracy) one evaluation at a time to its
    `sweep/evaluations.json` and waits for the controller's verdict on that step in
    `sweep/verdicts.json`; "prune" ends it with EXIT_PRUNED, "continue" lets it report its next
    evaluation, and it ends with 0 after its last one. `on_end` is told each trial that ends."""

    def __init__(self, store: Store, evals: list[dict[int, float]], on_end=lambda number: None):
        self.store, self.evals, self.on_end = store, evals, on_end
        self.running: dict[int, tuple[str, list[tuple[int, float]]]] = {}
        self.waiting: dict[int, int] = {}  # trial number -> the step it waits for a verdict on
        self.started: list[int] = []

    def start(self, number: int, spec) -> None:
        self.started.append(number)
        self.running[number] = (spec.name, sorted(self.evals[number].items()))

    def finished(self) -> dict[int, int]:
        ended: dict[int, int] = {}
        for number, (run, left) in list(self.running.items()):
            layout = RunLayout(run)
            if number in self.waiting:
                verdicts = self.store.read_json(layout.sweep_verdicts) if self.store.exists(layout.sweep_verdicts) else {}
                verdict = verdicts.get(str(self.waiting[number]))
                if verdict is None:
                    continue  # still waiting
                del self.waiting[number]
                if verdict == "prune":
                    ended[number] = EXIT_PRUNED
                    continue
            if not left:
                ended[number] = 0
            else:
                step, value = left.pop(0)
                reported = self.store.read_json(layout.sweep_evaluations) if self.store.exists(layout.sweep_evaluations) else {}
                reported[str(step)] = {"eval_accuracy": value}
                self.store.write_json(layout.sweep_evaluations, reported)
                self.waiting[number] = step
        for number in ended:
            del self.running[number]
            self.on_end(number)
        return ended

    def adopt(self, number: int, spec) -> bool:
        return False

    def stop(self) -> None:
        pass


def records(store: Store) -> list[dict[str, Any]]:
    return [json.loads(line) for line in store.read_text(SweepLayout("sst").trials).splitlines()]


def asha_keeps(value: float, reached: list[float], eta: int) -> bool:
    """Successive halving's rule at one rung, as Optuna documents it: a trial goes on when its
    value is among the best max(1, n // eta) of the n values that reached the rung so far
    (its own included)."""
    best = sorted(reached, reverse=True)[: max(1, len(reached) // eta)]
    return value >= best[-1]


def test_the_asha_pruner_is_successive_halving_with_the_documented_rungs(tmp_path):
    sweep = job_spec(tmp_path, trials=1, pruner="asha", pruner_warmup_steps=2, asha_reduction_factor=2).sweep
    pruner = make_pruner(sweep)
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert (pruner._min_resource, pruner._reduction_factor, pruner._min_early_stopping_rate) == (2, 2, 0)
    assert make_pruner(job_spec(tmp_path, trials=1, pruner="asha").sweep)._min_resource == 1  # warmup 0: step 1


def test_asha_prunes_the_trials_its_rule_stops_and_no_others(tmp_path):
    spec = job_spec(tmp_path, trials=4, pruner="asha", pruner_warmup_steps=2, asha_reduction_factor=2)
    store = Store.from_spec(spec.storage)
    # Rungs at steps 2 and 4 (min resource 2, reduction factor 2).
    evals = [{2: 0.80, 4: 0.85, 6: 0.86},
             {2: 0.50, 4: 0.95, 6: 0.96},   # rung 0: worst of 2: stopped
             {2: 0.60, 4: 0.99, 6: 0.99},   # rung 0: below the best 1 of 3: stopped
             {2: 0.70, 4: 0.90, 6: 0.91}]   # rung 0: second of 4, in the best 2: goes on; rung 1: best of 2
    summary = Controller(spec, store, ScriptedTrials(store, evals), log=lambda line: None, poll_s=0).run()
    got = records(store)
    assert [r["state"] for r in got] == ["complete", "pruned", "pruned", "complete"]
    assert [r["pruned_at_step"] for r in got] == [None, 2, 2, None]
    assert store.read_text(RunLayout("sst-t001").prune_marker).startswith("pruned by the sweep's asha pruner at step 2")
    assert not store.exists(RunLayout("sst-t003").prune_marker)
    # Every evaluation was answered, in the step it was judged at: "continue" until the step the
    # trial was pruned at, "prune" there, and nothing after it (the trial left at that step).
    for record in got:
        verdicts = store.read_json(RunLayout(f"sst-t{record['number']:03d}").sweep_verdicts)
        stop = record["pruned_at_step"]
        expected = {str(step): "prune" if step == stop else "continue"
                    for step in evals[record["number"]] if stop is None or step <= stop}
        assert verdicts == expected, record["number"]
    # The rule, read again from the values the trials logged: at each rung a trial is kept
    # exactly when successive halving keeps it.
    reached: dict[int, list[float]] = {2: [], 4: []}
    for record in got:
        values = {int(k): v for k, v in record["intermediate"].items()}
        for rung in (2, 4):
            if rung not in values:
                break
            reached[rung].append(values[rung])
            kept = asha_keeps(values[rung], reached[rung], eta=2)
            assert kept == (record["pruned_at_step"] != rung), (record["number"], rung)
            if not kept:
                break
    # Median would have stopped trial 3 at step 2 (0.70 below trial 0's 0.80): the pruner in
    # use is successive halving, not median.
    assert evals[3][2] < evals[0][2]
    assert summary["best_trial"] == 3 and summary["best_value"] == pytest.approx(0.91)


def test_the_wall_clock_budget_stops_new_trials_and_is_recorded(tmp_path):
    spec = job_spec(tmp_path, timeout_minutes=2.5, parallel=1)  # no trial count: the clock is the budget
    store = Store.from_spec(spec.storage)
    elapsed = {"minutes": 0}

    def one_minute_per_trial(number: int) -> None:
        elapsed["minutes"] += 1

    def clock() -> datetime:
        return datetime.now() + timedelta(minutes=elapsed["minutes"])

    runner = ScriptedTrials(store, [{2: 0.5 + n / 100, 4: 0.6 + n / 100} for n in range(20)], one_minute_per_trial)
    lines: list[str] = []
    summary = Controller(spec, store, runner, log=lines.append, poll_s=0, clock=clock).run()
    # Trials start at 0, 1 and 2 minutes; at 3 minutes (>= 2.5) none starts, and the sweep ends
    # once the running one has finished.
    assert runner.started == [0, 1, 2]
    assert [r["state"] for r in records(store)] == ["complete"] * 3
    assert summary["budget"] == {"trials": None, "timeout_minutes": 2.5, "spent": "timeout_minutes"}
    assert json.loads(store.read_text(SweepLayout("sst").summary))["budget"]["spent"] == "timeout_minutes"
    assert sum("timeout_minutes (2.5) spent: no new trial starts" in line for line in lines) == 1
    assert summary["best_trial"] == 2


def test_a_trial_count_budget_is_recorded_as_spent_by_trials(tmp_path):
    spec = job_spec(tmp_path, trials=2, timeout_minutes=60)
    store = Store.from_spec(spec.storage)
    runner = ScriptedTrials(store, [{2: 0.5}, {2: 0.6}, {2: 0.7}])
    summary = Controller(spec, store, runner, log=lambda line: None, poll_s=0).run()
    assert runner.started == [0, 1]
    assert summary["budget"] == {"trials": 2, "timeout_minutes": 60, "spent": "trials"}


def test_a_local_trials_processes_know_their_sweep_and_trial(tmp_path):
    """What `--local` starts for a trial: the train stage's processes, with the sweep and the
    trial number in their environment (the trial's trackers group its runs by them)."""
    from kubetune.contract import names as kn
    from kubetune.launch.local.pods import plan_stage
    from kubetune.launch.render import render_objects
    from kubetune.launch.sweep.trials import mark_trial, trial_spec

    spec = job_spec(tmp_path, trials=4)
    trial = trial_spec(spec, 2, {"train.learning_rate": 1e-4})
    objs = render_objects(trial, stage=kn.STAGE_TRAIN)
    mark_trial(objs, "sst", 2)
    procs = plan_stage(objs, kn.STAGE_TRAIN, tmp_path / "pods")
    assert procs and all(p.env[kn.ENV_SWEEP] == "sst" and p.env[kn.ENV_TRIAL] == "2" for p in procs)
    plain = plan_stage(render_objects(trial, stage=kn.STAGE_TRAIN), kn.STAGE_TRAIN, tmp_path / "plain")
    assert all(kn.ENV_SWEEP not in p.env for p in plain)
