"""The first hour of a new user (issue 13): `--version`, `--set` errors that name the override,
`run` without `--local`, and `validate --data` checking the data files and model folder."""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from helpers import run_cli

ROWS = "".join(f"{'good' if i % 2 else 'bad'} film {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(30))
HEAD = "".join(ROWS.splitlines(keepends=True)[:6])


@pytest.fixture(scope="module")
def store(tmp_path_factory, minilm_dir) -> Path:
    root = tmp_path_factory.mktemp("first-hour") / "store"
    shutil.copytree(minilm_dir, root / "models" / "minilm")
    (root / "models" / "no-tokenizer").mkdir(parents=True)
    shutil.copy(minilm_dir / "config.json", root / "models" / "no-tokenizer" / "config.json")
    data = root / "datasets" / "toy"
    data.mkdir(parents=True)
    (data / "train.tsv").write_text("text\tlabel\n" + ROWS)
    (data / "test.tsv").write_text("text\tlabel\n" + HEAD)
    (data / "no-label.tsv").write_text("text\tstars\n" + HEAD)
    (data / "unknown-label.tsv").write_text("text\tlabel\nso-so film\tneutral\n" + HEAD)
    return root


def job_file(tmp_path: Path, store: Path, **data) -> Path:
    spec = {
        "name": "first-hour",
        "model": {"source": "models/minilm"},
        "data": {"train": "datasets/toy/train.tsv", "test": "datasets/toy/test.tsv", **data},
        "train": {"epochs": 1, "max_seq_length": 16},
        "storage": {"root": str(store)},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_version_prints_the_installed_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"kubetune {version('kubetune')}"


def test_a_bad_override_is_named_not_the_file():
    result = run_cli("validate", "jobs/quickstart.yaml", "--set", "train.epoch=1")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --set train.epoch=1: unknown field"
    assert "quickstart.yaml" not in result.stderr


def test_a_file_error_still_names_the_file(tmp_path, store):
    path = job_file(tmp_path, store)
    spec = yaml.safe_load(path.read_text())
    spec["train"]["epoch"] = 1
    path.write_text(yaml.safe_dump(spec))
    result = run_cli("validate", str(path), "--set", "train.epochs=2")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}: train.epoch: unknown field"


def test_run_without_local_says_how_to_run_it(tmp_path, store):
    result = run_cli("run", str(job_file(tmp_path, store)))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "--local" in line and f"kubetune submit {tmp_path / 'job.yaml'}" in line
    assert "first-hour-train" in line and "Traceback" not in line and not line.startswith("error")


def test_validate_without_data_ends_with_a_verdict(tmp_path, store):
    result = run_cli("validate", str(job_file(tmp_path, store)))
    assert result.returncode == 0
    assert result.stderr.strip().splitlines()[-1].startswith("ok: ")
    assert yaml.safe_load(result.stdout)["name"] == "first-hour"  # stdout stays the resolved spec


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"test": "datasets/toy/missing.tsv"}, "data.test: "),
        ({"test": "datasets/toy/no-label.tsv"}, "'label'"),
        ({"test": "datasets/toy/unknown-label.tsv"}, "'neutral'"),
    ],
    ids=["missing-file", "missing-column", "unknown-label"],
)
def test_validate_data_refuses_bad_data_with_one_line(tmp_path, store, data, expected):
    result = run_cli("validate", str(job_file(tmp_path, store, **data)), "--data")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: data.") and "data.test" in line and expected in line
    if "missing" in str(data):
        assert "missing.tsv" in line


def test_validate_data_refuses_a_model_folder_without_tokenizer(tmp_path, store):
    path = job_file(tmp_path, store)
    result = run_cli("validate", str(path), "--data", "--set", "model.source=models/no-tokenizer")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: model.source: ") and "tokenizer" in line


def test_validate_data_accepts_good_data(tmp_path, store):
    result = run_cli("validate", str(job_file(tmp_path, store)), "--data")
    assert result.returncode == 0, result.stderr
    verdict = result.stderr.strip().splitlines()[-1]
    assert verdict.startswith("ok: first-hour: ") and "train 27, validation 3, test 6 rows" in verdict
    assert not (store / "runs").exists()  # a check writes nothing
