"""The `tracking:` section (issue 15): optional, absent from the resolved spec when unset (so
existing specs and their rendered ConfigMaps do not change), strict about its fields."""

from __future__ import annotations

import pytest
import yaml

from kubetune.contract.errors import SpecError
from kubetune.contract.spec.job import validate_spec

BASE = {"name": "demo", "model": {"source": "models/m"}, "data": {"train": "datasets/t.tsv"}}


def test_unset_tracking_stays_out_of_the_resolved_spec():
    spec = validate_spec(dict(BASE))
    assert spec.tracking is None
    assert "tracking" not in yaml.safe_load(spec.to_yaml())


def test_tensorboard_round_trips_through_the_resolved_spec():
    spec = validate_spec({**BASE, "tracking": {"tensorboard": True}})
    again = validate_spec(yaml.safe_load(spec.to_yaml()))
    assert again.tracking is not None and again.tracking.tensorboard is True


def test_an_unknown_tracker_is_one_line_naming_the_field():
    with pytest.raises(SpecError) as err:
        validate_spec({**BASE, "tracking": {"tensorbord": True}})
    assert "tracking.tensorbord: unknown field" in str(err.value) and "\n" not in str(err.value)
