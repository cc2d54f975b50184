"""Issue 23, point 1, as a pod lives it: real damage to the newest checkpoint in a real store (a
local folder, and moto's S3 server over HTTP) -- bytes flipped, the file cut short, the file
gone -- and the train entrypoint started again resumes from the checkpoint before it, sets the
damaged one aside, and commits a final model hash-equal to an uninterrupted run's.

One uninterrupted reference run (MiniLM, 32 real SST-2 rows, 6 steps of 4, a checkpoint and an
evaluation every 2 steps, all three checkpoints kept after success) serves every case: its
checkpoints are copied into each case's run folder, as a pod killed after its last checkpoint
but before its model commit leaves them, and damaged there. To keep the suite light, the three
kinds of damage take two resumes per store: the newest checkpoint flipped and the one before it
truncated (resumed from step 2: steps 3-6 again), and the newest one's weights missing
(resumed from step 4).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from helpers_damage import damage
from helpers_resume import TrainProcess, restartable_s3, s3fs_for, train_to_end
from kubetune.contract.layout import RunLayout
from kubetune.storage import Store

BUCKET = "damage-tests"
TRAIN = {"max_steps": 6, "batch_size": 4, "max_seq_length": 16, "checkpoint_every": 2, "logging_steps": 1,
         "seed": 7, "learning_rate": 1e-4, "keep_checkpoints": 3, "keep_checkpoints_after_success": 3}


@pytest.fixture(scope="module")
def s3():
    with restartable_s3(BUCKET) as server:
        yield server


def _data(shared_data: Path) -> dict[str, str]:
    train = (shared_data / "sst2" / "train.tsv").read_text().splitlines()
    dev = (shared_data / "sst2" / "dev.tsv").read_text().splitlines()
    return {"data/train.tsv": "\n".join(train[:33]) + "\n", "data/validation.tsv": "\n".join(dev[:17]) + "\n"}


def _spec(path: Path, name: str, root: str, model: Path, endpoint: str | None = None) -> Path:
    storage = {"root": root, **({"endpoint_url": endpoint} if endpoint else {})}
    path.write_text(yaml.safe_dump({
        "name": name, "model": {"source": str(model)},
        "data": {"train": "data/train.tsv", "validation": "data/validation.tsv", "columns": {"text": "sentence"}},
        "train": TRAIN, "storage": storage}, sort_keys=False))
    return path


def _sha(store: Store, rel: str) -> str:
    return hashlib.sha256(store.fs.cat_file(store.path(rel))).hexdigest()


@pytest.fixture(scope="module")
def stores(s3, shared_data, tmp_path_factory) -> dict[str, tuple[Store, str | None]]:
    """A local folder store and an S3 store, each holding the same data files."""
    folder = Store(str(tmp_path_factory.mktemp("folder-store")))
    s3store = Store(f"s3://{BUCKET}/store", s3.endpoint)
    for store in (folder, s3store):
        for rel, text in _data(shared_data).items():
            if store.protocol == "file":
                Path(store.path(rel)).parent.mkdir(parents=True, exist_ok=True)
            store.write_text(rel, text)
    return {"folder": (folder, None), "s3": (s3store, s3.endpoint)}


@pytest.fixture(scope="module")
def reference(stores, minilm_dir, tmp_path_factory) -> dict:
    """The uninterrupted run, in the folder store: its final model's hash, and each kept
    checkpoint's weights hash (a checkpoint overtaken by the next one before its upload started
    is skipped, so a busy machine may keep only some of steps 2, 4 and 6)."""
    store, _ = stores["folder"]
    tmp = tmp_path_factory.mktemp("reference")
    train_to_end(_spec(tmp / "ref.yaml", "ref", store.root, minilm_dir), tmp / "work")
    layout = RunLayout("ref")
    steps = [int(name[5:]) for name in store.list_dirs(layout.checkpoints)]
    assert len(steps) >= 2 and steps[-1] == 6, steps
    return {"model": _sha(store, f"{layout.model}/model.safetensors"), "steps": steps,
            "weights": {step: _sha(store, f"{layout.checkpoint(step)}/model.safetensors") for step in steps},
            "checkpoints": Path(store.path(layout.checkpoints))}


def _copy_checkpoints(source: Path, store: Store, rel: str) -> None:
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        store.upload_file(path, f"{rel}/{path.relative_to(source).as_posix()}")


# name -> the damage done to the newest kept checkpoint's model.safetensors, then to the one before
CASES = {"flipped-then-truncated": ("flipped", "truncated"), "missing": ("missing",)}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "s3"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_checkpoints_are_set_aside_and_the_run_ends_with_the_reference_model(
        stores, reference, minilm_dir, tmp_path, kind, case):
    """Why long: one story (copy, damage, resume, compare) whose asserts read in its order."""
    store, endpoint = stores[kind]
    steps = reference["steps"]
    damaged_steps = steps[::-1][:len(CASES[case])]
    resume = next((s for s in reversed(steps) if s not in damaged_steps), None)  # None: a fresh start
    name = f"{kind}-{case}"
    layout = RunLayout(name)
    _copy_checkpoints(reference["checkpoints"], store, layout.checkpoints)
    for step, how in zip(damaged_steps, CASES[case]):
        damage(store, f"{layout.checkpoint(step)}/model.safetensors", how)

    proc = train_to_end(_spec(tmp_path / "spec.yaml", name, store.root, minilm_dir, endpoint), tmp_path / "pod")
    damaged = [line for _, line in proc.lines if "is damaged" in line]
    assert [line.split("checkpoint ")[1][:11] for line in damaged] == [f"step-{s:06d}" for s in damaged_steps]
    assert all("(model.safetensors: " in line for line in damaged), damaged
    if resume is None:
        assert "no intact checkpoint left: starting from the beginning" in proc.output
    else:
        assert int(proc.wait_for(r"resuming from .*step-(\d+)").group(1)) == resume
    assert "Traceback" not in proc.output
    assert store.is_committed(layout.model)
    assert store.is_committed(layout.checkpoint(6))  # the newest upload is never skipped
    for step in (s for s in damaged_steps if store.is_committed(layout.checkpoint(s))):  # trained again: bit for bit
        assert _sha(store, f"{layout.checkpoint(step)}/model.safetensors") == reference["weights"][step], step
    assert _sha(store, f"{layout.model}/model.safetensors") == reference["model"]
    assert store.list_dirs(layout.damaged) == [f"step-{s:06d}" for s in sorted(damaged_steps)]  # set aside, kept
