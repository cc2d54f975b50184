"""One loader for every split (`splits.load_splits`): the test split gets the same checks,
limit and HTML stripping whether the train split is streamed or read into memory."""

from __future__ import annotations

import pytest

from kubetune.contract.spec.job import validate_spec
from kubetune.storage import Store
from kubetune.workload.errors import DataError
from kubetune.workload.data.splits import load_splits, load_test_split
from kubetune.workload.data.streaming import streaming_source
from kubetune.workload.tasks import get_task

TRAIN = "sentence\tlabel\n" + "".join(f"<b>row {i}</b>\t{i % 2}\n" for i in range(20))
TEST = "sentence\tlabel\n" + "".join(f"<i>test {i}</i>\t{i % 2}\n" for i in range(10))


def _spec(streaming: bool, test: str = "data/test.tsv", **data):
    return validate_spec({
        "name": "splits",
        "model": {"source": "m"},
        "data": {"train": "data/train.tsv", "validation": "data/validation.tsv", "test": test,
                 "streaming": streaming, "columns": {"text": "sentence"}, **data},
    })


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(str(tmp_path / "store"))
    store.write_text("data/train.tsv", TRAIN)
    store.write_text("data/validation.tsv", TRAIN)
    store.write_text("data/test.tsv", TEST)
    store.write_text("data/bad_test.tsv", "text\tlabel\nx\t0\n")
    return store


def _load(spec, store):
    return load_splits(spec, store, get_task(spec).columns())


@pytest.mark.parametrize("streaming", [True, False])
def test_test_split_columns_are_checked(store, streaming):
    spec = _spec(streaming, test="data/bad_test.tsv")
    assert (streaming_source(spec, store) is not None) == streaming
    with pytest.raises(DataError, match=r"data.columns.text: column 'sentence' not in data.test"):
        _load(spec, store)


@pytest.mark.parametrize("streaming", [True, False])
def test_test_split_is_limited_and_stripped(store, streaming):
    splits = _load(_spec(streaming, max_test_samples=4, strip_html=True), store)
    assert splits.test is not None and len(splits.test) == 4
    assert list(splits.test["sentence"]) == [f" test {i} " for i in range(4)]
    assert all("<" not in s for s in list(splits.train["sentence"]) + list(splits.validation["sentence"]))


@pytest.mark.parametrize("streaming", [True, False])
def test_empty_test_split_is_refused(store, streaming):
    store.write_text("data/empty.tsv", "sentence\tlabel\n")
    with pytest.raises(DataError, match=r"data.test: .*empty.tsv"):
        _load(_spec(streaming, test="data/empty.tsv"), store)


def test_evaluate_reads_the_test_split_the_same_way(store):
    spec = _spec(True, max_test_samples=3, strip_html=True)
    test, field = load_test_split(spec, store, get_task(spec).columns())
    assert field == "data.test" and list(test["sentence"]) == [f" test {i} " for i in range(3)]
