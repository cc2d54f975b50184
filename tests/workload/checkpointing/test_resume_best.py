"""The best model survives a resume (issue 11, point 5): a run stopped by SIGTERM after its
best evaluation, with `keep_checkpoints: 1`, and resumed in a new pod (empty local disk)
commits the best checkpoint's weights, not the last ones; and the first loss logged after
the resume covers the same steps as in the uninterrupted run. Real parts: moto's S3 server
over HTTP, the pretrained MiniLM, real SST-2 rows, the train entrypoint as a process.

Small: 64 rows, batch 8, 16 steps, an evaluation and checkpoint every 4 steps, a loss logged
every 5 (so a resume at step 12 or 13 lands inside a logging window).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from helpers_resume import (RestartableS3, TrainProcess, restartable_s3, s3fs_for, step_losses, summary,
                            train_to_end, write_spec, write_sst2_subset)
from kubetune.contract.exitcodes import EXIT_RETRY_AFTER_CHECKPOINT

# Trains MiniLM twice, once stopped and resumed (issue 28, point 6).
pytestmark = pytest.mark.slow

BUCKET = "best-resume-tests"
ROOT = f"{BUCKET}/store"
MAX_STEPS = 16
EVERY = 4
LOGGING = 5


@pytest.fixture(scope="module")
def s3():
    with restartable_s3(BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def data(s3, shared_data: Path) -> dict[str, str]:
    return write_sst2_subset(s3fs_for(s3.endpoint), shared_data, BUCKET, n_train=64, n_val=16, n_test=8)


def _spec(tmp: Path, name: str, s3: RestartableS3, model: Path, data: dict[str, str]) -> Path:
    return write_spec(tmp / f"{name}.yaml", name, f"s3://{ROOT}", s3.endpoint, model, data,
                      max_steps=MAX_STEPS, checkpoint_every=EVERY, logging_steps=LOGGING,
                      keep_checkpoints=1, learning_rate=3e-4, max_seq_length=32,
                      keep_checkpoints_after_success=10)  # this test reads them after the run


def _checkpoints(fs, job: str) -> dict[int, bool]:
    """step -> committed, for every checkpoint folder of a run in the store."""
    base = f"{ROOT}/runs/{job}/checkpoints"
    return {int(p.rsplit("-", 1)[1]): fs.exists(f"{p}/COMMITTED") for p in fs.ls(base, refresh=True) if "/step-" in p}


def _best_step(fs, job: str, step: int) -> int | None:
    state = json.loads(fs.cat_file(f"{ROOT}/runs/{job}/checkpoints/step-{step:06d}/trainer_state.json"))
    return state.get("best_global_step")


def _sha(fs, path: str) -> str:
    return hashlib.sha256(fs.cat_file(path)).hexdigest()


@pytest.fixture(scope="module")
def reference(s3, data, minilm_dir, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("best-reference")
    train_to_end(_spec(tmp, "best-reference", s3, minilm_dir, data), tmp / "work")
    fs = s3fs_for(s3.endpoint)
    return {"losses": step_losses(fs, ROOT, "best-reference"), "summary": summary(fs, ROOT, "best-reference")}


@pytest.fixture(scope="module")
def resumed(s3, data, minilm_dir, tmp_path_factory) -> dict:
    """A run stopped with SIGTERM right after its third evaluation (step 12), then resumed in a new pod."""
    tmp = tmp_path_factory.mktemp("best-resumed")
    spec = _spec(tmp, "best-resumed", s3, minilm_dir, data)
    fs = s3fs_for(s3.endpoint)
    first = TrainProcess(spec, tmp / "pod-1")
    # Stop on the training thread's own line for the step-12 evaluation (printed before that
    # checkpoint is saved), not on the uploader's: uploads lag training by whole steps on a
    # busy CPU, and a stop that lands at step 15 or later leaves no logging window to compare.
    first.wait_for(r"step 12/16 .*eval_accuracy")
    os.kill(first.proc.pid, signal.SIGTERM)
    assert first.wait(120) == EXIT_RETRY_AFTER_CHECKPOINT, first.output[-3000:]
    stopped = int(fs.cat_file(f"{ROOT}/runs/best-resumed/checkpoints/LATEST").decode().strip().removeprefix("step-"))
    at_stop = _checkpoints(fs, "best-resumed")
    best_at_stop = _best_step(fs, "best-resumed", stopped)
    base = f"{ROOT}/runs/best-resumed/checkpoints"
    hashes = {step: _sha(fs, f"{base}/step-{step:06d}/model.safetensors") for step, done in at_stop.items() if done}
    second = train_to_end(spec, tmp / "pod-2")
    return {"first": first, "second": second, "stopped": stopped, "at_stop": at_stop, "best_at_stop": best_at_stop, "hashes": hashes,
            "summary": summary(fs, ROOT, "best-resumed"), "losses": step_losses(fs, ROOT, "best-resumed")}


def test_resumed_run_commits_the_best_checkpoint(s3, resumed, reference):
    fs = s3fs_for(s3.endpoint)
    stopped, best = resumed["stopped"], resumed["best_at_stop"]
    print(f"stopped at step {stopped}; best so far: step {best}; final summary: {resumed['summary']}")
    # The case the test is about: the best evaluation came before the stop, and its
    # checkpoint is older than the newest one, so keep_checkpoints: 1 would have pruned it.
    assert best is not None and best < stopped, (best, stopped)
    committed = {step for step, done in resumed["at_stop"].items() if done}
    assert committed == {best, stopped}, resumed["at_stop"]  # (a busy CPU may leave one partial)
    # After the resume the run finished, and the model it committed is the best checkpoint's.
    final = resumed["summary"]
    assert final["global_step"] == MAX_STEPS
    assert final["best_checkpoint"] == f"step-{best:06d}", final
    assert final["best_metric"] == pytest.approx(reference["summary"]["best_metric"], abs=1e-6)
    assert reference["summary"]["best_checkpoint"] == f"step-{best:06d}", "the same choice as without a stop"
    # Compared with the checkpoints as the store held them at the stop (a finished run may
    # clear its checkpoints: train.keep_checkpoints_after_success).
    model = _sha(fs, f"{ROOT}/runs/best-resumed/model/model.safetensors")
    assert model == resumed["hashes"][best], "the committed model is the best checkpoint's weights"
    assert model != resumed["hashes"][stopped], "not the weights of the checkpoint it resumed from"


def test_first_loss_after_resume_matches_the_uninterrupted_run(resumed, reference):
    stopped = resumed["stopped"]
    assert stopped % LOGGING, f"the resume at step {stopped} must fall inside a logging window"
    first_log = next(step for step in sorted(reference["losses"]) if step > stopped)
    assert sorted(resumed["losses"]) == sorted(reference["losses"]), "every logging step logged once"
    assert resumed["losses"][first_log] == pytest.approx(reference["losses"][first_log], abs=1e-4), first_log
    for step in reference["losses"]:
        assert resumed["losses"][step] == pytest.approx(reference["losses"][step], abs=1e-4), step
