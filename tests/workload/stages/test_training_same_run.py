"""Which spec changes make another run: the resume check, evaluation and the lineage hash share
`contract.spec.run_defining`."""

from __future__ import annotations

import pytest


def test_operational_train_fields_do_not_make_another_run(tmp_path):
    """A retried attempt may keep more checkpoints or wait longer for a lost peer; a different
    learning rate is another run, and both the workload's resume check and evaluation say so."""
    from kubetune.contract.layout import RunLayout
    from kubetune.contract.spec.job import SpecError, run_defining, validate_spec
    from kubetune.storage import Store
    from kubetune.workload.stages.evaluation import eval_paths
    from kubetune.workload.data.lineage import run_definition_hash
    from kubetune.workload.stages.training import check_same_run

    def spec(**train):
        return validate_spec({"name": "demo", "model": {"source": "m"}, "data": {"train": "t.tsv"}, "train": train})

    store, layout = Store(str(tmp_path)), RunLayout("demo")
    first = spec(keep_checkpoints=2)
    store.write_text(layout.spec, first.to_yaml())
    operational = spec(keep_checkpoints=5, keep_checkpoints_after_success=0, max_restarts=4,
                       collective_timeout_seconds=900)
    check_same_run(store, layout, operational)  # no error
    eval_paths(store, layout, operational)
    assert run_definition_hash(operational) == run_definition_hash(first)
    assert run_defining(operational.model_dump(mode="json"))["train"] == run_defining(first.model_dump(mode="json"))["train"]

    other = spec(keep_checkpoints=2, learning_rate=1e-3)
    with pytest.raises(SpecError, match="already exists with a different train") as refused:
        check_same_run(store, layout, other)
    # The field that differs and both values (issue 28): what to undo, or to rename the run for.
    assert "(train.learning_rate: 5e-05 in the run, 0.001 now)" in str(refused.value)
    with pytest.raises(SpecError, match="trained with a different train"):
        eval_paths(store, layout, other)
    assert run_definition_hash(other) != run_definition_hash(first)


def test_the_differences_name_each_field_with_both_values_and_stop_at_a_few():
    from kubetune.workload.stages.training import differences

    before = {"train": {"epochs": 2, "seed": 1}, "data": {"train": "a.tsv", "validation": None}}
    now = {"train": {"epochs": 3, "seed": 1}, "data": {"train": "b.tsv", "validation": "v.tsv"}}
    assert differences(before, now) == ["data.train: a.tsv in the run, b.tsv now",
                                        "data.validation: unset in the run, v.tsv now",
                                        "train.epochs: 2 in the run, 3 now"]
    assert differences(before, now, limit=1) == ["data.train: a.tsv in the run, b.tsv now"]
    assert differences(before, before) == []
