"""All splits of a job, loaded and checked the same way whether the train split is streamed or not.

`load_splits` is what the train stage checks before loading a model, `load_test_split` what
the evaluate stage scores. Every split read in memory gets the same treatment: rows present,
every role's column present, its `data.max_*_samples` limit, and `data.strip_html`. A
streamed train split is represented by its first rows (columns, labels, an early parse
error); the stream itself applies `strip_html` as it tokenizes (`streaming.make_stream`).
"""

from __future__ import annotations

import datasets

from kubetune.contract.spec.job import JobSpec
from kubetune.storage import Store
from kubetune.workload.data.tables import PinnedData, Splits, check_split, limit, read_table, strip_html, text_columns
from kubetune.workload.errors import DataError
from kubetune.workload.data.streaming import StreamSource, read_head, streaming_source

# Rows of a streamed train split read up front for the checks.
HEAD_ROWS = 2000


def load_splits(spec: JobSpec, store: Store, columns: dict[str, str | None], head_rows: int = HEAD_ROWS,
                pinned: PinnedData | None = None) -> Splits:
    """Read the spec's splits and check them; carve a validation split from train when none is
    given (in memory only) and apply the limits and `strip_html`. With a streamed train split,
    `train` is its first `head_rows` rows. In a run, the `pinned` files are read and their
    rows recorded there."""
    d = spec.data
    source = streaming_source(spec, store, pinned)
    train = _read_train(spec, store, source, head_rows, pinned)
    check_split(train, columns, "data.train", store.resolve(d.train))
    validation = _read_checked(store, d.validation, d.format, "data.validation", columns, pinned)
    test = _read_checked(store, d.test, d.format, "data.test", columns, pinned)
    if validation is None:
        if len(train) < 2:
            raise DataError("data.train: too few rows to carve a validation split")
        parts = train.train_test_split(test_size=d.validation_split, seed=d.split_seed)
        train, validation = parts["train"], parts["test"]
    if source is None:
        train = limit(train, d.max_train_samples)
    validation = limit(validation, d.max_eval_samples)
    test = limit(test, d.max_test_samples) if test is not None else None
    if d.strip_html:
        text = text_columns(train, columns)
        train, validation = strip_html(train, text), strip_html(validation, text)
        test = strip_html(test, text) if test is not None else None
    return Splits(train=train, validation=validation, test=test)


def _read_train(spec: JobSpec, store: Store, source: StreamSource | None, head_rows: int,
                pinned: PinnedData | None) -> datasets.Dataset:
    """The train split in memory, or the head of its stream (after the streaming-only checks)."""
    d = spec.data
    if source is None:
        return read_table(store, d.train, d.format, "data.train", pinned)
    if not d.validation:
        raise DataError("data.validation: required when the training split is streamed (data.streaming), "
                        "since a validation split cannot be carved from a stream")
    if d.max_train_samples:
        raise DataError("data.max_train_samples: not supported when the training split is streamed "
                        "(data.streaming); use train.max_steps to bound the run")
    head = read_head(source, head_rows, pinned)
    if not head:
        raise DataError(f"data.train: {store.resolve(d.train)}: no rows")
    return datasets.Dataset.from_list(head)


def _read_checked(store: Store, uri: str | None, fmt: str | None, field: str,
                  columns: dict[str, str | None], pinned: PinnedData | None = None) -> datasets.Dataset | None:
    if uri is None:
        return None
    ds = read_table(store, uri, fmt, field, pinned)
    check_split(ds, columns, field, store.resolve(uri))
    return ds


def load_test_split(spec: JobSpec, store: Store, columns: dict[str, str | None]) -> tuple[datasets.Dataset, str]:
    """The split `evaluate` scores: data.test, else data.validation (which then doubles as the
    test set), checked, limited by `data.max_test_samples` and HTML-stripped like the others.
    Returns the dataset and the spec field it came from."""
    d = spec.data
    field, uri = ("data.test", d.test) if d.test else ("data.validation", d.validation)
    if uri is None:
        raise DataError("data.test: no test split: set data.test (or data.validation, which then doubles as test)")
    ds = _read_checked(store, uri, d.format, field, columns)
    ds = limit(ds, d.max_test_samples)
    if d.strip_html:
        ds = strip_html(ds, text_columns(ds, columns))
    return ds, field
