"""The tokenization cache in object storage (moto's S3 server over HTTP): a repeated job does
not tokenize again; changed data files or tokenization settings do."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from kubetune.contract.spec.job import validate_spec
from kubetune.storage import Store
from kubetune.workload.data.splits import load_splits
from kubetune.workload.data.tables import PinnedData
from kubetune.workload.stages.run import PodEnv
from kubetune.workload.tasks import get_task
from kubetune.workload.data.token_cache import CACHE_PREFIX, cached_prepare


def _run(store: Store, cache: Path, **train) -> SimpleNamespace:
    spec = validate_spec({
        "name": "cache-job",
        "model": {"source": "m"},
        "data": {"train": "data/train.tsv", "validation": "data/validation.tsv", "columns": {"text": "sentence"}},
        "train": {"max_seq_length": 32, **train},
    })
    task = get_task(spec)
    return SimpleNamespace(spec=spec, store=store, task=task, is_main=True, pinned=PinnedData(), env=PodEnv(cache_root=cache),
                           splits=load_splits(spec, store, task.columns()))


@pytest.fixture
def store_with_sst2(s3_bucket, shared_data: Path) -> Store:
    endpoint, bucket = s3_bucket
    store = Store(f"s3://{bucket}/root", endpoint_url=endpoint)
    train = (shared_data / "sst2" / "train.tsv").read_text().splitlines()
    dev = (shared_data / "sst2" / "dev.tsv").read_text().splitlines()
    store.write_text("data/train.tsv", "\n".join(train[:201]) + "\n")
    store.write_text("data/validation.tsv", "\n".join(dev[:51]) + "\n")
    return store


@pytest.fixture
def tokenizer(minilm_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.mark.slow  # waits on real processes, timeouts or leases: keeps `-m "not slow"` under 5 minutes
def test_repeated_job_reads_tokenized_data_from_the_cache(store_with_sst2: Store, tokenizer, monkeypatch, tmp_path):
    first, hit = cached_prepare(_run(store_with_sst2, tmp_path / "cache-pod-1"), tokenizer)
    assert not hit
    assert len(store_with_sst2.list_dirs(CACHE_PREFIX)) == 1

    # A new pod (empty local cache), same job: the task's tokenization must not run.
    run = _run(store_with_sst2, tmp_path / "cache-pod-2")
    monkeypatch.setattr(run.task, "prepare", lambda *a, **k: pytest.fail("tokenized again"))
    second, hit = cached_prepare(run, tokenizer)
    assert hit
    assert any((tmp_path / "cache-pod-2" / "tokenized").iterdir())  # the local copy: under the pod's cache
    assert second.labels == first.labels
    assert second.train["input_ids"] == first.train["input_ids"]
    assert second.validation["labels"] == first.validation["labels"]


@pytest.mark.slow  # waits on real processes, timeouts or leases: keeps `-m "not slow"` under 5 minutes
def test_changed_files_or_settings_miss_the_cache(store_with_sst2: Store, tokenizer, tmp_path):
    cache = tmp_path / "cache"
    assert not cached_prepare(_run(store_with_sst2, cache), tokenizer)[1]
    assert cached_prepare(_run(store_with_sst2, cache), tokenizer)[1]
    assert not cached_prepare(_run(store_with_sst2, cache, max_seq_length=16), tokenizer)[1]

    text = store_with_sst2.read_text("data/train.tsv")
    store_with_sst2.write_text("data/train.tsv", text.replace("\t0\n", "\t1\n", 1))  # new ETag
    changed, hit = cached_prepare(_run(store_with_sst2, cache), tokenizer)
    assert not hit
    assert len(store_with_sst2.list_dirs(CACHE_PREFIX)) == 3
