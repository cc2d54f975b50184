"""The sweep's Optuna study kept in the store: on the moto S3 server through s3fs (the store a
cluster sweep uses) a study reopened by a new controller holds every trial and continues the
numbering; a second controller writing the same sweep is refused, not interleaved."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from kubetune.contract.errors import UserError
from kubetune.contract.layout import SweepLayout
from kubetune.contract.spec.job import validate_spec
from kubetune.launch.sweep.study import StoreJournal, distributions, open_study
from kubetune.storage import Store

SPEC = {
    "name": "demo",
    "model": {"source": "models/m"},
    "data": {"train": "datasets/d/train.tsv"},
    "sweep": {
        "parameters": {"train.learning_rate": {"type": "loguniform", "low": 1.0e-5, "high": 1.0e-3},
                       "train.epochs": {"type": "int", "low": 1, "high": 3}},
        "objective": {"metric": "loss", "direction": "minimize"},
        "trials": 5, "sampler": "random", "seed": 7,
    },
}


def test_a_study_in_s3_survives_its_controller(s3_bucket):
    endpoint, bucket = s3_bucket
    store = Store(f"s3://{bucket}/sweeps-test", endpoint)
    sweep = validate_spec(SPEC).sweep
    study = open_study(store, "demo", sweep)
    first = study.ask(distributions(sweep))
    first.report(0.9, 2)
    study.tell(first, 0.5)
    second = study.ask(distributions(sweep))  # running when its controller goes away
    del study
    again = open_study(store, "demo", sweep)  # a new controller, nothing in memory
    trials = again.get_trials(deepcopy=False)
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE), (1, TrialState.RUNNING)]
    assert trials[0].params == first.params and trials[0].intermediate_values == {2: 0.9}
    assert trials[1].params == second.params
    assert again.best_value == 0.5
    third = again.ask(distributions(sweep))
    assert third.number == 2
    # The restarted seeded sampler does not replay the first controller's proposals.
    assert third.params not in (first.params, second.params)
    assert store.exists(SweepLayout("demo").journal_entry(0))


def test_a_second_controller_is_refused(tmp_path):
    store = Store(str(tmp_path))
    layout = SweepLayout("demo")
    one, two = StoreJournal(store, layout), StoreJournal(store, layout)
    one.read_logs(0), two.read_logs(0)
    one.append_logs([{"op_code": 0}])
    two._load_new = lambda: None  # `two` read the journal before `one` wrote: same next number
    with pytest.raises(UserError, match="another controller is writing this sweep"):
        two.append_logs([{"op_code": 0}])
    assert StoreJournal(store, layout).read_logs(0) == [{"op_code": 0}]


def test_a_grid_sweep_runs_each_combination_once_and_ends_without_optunas_stop(tmp_path):
    data = {**SPEC, "sweep": {**SPEC["sweep"], "sampler": "grid", "trials": 10,
                              "parameters": {"train.epochs": {"type": "int", "low": 1, "high": 3}}}}
    sweep = validate_spec(data).sweep
    study = open_study(Store(str(tmp_path)), "demo", sweep)
    seen = []
    for _ in range(3):  # the grid's size: `controller.budget` stops there
        trial = study.ask(distributions(sweep))
        seen.append(trial.params["train.epochs"])
        study.tell(trial, 1.0)  # Optuna's own grid sampler raised here on the last combination
    assert sorted(seen) == [1, 2, 3]
