"""Google Cloud Storage and Azure Blob behind `Store` (issue 27, point 1), each against a real
server on loopback (fake-gcs-server, Azurite; tests/helpers_emulators.py) through gcsfs and
adlfs unchanged: the commit protocol's files, the exclusive creates and the lease's
compare-and-swap decided by the store, and the store's faults told apart. No training."""

from __future__ import annotations

import threading

import pytest

from helpers_emulators import free_port
from kubetune.contract.errors import SpecError
from kubetune.contract.spec.checks import check_uri
from kubetune.contract.spec.job import validate_spec
from kubetune.integrity import verify_committed
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
