"""Read one split's files from their URI (local folder or object store), and check them.

Files are read with `datasets` through fsspec, whatever the store; `split_files` is the one
place a split's URI (a file, a folder, a glob) becomes its list of files, or, within a run, the
files it became when the run began (`PinnedData`, passed in, never kept here). Everything that can
be wrong with the data (missing file, missing column, empty split, unknown label) is detected
before any model is loaded, and raised as a one-line DataError naming the spec field.
`splits.load_splits` puts these together for all splits of a job.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import datasets
import fsspec

from kubetune.storage import Store
from kubetune.workload.data.hub_revisions import is_hub_uri, pin
from kubetune.workload.errors import DataError

datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()
# The packaged readers log "Failed to read file ..." at ERROR and then raise; the raised error
# becomes the one `error:` line (read_table), so the log line would only repeat it.
logging.getLogger("datasets.packaged_modules").setLevel(logging.CRITICAL)

_BUILDERS = {"csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet"}
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_HTML_TAG = re.compile(r"<[^>]+>")
TEXT_DTYPES = ("string", "large_string")


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


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split: its resolved URI, file system, fsspec paths and options."""

    url: str
    fs: fsspec.AbstractFileSystem
    paths: list[str]  # fsspec paths (no scheme), sorted
    options: dict[str, Any]
    hub_pin: tuple[str, str] | None = None  # an hf:// split: (its ref key, the commit it is read at)

    @property
    def uris(self) -> list[str]:
        """Full URIs: fsspec paths lose their scheme; give it back (for `datasets`, workers)."""
        if "://" not in self.url:
            return list(self.paths)
        scheme = self.url.split("://", 1)[0] + "://"
        return [p if p.startswith(scheme) else f"{scheme}{p}" for p in self.paths]


@dataclass
class PinnedData:
    """A run's data as the run found it: the files each split field resolved to when it began
    (`lineage.resolve_data`), which every later read of those splits in the run uses (a file
    that lands mid-run is neither half-read nor missing from the lineage), and the rows each
    data file held as the run read it (file URI -> rows), for the lineage. One per run, carried
    in `Run.pinned` and passed to the readers; a read outside a run (prediction's input) has none."""

    files: dict[str, SplitFiles] = dataclasses.field(default_factory=dict)  # spec field (data.train) -> its files
    rows: dict[str, int] = dataclasses.field(default_factory=dict)
    # hf:// revisions as written -> the commit the run reads them at (`hub_revisions.pin`)
    hub_commits: dict[str, str] = dataclasses.field(default_factory=dict)

    def pin(self, spec_field: str, files: SplitFiles) -> None:
        """From now on in this run, the split of `spec_field` (and any split with its URI) is `files`."""
        self.files[spec_field] = dataclasses.replace(files, options=copy.deepcopy(files.options))

    def lookup(self, url: str) -> SplitFiles | None:
        """The pinned files of a resolved URI, as a copy: `datasets` adds keys to the storage
        options it is given."""
        for files in self.files.values():
            if files.url == url:
                return dataclasses.replace(files, options=copy.deepcopy(files.options))
        return None


def record_rows(pinned: PinnedData | None, uri: str, rows: int) -> None:
    """`uri` (one data file) held `rows` rows when the run read it; nothing outside a run."""
    if pinned is not None:
        pinned.rows[uri] = rows


def split_files(store: Store, uri: str, field: str, pinned: PinnedData | None = None) -> SplitFiles:
    """A split's files: the file itself, a folder's files (hidden ones skipped), or a glob's
    matches (a matching folder stands for its files); the run's `pinned` files when it resolved
    them already. Raises DataError when there are none."""
    url = store.resolve(uri)
    if pinned is not None and (files := pinned.lookup(url)) is not None:
        return files
    options = store.options_for(url)
    read_at, hub_pin = url, None
    if is_hub_uri(url):  # read at one commit, the run's (hub_revisions)
        read_at, key, commit = pin(url, field, pinned.hub_commits if pinned is not None else {}, DataError)
        hub_pin = (key, commit)
    try:
        fs, path = fsspec.core.url_to_fs(read_at, **options)
        found = fs.glob(path) if any(c in path for c in "*?[") else ([path] if fs.exists(path) else [])
        if found and fs.isdir(found[0]):
            found = [p for p in fs.find(found[0]) if not posixpath.basename(p).startswith(".")]
    except Exception as exc:
        raise DataError(f"{field}: cannot read {url}: {_one_line(exc)}") from None
    if not found:
        raise DataError(f"{field}: {url}: {'no file matches' if any(c in path for c in '*?[') else 'file not found'}")
    return SplitFiles(url=url, fs=fs, paths=sorted(found), options=options, hub_pin=hub_pin)


def read_table(store: Store, uri: str, fmt: str | None, field: str,
               pinned: PinnedData | None = None) -> datasets.Dataset:
    """One file (or folder/glob of same-format files) as a Dataset; in a run, its `pinned`
    files, and the rows of each file recorded there."""
    url = store.resolve(uri)
    fmt = data_format(url, fmt, field)
    files = split_files(store, uri, field, pinned)
    try:
        if fmt == "squad":
            return _read_squad(files, pinned)
        return _read_files(files, fmt, pinned)
    except DataError:
        raise
    except Exception as exc:
        bad = first_invalid_utf8(files) if _caused_by(exc, UnicodeDecodeError) else None
        if bad is not None:
            raise DataError(f"{field}: cannot parse {url} as {fmt}: {bad[0]} is not UTF-8 text: "
                            f"invalid byte at offset {bad[1]}; save it as UTF-8") from None
        raise DataError(f"{field}: cannot parse {url} as {fmt}: {parse_detail(exc)}") from None


def _read_files(files: SplitFiles, fmt: str, pinned: PinnedData | None) -> datasets.Dataset:
    """The split's files in one `load_dataset` call, one split per file, so each file's rows are
    counted as it is read (`record_rows`), then joined in file order.

    Why not one split of all files: it loses which file a row came from, and counting afterwards
    would read the data twice. One call per file would cost about 80 ms a file, one call with a
    split per file 7-16 ms (100 TSV files of 200 rows, 2 shared CPU cores). Later files are cast
    to the first file's features, as a multi-file split casts its later tables."""
    kwargs: dict[str, Any] = {"delimiter": "\t"} if fmt == "tsv" else {}
    names = [f"file{i}" for i in range(len(files.uris))]
    loaded = datasets.load_dataset(_BUILDERS[fmt], data_files={n: [u] for n, u in zip(names, files.uris)},
                                   storage_options=files.options or None, **kwargs)
    parts = []
    for name, uri in zip(names, files.uris):
        part = loaded[name]
        record_rows(pinned, uri, len(part))
        if parts and part.features != parts[0].features:
            part = part.cast(parts[0].features)
        parts.append(part)
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _read_squad(files: SplitFiles, pinned: PinnedData | None) -> datasets.Dataset:
    """Flatten SQuAD-format JSON (data → paragraphs → qas) into one row per question; the
    article title is kept so splits can be made by article."""
    rows: dict[str, list] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for path, uri in zip(files.paths, files.uris):
        with files.fs.open(path, "r") as handle:
            doc = json.load(handle)
        record_rows(pinned, uri, sum(len(p["qas"]) for a in doc["data"] for p in a["paragraphs"]))
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


def text_columns(ds: datasets.Dataset, columns: dict[str, str | None]) -> list[str]:
    """The task's columns that hold text in `ds` (what `data.strip_html` cleans). CSV/TSV files
    read by `datasets` have `large_string` columns, lists and JSON `string` ones."""
    return [c for c in columns.values()
            if c is not None and c in ds.column_names and getattr(ds.features[c], "dtype", None) in TEXT_DTYPES]


def check_split(ds: datasets.Dataset, columns: dict[str, str | None], field: str, url: str) -> None:
    """A split must have rows and every role's column."""
    if len(ds) == 0:
        raise DataError(f"{field}: {url}: no rows")
    require_columns(ds, columns, field)


def limit(ds: datasets.Dataset, max_rows: int | None) -> datasets.Dataset:
    """The first `max_rows` rows (a `data.max_*_samples` limit); all of them when unset."""
    return ds.select(range(min(max_rows, len(ds)))) if max_rows else ds


def _caused_by(exc: BaseException, kind: type) -> bool:
    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in seen:
        if isinstance(node, kind):
            return True
        seen.append(node)
        node = node.__cause__ or node.__context__
    return False


def first_invalid_utf8(files: SplitFiles, block: int = 1 << 20) -> tuple[str, int] | None:
    """The first file of a split that is not UTF-8, and the byte offset of its first bad byte
    (the reader's own error counts from the block it was decoding). Only read on failure."""
    import codecs

    for path in files.paths:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with files.fs.open(path, "rb") as handle:
            while True:
                chunk = handle.read(block)
                pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as exc:
                    return path, offset - pending + exc.start
                if not chunk:
                    break
                offset += len(chunk)
    return None


def parse_detail(exc: BaseException) -> str:
    """The useful line of a parse failure. `datasets` wraps the reader's error ("Expected 2
    fields in line 51, saw 4", a UnicodeDecodeError's byte offset) in a generic "An error
    occurred while generating the dataset"; the innermost cause says what is wrong. The
    offending bytes or text are never included, only where they are."""
    causes = [exc]
    while (nxt := causes[-1].__cause__ or causes[-1].__context__) is not None and nxt not in causes:
        causes.append(nxt)
    for cause in reversed(causes):
        if isinstance(cause, UnicodeDecodeError):
            return (f"not {cause.encoding} text: invalid byte at offset {cause.start} "
                    f"(of the block being read); save the file as UTF-8")
    text = _one_line(causes[-1])
    tokenizing = re.search(r"(Expected \d+ fields in line \d+, saw \d+)", text)
    if tokenizing:  # pandas: "Error tokenizing data. C error: Expected 2 fields in line 51, saw 4"
        return f"{tokenizing.group(1)} (a ragged row: count its separators)"
    return text


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
