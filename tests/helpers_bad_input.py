"""The bad-input suites' shared job: a toy store's base spec, a way to change one field of it,
and a digest of a store's whole tree (a refused job must leave it byte for byte unchanged)."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROWS = "".join(f"{'good' if i % 2 else 'bad'} movie number {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(40))

HEAD = "".join(ROWS.splitlines(keepends=True)[:10])


def base_job(store: Path, name: str) -> dict:
    return {
        "name": name,
        "model": {"source": "models/all-MiniLM-L6-v2"},
        "data": {"train": "datasets/toy/train.tsv", "test": "datasets/toy/test.tsv"},
        "train": {"epochs": 1, "batch_size": 8, "max_seq_length": 32},
        "storage": {"root": str(store)},
    }


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def mutate(job: dict, path: str, value) -> dict:
    node = job
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return job


_DELETE = object()
