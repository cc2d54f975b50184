"""What made a model: `runs/<run>/lineage.json` (docs/retraining.md#what-is-stored).

Every training run writes it, and the model folder carries a copy, so a promoted model can
always say which data objects (URI, size, ETag or version id, or for a local file its mtime
and a content hash; the rows counted as each file was read), which model source, which
tokenizer, which parent version, which kubetune and which image made it.

Data files are resolved once, at the start of a run (`resolve_data`), into the run's
`tables.PinnedData`: every later read of a split in the run is given it and uses exactly those
files, so a file that lands mid-run is neither half-read nor missing from the lineage. The
fingerprint of the resolved files (`data_fingerprint`) is what a retrain run compares with
the current version's to decide whether anything is new.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import fsspec

from kubetune.contract.layout import PROVENANCE_FILE
from kubetune.contract.spec.job import JobSpec, run_defining
from kubetune.storage import Store
from kubetune.workload.data.tables import PinnedData, SplitFiles, split_files

# The spec's data fields that name files, in the order they are recorded.
SPLIT_FIELDS = ("train", "validation", "test")
# Their spec fields: what a training run's lineage records (a retrain run pins its gate set too).
DATA_FIELDS = tuple(f"data.{f}" for f in SPLIT_FIELDS)
# Files of a model folder whose content is hashed (config and weights index); the rest are
# recorded by name and size.
MODEL_HASHED = ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json", "adapter_config.json")
# Local files up to this size get a content hash in the lineage (object stores give ETags).
HASH_LIMIT = 1 << 30


def resolve_data(spec: JobSpec, store: Store, extra: dict[str, str | None] | None = None,
                 pinned: PinnedData | None = None) -> PinnedData:
    """Resolve every split's URI (file, folder or glob) to its files now and pin them for the
    rest of the run: into `pinned` when the run began with some (a retrain run's, resolved
    before its training run), else into a new PinnedData. Fields already pinned stay as they
    are. `extra` adds fields (e.g. `promotion.gate_data`)."""
    pinned = PinnedData() if pinned is None else pinned
    fields: dict[str, str | None] = {f"data.{f}": getattr(spec.data, f) for f in SPLIT_FIELDS}
    fields.update(extra or {})
    for field, uri in fields.items():
        if uri and field not in pinned.files:
            pinned.pin(field, split_files(store, uri, field, pinned))
    return pinned


def file_records(files: SplitFiles, rows: dict[str, int]) -> list[dict[str, Any]]:
    """One record per file: URI, size, the store's identity for its content, and the rows
    counted when the run read it (`rows`; None for a file not read whole: a streamed text
    file past the head, a gate set not read yet)."""
    records = []
    for path, uri in zip(files.paths, files.uris):
        info = files.fs.info(path)
        record: dict[str, Any] = {"uri": uri, "size": info.get("size"), "rows": rows.get(uri)}
        etag = info.get("ETag") or info.get("etag") or info.get("blob_id")  # blob_id: a Hub file's git oid
        if files.hub_pin is not None:  # the revision as written and the commit it was read at
            record["hub_ref"], record["revision"] = files.hub_pin
        if etag:
            record["etag"] = str(etag).strip('"')
        if info.get("VersionId"):
            record["version_id"] = info["VersionId"]
        if not etag and "file" in _protocols(files.fs):
            record["mtime"] = info.get("mtime")
            if (info.get("size") or 0) <= HASH_LIMIT:
                record["sha256"] = _sha256(files.fs, path)
        records.append(record)
    return records


def data_records(pinned: PinnedData, fields: tuple[str, ...] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The records of the run's pinned splits (of `fields` only, when given)."""
    return {field: file_records(files, pinned.rows) for field, files in pinned.files.items()
            if fields is None or field in fields}


def data_provenance(pinned: PinnedData, fields: tuple[str, ...]) -> dict[str, Any]:
    """Each split's `PROVENANCE_FILE` (the folder of its first file), where there is one: its
    source, licence, and whether it is synthetic, as whoever made the data recorded them."""
    found: dict[str, Any] = {}
    for field, files in pinned.files.items():
        if field not in fields or not files.paths:
            continue
        path = posixpath.join(posixpath.dirname(files.paths[0]), PROVENANCE_FILE)
        try:
            if files.fs.exists(path):
                found[field] = json.loads(files.fs.cat_file(path))
        except (OSError, ValueError):  # unreadable provenance is no provenance; the data were read
            continue
    return found


def data_fingerprint(records: dict[str, list[dict[str, Any]]]) -> str:
    """A hash of the training data's identity: which files, their sizes and content ids
    (ETag/version/hash; mtime only when there is nothing better). The gate set is not part of
    it: new gate data alone is no reason to train."""
    train = {k: v for k, v in records.items() if k in ("data.train", "data.validation")}
    ids = {k: [{x: r.get(x) for x in ("uri", "size", "etag", "version_id", "sha256")} for r in v]
           for k, v in train.items()}
    return hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()


def run_definition_hash(spec: JobSpec) -> str:
    """A hash of the spec's run-defining parts (`contract.spec.job.run_defining`): specs with
    the same hash make the same run. Not the hash of the whole resolved YAML that a rendered
    pod carries (`launch.render.pod`), which changes with any field."""
    return hashlib.sha256(json.dumps(run_defining(spec.model_dump(mode="json")), sort_keys=True).encode()).hexdigest()


def model_record(store: Store, uri: str, revision: str | None) -> dict[str, Any]:
    """A model source: its URI, revision, and a content hash of its config and weights index
    (plus every file's name and size), when it is a folder; a Hub id is recorded as given."""
    record: dict[str, Any] = {"uri": uri, "revision": revision}
    try:
        fs, path = fsspec.core.url_to_fs(uri, **store.options_for(uri))
        if not fs.isdir(path):
            return record
        digest = hashlib.sha256()
        for info in sorted(fs.find(path, detail=True).values(), key=lambda i: i["name"]):
            name = posixpath.relpath(info["name"], path)
            digest.update(f"{name}\t{info.get('size')}\n".encode())
            if posixpath.basename(name) in MODEL_HASHED:
                digest.update(fs.cat_file(info["name"]))
        record["content_hash"] = digest.hexdigest()
    except Exception:  # a Hub id is not a path; its revision is its identity
        pass
    return record


def build_lineage(spec: JobSpec, store: Store, pinned: PinnedData, model_uri: str,
                  tokenizer_uri: str, rows: dict[str, int], parent: str | None,
                  records: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """`lineage.json`: the run's data splits (`DATA_FIELDS`) as pinned and read (`records`,
    when the run already took them at its start: each local file is hashed once), `rows` per
    split as trained on, the model source, the tokenizer, the parent version."""
    if records is None:
        records = data_records(pinned, DATA_FIELDS)
    else:  # the rows as counted by now (a streamed split counts its files as it reads them)
        records = {f: [{**r, "rows": pinned.rows.get(r["uri"])} for r in rs] for f, rs in records.items()}
    return {
        "data": records,
        "data_fingerprint": data_fingerprint(records),
        "provenance": data_provenance(pinned, DATA_FIELDS),
        "rows": rows,
        "model": model_record(store, model_uri, spec.model.revision),
        "tokenizer": tokenizer_uri,
        "parent_version": parent,
        "kubetune_version": _kubetune_version(),
        "image": spec.image,  # what the rendered pod runs
        # The key keeps its first name: README.md names it, and lineage files already say so.
        "spec_hash": run_definition_hash(spec),
    }


def _kubetune_version() -> str | None:
    try:
        return version("kubetune")
    except PackageNotFoundError:
        return None


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return tuple(protocol) if isinstance(protocol, (tuple, list)) else (protocol,)


def _sha256(fs: fsspec.AbstractFileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
