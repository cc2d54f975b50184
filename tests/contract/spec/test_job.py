"""The job spec: loading, overrides, one-line errors naming the field, shipped jobs."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from kubetune.contract.errors import UserError
from kubetune.contract.spec.job import TASK_COLUMNS, SpecError, Task, apply_override, load_spec, validate_spec
from kubetune.storage import StorageError

REPO = Path(__file__).resolve().parents[3]
JOBS = sorted((REPO / "jobs").glob("*.yaml"))

MINIMAL = {"name": "demo", "model": {"source": "models/m"}, "data": {"train": "datasets/d/train.tsv"}}


def write(tmp_path: Path, data, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def error_of(tmp_path: Path, data, *overrides: str) -> str:
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def test_minimal_spec_gets_defaults(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.task == "text-classification"
    assert spec.train.learning_rate == 5e-5
    assert spec.storage.root == ".kubetune"
    assert spec.column("text") == "text" and spec.column("label") == "label"


def test_overrides_reach_nested_fields_and_split_on_first_equals(tmp_path):
    spec = load_spec(
        write(tmp_path, MINIMAL),
        ["storage.root=/tmp/x", "data.test=/path/test.tsv", "train.epochs=1", "model.revision=a=b"],
    )
    assert spec.storage.root == "/tmp/x"
    assert spec.data.test == "/path/test.tsv"
    assert spec.train.epochs == 1.0
    assert spec.model.revision == "a=b"


def test_exponent_numbers_are_floats_in_files_and_overrides(tmp_path):
    """`1e-4` is a string to YAML 1.1 (PyYAML); with strict number fields it must still read
    as the float a user means, in the file and in --set."""
    path = write(tmp_path, yaml.safe_dump(MINIMAL) + "train:\n  weight_decay: 1e-2\n")
    spec = load_spec(path, ["train.learning_rate=3e-5"])
    assert spec.train.learning_rate == pytest.approx(3e-5)
    assert spec.train.weight_decay == pytest.approx(1e-2)
    with pytest.raises(SpecError, match="train.learning_rate"):
        load_spec(path, ["train.learning_rate='3e-5'"])  # a quoted string stays a string


def test_override_creates_missing_sections():
    data = {"name": "x"}
    apply_override(data, "train.early_stopping.metric=accuracy")
    assert data["train"]["early_stopping"]["metric"] == "accuracy"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"train": {"learning_rate": -1}}, "train.learning_rate: must be > 0"),
        ({"train": {"learning_rat": 1e-4}}, "train.learning_rat: unknown field"),
        ({"train": {"epochs": "many"}}, "train.epochs:"),
        ({"name": "My_Job"}, "name: must be a DNS-1123 label"),
        ({"name": "x" * 41}, "name: must be at most 40 characters"),
        ({"task": "image-generation"}, "task: must be one of"),
        ({"data": {"columns": {"txt": "sentence"}}}, "data.columns: unknown role 'txt'"),
        ({"train": {"optimizer": "adam"}}, "train.optimizer: must be one of"),
        ({"storage": {"endpoint_url": "localhost:9000"}}, "storage.endpoint_url: must be an http(s):// URL"),
        ({"data": {"labels": ["a", "a"]}}, "data.labels: must not repeat a label"),
    ],
)
def test_bad_fields_are_named(tmp_path, change, expected):
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for section, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(section), dict):
            data[section].update(value)
        else:
            data[section] = value
    assert expected in error_of(tmp_path, data)


def test_missing_train_uri_is_named(tmp_path):
    data = {"name": "demo", "model": {"source": "m"}, "data": {}}
    assert "data.train: required field is missing" in error_of(tmp_path, data)


def test_malformed_yaml_names_the_line(tmp_path):
    message = error_of(tmp_path, "name: demo\nmodel: [unclosed\n")
    assert "malformed YAML" in message and "line" in message


def test_credentials_in_a_spec_are_refused(tmp_path):
    data = dict(MINIMAL, storage={"root": "s3://b", "aws_secret_access_key": "hunter2"})
    message = error_of(tmp_path, data)
    assert "storage.aws_secret_access_key: credentials must not be written in a job spec" in message
    assert "hunter2" not in message


def test_unreadable_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_bad_override_syntax(tmp_path):
    """An override's mistake names the override, not the file (which is fine)."""
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, MINIMAL), ["train.epochs"])
    assert str(info.value) == "--set train.epochs: expected key.path=value"


def test_bad_override_value_names_the_override_and_file_errors_the_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, {**MINIMAL, "colour": 1}), ["train.epoch=1", "train.epochs=0"])
    message = str(info.value)
    assert "--set train.epoch=1: unknown field" in message and "--set train.epochs=0: must be > 0" in message
    assert message.endswith(f"; {tmp_path / 'job.yaml'}: colour: unknown field")


def test_resolved_spec_round_trips():
    spec = validate_spec(MINIMAL)
    again = validate_spec(yaml.safe_load(spec.to_yaml()))
    assert again == spec


@pytest.mark.parametrize("job", JOBS, ids=[j.name for j in JOBS])
def test_every_shipped_job_loads(job):
    spec = load_spec(job)
    assert spec.name
    # Jobs read data from datasets/<folder>/<file> in the store, named as in ../shared/data, or
    # from a dataset repository of the Hugging Face Hub (hf://datasets/..., issue 27).
    assert spec.data.train.startswith(("datasets/", "hf://datasets/"))


@pytest.mark.parametrize("job", JOBS, ids=[j.name for j in JOBS])
def test_no_shipped_job_reports_a_test_score_on_the_data_that_picked_its_model(job):
    """Issue 28, point 3: the test split is set and is not the validation split (which picks
    the best checkpoint); without a validation file, train's held-out share picks it."""
    d = load_spec(job).data
    assert d.test, f"{job.name}: data.test unset, so data.validation would double as the test split"
    assert d.test != d.validation


def test_task_columns_cover_exactly_the_tasks():
    """`Task` is the one list of task names; TASK_COLUMNS must name each, and no other."""
    assert set(TASK_COLUMNS) == set(typing.get_args(Task))


def test_spec_and_storage_errors_are_user_errors():
    """Entrypoints and the CLI map `UserError` (and only it) to exit code 2."""
    assert issubclass(SpecError, UserError)
    assert issubclass(StorageError, UserError)
