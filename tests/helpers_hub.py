"""Repositories for the local Hub (`fakes.hub_server`): SST-2 as its authors publish it on the
Hub (parquet files under `data/`, columns idx/sentence/label, a dataset card with a licence),
cut from ../shared/data's real SST-2 rows, and the MiniLM model folder."""

from __future__ import annotations

import io
from pathlib import Path

from fakes.hub_server import FakeHub, Repo

SST2 = "stanfordnlp/sst2"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CARD = b"---\nlicense: unknown\ntask_categories:\n- text-classification\n---\n# SST-2 (test copy)\n"


def sst2_rows(shared_data: Path, split: str, start: int, count: int) -> tuple[list[str], list[int]]:
    """`count` (sentence, label) rows of ../shared/data/sst2/{split}.tsv from row `start`."""
    lines = (shared_data / "sst2" / f"{split}.tsv").read_text().splitlines()[1 + start:1 + start + count]
    pairs = [line.rsplit("\t", 1) for line in lines]
    return [p[0] for p in pairs], [int(p[1]) for p in pairs]


def parquet(sentences: list[str], labels: list[int]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"idx": list(range(len(labels))), "sentence": sentences, "label": labels})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def sst2_files(shared_data: Path, train: int = 240, validation: int = 80, offset: int = 0) -> dict[str, bytes]:
    return {
        "README.md": CARD,
        "data/train-00000-of-00001.parquet": parquet(*sst2_rows(shared_data, "train", offset, train)),
        "data/validation-00000-of-00001.parquet": parquet(*sst2_rows(shared_data, "dev", 0, validation)),
    }


def add_sst2(hub: FakeHub, shared_data: Path, repo_id: str = SST2, **sizes: int) -> Repo:
    """SST-2 on the local Hub (a fresh repository each call: its `main` at one commit)."""
    return hub.add_repo("dataset", repo_id, sst2_files(shared_data, **sizes))


def add_minilm(hub: FakeHub, model_dir: Path, repo_id: str = MINILM) -> Repo:
    return hub.add_repo("model", repo_id, {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()})
