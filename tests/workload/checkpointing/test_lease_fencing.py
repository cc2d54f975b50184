"""The fenced lease (issue 23, point 3) on moto's S3 server over HTTP, with writer A behind a
TCP proxy the test cuts: a writer that could not renew within its lease stops writing, its late
commit is refused and logged, and only the new writer's checkpoints exist; a commit whose
conditional lease write fails (another writer took the lease while A still believed in it) is
refused too; a stale writer's release never removes the new writer's lease."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from helpers_proxy import TcpProxy
from kubetune.contract.layout import RunLayout
from kubetune.storage import Store
from kubetune.workload.checkpointing.lease import LeaseLostError, RunLease
from kubetune.workload.checkpointing.protocol import committed_steps
from kubetune.workload.checkpointing.uploader import Uploader

LEASE_S = 6  # a renewal every 2 s: room for a loaded machine (3 s lost leases under load)


def _checkpoint(root: Path, step: int) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes([step]) * 2000)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


@pytest.fixture
def stores(s3_bucket):
    """(A's store through the proxy, B's store direct, the proxy): one bucket, two writers."""
    endpoint, bucket = s3_bucket
    proxy = TcpProxy(urlparse(endpoint).port)
    root = f"s3://{bucket}/root"
    yield Store(root, endpoint_url=proxy.endpoint, timeout_s=5), Store(root, endpoint_url=endpoint), proxy
    proxy.close()


def _writer(store: Store, name: str, tmp_path: Path) -> tuple[RunLease, Uploader]:
    layout = RunLayout("fenced")
    lease = RunLease(store, layout, LEASE_S, holder=name).acquire()
    uploader = Uploader(store, layout, keep=10, staging_root=tmp_path / f"staging-{name}",
                        retry_deadline_s=60).fenced_by(lease)
    return lease, uploader


@pytest.mark.slow  # waits on real processes, timeouts or leases: keeps `-m "not slow"` under 5 minutes
def test_a_writer_cut_off_past_its_lease_commits_nothing_and_the_new_writer_owns_the_run(stores, tmp_path, capsys):
    store_a, store_b, proxy = stores
    layout = RunLayout("fenced")
    lease_a, up_a = _writer(store_a, "writer-A", tmp_path)
    up_a.submit_checkpoint(_checkpoint(tmp_path / "a", 2), 2)
    assert up_a.wait(30) and committed_steps(store_b, layout) == [2]

    proxy.set("cut")  # A is partitioned from the store
    up_a.submit_checkpoint(_checkpoint(tmp_path / "a", 4), 4)  # its upload retries against the cut
    cut_at = time.monotonic()
    lease_b, up_b = _writer(store_b, "writer-B", tmp_path)  # waits out A's lease, then takes it
    assert time.monotonic() - cut_at < LEASE_S + 6  # A's lease ran out, then B took it
    assert json.loads(store_b.read_text(layout.lease))["generation"] == lease_a.generation + 1
    with pytest.raises(LeaseLostError):  # A found out by itself: no renewal within its lease
        lease_a.check()
    up_b.submit_checkpoint(_checkpoint(tmp_path / "b", 6), 6)
    assert up_b.wait(30)

    proxy.set("forward")  # A is back: whatever it still had queued must not land
    up_a.submit_checkpoint(_checkpoint(tmp_path / "a", 8), 8)
    up_a.wait(30)
    assert committed_steps(store_b, layout) == [2, 6]  # A's 2 from before the cut, then only B's
    assert store_b.read_text(layout.latest).strip() == "step-000006"
    assert isinstance(up_a.fatal, LeaseLostError) and "lost its lease" in str(up_a.fatal)
    err = capsys.readouterr().err
    assert "lease of run 'fenced' lost" in err and "lease renewal failed" in err

    lease_a.release()  # the stale writer's release leaves B's lease alone
    assert json.loads(store_b.read_text(layout.lease))["holder"] == "writer-B"
    up_b.close(10)
    lease_b.release()
    assert not store_b.exists(layout.lease)


def test_a_commit_is_refused_when_the_lease_changed_under_a_writer_that_still_trusts_it(stores, tmp_path, capsys):
    """The commit's own check is atomic in the store: writer A's clock says its lease is good
    (30 s), but the lease object was taken over (as by a writer whose clock ran ahead); A's
    conditional write before the commit fails and nothing is committed."""
    _, store, _ = stores
    layout = RunLayout("fenced")
    lease_a = RunLease(store, layout, 30, holder="writer-A").acquire()
    up_a = Uploader(store, layout, keep=10, staging_root=tmp_path / "staging").fenced_by(lease_a)
    taken = json.loads(store.read_text(layout.lease)) | {"holder": "writer-B", "generation": 2}
    store.write_json(layout.lease, taken)
    lease_a.check()  # nothing local tells A
    up_a.submit_checkpoint(_checkpoint(tmp_path, 4), 4)
    up_a.wait(30)
    assert committed_steps(store, layout) == []
    assert not store.exists(layout.latest)
    err = capsys.readouterr().err
    assert "checkpoint step-000004 refused, not committed" in err and "taken over by writer-B" in err
    lease_a.release()
    assert json.loads(store.read_text(layout.lease))["holder"] == "writer-B"


def test_a_lease_on_a_local_folder_is_fenced_the_same_way(tmp_path):
    store = Store(str(tmp_path / "store"))
    layout = RunLayout("fenced")
    lease_a = RunLease(store, layout, 30, holder="writer-A").acquire()
    store.write_json(layout.lease, json.loads(store.read_text(layout.lease)) | {"holder": "writer-B"})
    with pytest.raises(LeaseLostError, match="taken over by writer-B"):
        lease_a.confirm()
    lease_a.release()
    assert json.loads(store.read_text(layout.lease))["holder"] == "writer-B"
