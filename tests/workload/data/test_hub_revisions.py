"""hf:// data and model sources (issue 27, point 1), read through huggingface_hub's HfFileSystem
from a local server that answers the Hub's endpoints (`fakes.hub_server`): a split's files
pinned to the commit its revision names as the run begins, recorded in the lineage with that
commit, read at it again by a later attempt after the branch moved; a repository or revision
the Hub does not know refused in one line naming the field."""

from __future__ import annotations

import uuid

import pytest
from helpers_hub import add_minilm, add_sst2, sst2_files

from kubetune.contract.spec.job import validate_spec
from kubetune.storage import Store
from kubetune.workload.data.hub_revisions import commits_of
from kubetune.workload.data.lineage import build_lineage, data_records, resolve_data
from kubetune.workload.data.pinning import changes
from kubetune.workload.data.tables import PinnedData, read_table, split_files
from kubetune.workload.errors import DataError, ModelSourceError
from kubetune.workload.model.source import check_model_source, local_model_dir


def _spec(root, repo_id: str, train: str = "data/train-*.parquet", **model):
    return validate_spec({"name": "hub", "model": {"source": "models/m", **model},
                          "data": {"train": f"hf://datasets/{repo_id}/{train}",
                                   "test": f"hf://datasets/{repo_id}/data/validation-00000-of-00001.parquet",
                                   "columns": {"text": "sentence", "label": "label"}},
                          "storage": {"root": str(root)}})


@pytest.fixture
def sst2(hub_endpoint, shared_data):
    """A fresh SST-2 repository on the local Hub (its own name: the server lives for the session)."""
    return add_sst2(hub_endpoint, shared_data, repo_id=f"stanfordnlp/sst2-{uuid.uuid4().hex[:8]}")


def test_a_hub_split_is_pinned_to_its_commit_and_recorded_in_the_lineage(hub_endpoint, sst2, tmp_path):
    store = Store(str(tmp_path / "store"))
    spec = _spec(tmp_path / "store", sst2.repo_id)
    pinned = resolve_data(spec, store)
    commit = sst2.refs["main"]
    files = pinned.files["data.train"]
    assert files.uris == [f"hf://datasets/{sst2.repo_id}@{commit}/data/train-00000-of-00001.parquet"]

    table = read_table(store, spec.data.train, None, "data.train", pinned)
    assert len(table) == 240 and set(table.column_names) >= {"sentence", "label"}
    lineage = build_lineage(spec, store, pinned, "models/m", "models/m", {"train": len(table)}, None)
    (record,) = lineage["data"]["data.train"]
    assert record["revision"] == commit and record["hub_ref"] == f"datasets/{sst2.repo_id}@main"
    assert record["rows"] == 240 and record["etag"] and record["size"] > 0
    # The files were read at the commit, never at the branch that may move.
    reads = [path for _, path in hub_endpoint.requests if "/resolve/" in path and sst2.repo_id in path]
    assert reads and all(f"/resolve/{commit}/" in path for path in reads)


def test_a_later_attempt_reads_the_commit_its_run_began_with(sst2, shared_data, tmp_path):
    store = Store(str(tmp_path / "store"))
    spec = _spec(tmp_path / "store", sst2.repo_id)
    first = data_records(resolve_data(spec, store))
    started_at = sst2.refs["main"]
    sst2.commit(sst2_files(shared_data, train=120, offset=500))  # someone pushes: main moves

    again = PinnedData(hub_commits=commits_of(first))  # what training's setup gives a later attempt
    assert data_records(resolve_data(spec, store, pinned=again)) == first
    assert again.files["data.train"].uris[0].startswith(f"hf://datasets/{sst2.repo_id}@{started_at}/")

    fresh = data_records(resolve_data(spec, store))  # a new run reads the new commit: a change
    found = changes(first, fresh)
    assert found and "is gone since the run's first attempt" in found[0]


def test_a_pinned_revision_in_the_uri_is_read_as_written(sst2, tmp_path):
    store = Store(str(tmp_path / "store"))
    commit = sst2.refs["main"]
    files = split_files(store, f"hf://datasets/{sst2.repo_id}@{commit}/data", "data.train")
    assert [u.rsplit("/", 1)[1] for u in files.uris] == ["train-00000-of-00001.parquet",
                                                        "validation-00000-of-00001.parquet"]
    assert files.hub_pin == (f"datasets/{sst2.repo_id}@{commit}", commit)


@pytest.mark.parametrize(("uri", "says"), [
    ("hf://datasets/stanfordnlp/no-such-repo/train.parquet", "no Hub dataset repository stanfordnlp/no-such-repo"),
    ("hf://datasets/{repo}@v9.9/data/train-00000-of-00001.parquet", "has no revision 'v9.9'"),
    ("hf://datasets/{repo}/data/nothing-*.parquet", "no file matches"),
])
def test_a_repository_revision_or_file_the_hub_lacks_is_one_line_naming_the_field(sst2, tmp_path, uri, says):
    with pytest.raises(DataError) as caught:
        split_files(Store(str(tmp_path)), uri.format(repo=sst2.repo_id), "data.train", PinnedData())
    message = str(caught.value)
    assert message.startswith("data.train: ") and says in message and "\n" not in message


def test_an_hf_model_source_is_pinned_and_downloaded_once(hub_endpoint, minilm_dir, tmp_path):
    repo = add_minilm(hub_endpoint, minilm_dir, repo_id=f"sentence-transformers/minilm-{uuid.uuid4().hex[:8]}")
    store = Store(str(tmp_path / "store"))
    resolved = check_model_source(store, f"hf://{repo.repo_id}")
    assert resolved == f"hf://{repo.repo_id}@{repo.refs['main']}"
    folder = local_model_dir(store, resolved, tmp_path / "cache")
    assert (tmp_path / "cache").joinpath(folder).joinpath("config.json").read_bytes() == (
        minilm_dir / "config.json").read_bytes()
    with pytest.raises(ModelSourceError, match=r"^model.source: .*has no revision 'nope'"):
        check_model_source(store, f"hf://{repo.repo_id}", revision="nope")


def test_a_hub_that_does_not_answer_is_a_transient_fault(monkeypatch, tmp_path):
    """Refused at once here (a closed port): StoreUnavailableError, which the entrypoints exit
    with EXIT_STORE_UNAVAILABLE and the Job retries; not a user error."""
    from huggingface_hub import constants

    from kubetune.storage import StoreUnavailableError

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(StoreUnavailableError, match=r"^data.train: hf://datasets/org/d/x.csv: the Hugging Face Hub is "
                                                   r"unreachable"):
        split_files(Store(str(tmp_path)), "hf://datasets/org/d/x.csv", "data.train", PinnedData())


def test_a_streamed_hub_split_is_read_piece_by_piece_at_its_commit(hub_endpoint, sst2, tmp_path):
    from kubetune.workload.data.streaming import read_head, streaming_source

    store = Store(str(tmp_path / "store"))
    spec = validate_spec({"name": "hub", "model": {"source": "models/m"},
                          "data": {"train": f"hf://datasets/{sst2.repo_id}/data/train-*.parquet", "streaming": True,
                                   "validation": f"hf://datasets/{sst2.repo_id}/data/validation-00000-of-00001.parquet",
                                   "columns": {"text": "sentence", "label": "label"}},
                          "storage": {"root": str(tmp_path / "store")}})
    pinned = resolve_data(spec, store)
    source = streaming_source(spec, store, pinned)
    head = read_head(source, 5, pinned)
    assert len(head) == 5 and {"sentence", "label"} <= set(head[0])
    (uri,) = source.urls
    assert f"@{sst2.refs['main']}/" in uri and pinned.rows[uri] == 240  # from the parquet footer
