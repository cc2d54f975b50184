"""A typo in a spec field names the closest valid field of its section (issue 28, point 5):
in the file, in a `--set`, in nested sections, and not where nothing is close."""

from __future__ import annotations

import pytest

from kubetune.contract.errors import SpecError
from kubetune.contract.spec.job import JobSpec, validate_spec
from kubetune.contract.spec.loading import closest_field

BASE = {"name": "x", "task": "text-classification", "model": {"source": "m"},
        "data": {"train": "t.tsv", "columns": {"text": "a", "label": "b"}}}


@pytest.mark.parametrize("loc, expected", [
    (("train", "epoch"), "epochs"),
    (("train", "learning_rat"), "learning_rate"),
    (("storage", "rooot"), "root"),
    (("resources", "nodez"), "nodes"),
    (("train", "lora", "alhpa"), "alpha"),  # through an optional section
    (("train", "lora", "rank"), None),  # LoRA's rank is `r`: nothing is close enough to say
    (("colour",), None),
    (("train", "zzzzzz"), None),
])
def test_the_closest_valid_field_is_found_in_the_section_of_the_typo(loc, expected):
    assert closest_field(JobSpec, loc) == expected


def test_every_typo_of_a_file_gets_its_suggestion_in_one_line():
    data = {**BASE, "train": {"epoch": 1, "learning_rat": 0.1}, "colour": "red"}
    with pytest.raises(SpecError) as err:
        validate_spec(data, "job.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert "train.epoch: unknown field (did you mean epochs?)" in message
    assert "train.learning_rat: unknown field (did you mean learning_rate?)" in message
    assert message.endswith("colour: unknown field")  # no suggestion where none is close


def test_an_override_typo_gets_the_suggestion_too():
    with pytest.raises(SpecError) as err:
        validate_spec({**BASE, "resources": {"nodez": 2}}, "job.yaml", overrides=["resources.nodez=2"])
    assert str(err.value) == "--set resources.nodez=2: unknown field (did you mean nodes?)"
