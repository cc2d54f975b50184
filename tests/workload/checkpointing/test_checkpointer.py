"""The Checkpointer, the train stage's one door to checkpointing, against a real store (moto's
S3 server over HTTP) and a real `Run` from `training.setup`, without training a model: its
own callbacks save checkpoints the way the Trainer's `on_save` drives them; a new pod picks
its resume point by the resume rule and gets its data position, best checkpoint and loss
window back; SIGTERM leaves with exit 75; success clears what the spec says."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import TrainerControl, TrainerState, TrainingArguments

from helpers_resume import s3fs_for, write_spec, write_sst2_subset
from kubetune.contract.exitcodes import EXIT_RETRY_AFTER_CHECKPOINT
from kubetune.contract.names import ENV_WORKDIR
from kubetune.contract.recovery import resumed_line
from kubetune.contract.spec.job import load_spec
from kubetune.storage import COMMIT_MARKER
from kubetune.workload.checkpointing.checkpointer import Checkpointer
from kubetune.workload.checkpointing.preemption import Preemption, PreemptionCallback
from kubetune.workload.checkpointing.protocol import DATA_POSITION, LOSS_WINDOW, TRAINER_STATE, committed_steps
from kubetune.workload.checkpointing.upload_callback import CheckpointUploadCallback
from kubetune.workload.stages.run import Run
from kubetune.workload.entrypoints.arguments import pod_env
from kubetune.workload.stages.training import setup
from kubetune.workload.tasks import Prepared

LENGTHS = [3, 9, 4, 12, 5, 7, 2, 8, 6, 10, 11, 1, 13, 4, 9, 5]


@pytest.fixture
def make_run(s3_bucket, shared_data, minilm_dir, tmp_path, monkeypatch):
    """A factory of real Runs (`training.setup`) of one job on moto's S3."""
    endpoint, bucket = s3_bucket
    data = write_sst2_subset(s3fs_for(endpoint), shared_data, bucket, n_train=16, n_val=8, n_test=8)

    def make(name: str, pod: str, **train) -> Run:
        monkeypatch.setenv(ENV_WORKDIR, str(tmp_path / pod))
        spec = write_spec(tmp_path / f"{name}.yaml", name, f"s3://{bucket}/store", endpoint, minilm_dir, data,
                          batch_size=4, **train)
        run = setup(load_spec(spec), pod_env())
        assert run is not None
        return run

    return make


def _prepared() -> Prepared:
    rows = {"input_ids": [[1] * n for n in LENGTHS], "labels": [n % 2 for n in LENGTHS]}
    return Prepared(train=Dataset.from_dict(rows), validation=Dataset.from_dict(rows))


def _save(checkpointer: Checkpointer, step: int, best: int, epoch: float, wait: bool = True) -> None:
    """What the Trainer does at a save: write checkpoint-N locally, then fire `on_save`."""
    folder = checkpointer.local_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes([step]) * 256)
    (folder / TRAINER_STATE).write_text(json.dumps({"global_step": step, "best_global_step": best,
                                                    "best_model_checkpoint": f"/old-pod/checkpoint-{best}"}))
    (folder / LOSS_WINDOW).write_text(json.dumps({"loss_sum": step / 2, "last_logged_step": step - 1}))
    args = TrainingArguments(output_dir=str(checkpointer.local_dir), per_device_train_batch_size=4, report_to="none")
    state = TrainerState(global_step=step, epoch=epoch, best_global_step=best)
    (upload, _, _) = checkpointer.callbacks()
    upload.on_save(args, state, TrainerControl())
    assert checkpointer.uploader is not None
    if wait:
        checkpointer.uploader.wait(60)  # a checkpoint overtaken while queued is skipped: keep each one


def test_a_new_pod_resumes_by_the_rule_with_its_data_position_best_and_loss_window(make_run, capsys):
    run = make_run("resumed", "pod-1", group_by_length=True, keep_checkpoints=2)
    first = Checkpointer(run, Preemption())
    resume = first.track_data(_prepared())
    assert resume.sampler is not None and resume.stream is None
    resume.sampler.make(_prepared().train).set_epoch(1)  # the Trainer's sampler, in epoch 1
    for step in (4, 8, 12):
        _save(first, step, best=4, epoch=1.5)
    assert first.drain()
    layout = run.layout
    assert committed_steps(run.store, layout) == [4, 8, 12]  # the newest two, and the best one
    position = run.store.read_json(f"{layout.checkpoint(8)}/{DATA_POSITION}")
    assert (position["sampler"], position["epoch"], position["global_step"]) == ("length-grouped", 1, 8)
    run.store.remove(f"{layout.checkpoint(12)}/{COMMIT_MARKER}")  # LATEST now names an uncommitted one
    assert run.store.read_text(layout.latest).strip() == "step-000012"

    # A new pod: an empty disk, everything from the store.
    pod2 = dataclasses.replace(run, workdir=run.workdir.parent.parent / "pod-2" / run.layout.job)
    second = Checkpointer(pod2, Preemption())
    state = second.track_data(_prepared())
    assert state.sampler is not None and state.sampler.resume_epoch is None
    checkpoint = second.resume_point()
    assert checkpoint == pod2.workdir / "trainer" / "checkpoint-8" == second.local_dir / "checkpoint-8"
    assert (checkpoint / "model.safetensors").read_bytes() == bytes([8]) * 256
    second.restore()
    assert (state.checkpoint, state.step, state.position["epoch"]) == (checkpoint, 8, 1)
    assert state.sampler.resume_epoch == 1  # the sampler starts again in the checkpoint's epoch
    assert state.loss_window == {"loss_sum": 4.0, "last_logged_step": 7}
    assert state.best_step == 4  # fetched beside the resume point, and the Trainer state points at it
    best = checkpoint.parent / "checkpoint-4"
    assert (best / "model.safetensors").read_bytes() == bytes([4]) * 256
    assert json.loads((checkpoint / TRAINER_STATE).read_text())["best_model_checkpoint"] == str(best)
    out = capsys.readouterr()
    assert "resuming from " + run.store.url(layout.checkpoint(8)) in out.out
    assert "order differs" not in out.err  # the same data gives the same order
    assert second.drain()


def test_a_fresh_start_restores_nothing_and_says_where_a_torchrun_gang_starts(make_run, capsys):
    run = make_run("fresh", "pod", keep_checkpoints=2, group_by_length=False)
    run = dataclasses.replace(run, env=dataclasses.replace(run.env, restart_count=1))
    checkpointer = Checkpointer(run, Preemption())
    state = checkpointer.track_data(_prepared())
    assert state.sampler is None and state.stream is None  # the Trainer's own seeded order
    assert checkpointer.resume_point() is None
    checkpointer.restore()
    assert (state.checkpoint, state.position, state.best_step, state.loss_window) == (None, {}, None, None)
    assert resumed_line(0, 1) in capsys.readouterr().out
    assert checkpointer.data_position(TrainerState(global_step=3)) == {"sampler": "random", "seed": 7}


@pytest.mark.parametrize("local", [False, True])
def test_after_sigterm_the_checkpoint_is_committed_and_the_exit_code_says_retry(make_run, tmp_path, capsys, local):
    run = make_run(f"preempted-{int(local)}", "pod", keep_checkpoints=2)
    flag = tmp_path / "retry-flag"
    env = dataclasses.replace(run.env, retry_flag=flag, die_with_parent=4242 if local else None)
    run = dataclasses.replace(run, env=env)
    preemption = Preemption()
    checkpointer = Checkpointer(run, preemption)
    checkpointer.track_data(_prepared())
    upload, stop, _ = checkpointer.callbacks()
    assert isinstance(upload, CheckpointUploadCallback) and isinstance(stop, PreemptionCallback)
    assert upload.uploader is checkpointer.uploader and stop.preemption is preemption

    preemption.requested, preemption.received_at = True, time.monotonic()  # what the SIGTERM handler sets
    control = TrainerControl()
    stop.on_step_end(TrainingArguments(output_dir=str(tmp_path / "x"), report_to="none"), TrainerState(), control)
    assert control.should_save and control.should_training_stop and checkpointer.preempted
    _save(checkpointer, 3, best=3, epoch=0.5)
    assert checkpointer.leave_after_preemption(3) == EXIT_RETRY_AFTER_CHECKPOINT
    assert flag.exists()  # distrun's sign that a checkpoint was committed
    assert committed_steps(run.store, run.layout) == [3]
    assert run.store.read_text(run.layout.latest).strip() == "step-000003"
    out = capsys.readouterr().out
    if local:
        assert "interrupted at step 3: checkpoint saved" in out and "run the same command again" in out
    else:
        assert f"preempted at step 3: checkpoint committed; exit {EXIT_RETRY_AFTER_CHECKPOINT}" in out


def test_after_success_the_store_keeps_what_the_spec_says_and_local_copies_go(make_run):
    run = make_run("complete", "pod", keep_checkpoints=3, keep_checkpoints_after_success=1)
    checkpointer = Checkpointer(run, Preemption())
    checkpointer.track_data(_prepared())
    for step in (4, 8):
        _save(checkpointer, step, best=4, epoch=1.0)
    assert checkpointer.drain()
    assert committed_steps(run.store, run.layout) == [4, 8]
    checkpointer.clear_after_success()
    assert committed_steps(run.store, run.layout) == [8]
    assert not list(Path(checkpointer.local_dir).glob("checkpoint-*"))


@pytest.mark.slow  # waits on real processes, timeouts or leases: keeps `-m "not slow"` under 5 minutes
def test_sigterm_with_nothing_new_saved_is_not_reported_as_saved(make_run, s3_bucket, tmp_path, capsys):
    """Issue 23, point 4: SIGTERM arrives, the store is cut off (a TCP proxy the test controls)
    and the checkpoint of the stop step cannot land within the grace period: the exit code is
    EXIT_INTERRUPTED_UNSAVED (not 75), the line says NOT saved and names the last committed
    checkpoint, what was not uploaded is named, and distrun's retry flag stays untouched."""
    from urllib.parse import urlparse

    from helpers_proxy import TcpProxy
    from kubetune.contract.exitcodes import EXIT_INTERRUPTED_UNSAVED
    from kubetune.storage import Store

    run = make_run("unsaved", "pod", keep_checkpoints=2)
    proxy = TcpProxy(urlparse(s3_bucket[0]).port)
    flag = tmp_path / "retry-flag"
    kubernetes = run.spec.kubernetes.model_copy(update={"termination_grace_period_seconds": 8})
    run = dataclasses.replace(run, store=Store(run.store.root, endpoint_url=proxy.endpoint, timeout_s=5),
                              spec=run.spec.model_copy(update={"kubernetes": kubernetes}),
                              env=dataclasses.replace(run.env, retry_flag=flag))
    preemption = Preemption()
    checkpointer = Checkpointer(run, preemption)
    checkpointer.track_data(_prepared())
    try:
        _save(checkpointer, 2, best=2, epoch=0.25)
        assert checkpointer.uploader.wait(60) and checkpointer.uploader.committed == [2]
        proxy.set("cut")
        preemption.requested, preemption.received_at = True, time.monotonic()
        _save(checkpointer, 3, best=3, epoch=0.5, wait=False)
        start = time.monotonic()
        assert checkpointer.leave_after_preemption(3) == EXIT_INTERRUPTED_UNSAVED
        assert time.monotonic() - start < 8 + 5  # the grace period bounds the drain
    finally:
        proxy.close()
    assert not flag.exists()
    captured = capsys.readouterr()
    assert ("interrupted at step 3: checkpoint NOT saved, nothing new saved; the last committed checkpoint is "
            f"step-000002; exit {EXIT_INTERRUPTED_UNSAVED}") in captured.out
    assert "checkpoint saved" not in captured.out and "checkpoint committed;" not in captured.out
    assert "not uploaded after SIGTERM (deadline passed): checkpoint step-000003" in captured.err


def test_a_lost_lease_stops_the_training_the_uploads_and_the_models_commit(make_run, tmp_path, capsys):
    """Issue 23, point 3, through the Checkpointer as the train stage wires it: once another
    writer holds the lease, the next commit is refused, the training stops at the end of the
    step (StopOnFatal raises LeaseLostError: a retriable exit) and the model is not committed."""
    from kubetune.workload.checkpointing.checkpointer import StopOnFatal
    from kubetune.workload.checkpointing.lease import LeaseLostError, RunLease

    run = make_run("fenced", "pod", keep_checkpoints=3)
    lease = RunLease(run.store, run.layout, 30, holder="writer-A").acquire()
    checkpointer = Checkpointer(run, Preemption(), lease=lease)
    checkpointer.track_data(_prepared())
    _save(checkpointer, 2, best=2, epoch=0.25)
    assert committed_steps(run.store, run.layout) == [2]
    taken = json.loads(run.store.read_text(run.layout.lease)) | {"holder": "writer-B", "generation": 9}
    run.store.write_json(run.layout.lease, taken)  # writer B took over
    _save(checkpointer, 4, best=4, epoch=0.5)
    assert committed_steps(run.store, run.layout) == [2]
    stop = checkpointer.callbacks()[2]
    assert isinstance(stop, StopOnFatal)
    args = TrainingArguments(output_dir=str(tmp_path / "x"), report_to="none")
    with pytest.raises(LeaseLostError, match="taken over by writer-B"):
        stop.on_step_end(args, TrainerState(global_step=5), TrainerControl())
    with pytest.raises(LeaseLostError):
        checkpointer.guard("commit of the model")
    lease.release()
    assert json.loads(run.store.read_text(run.layout.lease))["holder"] == "writer-B"
    err = capsys.readouterr().err
    assert "checkpoint step-000004 refused, not committed" in err and "commit of the model refused" in err
