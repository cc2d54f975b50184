"""The `sweep:` section: every kind of bad input is one line naming the field, exit 2 through
`kubetune sweep` before any trial starts (nothing is written to the store); the objective's
metrics agree with what the workload's tasks report."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.cli.main import main
from kubetune.contract.spec.job import load_spec
from kubetune.contract.spec.sweep import VALIDATION_METRICS

GOOD: dict[str, Any] = {
    "name": "demo",
    "model": {"source": "models/m"},
    "data": {"train": "datasets/d/train.tsv"},
    "sweep": {
        "parameters": {"train.learning_rate": {"type": "loguniform", "low": 1.0e-5, "high": 1.0e-3},
                       "train.epochs": {"type": "int", "low": 1, "high": 3},
                       "train.scheduler": {"type": "categorical", "choices": ["linear", "cosine"]}},
        "objective": {"metric": "accuracy", "direction": "maximize"},
        "trials": 8, "parallel": 2, "sampler": "tpe", "pruner": "median",
    },
}


def spec_with(tmp_path: Path, change) -> Path:
    data = copy.deepcopy(GOOD)
    data["storage"] = {"root": str(tmp_path / "store")}
    change(data)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_issues_shape_is_valid(tmp_path):
    spec = load_spec(spec_with(tmp_path, lambda d: None))
    assert spec.sweep.trials == 8 and spec.sweep.parameters["train.epochs"].type == "int"
    assert "sweep" not in load_spec(spec_with(tmp_path, lambda d: d.pop("sweep"))).to_yaml()


def params(**kw):
    return lambda d: d["sweep"].__setitem__("parameters", kw)


BAD = [
    ("unknown field in the space", params(**{"train.learnig_rate": {"type": "uniform", "low": 0.1, "high": 0.2}}),
     "sweep.parameters.train.learnig_rate: no such spec field"),
    ("unknown key of a parameter", params(**{"train.epochs": {"type": "int", "low": 1, "hihg": 3}}),
     "sweep.parameters.train.epochs.hihg: unknown field"),
    ("a field that cannot be overridden", params(**{"storage.root": {"type": "categorical", "choices": ["a", "b"]}}),
     "sweep.parameters.storage.root: cannot be swept"),
    ("a section, not a field", params(**{"train.freeze": {"type": "categorical", "choices": [True]}}),
     "sweep.parameters.train.freeze: cannot be swept"),
    ("the field the objective sets", params(**{"train.metric": {"type": "categorical", "choices": ["loss"]}}),
     "sweep.parameters.train.metric: cannot be swept"),
    ("an empty range", params(**{"train.learning_rate": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-5}}),
     "sweep.parameters.train.learning_rate: empty range: low 0.001 is not below high 1e-05"),
    ("a range of one point", params(**{"train.epochs": {"type": "int", "low": 2, "high": 2}}),
     "sweep.parameters.train.epochs: empty range"),
    ("no choices", params(**{"train.scheduler": {"type": "categorical", "choices": []}}),
     "sweep.parameters.train.scheduler: categorical needs a non-empty list of choices"),
    ("a choice the field refuses", params(**{"train.scheduler": {"type": "categorical", "choices": ["linear", "cosinee"]}}),
     "sweep.parameters.train.scheduler: 'cosinee' makes an invalid spec (train.scheduler: "),
    ("a float range on an integer field", params(**{"train.batch_size": {"type": "uniform", "low": 8, "high": 32}}),
     "sweep.parameters.train.batch_size: 20.000000001 makes an invalid spec"),
    ("a field of an unset section", params(**{"train.lora.r": {"type": "int", "low": 4, "high": 16}}),
     "sweep.parameters.train.lora.r: train.lora is not set in the spec"),
    ("an objective the task does not report", lambda d: d["sweep"]["objective"].__setitem__("metric", "bleu"),
     "sweep.objective.metric: text-classification reports no validation metric 'bleu'"),
    ("a budget of zero", lambda d: d["sweep"].__setitem__("trials", 0), "sweep.trials: must be > 0"),
    ("no budget", lambda d: d["sweep"].pop("trials"), "sweep.trials: set a budget"),
    ("zero minutes", lambda d: d["sweep"].update(trials=None, timeout_minutes=0), "sweep.timeout_minutes: must be > 0"),
    ("zero parallel", lambda d: d["sweep"].__setitem__("parallel", 0), "sweep.parallel: must be > 0"),
    ("grid over a float range", lambda d: d["sweep"].__setitem__("sampler", "grid"),
     "sweep.sampler: grid needs every parameter categorical or int (train.learning_rate is loguniform)"),
    ("an unknown sampler", lambda d: d["sweep"].__setitem__("sampler", "cmaes"), "sweep.sampler: must be one of"),
    ("a name too long for its trials", lambda d: d.__setitem__("name", "a" * 36),
     "name: a job with a sweep must be at most 35 characters"),
]


@pytest.mark.parametrize("change,expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_naming_the_field_and_exit_2_before_any_trial(tmp_path, capsys, change, expected):
    path = spec_with(tmp_path, change)
    assert main(["sweep", str(path), "--local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and expected in err, err
    assert not (tmp_path / "store").exists()  # no study, no trial


def test_a_spec_without_a_sweep_section_is_refused(tmp_path, capsys):
    path = spec_with(tmp_path, lambda d: d.pop("sweep"))
    assert main(["sweep", str(path), "--local"]) == 2
    assert "sweep: no such section" in capsys.readouterr().err


def test_the_objective_metrics_are_the_tasks_own():
    from kubetune.workload.tasks import _registry

    for name, task in _registry().items():
        assert set(VALIDATION_METRICS[name]) == set(task.metric_names), name
