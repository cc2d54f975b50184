"""Load the train/validation/test splits from their URIs (local folder or object store).

Files are read with `datasets` through fsspec, whatever the store. Everything that can be
wrong with the data (missing file, missing column, empty split, unknown label) is detected
here, before any model is loaded, and raised as a one-line DataError naming the spec field.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import datasets
import fsspec

from kubetune.contract.spec import JobSpec
from kubetune.storage import Store

datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()

_BUILDERS = {"csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet"}
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_HTML_TAG = re.compile(r"<[^>]+>")


class DataError(Exception):
    """Bad input data; the message names the spec field and the file. Exit code 2."""


@dataclass
class Splits:
    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset | None


def data_format(uri: str, explicit: str | None, field: str) -> str:
    if explicit:
        return explicit
    name = uri.split("?", 1)[0].lower()
    for ext in sorted(_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return _EXTENSIONS[ext]
    raise DataError(f"{field}: cannot tell the format of {uri} from its extension; set data.format")


def read_table(store: Store, uri: str, fmt: str | None, field: str) -> datasets.Dataset:
    """One file (or folder/glob of same-format files) as a Dataset."""
    url = store.resolve(uri)
    fmt = data_format(url, fmt, field)
    options = store.options_for(url)
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
        found = fs.glob(path) if any(c in path for c in "*?[") else ([path] if fs.exists(path) else [])
        if found and fs.isdir(found[0]):
            found = [p for p in fs.find(found[0]) if not posixpath.basename(p).startswith(".")]
    except Exception as exc:
        raise DataError(f"{field}: cannot read {url}: {_one_line(exc)}") from None
    if not found:
        raise DataError(f"{field}: {url}: file not found")
    files = [_unstrip(url, p, fs) for p in found]
    try:
        if fmt == "squad":
            return _read_squad(fs, found)
        kwargs: dict[str, Any] = {"delimiter": "\t"} if fmt == "tsv" else {}
        return datasets.load_dataset(
            _BUILDERS[fmt], data_files={"data": files}, split="data", storage_options=options or None, **kwargs
        )
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{field}: cannot parse {url} as {fmt}: {_one_line(exc)}") from None


def _unstrip(url: str, path: str, fs: Any) -> str:
    """fsspec paths lose their scheme; give it back for `datasets`."""
    if "://" in url:
        scheme = url.split("://", 1)[0]
        return f"{scheme}://{path}"
    return path


def _read_squad(fs: Any, paths: list[str]) -> datasets.Dataset:
    """Flatten SQuAD-format JSON (data → paragraphs → qas) into one row per question; the
    article title is kept so splits can be made by article."""
    rows: dict[str, list] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for path in paths:
        with fs.open(path, "r") as handle:
            doc = json.load(handle)
        for article in doc["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    rows["id"].append(str(qa["id"]))
                    rows["title"].append(article.get("title", ""))
                    rows["context"].append(paragraph["context"])
                    rows["question"].append(qa["question"])
                    rows["answers"].append(
                        {
                            "text": [a["text"] for a in qa.get("answers", [])],
                            "answer_start": [int(a["answer_start"]) for a in qa.get("answers", [])],
                        }
                    )
    return datasets.Dataset.from_dict(rows)


def require_columns(ds: datasets.Dataset, columns: dict[str, str | None], field: str) -> None:
    """Each role's column must exist; the error names the role's spec field."""
    for role, column in columns.items():
        if column is not None and column not in ds.column_names:
            raise DataError(
                f"data.columns.{role}: column {column!r} not in {field} (columns: {', '.join(ds.column_names)})"
            )


def strip_html(ds: datasets.Dataset, columns: list[str]) -> datasets.Dataset:
    def clean(batch: dict[str, list]) -> dict[str, list]:
        return {c: [_HTML_TAG.sub(" ", t) if isinstance(t, str) else t for t in batch[c]] for c in columns}

    return ds.map(clean, batched=True)


def load_splits(spec: JobSpec, store: Store, columns: dict[str, str | None]) -> Splits:
    """Read the spec's splits, check their columns, carve a validation split from train when
    none is given, and apply the max_*_samples limits."""
    d = spec.data
    train = read_table(store, d.train, d.format, "data.train")
    validation = read_table(store, d.validation, d.format, "data.validation") if d.validation else None
    test = read_table(store, d.test, d.format, "data.test") if d.test else None

    for ds, field in ((train, "data.train"), (validation, "data.validation"), (test, "data.test")):
        if ds is None:
            continue
        if len(ds) == 0:
            raise DataError(f"{field}: {store.resolve(getattr(d, field.split('.')[1]))}: no rows")
        require_columns(ds, columns, field)

    if validation is None:
        if len(train) < 2:
            raise DataError("data.train: too few rows to carve a validation split")
        parts = train.train_test_split(test_size=d.validation_split, seed=d.split_seed)
        train, validation = parts["train"], parts["test"]

    if d.max_train_samples:
        train = train.select(range(min(d.max_train_samples, len(train))))
    if d.max_eval_samples:
        validation = validation.select(range(min(d.max_eval_samples, len(validation))))
    if test is not None and d.max_test_samples:
        test = test.select(range(min(d.max_test_samples, len(test))))
    if d.strip_html:
        text_columns = [c for c in columns.values() if c is not None and c in train.column_names
                        and train.features[c].dtype == "string"]
        train, validation = strip_html(train, text_columns), strip_html(validation, text_columns)
        test = strip_html(test, text_columns) if test is not None else None
    return Splits(train=train, validation=validation, test=test)


def load_test_split(spec: JobSpec, store: Store, columns: dict[str, str | None]) -> tuple[datasets.Dataset, str]:
    """The split `evaluate` scores: data.test, else data.validation (which then doubles as the
    test set). Returns the dataset and the spec field it came from."""
    d = spec.data
    field, uri = ("data.test", d.test) if d.test else ("data.validation", d.validation)
    if uri is None:
        raise DataError("data.test: no test split: set data.test (or data.validation, which then doubles as test)")
    ds = read_table(store, uri, d.format, field)
    if len(ds) == 0:
        raise DataError(f"{field}: {store.resolve(uri)}: no rows")
    require_columns(ds, columns, field)
    if d.max_test_samples:
        ds = ds.select(range(min(d.max_test_samples, len(ds))))
    if d.strip_html:
        ds = strip_html(ds, [c for c in columns.values() if c is not None and ds.features[c].dtype == "string"])
    return ds, field


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
