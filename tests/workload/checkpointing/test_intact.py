"""Which checkpoint a resume trusts (issue 23, point 1), against real stores (a local folder
and moto's S3 server over HTTP) with real damage to the stored objects: the newest intact one,
the damaged ones set aside in one line each, a fresh start when none is intact. No training:
checkpoints are folders as the Trainer leaves them, published by the real protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_damage import DAMAGES, damage
from kubetune.contract.layout import RunLayout
from kubetune.storage import Store
from kubetune.workload.checkpointing.intact import fetch_intact
from kubetune.workload.checkpointing.protocol import publish_checkpoint

LAYOUT = RunLayout("job")


@pytest.fixture(params=["local", "s3"])
def store(tmp_path, request) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return Store(f"s3://{bucket}/root", endpoint)


def _publish(store: Store, tmp_path: Path, steps: tuple[int, ...] = (4, 8, 12)) -> None:
    for step in steps:
        folder = tmp_path / "trainer" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(bytes([step]) * 300_000)
        (folder / "optimizer.pt").write_bytes(bytes([step + 1]) * 1000)
        publish_checkpoint(store, LAYOUT, folder, step, keep=3)


@pytest.mark.parametrize("how", DAMAGES + ("marker",))
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_one_before_it_resumed(store, tmp_path, capsys, how):
    _publish(store, tmp_path)
    if how == "marker":
        store.write_text(f"{LAYOUT.checkpoint(12)}/COMMITTED", "{not json")
    else:
        damage(store, f"{LAYOUT.checkpoint(12)}/model.safetensors", how)
    step, local = fetch_intact(store, LAYOUT, tmp_path / "pod", is_main=True)
    assert step == 8
    assert (local / "model.safetensors").read_bytes() == bytes([8]) * 300_000
    lines = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert len(lines) == 1 and "checkpoint step-000012 is damaged (" in lines[0], lines
    assert ("COMMITTED unreadable" if how == "marker" else "model.safetensors: ") in lines[0]
    assert store.list_dirs(LAYOUT.checkpoints) == ["step-000004", "step-000008"]
    assert store.list_dirs(LAYOUT.damaged) == ["step-000012"]  # set aside, not deleted
    assert store.exists(f"{LAYOUT.damaged_checkpoint(12)}/optimizer.pt")


def test_a_bad_local_copy_from_an_earlier_attempt_is_downloaded_again(store, tmp_path, capsys):
    _publish(store, tmp_path, (4,))
    step, local = fetch_intact(store, LAYOUT, tmp_path / "pod", is_main=True)
    damage_local = local / "model.safetensors"
    damage_local.write_bytes(b"\x00" * damage_local.stat().st_size)  # same size, other bytes
    step, local = fetch_intact(store, LAYOUT, tmp_path / "pod", is_main=True)
    assert step == 4 and (local / "model.safetensors").read_bytes() == bytes([4]) * 300_000
    assert "damaged" not in capsys.readouterr().err  # the store's copy was never at fault
    assert store.list_dirs(LAYOUT.damaged) == []


def test_with_no_intact_checkpoint_the_run_starts_from_the_beginning(store, tmp_path, capsys):
    _publish(store, tmp_path, (4, 8))
    damage(store, f"{LAYOUT.checkpoint(8)}/optimizer.pt", "truncated")
    damage(store, f"{LAYOUT.checkpoint(4)}/model.safetensors", "missing")
    assert fetch_intact(store, LAYOUT, tmp_path / "pod", is_main=True) is None
    err = capsys.readouterr().err
    assert "step-000008 is damaged (optimizer.pt: 500 bytes, the marker says 1000)" in err
    assert "step-000004 is damaged (model.safetensors: missing)" in err
    assert "no intact checkpoint left: starting from the beginning" in err
    assert store.list_dirs(LAYOUT.damaged) == ["step-000004", "step-000008"]


def test_a_rank_other_than_0_skips_damage_without_moving_it(store, tmp_path, capsys):
    _publish(store, tmp_path, (4, 8))
    damage(store, f"{LAYOUT.checkpoint(8)}/model.safetensors", "flipped")
    step, _ = fetch_intact(store, LAYOUT, tmp_path / "rank1", is_main=False)
    assert step == 4 and store.list_dirs(LAYOUT.damaged) == []
    assert capsys.readouterr().err == ""
