"""Tokenized splits cached in object storage, so a restarted or repeated job does not tokenize
again.

The key is a hash of everything the tokenized result depends on: the identity of the data
files (ETag where the store has one, else size and modification time), the spec's `data`
section (splits, columns, limits, labels), the task, the tokenizer's content (its serialized
vocabulary and settings, wherever it was loaded from) and the tokenization settings of
`train` (max_seq_length and friends). Entries live at `cache/tokenized/<key>/` under
`storage.root` with a COMMITTED marker (written last, as for checkpoints); a local copy is
kept under ENV_CACHE (the run's `PodEnv.cache_root`). Only rank 0 writes an entry.

`prepare_data` is what `build_trainer` calls instead of `task.prepare`: streaming splits
(see `streaming`) are tokenized on the fly instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from kubetune.storage import Store
from kubetune.workload.data.tables import PinnedData, split_files
from kubetune.workload.model.downloads import download_once
from kubetune.workload.stages.run import Run
from kubetune.workload.data.global_stream import GlobalStream
from kubetune.workload.data.streaming import make_stream, streaming_source
from kubetune.workload.tasks import Prepared

log = logging.getLogger("kubetune.token_cache")

CACHE_PREFIX = "cache/tokenized"
VERSION = 2  # 2: strip_html now cleans CSV/TSV (large_string) columns too
# Fields of `train` that change what tokenization produces (others, added by other tasks, are
# picked up when present).
TOKENIZATION_FIELDS = ("max_seq_length", "max_target_length", "packing")


def file_identity(store: Store, uri: str, pinned: PinnedData | None = None) -> list[dict[str, Any]]:
    """Name plus ETag (object stores) or size and mtime (files) of every file of a split (in a
    run, of its `pinned` files: what the run trains on)."""
    files = split_files(store, uri, "data", pinned)
    identity = []
    for file in files.paths:
        info = files.fs.info(file)
        ident = {"name": file, "size": info.get("size")}
        etag = info.get("ETag") or info.get("etag")
        if etag:
            ident["etag"] = str(etag).strip('"')
        else:
            mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
            ident["mtime"] = str(mtime)
        identity.append(ident)
    return identity


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what the tokenizer does, not of where it was loaded from."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Calling the tokenizer sets its truncation/padding state: not part of its identity.
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        text = json.dumps(state, sort_keys=True)
    else:  # slow tokenizers: their vocabulary and settings
        text = json.dumps({"vocab": sorted(tokenizer.get_vocab().items()), "init": str(tokenizer.init_kwargs)})
    extra = {"class": type(tokenizer).__name__, "padding_side": getattr(tokenizer, "padding_side", None),
             "model_max_length": getattr(tokenizer, "model_max_length", None),
             # Not part of the backend's serialization, but used by chat-formatted tasks.
             "chat_template": getattr(tokenizer, "chat_template", None),
             "special_tokens": getattr(tokenizer, "special_tokens_map", None)}
    return hashlib.sha256((text + json.dumps(extra, sort_keys=True, default=str)).encode()).hexdigest()


def cache_key(run: Run, tokenizer: PreTrainedTokenizerBase) -> str:
    spec = run.spec
    data = spec.data.model_dump(mode="json")
    files = {split: file_identity(run.store, data[split], run.pinned) for split in ("train", "validation") if data.get(split)}
    train = {f: getattr(spec.train, f) for f in TOKENIZATION_FIELDS if hasattr(spec.train, f)}
    material = {"version": VERSION, "task": spec.task, "data": data, "files": files, "train": train,
                "tokenizer": tokenizer_fingerprint(tokenizer)}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]


def load_cached(store: Store, key: str, cache: Path) -> Prepared | None:
    """The cached Prepared for `key` (its local copy under `cache`), or None (no committed entry)."""
    rel = f"{CACHE_PREFIX}/{key}"
    if not store.is_committed(rel):
        return None
    local = download_once(cache / "tokenized" / key, lambda folder: store.download_dir(rel, folder))
    meta = json.loads((local / "prepared.json").read_text())
    return Prepared(
        train=datasets.load_from_disk(str(local / "train")),
        validation=datasets.load_from_disk(str(local / "validation")),
        labels=meta.get("labels"),
        extra=meta.get("extra") or {},
    )


def save_cached(store: Store, key: str, prepared: Prepared) -> bool:
    """Write an entry: files, then the marker. Skips what cannot be stored faithfully."""
    try:
        extra = json.loads(json.dumps(prepared.extra))
    except (TypeError, ValueError):
        log.info("not caching tokenized data: the task's extra data is not JSON")
        return False
    rel = f"{CACHE_PREFIX}/{key}"
    with tempfile.TemporaryDirectory(prefix="kubetune-tokcache-") as tmp:
        prepared.train.save_to_disk(os.path.join(tmp, "train"))
        prepared.validation.save_to_disk(os.path.join(tmp, "validation"))
        Path(tmp, "prepared.json").write_text(json.dumps({"labels": prepared.labels, "extra": extra}))
        files = store.upload_dir(tmp, rel)
    store.commit(rel, files)
    return True


def cached_prepare(run: Run, tokenizer: PreTrainedTokenizerBase) -> tuple[Prepared, bool]:
    """task.prepare through the cache; returns (prepared, hit)."""
    key = cache_key(run, tokenizer)
    try:
        hit = load_cached(run.store, key, run.env.cache_root)
    except Exception as exc:  # a damaged entry is a miss, never a failure
        log.warning("tokenization cache entry %s unreadable (%s); tokenizing", key, exc)
        hit = None
    if hit is not None:
        if run.is_main:
            print(f"kubetune: tokenized data from cache: {run.store.url(CACHE_PREFIX, key)}", flush=True)
        return hit, True
    prepared = run.task.prepare(run.splits, tokenizer)
    if run.is_main:
        try:
            if save_cached(run.store, key, prepared):
                print(f"kubetune: tokenized data cached: {run.store.url(CACHE_PREFIX, key)}", flush=True)
        except Exception as exc:  # the cache is an optimisation; training goes on
            log.warning("could not write the tokenization cache: %s", exc)
    return prepared, False


def prepare_data(run: Run, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """The Trainer's datasets: a stream for a streamed train split, else the cached (or
    freshly tokenized) in-memory splits."""
    source = streaming_source(run.spec, run.store, run.pinned)
    if source is not None:
        prepared = run.task.prepare(run.splits, tokenizer)  # train = its head; validation in full
        extra = {"kind": GlobalStream, "global_batch": run.global_batch} if run.global_batch else {}  # an elastic gang
        stream = make_stream(source, run.spec, run.task, tokenizer, prepared.labels, run.rank, run.world_size, **extra)
        prepared.train = stream
        prepared.extra["stream"] = stream
        return prepared
    return cached_prepare(run, tokenizer)[0]
