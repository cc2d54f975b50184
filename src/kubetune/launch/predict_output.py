"""`run --local --stage predict`: whose predictions an output folder holds.

A folder of `part-NNNNN` files carries no name of the job that wrote it, so predicting with a
second job into the same folder silently replaced the first job's parts. The predict pod's rank
0 leaves `OWNER_FILE` (names.PREDICTIONS_OWNER_FILE: the job's name and the parts it writes)
next to the parts; before the next local prediction the launcher refuses a folder whose parts
belong to another job, or to no known job, unless `--overwrite`. Even then only the parts the
record lists are replaced or removed (the workload's prediction module): a user's own
`part-00007.jsonl` survives. A single output file (`.jsonl`/`.parquet`) is one file the user
named: as before, it is replaced.
"""

from __future__ import annotations

import json
import posixpath
import re

import fsspec

from kubetune.contract.errors import SpecError
from kubetune.contract.names import PREDICTIONS_OWNER_FILE
from kubetune.contract.spec.job import JobSpec
from kubetune.storage import Store

OWNER_FILE = PREDICTIONS_OWNER_FILE
_PART = re.compile(r"^part-\d{5}\.(jsonl|parquet)$")
_FILE_OUTPUT = (".jsonl", ".parquet")


def _folder(spec: JobSpec, output: str) -> tuple[fsspec.AbstractFileSystem, str] | None:
    url = Store.from_spec(spec.storage).resolve(output)
    if url.rstrip("/").lower().endswith(_FILE_OUTPUT):
        return None
    fs, path = fsspec.core.url_to_fs(url, **Store.from_spec(spec.storage).options_for(url))
    return fs, path.rstrip("/")


def check_output(spec: JobSpec, output: str, overwrite: bool, shown: str | None = None) -> None:
    """SpecError (one line, exit 2, naming the output as the user gave it: `shown`) when
    `output` holds another job's prediction parts."""
    found = _folder(spec, output)
    if found is None or overwrite:
        return
    fs, path = found
    if not fs.isdir(path):
        return
    names = {posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)}
    if not any(_PART.match(n) for n in names):
        return
    owner = None
    if OWNER_FILE in names:
        try:
            owner = json.loads(fs.cat_file(f"{path}/{OWNER_FILE}")).get("job")
        except (ValueError, AttributeError):
            owner = None
    if owner == spec.name:
        return
    whose = f"job {owner!r}" if owner else "another run (no owner recorded)"
    raise SpecError(f"--output {shown or output}: already holds predictions of {whose}; "
                    "choose another folder, or add --overwrite to replace them")


def mark_output(spec: JobSpec, output: str) -> None:
    """Record that `output`'s parts are this job's (after a successful prediction), keeping the
    part names the pod recorded: they are what a later `--overwrite` may remove."""
    found = _folder(spec, output)
    if found is None:
        return
    fs, path = found
    try:
        record = json.loads(fs.cat_file(f"{path}/{OWNER_FILE}"))
    except (FileNotFoundError, ValueError):
        record = {}
    record = {**(record if isinstance(record, dict) else {}), "job": spec.name}
    fs.pipe_file(f"{path}/{OWNER_FILE}", (json.dumps(record) + "\n").encode())
