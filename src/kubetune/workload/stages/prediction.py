"""Batch prediction (the predict entrypoint: `--spec FILE --input URI --output URI`).

Batch prediction with the run's committed model (`runs/<job>/model/`), for every task. The
input (JSON lines, CSV/TSV, Parquet; local or object store; the same column names as the
training data, targets optional) is split across ranks (see `rank_and_world`): rank r of w takes the
contiguous rows [r·n/w, (r+1)·n/w), so every row is predicted exactly once and the parts,
concatenated in rank order, are in input order. Ranks never talk to each other (no process
group): each is an independent process that reads, predicts and writes its own shard.

Output, one record per input row: the row's own columns, `row` (its index in the input) and
the task's prediction fields (`prediction`, `score`, and task extras such as `scores` per label
or per-token tags). `--output` is

* a file (`….jsonl`, `….json`: JSON lines; `….parquet`): single rank only; or
* a folder: each rank writes `part-0000r.jsonl` (or `.parquet` with `--format parquet`), and
  rank 0 keeps kubetune's owner record there (names.PREDICTIONS_OWNER_FILE: the job and the
  part names it writes). A folder may also hold the user's own files, named like parts or not,
  so rank 0 removes only stale parts that the record lists (an earlier run with more ranks, or
  in the other format), and a rank refuses, before the model loads, to replace a part that
  the record does not list.

Every part or file is written whole (a rename locally, one object in a store), so a reader
never sees half a file. User errors (bad spec, unreadable input, missing columns, no
committed model, a file output with several ranks) end as one line and exit code 2, before
the model is loaded.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import tempfile
from dataclasses import dataclass
from typing import Any

import datasets
import fsspec

from kubetune.contract.layout import RunLayout, run_layout
from kubetune.contract.names import PREDICTIONS_OWNER_FILE
from kubetune.contract.spec.job import JobSpec, SpecError
from kubetune.registry import Registry
from kubetune.storage import Store, has_scheme
from kubetune.workload.data.tables import data_format, read_table, require_columns
from kubetune.workload.errors import DataError
from kubetune.workload.stages.evaluation import check_trained_with, load_trained
from kubetune.workload.stages.run import PodEnv
from kubetune.workload.tasks import Task, get_task

FILE_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
PART = re.compile(r"^part-(\d{5})\.(jsonl|parquet)$")


@dataclass
class Prediction:
    """Everything checked and ready; the model is not loaded yet."""

    spec: JobSpec
    store: Store
    task: Task
    rows: datasets.Dataset  # this rank's shard
    first_row: int
    total_rows: int
    output_url: str
    output_format: str
    to_folder: bool
    rank: int
    world_size: int
    env: PodEnv
    model_layout: RunLayout | None = None  # whose model (`--model`); None: this run's
    model_version: str | None = None  # the registry version it resolved to, recorded per row


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous rows [start, stop) of `rank`: disjoint, covering 0..n, sizes differing by <= 1."""
    return rank * n // world_size, (rank + 1) * n // world_size


def output_target(url: str, fmt: str | None, world_size: int) -> tuple[str, bool]:
    """(format, to_folder) of an output URI: a known file extension means one file."""
    ext = posixpath.splitext(url.rstrip("/"))[1].lower()
    if ext in FILE_FORMATS:
        if fmt and fmt != FILE_FORMATS[ext]:
            raise SpecError(f"--format {fmt}: does not match the output file {url}")
        if world_size > 1:
            raise SpecError(
                f"--output {url}: {world_size} ranks cannot share one file; give a folder (one part per rank)"
            )
        return FILE_FORMATS[ext], False
    return fmt or "jsonl", True


def rank_and_world(env: PodEnv) -> tuple[int, int]:
    """This process's shard. A rendered predict Job sets names.ENV_NODE_RANK (the pod's
    completion index) and ENV_NUM_NODES; torchrun inside a pod adds LOCAL_RANK and
    LOCAL_WORLD_SIZE (one process per GPU). Otherwise RANK and WORLD_SIZE, as for training."""
    if env.num_nodes is not None:
        rank = env.node_rank * env.local_world_size + env.local_rank
        world = env.num_nodes * env.local_world_size
    else:
        rank, world = env.rank, env.world_size
    if not 0 <= rank < world:
        raise SpecError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def setup(spec: JobSpec, env: PodEnv, input_uri: str, output_uri: str, output_format: str | None,
          model: str | None = None) -> Prediction:
    """Check everything cheap: store, output, input columns, the committed model's presence.
    `model`: `current`, a registry version `vNNNN` or a run name (default: this run's model)."""
    store = Store.from_spec(spec.storage)
    store.check_reachable(spec.storage.startup_timeout_seconds)
    check_not_input(store.resolve(input_uri), store.resolve(output_uri))
    layout, version = (Registry(store, spec.name).resolve(model) if model
                       else (run_layout(spec.name, env.run_folder), None))
    if not store.is_committed(layout.model):
        raise SpecError(f"{store.url(layout.model)}: no committed model; run the train stage first")
    if not model:  # this run's own model: the spec must be the one it was trained with
        check_trained_with(store, layout, spec, "predict")
    rank, world = rank_and_world(env)
    output_url = store.resolve(output_uri)
    fmt, to_folder = output_target(output_url, output_format, world)
    task = get_task(spec)
    if type(task).predict_rows is Task.predict_rows and type(task).format_predictions is Task.format_predictions:
        raise SpecError(f"task: batch prediction is not implemented for {spec.task}")
    input_url = store.resolve(input_uri)
    try:
        in_fmt = data_format(input_url, None, "--input")
    except DataError:
        in_fmt = spec.data.format  # a folder or extension-less file: the training data's format
    rows = read_table(store, input_url, in_fmt, "--input")
    require_columns(rows, task.input_columns(), "--input")
    if to_folder:
        check_part_is_ours(store, output_url, part_name(rank, fmt))
    start, stop = shard_bounds(len(rows), rank, world)
    return Prediction(spec=spec, store=store, task=task, rows=rows.select(range(start, stop)), first_row=start,
                      total_rows=len(rows), output_url=output_url, output_format=fmt, to_folder=to_folder,
                      rank=rank, world_size=world, env=env, model_layout=layout, model_version=version)


def check_not_input(input_url: str, output_url: str) -> None:
    """Refuse an output that would replace the input: the same file, or a folder whose
    part file would be the input itself."""
    def norm(url: str) -> str:
        return posixpath.normpath(url.removeprefix("file://")).rstrip("/")

    source, target = norm(input_url), norm(output_url)
    if source == target or (posixpath.dirname(source) == target and PART.match(posixpath.basename(source))):
        raise SpecError(f"--output {output_url}: is the input (--input {input_url}); predictions would replace it")


def predict(job: Prediction) -> list[dict[str, Any]]:
    """This rank's records: input columns, `row`, and the task's prediction fields."""
    from kubetune.workload.model.devices import inference_autocast, place_for_inference  # torch: after the checks
    from kubetune.workload.model.predictor import load_for_inference

    print(
        f"kubetune: predict rank {job.rank}/{job.world_size}: rows [{job.first_row}, {job.first_row + len(job.rows)}) "
        f"of {job.total_rows}",
        flush=True,
    )
    if len(job.rows) == 0:
        return []
    folder, labels = load_trained(job.store, job.model_layout or run_layout(job.spec.name, job.env.run_folder),
                                  job.env.cache_root)
    model, tokenizer = load_for_inference(job.task, folder, job.env.cache_root)
    model = place_for_inference(model, job.env.local_rank)
    t = job.spec.train
    with inference_autocast(t.precision):  # the precision training used
        predictions = job.task.predict_rows(job.rows, model, tokenizer, labels, t.eval_batch_size or t.batch_size * 2)
    if len(predictions) != len(job.rows):
        raise RuntimeError(f"task {job.task.name} returned {len(predictions)} predictions for {len(job.rows)} rows")
    made_by = {"model_version": job.model_version} if job.model_version else {}  # which registry version
    return [{**row, "row": job.first_row + i, **pred, **made_by}
            for i, (row, pred) in enumerate(zip(job.rows.to_list(), predictions))]


def write_part(job: Prediction, records: list[dict[str, Any]]) -> str:
    """Write this rank's records whole; returns the URI written."""
    url = (posixpath.join(job.output_url, part_name(job.rank, job.output_format)) if job.to_folder
           else job.output_url)
    fs, path = fsspec.core.url_to_fs(url, **job.store.options_for(url))
    if job.to_folder and job.rank == 0:
        replace_owner_record(fs, posixpath.dirname(path), job)
    with tempfile.TemporaryDirectory(prefix="kubetune-predict-") as tmp:
        local = os.path.join(tmp, posixpath.basename(path))
        if job.output_format == "parquet":
            write_parquet(local, records)
        else:
            with open(local, "w") as handle:
                for record in records:
                    handle.write(json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n")
        if has_scheme(url) and not url.startswith("file://"):
            fs.put_file(local, path)  # one PUT: the object appears whole
        else:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            tmp_target = f"{path}.tmp-{os.getpid()}"
            fs.put_file(local, tmp_target)
            os.replace(tmp_target, path)
    return url


def part_name(rank: int, fmt: str) -> str:
    return f"part-{rank:05d}.{fmt}"


def owned_parts(fs: fsspec.AbstractFileSystem, folder: str) -> set[str]:
    """The part names that kubetune's owner record in `folder` lists as written by kubetune:
    the only files a prediction may replace or remove there. No record, an unreadable one, or
    one from before parts were recorded: none (a user's `part-00003.jsonl` looks the same)."""
    try:
        record = json.loads(fs.cat_file(posixpath.join(folder, PREDICTIONS_OWNER_FILE)))
    except (FileNotFoundError, ValueError):
        return set()
    parts = record.get("parts") if isinstance(record, dict) else None
    return {p for p in parts if isinstance(p, str) and PART.match(p)} if isinstance(parts, list) else set()


def check_part_is_ours(store: Store, folder_url: str, name: str) -> None:
    """Refuse (one line, before the model loads) to replace a file named like this rank's part
    that kubetune did not write: `--overwrite` replaces kubetune's predictions, not the user's."""
    fs, folder = fsspec.core.url_to_fs(folder_url, **store.options_for(folder_url))
    folder = folder.rstrip("/")
    if fs.exists(posixpath.join(folder, name)) and name not in owned_parts(fs, folder):
        raise SpecError(f"--output {folder_url}: holds a {name} that kubetune did not write (not listed in "
                        f"{PREDICTIONS_OWNER_FILE}); move it away or choose another folder")


def replace_owner_record(fs: fsspec.AbstractFileSystem, folder: str, job: Prediction) -> None:
    """Rank 0, before writing its part: remove the parts that the folder's record lists and
    this run does not write (an earlier run's extra ranks, or its other format), so the
    folder never holds a row twice, then record this run's parts. Unlisted files stay."""
    ours = {part_name(rank, job.output_format) for rank in range(job.world_size)}
    if fs.exists(folder):
        for name in sorted(owned_parts(fs, folder) - ours):
            if fs.exists(posixpath.join(folder, name)):
                fs.rm(posixpath.join(folder, name))
    else:
        fs.makedirs(folder, exist_ok=True)
    record = {"job": job.spec.name, "parts": sorted(ours)}
    fs.pipe_file(posixpath.join(folder, PREDICTIONS_OWNER_FILE), (json.dumps(record) + "\n").encode())


def write_parquet(local: str, records: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = json.loads(json.dumps(records, default=_jsonable))  # plain types for arrow
    table = pa.Table.from_pylist(rows) if rows else pa.table({"row": pa.array([], pa.int64())})
    pq.write_table(table, local)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def run_prediction(spec: JobSpec, env: PodEnv, input_uri: str, output_uri: str, output_format: str | None = None,
                   model: str | None = None) -> int:
    """Predict this rank's shard of the input and write it whole. Returns 0."""
    job = setup(spec, env, input_uri, output_uri, output_format, model)
    url = write_part(job, predict(job))
    print(f"kubetune: predictions: {url}", flush=True)
    return 0
