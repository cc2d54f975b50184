"""Committed folders that prove themselves (issue 23, point 1), against real stores: a local
folder and the moto S3 server over HTTP through s3fs. Real damage to the stored objects."""

from __future__ import annotations

import hashlib

import pytest

from helpers_damage import DAMAGES, damage
from kubetune.integrity import (DAMAGE_NOTE, UNVERIFIABLE, commit_verified, damaged_folders, read_manifest,
                                set_aside, verify_committed)
from kubetune.storage import Store, StoreUnavailableError


@pytest.fixture(params=["local", "s3"])
def store(tmp_path, request) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return Store(f"s3://{bucket}/root", endpoint)


def _folder(tmp_path) -> "object":
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 1024)
    (folder / "sub" / "config.json").write_text('{"a": 1}')
    return folder


def test_the_marker_records_each_files_size_and_the_hash_of_what_was_written(store, tmp_path):
    folder = _folder(tmp_path)
    commit_verified(store, "runs/r/model", folder, global_step=3)
    manifest = read_manifest(store, "runs/r/model")
    weights = (folder / "model.safetensors").read_bytes()
    assert manifest["model.safetensors"] == {"size": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}
    assert set(manifest) == {"model.safetensors", "sub/config.json"}
    marker = store.read_json("runs/r/model/COMMITTED")
    assert marker["files"] == ["model.safetensors", "sub/config.json"] and marker["global_step"] == 3
    assert verify_committed(store, "runs/r/model") == []


@pytest.mark.parametrize("how", DAMAGES)
def test_damage_to_a_committed_file_is_found_and_named(store, tmp_path, how):
    commit_verified(store, "runs/r/model", _folder(tmp_path))
    damage(store, "runs/r/model/model.safetensors", how)
    problems = verify_committed(store, "runs/r/model")
    assert len(problems) == 1 and problems[0].startswith("model.safetensors: "), problems
    assert {"flipped": "sha256", "truncated": "bytes", "missing": "missing"}[how] in problems[0]


def test_an_unreadable_marker_is_damage(store, tmp_path):
    commit_verified(store, "runs/r/model", _folder(tmp_path))
    store.write_text("runs/r/model/COMMITTED", '{"files": ["model.saf')
    assert verify_committed(store, "runs/r/model")[0].startswith("COMMITTED unreadable")


def test_an_old_marker_of_names_only_is_accepted_for_presence_alone(store, tmp_path):
    """Markers from before the manifest list names only: contents cannot be checked, a missing
    file still can."""
    store.upload_dir(_folder(tmp_path), "runs/r/model")
    store.write_json("runs/r/model/COMMITTED", {"files": ["model.safetensors", "sub/config.json"], "time": 1})
    assert read_manifest(store, "runs/r/model") == {"model.safetensors": UNVERIFIABLE, "sub/config.json": UNVERIFIABLE}
    damage(store, "runs/r/model/model.safetensors", "flipped")
    assert verify_committed(store, "runs/r/model") == []
    damage(store, "runs/r/model/sub/config.json", "missing")
    assert verify_committed(store, "runs/r/model") == ["sub/config.json: missing"]


class DamagingStore(Store):
    """A real store whose uploads of one file land damaged (a store or network that corrupts
    what it is sent): the damage is real bytes in the store, made right after each upload."""

    def __init__(self, *args, times: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.times = times

    def upload_file(self, local, rel):
        record = super().upload_file(local, rel)
        if rel.endswith("model.safetensors") and self.times > 0:
            self.times -= 1
            damage(self, rel, "truncated")
        return record


def _damaging(store: Store, times: int) -> DamagingStore:
    return DamagingStore(store.root, store.endpoint_url, store.region, times=times)


def test_a_final_model_damaged_in_upload_is_uploaded_again_then_committed(store, tmp_path, capsys):
    damaging = _damaging(store, times=1)
    commit_verified(damaging, "runs/r/model", _folder(tmp_path))
    assert "do not match what was written (model.safetensors: " in capsys.readouterr().out
    assert store.is_committed("runs/r/model") and verify_committed(store, "runs/r/model") == []


def test_a_final_model_that_never_lands_whole_is_never_committed(store, tmp_path):
    damaging = _damaging(store, times=99)
    with pytest.raises(StoreUnavailableError, match=r"not committed: after 3 uploads .*model.safetensors: "):
        commit_verified(damaging, "runs/r/model", _folder(tmp_path))
    assert not store.is_committed("runs/r/model")


def test_a_damaged_folder_is_set_aside_with_its_reason_never_deleted(store, tmp_path):
    folder = _folder(tmp_path)
    for _ in range(2):
        commit_verified(store, "runs/r/checkpoints/step-000004", folder)
        set_aside(store, "runs/r/checkpoints/step-000004", "runs/r/damaged/step-000004", "model.safetensors: missing")
    assert not store.exists("runs/r/checkpoints/step-000004")
    assert store.list_dirs("runs/r/damaged") == ["step-000004", "step-000004-2"]
    assert store.exists(f"runs/r/damaged/step-000004-2/{DAMAGE_NOTE}")
    assert store.exists("runs/r/damaged/step-000004/model.safetensors")
    assert damaged_folders(store, "runs/r/damaged")[0] == {"name": "step-000004", "reason": "model.safetensors: missing"}
