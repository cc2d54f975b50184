"""Google Cloud Storage and Azure Blob behind `Store` (issue 27, point 1), each against a real
server on loopback (fake-gcs-server, Azurite; tests/helpers_emulators.py) through gcsfs and
adlfs unchanged: the commit protocol's files, the exclusive creates and the lease's
compare-and-swap decided by the store, and the store's faults told apart. No training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from helpers_emulators import free_port
from kubetune.contract.errors import SpecError
from kubetune.contract.spec.checks import check_uri
from kubetune.contract.spec.job import validate_spec
from kubetune.contract.layout import RunLayout
from kubetune.integrity import verify_committed
from kubetune.registry import Registry
from kubetune.storage import StorageError, Store, StoreUnavailableError
from kubetune.workload.checkpointing.lease import ConditionalFile


@pytest.fixture(params=["gcs", "azure"])
def cloud(request) -> Store:
    """A Store on a fresh bucket (gs://) or container (az://) of a real server."""
    if request.param == "gcs":
        _, bucket = request.getfixturevalue("gcs_bucket")
        return Store(f"gs://{bucket}/root")
    _, container = request.getfixturevalue("azure_container")
    return Store(f"az://{container}/root")


@pytest.mark.parametrize("uri", ["gs://b/data/train-*.jsonl", "gcs://b/x", "az://c/runs", "abfs://c@acct.dfs.core.windows.net/x",
                                 "abfss://c@acct.dfs.core.windows.net/x"])
def test_the_spec_accepts_gcs_and_azure_uris(uri):
    assert check_uri(uri) == uri


@pytest.mark.parametrize("root", ["gs://bucket/kt", "az://container/kt", "abfs://container@acct.dfs.core.windows.net/kt"])
def test_a_spec_on_a_gcs_or_azure_store_validates(root):
    spec = validate_spec({"name": "j", "model": {"source": f"{root}/models/m"},
                          "data": {"train": f"{root}/data/train-*.jsonl", "test": "data/test.jsonl"},
                          "storage": {"root": root}})
    assert spec.storage.root == root and spec.data.train == f"{root}/data/train-*.jsonl"


def test_an_abfs_url_with_a_password_is_still_refused_as_a_credential():
    with pytest.raises(SpecError, match="data.train: looks like a URL with user info"):
        validate_spec({"name": "j", "model": {"source": "m"},
                       "data": {"train": "abfss://c:s3cr3t@acct.dfs.core.windows.net/t.tsv"}})


def test_an_endpoint_for_an_azure_store_is_refused_in_one_line():
    with pytest.raises(SpecError) as refused:
        validate_spec({"name": "j", "model": {"source": "m"}, "data": {"train": "t.tsv"},
                       "storage": {"root": "az://c/kt", "endpoint_url": "http://127.0.0.1:10000"}})
    (line,) = str(refused.value).splitlines()
    assert "storage.endpoint_url: not used for Azure Blob" in line


def test_a_committed_folder_round_trips_and_verifies(cloud, tmp_path):
    """Upload, COMMITTED with its manifest, LATEST, listing: what checkpoints and models rely on."""
    folder = tmp_path / "step"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 3000)
    (folder / "sub" / "state.json").write_text("{}")
    manifest = cloud.upload_dir(folder, "checkpoints/step-000002")
    cloud.commit("checkpoints/step-000002", manifest, step=2)
    cloud.write_text("checkpoints/LATEST", "step-000002\n")
    assert cloud.is_committed("checkpoints/step-000002")
    assert cloud.read_text("checkpoints/LATEST") == "step-000002\n"
    assert cloud.list_dirs("checkpoints") == ["step-000002"]
    assert verify_committed(cloud, "checkpoints/step-000002") == []
    # A file changed after its commit no longer matches the manifest.
    cloud.write_text("checkpoints/step-000002/sub/state.json", "{\"x\": 1}")
    assert verify_committed(cloud, "checkpoints/step-000002")
    downloaded = cloud.download_dir("checkpoints/step-000002", tmp_path / "back")
    assert (downloaded / "model.safetensors").read_bytes() == b"w" * 3000
    cloud.remove("checkpoints")
    assert cloud.list_dirs("checkpoints") == []


def test_exclusive_creates_racing_in_threads_have_exactly_one_winner(cloud):
    """Eight writers create one pointer at once: the store's condition (GCS ifGenerationMatch=0,
    Azure If-None-Match: *) lets exactly one through, and its content is the winner's."""
    barrier, wins = threading.Barrier(8), {}

    def create(i: int) -> None:
        barrier.wait()
        wins[i] = cloud.create_exclusive("registry/pointers/00000001.json", f"writer {i}\n")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in wins.items() if won]
    assert len(winners) == 1, wins
    assert cloud.read_text("registry/pointers/00000001.json") == f"writer {winners[0]}\n"


def test_the_lease_file_is_swapped_only_at_the_version_read(cloud):
    lease = ConditionalFile(cloud, "runs/job/LEASE")
    assert lease.read() is None
    first = lease.replace_if("a\n", None)
    assert first is not None
    assert lease.replace_if("b\n", None) is None  # no longer absent
    assert lease.read() == ("a\n", first)
    second = lease.replace_if("c\n", first)
    assert second not in (None, first)
    assert lease.replace_if("d\n", first) is None  # a stale writer's renewal is refused
    assert lease.read() == ("c\n", second)
    if cloud.protocol == "az":  # fake-gcs-server ignores ifGenerationMatch on DELETE (real GCS does not)
        assert lease.remove_if(first) is False
    assert lease.remove_if(second) is True
    assert lease.read() is None


def test_racing_lease_takers_in_threads_have_exactly_one_winner(cloud):
    barrier, tokens = threading.Barrier(6), {}

    def take(i: int) -> None:
        barrier.wait()
        tokens[i] = ConditionalFile(cloud, "runs/job/LEASE").replace_if(f"holder {i}\n", None)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, token in tokens.items() if token is not None]
    assert len(winners) == 1, tokens
    assert ConditionalFile(cloud, "runs/job/LEASE").read()[0] == f"holder {winners[0]}\n"


def test_a_missing_bucket_or_container_is_a_permanent_error_naming_the_root(cloud):
    scheme = cloud.protocol
    with pytest.raises(StorageError, match=rf"storage.root: {scheme}://no-such-bucket-kt/x: bucket does not exist"):
        Store(f"{scheme}://no-such-bucket-kt/x").check_reachable(timeout_s=5)


def test_an_unreachable_gcs_endpoint_is_transient_and_bounded(gcs_bucket, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreUnavailableError, match=r"storage.root: gs://b unreachable for \d+s"):
        Store("gs://b", timeout_s=2).check_reachable(timeout_s=2)


def test_an_unreachable_azure_endpoint_is_transient_and_bounded(azure_container, monkeypatch):
    env, _ = azure_container
    closed = env["AZURE_STORAGE_CONNECTION_STRING"].rsplit(":", 1)[0] + f":{free_port()}/devstoreaccount1;"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", closed)
    with pytest.raises(StoreUnavailableError, match=r"storage.root: az://c unreachable for \d+s"):
        Store("az://c", timeout_s=2).check_reachable(timeout_s=2)


def test_a_gcs_endpoint_from_the_spec_needs_no_emulator_variable(gcs_bucket, monkeypatch):
    """`storage.endpoint_url` for gs:// (a GCS-compatible server), as for S3: the file system
    goes there, anonymously, with STORAGE_EMULATOR_HOST unset."""
    env, bucket = gcs_bucket
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    store = Store(f"gs://{bucket}/root", endpoint_url=env["STORAGE_EMULATOR_HOST"], timeout_s=5)
    store.check_reachable(timeout_s=5)
    assert store.create_exclusive("x.json", "1\n") and not store.create_exclusive("x.json", "2\n")
    assert store.read_text("x.json") == "1\n"


# One promotion in its own process, started at a common moment (the first argument).
_PROMOTE = """
import json, sys, time
from kubetune.registry import Registry
from kubetune.storage import Store
root, run, base, start = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
store = Store(root)
registry = Registry(store, "job")
time.sleep(max(0.0, start - time.time()))
outcome = registry.promote(run, {"promote": True, "reason": "better", "candidate": {"accuracy": 0.9}}, base)
print(json.dumps({"run": run, "promoted": outcome.promoted, "version": outcome.version}))
"""


@pytest.mark.slow  # waits for two processes (about 10 s)
def test_two_processes_racing_for_current_end_with_one_winner_and_nothing_lost(cloud):
    """Issue 27's acceptance on GCS and Azure: two writers in two processes promote against the
    same CURRENT at the same moment; exactly one moves it, the other is recorded as not
    promoted, both versions are registered."""
    for name in ("r0", "r1", "r2"):
        layout = RunLayout(name)
        cloud.write_text(f"{layout.model}/config.json", "{}")
        cloud.write_json(layout.lineage, {"data_fingerprint": name})
        cloud.commit(layout.model, ["config.json"])
    registry = Registry(cloud, "job")
    registry.promote("r0", {"promote": True, "reason": "first", "candidate": {"accuracy": 0.5}}, None)
    base, start = registry.current(), time.time() + 4  # both processes have imported and opened the store by then
    procs = [subprocess.Popen([sys.executable, "-c", _PROMOTE, cloud.root, run, json.dumps(base), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
             for run in ("r1", "r2")]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    winners = [o["run"] for o in outcomes if o["promoted"]]
    assert len(winners) == 1, outcomes
    current = registry.current()
    assert current["run"] == winners[0] and current["generation"] == 2
    assert sorted(o["version"] for o in outcomes) == ["v0002", "v0003"]
    entries = {h["run"]: h for h in registry.history() if h["run"] in ("r1", "r2")}
    assert {run: h["promoted"] for run, h in entries.items()} == {"r1": "r1" in winners, "r2": "r2" in winners}
    assert sorted(registry.version_names()) == ["v0001", "v0002", "v0003"]


def test_gcs_and_azure_answers_are_told_apart_by_their_status():
    """5xx, 408 and 429 may pass; credentials (401/403), a missing thing (404) and a bad
    request do not. gcsfs's HttpError carries `code`, azure-core's HttpResponseError
    `status_code`; a refused connection (no answer) is azure-core's ServiceRequestError."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError
    from gcsfs.retry import HttpError

    from kubetune.store_faults import is_transient

    def azure(status: int) -> HttpResponseError:
        error = HttpResponseError(message=f"status {status}")
        error.status_code = status
        return error

    for status in (500, 503, 408, 429):
        assert is_transient(HttpError({"code": status, "message": "x"})) and is_transient(azure(status)), status
    for status in (400, 401, 403, 404, 412):
        assert not is_transient(HttpError({"code": status, "message": "x"})) and not is_transient(azure(status)), status
    assert is_transient(ServiceRequestError("connection refused"))
    wrapped = OSError("upload failed")
    wrapped.__cause__ = HttpError({"code": 503, "message": "backend error"})
    assert is_transient(wrapped)
