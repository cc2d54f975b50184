"""The checkpoint protocol in object storage (moto's S3 server over HTTP): files, then the
commit marker, then LATEST; partial folders ignored; background uploads in order, retried,
pruned; and the sampler that makes a resume exact."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from kubetune.contract.layout import RunLayout
from kubetune.storage import Store
from kubetune.workload.checkpointing.protocol import (
    committed_steps,
    fetch_checkpoint,
    find_resume_step,
    publish_checkpoint,
)
from kubetune.workload.checkpointing.uploader import Uploader
from kubetune.workload.checkpointing.sampler import ResumableLengthGroupedSampler, length_grouped_order


def _local_checkpoint(root: Path, step: int, size: int = 1000) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes([step % 256]) * size)
    (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    return folder


@pytest.fixture
def s3_store(s3_bucket) -> Store:
    endpoint, bucket = s3_bucket
    return Store(f"s3://{bucket}/root", endpoint_url=endpoint)


def test_partial_checkpoint_without_marker_is_skipped(s3_store: Store, tmp_path: Path, caplog):
    layout = RunLayout("job")
    publish_checkpoint(s3_store, layout, _local_checkpoint(tmp_path, 4), 4, keep=3)
    # A pod died while uploading step 8: its files are there, its marker is not; even a LATEST
    # naming it (written by hand here) must not be trusted.
    s3_store.upload_dir(_local_checkpoint(tmp_path, 8), layout.checkpoint(8))
    s3_store.write_text(layout.latest, "step-000008\n")

    with caplog.at_level(logging.WARNING, logger="kubetune.checkpoint"):
        assert find_resume_step(s3_store, layout) == 4
    assert "step-000008" in caplog.text and "no commit marker" in caplog.text
    assert committed_steps(s3_store, layout) == [4]
    fetched = fetch_checkpoint(s3_store, layout, 4, tmp_path / "fetched")
    assert (fetched / "trainer_state.json").read_text() == '{"global_step": 4}'

    # The next commit removes the dead partial folder.
    publish_checkpoint(s3_store, layout, _local_checkpoint(tmp_path, 12), 12, keep=3)
    assert s3_store.list_dirs(layout.checkpoints) == ["step-000004", "step-000012"]


def test_fetch_replaces_an_incomplete_local_copy(s3_store: Store, tmp_path: Path):
    layout = RunLayout("job")
    publish_checkpoint(s3_store, layout, _local_checkpoint(tmp_path / "src", 4), 4, keep=2)
    stale = tmp_path / "work" / "checkpoint-4"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("half")  # a local save cut short
    fetched = fetch_checkpoint(s3_store, layout, 4, tmp_path / "work")
    assert (fetched / "model.safetensors").stat().st_size == 1000
    assert (fetched / "trainer_state.json").read_text() == '{"global_step": 4}'


def test_uploader_commits_in_order_and_prunes(s3_store: Store, tmp_path: Path):
    layout = RunLayout("job")
    calls: list[str] = []
    real_write_text, real_upload_file = s3_store.write_text, s3_store.upload_file

    def write_text(rel, text):
        calls.append(rel.rsplit("/", 2)[-2] + "/" + rel.rsplit("/", 1)[-1])
        real_write_text(rel, text)

    def upload_file(local, rel):
        calls.append(rel.rsplit("/", 2)[-2] + "/" + rel.rsplit("/", 1)[-1])
        real_upload_file(local, rel)

    s3_store.write_text, s3_store.upload_file = write_text, upload_file
    uploader = Uploader(s3_store, layout, keep=2, staging_root=tmp_path / "staging")
    for step in (4, 8, 12):
        local = _local_checkpoint(tmp_path / "trainer", step)
        uploader.submit_checkpoint(local, step)
        # The Trainer rotating its local checkpoints must not break a queued upload.
        for path in local.iterdir():
            path.unlink()
        local.rmdir()
    assert uploader.close(60)
    assert not uploader.errors

    assert find_resume_step(s3_store, layout) == 12
    assert committed_steps(s3_store, layout) == uploader.committed[-2:]
    for step in uploader.committed:
        name = f"step-{step:06d}"
        files = calls.index(f"{name}/model.safetensors"), calls.index(f"{name}/trainer_state.json")
        marker = calls.index(f"{name}/COMMITTED")
        latest = calls.index("checkpoints/LATEST", marker)
        assert max(files) < marker < latest, calls
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())


def test_uploader_retries_while_the_store_is_down(s3_store: Store, tmp_path: Path, capsys):
    layout = RunLayout("job")
    failures = {"left": 2}
    real = s3_store.upload_dir

    def flaky(local, rel):
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("Could not connect to the endpoint URL")
        return real(local, rel)

    s3_store.upload_dir = flaky
    uploader = Uploader(s3_store, layout, keep=2, staging_root=tmp_path / "staging")
    uploader.submit_checkpoint(_local_checkpoint(tmp_path, 4), 4)
    assert uploader.close(60)
    assert failures["left"] == 0 and uploader.committed == [4]
    assert find_resume_step(s3_store, layout) == 4
    assert capsys.readouterr().err.count("retrying") == 2


def test_uploader_skips_a_checkpoint_overtaken_before_its_upload(s3_store: Store, tmp_path: Path):
    layout = RunLayout("job")
    gate, started = threading.Event(), threading.Event()
    real = s3_store.upload_dir

    def slow(local, rel):
        started.set()
        gate.wait(30)
        return real(local, rel)

    s3_store.upload_dir = slow
    uploader = Uploader(s3_store, layout, keep=5, staging_root=tmp_path / "staging")
    uploader.submit_checkpoint(_local_checkpoint(tmp_path, 4), 4)
    assert started.wait(30)  # step 4 is uploading (slowly) ...
    for step in (8, 12):  # ... while 8 and then 12 are saved
        uploader.submit_checkpoint(_local_checkpoint(tmp_path, step), step)
    gate.set()
    assert uploader.close(60)
    assert uploader.committed == [4, 12]  # 8 was still queued when 12 arrived
    assert find_resume_step(s3_store, layout) == 12


def test_uploader_times_each_committed_upload(s3_store: Store, tmp_path: Path):
    """`checkpoint_every: auto` reads the newest committed upload's seconds (issue 24, point 4)."""
    real = s3_store.upload_dir

    def slow(local, rel):
        time.sleep(0.3)
        return real(local, rel)

    s3_store.upload_dir = slow
    uploader = Uploader(s3_store, RunLayout("job"), keep=2, staging_root=tmp_path / "staging")
    assert uploader.last_upload_seconds is None  # nothing uploaded yet
    uploader.submit_checkpoint(_local_checkpoint(tmp_path, 4), 4)
    assert uploader.close(60)
    assert uploader.committed == [4]
    assert 0.3 <= uploader.last_upload_seconds < 30


def test_sampler_order_is_a_pure_function_of_seed_and_epoch():
    lengths = [(i * 37) % 61 + 1 for i in range(300)]
    a = ResumableLengthGroupedSampler(lengths, group_size=8, seed=3)
    b = ResumableLengthGroupedSampler(lengths, group_size=8, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) == length_grouped_order(lengths, 8, 3, 2)
    assert sorted(a) == list(range(300))
    b.set_epoch(3)
    assert list(a) != list(b)
    other_seed = ResumableLengthGroupedSampler(lengths, 8, seed=4)
    other_seed.set_epoch(2)
    assert list(a) != list(other_seed)
    # Batches hold similar lengths: far less padding than random batches.
    order = list(a)
    padded = sum(max(lengths[i] for i in order[k : k + 8]) * 8 for k in range(0, 300, 8))
    assert padded < 0.75 * sum(max(lengths[i] for i in range(k, min(k + 8, 300))) * 8 for k in range(0, 300, 8))


def test_pruning_keeps_the_best_checkpoint(s3_store: Store, tmp_path: Path):
    """keep=1 keeps the newest checkpoint and the one the newest's trainer state calls best,
    so a resumed run can still commit the model the validation metric chose."""
    layout = RunLayout("job")
    for step, best in ((4, 4), (8, 4), (12, 4), (16, 16), (20, 16)):
        folder = _local_checkpoint(tmp_path, step)
        (folder / "trainer_state.json").write_text(f'{{"global_step": {step}, "best_global_step": {best}}}')
        publish_checkpoint(s3_store, layout, folder, step, keep=1)
        expected = sorted({step, best})
        assert committed_steps(s3_store, layout) == expected, step
    assert s3_store.list_dirs(layout.checkpoints) == ["step-000016", "step-000020"]
