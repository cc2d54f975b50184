"""The pre-model checks: everything a stage that trains checks before it loads a model, in one
place, run by the train stage's `setup` and by `kubetune validate --data` (the check entrypoint,
`check_job`), so the two cannot drift apart.

`open_store` first (what this machine cannot run, refused at once; then the store reachable),
then `checks`: model and tokenizer folders (a parseable `config.json` with a `model_type`, a
tokenizer file; no weights are read), the task's spec checks, every split resolved, pinned,
read and checked for its columns and labels. A job that passes fails later only for reasons
that need the model itself. The train stage checks its run folder in between (`training.setup`).

For a retrain job, `validate --data` also checks its gate set against the labels the model will
know (`model_labels`, `check_gate_labels_known`): the retrain run checks the same before it trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice
from typing import Any

import fsspec

from kubetune.contract.spec.job import JobSpec
from kubetune.storage import Store, has_scheme
from kubetune.workload.data.lineage import resolve_data
from kubetune.workload.data.splits import load_splits
from kubetune.workload.data.streaming import list_pieces, read_piece
from kubetune.workload.data.tables import PinnedData, Splits, data_format, read_table, split_files
from kubetune.workload.errors import DataError, ModelSourceError
from kubetune.workload.model.source import HF_CONFIG, check_model_source
from kubetune.workload.model.speed import check_speed_support
from kubetune.workload.tasks import Task, get_task

# Any one of these makes a folder's tokenizer loadable by AutoTokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "vocab.json")


@dataclass
class Checked:
    """What the pre-model checks found and the stage goes on with: the task, the resolved
    model and tokenizer sources (URI or Hub id), the splits as read (a streamed train split: its
    head) and the data files pinned for the run, with the rows read from them."""

    task: Task
    model_uri: str
    tokenizer_uri: str
    splits: Splits
    pinned: PinnedData


def open_store(spec: JobSpec) -> Store:
    """The job's store, reachable; before it, a speed setting this machine cannot run (flash
    attention, FSDP, 4-bit without CUDA or a package) is refused at once, not after waiting
    `storage.startup_timeout_seconds` for a store."""
    check_speed_support(spec)
    store = Store.from_spec(spec.storage)
    store.check_reachable(spec.storage.startup_timeout_seconds)
    return store


def checks(spec: JobSpec, store: Store, pinned: PinnedData | None = None) -> Checked:
    """Every check before the model loads, on `open_store`'s store; raises a UserError naming
    the field. The splits are resolved into `pinned` (a retrain run's, holding its gate set
    too), else into a new PinnedData."""
    pinned = PinnedData() if pinned is None else pinned
    revision, commits = spec.model.revision, pinned.hub_commits  # an hf:// source: the run's commit
    model_uri = check_model(store, spec.model.source, "model.source", tokenizer=not spec.model.tokenizer,
                            revision=revision, commits=commits)
    tokenizer_uri = model_uri
    if spec.model.tokenizer:
        tokenizer_uri = check_model(store, spec.model.tokenizer, "model.tokenizer", tokenizer=True, config=False,
                                    revision=revision, commits=commits)
    task = get_task(spec)
    task.check_spec()
    pinned = resolve_data(spec, store, pinned=pinned)
    splits = load_splits(spec, store, task.columns(), pinned=pinned)  # streamed train: only its head
    task.check_data(splits)
    return Checked(task, model_uri, tokenizer_uri, splits, pinned)


def check_job(spec: JobSpec) -> str:
    """`validate --data`: the pre-model checks and, for a retrain job, its gate set; returns the
    one-line verdict, raises a UserError."""
    store = open_store(spec)
    checked = checks(spec, store)
    if spec.promotion is not None or spec.retrain is not None:  # a retrain job: its gate set too
        _check_gate(spec, store, checked.task, checked.pinned)
    splits = checked.splits
    sizes = [f"train {len(splits.train)}", f"validation {len(splits.validation)}"]
    if splits.test is not None:
        sizes.append(f"test {len(splits.test)}")
    model = checked.model_uri
    if has_scheme(model) or model.startswith("/"):
        return f"ok: {spec.name}: data ({', '.join(sizes)} rows) and model ({model}) look usable"
    # A Hub id: nothing of it is read here (the train stage asks the Hub before it loads it).
    return (f"ok: {spec.name}: data ({', '.join(sizes)} rows) looks usable; "
            f"model {model}: not checked (a Hugging Face Hub id)")


def check_model(store: Store, source: str, field: str, tokenizer: bool, config: bool = True,
                revision: str | None = None, commits: dict[str, str] | None = None) -> str:
    """`check_model_source`, and for a folder (not a Hub id, which is not checked here):
    a `config.json` naming a `model_type` (`config`), a tokenizer file (`tokenizer`). Returns
    the resolved URI or the Hub id."""
    resolved = check_model_source(store, source, field, revision, commits)
    if not (has_scheme(resolved) or resolved.startswith("/")):
        return resolved
    fs, path = fsspec.core.url_to_fs(resolved, **store.options_for(resolved))
    names = {entry.rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)}
    if config:
        try:
            with fs.open(f"{path.rstrip('/')}/{HF_CONFIG}", "r") as handle:
                model_type = json.load(handle).get("model_type")
        except (ValueError, AttributeError) as exc:
            raise ModelSourceError(f"{field}: {resolved}/{HF_CONFIG}: not a JSON object ({exc})") from None
        if not model_type:
            raise ModelSourceError(f"{field}: {resolved}/{HF_CONFIG}: no model_type; not a Hugging Face config")
    if tokenizer and not names & set(TOKENIZER_FILES):
        raise ModelSourceError(f"{field}: {resolved}: no tokenizer file (one of {', '.join(TOKENIZER_FILES)})")
    return resolved


# The task whose label column holds one class name per row (what a gate's labels compare).
CLASSIFICATION = "text-classification"
# The spec field of a retrain run's gate set (default: data.test).
GATE_FIELD = "promotion.gate_data"


def _check_gate(spec: JobSpec, store: Store, task: Task, pinned: PinnedData) -> None:
    uri = (spec.promotion.gate_data if spec.promotion else None) or spec.data.test
    if uri is None:
        raise DataError(f"{GATE_FIELD}: no gate data: set promotion.gate_data or data.test")
    gate = read_table(store, uri, spec.data.format, GATE_FIELD, pinned)
    check_gate_labels_known(gate, model_labels(spec, store, task, pinned), spec.column("label"), GATE_FIELD,
                            store.resolve(uri))


def model_labels(spec: JobSpec, store: Store, task: Task, pinned: PinnedData | None = None) -> list[str] | None:
    """The labels a model trained on the job's (pinned) train files will know: `data.labels`,
    else the distinct values of the train files' label column, inferred as training infers them
    (`task.label_map`). Only that column is read (Parquet: only its pages; text: one parsing
    pass keeping one column), before any tokenizer or model; None for tasks without one label
    per row."""
    if spec.task != CLASSIFICATION:
        return None
    if spec.data.labels:
        return list(spec.data.labels)
    import datasets

    column = spec.column("label")
    return task.label_map(datasets.Dataset.from_dict({column: _label_column(spec, store, column, pinned)}))


def _label_column(spec: JobSpec, store: Store, column: str, pinned: PinnedData | None) -> list[Any]:
    files = split_files(store, spec.data.train, "data.train", pinned)
    fmt = data_format(files.uris[0], spec.data.format, "data.train")
    try:
        rows = (row for piece in list_pieces(files.uris, fmt, files.options)
                for row in read_piece(piece, fmt, files.options, [column]))
        values = [row.get(column) for row in islice(rows, spec.data.max_train_samples)]
    except Exception:  # a layout the column reader does not take (a JSON array): the full reader says why
        values = read_table(store, spec.data.train, spec.data.format, "data.train", pinned).to_dict().get(column, [])
    if not values or all(v is None for v in values):
        raise DataError(f"data.columns.label: column {column!r} not in data.train ({files.url})")
    return values


def check_gate_labels_known(gate: Any, labels: list[str] | None, column: str | None, field: str, url: str) -> None:
    """The gate set (`field`, read from `url`) must hold every label the model will know and no
    label it does not: a class missing from the gate makes its per-class numbers meaningless, a
    class the model never saw cannot be scored. Checked before training (retrain) or before
    anything is loaded (`validate --data`)."""
    if not labels or column is None or column not in gate.column_names:
        return
    present = {str(v) for v in gate[column] if v is not None}
    missing = [label for label in labels if label not in present]
    if missing:
        raise DataError(f"{field}: {url}: no rows labelled {', '.join(map(repr, missing))}, which the model will "
                        f"know (labels {labels}); score on data with every label")
    unknown = sorted(present - set(labels))
    if unknown:
        raise DataError(f"{field}: {url}: label {unknown[0]!r} is not among the labels the model will know "
                        f"{labels}; it cannot be scored")
