"""One pre-model check (issue 21): the train stage's `setup` and `validate --data`'s `check_job`
run the same `preflight.checks`, so what one refuses the other refuses with the same line, and
what passes one passes the other with the same findings. No weights are needed for either: the
model folder here is a config and a tokenizer file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from kubetune.contract.errors import UserError
from kubetune.contract.spec.job import validate_spec
from kubetune.workload.stages.preflight import check_job
from kubetune.workload.stages.run import PodEnv
from kubetune.workload.stages.training import setup

ROWS = 20


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A store with a model folder (config and tokenizer, no weights) and a train split."""
    store = tmp_path / "store"
    (store / "models" / "m").mkdir(parents=True)
    (store / "models" / "m" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (store / "models" / "m" / "tokenizer.json").write_text("{}")
    (store / "d").mkdir()
    (store / "d" / "train.tsv").write_text("text\tlabel\n" + "".join(f"row {i}\t{i % 2}\n" for i in range(ROWS)))
    return store


def _spec(root: Path, **data):
    return validate_spec({"name": "demo", "model": {"source": "models/m"}, "storage": {"root": str(root)},
                          "data": {"train": "d/train.tsv", **data}})


def _no_tokenizer(root: Path) -> None:
    (root / "models" / "m" / "tokenizer.json").unlink()


def _no_model_type(root: Path) -> None:
    (root / "models" / "m" / "config.json").write_text(json.dumps({"hidden_size": 8}))


def _no_label_column(root: Path) -> None:
    (root / "d" / "train.tsv").write_text("text\tstars\n" + "".join(f"row {i}\t{i % 5}\n" for i in range(ROWS)))


@pytest.mark.parametrize(("breakage", "says"), [
    (_no_tokenizer, "no tokenizer file (one of tokenizer.json"),
    (_no_model_type, "no model_type; not a Hugging Face config"),
    (_no_label_column, "data.columns.label: column 'label' not in data.train"),
], ids=["no-tokenizer-file", "no-model-type", "no-label-column"])
def test_setup_and_validate_data_refuse_the_same_input_with_the_same_line(
        root: Path, tmp_path: Path, breakage: Callable[[Path], None], says: str):
    breakage(root)
    spec = _spec(root)
    with pytest.raises(UserError) as by_check:
        check_job(spec)
    with pytest.raises(UserError) as by_setup:
        setup(spec, PodEnv(workdir_root=tmp_path / "work"))
    assert str(by_setup.value) == str(by_check.value)
    assert says in str(by_check.value) and "\n" not in str(by_check.value)


def test_a_usable_job_passes_both_with_the_same_findings(root: Path, tmp_path: Path):
    spec = _spec(root, validation_split=0.25)
    verdict = check_job(spec)
    run = setup(spec, PodEnv(workdir_root=tmp_path / "work"))
    assert run is not None
    assert verdict == (f"ok: demo: data (train {len(run.splits.train)}, validation {len(run.splits.validation)} rows) "
                       f"and model ({run.model_uri}) look usable")
    assert run.model_uri == run.tokenizer_uri == str(root / "models" / "m")
    assert len(run.splits.train) + len(run.splits.validation) == ROWS
    # The run's files are pinned with the rows read from them, for its lineage.
    assert list(run.pinned.files) == ["data.train"]
    assert run.pinned.rows == {str(root / "d" / "train.tsv"): ROWS}
    assert run.workdir == tmp_path / "work" / "demo" and run.workdir.is_dir()
