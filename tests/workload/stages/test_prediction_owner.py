"""Prediction parts and the user's own files in one output folder (issue 12, point 7): only the
parts kubetune's owner record (names.PREDICTIONS_OWNER_FILE) lists are ever removed or
replaced, in a local folder and in S3 (moto's server over HTTP, through s3fs). No model is
loaded: `write` takes the records a rank predicted."""

from __future__ import annotations

import json

import datasets
import fsspec
import pytest

from kubetune.contract.names import PREDICTIONS_OWNER_FILE
from kubetune.contract.spec.job import SpecError, validate_spec
from kubetune.storage import Store
from kubetune.workload.stages.prediction import Prediction, check_part_is_ours, write_part
from kubetune.workload.stages.run import PodEnv


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    """(store, output folder URL, fs, folder path) for a local folder or an S3 prefix."""
    if request.param == "local":
        store = Store(str(tmp_path / "store"))
        url = str(tmp_path / "preds")
    else:
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        store = Store(f"s3://{bucket}/root", endpoint_url=endpoint)
        url = f"s3://{bucket}/preds"
    fs, folder = fsspec.core.url_to_fs(url, **store.options_for(url))
    fs.makedirs(folder, exist_ok=True)  # the user's folder (a no-op for an S3 prefix)
    return store, url, fs, folder.rstrip("/")


def predict_into(store: Store, url: str, job: str, world: int, fmt: str = "jsonl") -> None:
    """Every rank of a `world`-rank prediction writes its part (rank 0 last, as in a real run
    where ranks race)."""
    spec = validate_spec({"name": job, "model": {"source": "m"}, "data": {"train": "t.tsv"},
                          "storage": {"root": store.root}})
    for rank in reversed(range(world)):
        check_part_is_ours(store, url, f"part-{rank:05d}.{fmt}")
        pred = Prediction(spec=spec, store=store, task=None, rows=datasets.Dataset.from_dict({"text": ["a"]}),
                          first_row=rank, total_rows=world, output_url=url, output_format=fmt, to_folder=True,
                          rank=rank, world_size=world, env=PodEnv())
        write_part(pred, [{"text": "a", "row": rank, "prediction": job}])


def contents(fs, folder: str) -> dict[str, bytes]:
    fs.invalidate_cache()  # s3fs keeps listings; the writes went through other instances
    return {path.rsplit("/", 1)[-1]: fs.cat_file(path) for path in fs.ls(folder, detail=False)}


def test_only_recorded_parts_are_removed_and_the_users_survive(place):
    store, url, fs, folder = place
    predict_into(store, url, "first", world=4)  # an earlier run with more ranks
    fs.pipe_file(f"{folder}/part-00007.jsonl", b'{"mine": 7}\n')  # the user's, named like parts
    fs.pipe_file(f"{folder}/part-00002.parquet", b"PAR1 mine\x00")
    fs.pipe_file(f"{folder}/notes.txt", b"mine")
    users = {name: data for name, data in contents(fs, folder).items() if b"mine" in data}
    record = json.loads(fs.cat_file(f"{folder}/{PREDICTIONS_OWNER_FILE}"))
    assert record == {"job": "first", "parts": [f"part-0000{r}.jsonl" for r in range(4)]}

    predict_into(store, url, "second", world=2)  # what `--overwrite` lets the launcher start
    after = contents(fs, folder)
    assert sorted(after) == sorted([*users, PREDICTIONS_OWNER_FILE, "part-00000.jsonl", "part-00001.jsonl"])
    assert {name: after[name] for name in users} == users  # byte for byte
    assert json.loads(after["part-00001.jsonl"]) == {"text": "a", "row": 1, "prediction": "second"}
    assert json.loads(after[PREDICTIONS_OWNER_FILE]) == {"job": "second",
                                                         "parts": ["part-00000.jsonl", "part-00001.jsonl"]}
    # Another format: the recorded jsonl parts are stale (their rows would be read twice).
    predict_into(store, url, "second", world=1, fmt="parquet")
    assert sorted(contents(fs, folder)) == sorted([*users, PREDICTIONS_OWNER_FILE, "part-00000.parquet"])


def test_a_users_file_where_a_part_goes_is_refused_not_replaced(place):
    store, url, fs, folder = place
    fs.pipe_file(f"{folder}/part-00000.jsonl", b'{"mine": 0}\n')
    with pytest.raises(SpecError, match=rf"part-00000.jsonl that kubetune did not write .*{PREDICTIONS_OWNER_FILE}"):
        check_part_is_ours(store, url, "part-00000.jsonl")
    # A record from before parts were recorded lists nothing: still the user's file.
    fs.pipe_file(f"{folder}/{PREDICTIONS_OWNER_FILE}", b'{"job": "old"}\n')
    with pytest.raises(SpecError):
        check_part_is_ours(store, url, "part-00000.jsonl")
    assert fs.cat_file(f"{folder}/part-00000.jsonl") == b'{"mine": 0}\n'
    check_part_is_ours(store, url, "part-00001.jsonl")  # a free name is fine
