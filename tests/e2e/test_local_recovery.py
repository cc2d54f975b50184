"""Issue 11, points 1, 2 and 4, as a user sees them through `kubetune run --local`:

* A 2-node run recovers by itself when one rank's worker is killed (`kill -9`): torchrun's
  elastic agents (the rendered c10d rendezvous with `--max-restarts`) restart the whole gang
  from LATEST; the run ends exit 0 at the uninterrupted run's final step, with the same losses
  after the resume and the same test accuracy. Node 1's worker is killed, then, in the same
  run, node 0's (whose agent hosts the rendezvous store locally).
* SIGTERM to the launcher reaches the pods (checkpoint committed, exit 75) and nothing outlives
  it; SIGKILL to the launcher takes its trainers with it (parent-death signals).

Real parts: moto's S3 server over HTTP, the pretrained MiniLM, real SST-2 rows, real gloo ranks
started by the real rendered commands. Sized for 2 shared CPU cores: 128 training rows, max
length 32, 20 steps of 2 x 8 rows, a checkpoint every 4 steps; both kills happen in one run,
compared with one uninterrupted reference run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from helpers_resume import (SMALL_CPU_ENV, LineProcess, RestartableS3, restartable_s3, s3fs_for, step_losses, summary,
                            write_spec, write_sst2_subset)
from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_RETRY_AFTER_CHECKPOINT
from kubetune.launch.local.pods import local_gpu_count

BUCKET = "gang-tests"
MAX_STEPS = 20
EVERY = 4
STEP_LINE = re.compile(r"kubetune: step (\d+)/")


class Launcher(LineProcess):
    """`python -m kubetune.cli.main run SPEC --local` with its output collected line by line (with
    the time each line arrived)."""

    def __init__(self, spec: Path, cache: Path, *extra: str) -> None:
        env = {**os.environ, **SMALL_CPU_ENV, "PYTHONUNBUFFERED": "1", kn.ENV_CACHE: str(cache),
               kn.ENV_PROGRESS_INTERVAL: "0"}  # every step line: the tests wait for given steps
        super().__init__([sys.executable, "-m", "kubetune.cli.main", "run", str(spec), "--local", *extra], env)

    def index_of(self, line: str) -> int:
        return next(i for i, (_, text) in enumerate(self.lines) if text == line)

    def time_of(self, line: str) -> float:
        return self.lines[self.index_of(line)][0]

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def workers(self) -> dict[int, psutil.Process]:
        """Pod index -> its training worker (a child of that pod's torchrun agent)."""
        found = {}
        for proc in self.descendants():
            try:
                cmdline, env = proc.cmdline(), proc.environ()
            except psutil.Error:
                continue
            if kn.DISTRUN_MODULE not in cmdline and kn.TRAIN_MODULE in cmdline and "RANK" in env:
                found[int(env[kn.ENV_COMPLETION_INDEX])] = proc
        return found


@pytest.fixture(scope="module")
def s3():
    with restartable_s3(BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def sst2_s3(s3, shared_data: Path) -> dict[str, str]:
    return write_sst2_subset(s3fs_for(s3.endpoint), shared_data, BUCKET, n_train=128, n_val=32, n_test=200)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One local cache for the module's runs (the model and tokenized data, as a PVC)."""
    return tmp_path_factory.mktemp("cache")


def _spec(tmp: Path, name: str, s3: RestartableS3, model: Path, data: dict[str, str]) -> Path:
    path = write_spec(tmp / f"{name}.yaml", name, f"s3://{BUCKET}/store", s3.endpoint, model, data,
                      max_steps=MAX_STEPS, checkpoint_every=EVERY, max_seq_length=32, max_restarts=3)
    text = path.read_text().replace("kubernetes:\n", "resources:\n  nodes: 2\nkubernetes:\n", 1)
    path.write_text(text)
    return path


def _accuracy(s3: RestartableS3, name: str) -> float:
    return json.loads(s3fs_for(s3.endpoint).cat_file(f"{BUCKET}/store/runs/{name}/eval/metrics.json"))["accuracy"]


@pytest.fixture(scope="module")
def uninterrupted(s3, sst2_s3, minilm_dir, cache, tmp_path_factory) -> dict:
    """The reference: the same 2-node job, trained and evaluated without interruption."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    run = Launcher(_spec(tmp, "uninterrupted", s3, minilm_dir, sst2_s3), cache)
    assert run.wait() == 0, run.output[-4000:]
    fs = s3fs_for(s3.endpoint)
    return {"losses": step_losses(fs, f"{BUCKET}/store", "uninterrupted"),
            "summary": summary(fs, f"{BUCKET}/store", "uninterrupted"), "accuracy": _accuracy(s3, "uninterrupted")}


def _kill_worker(run: Launcher, pod: int, name: str, recovery: int, after: int) -> tuple[int, int]:
    """kill -9 the pod's worker once a checkpoint is committed (after line `after`); wait for the
    recovery line; print the time from the kill to the next logged step. Returns (the index of
    the recovery line, the step the gang resumed from)."""
    run.wait_for(r"checkpoint committed: .*step-", after=after)
    worker = run.workers()[pod]
    rank = worker.environ()["RANK"]
    worker.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    line = run.wait_for(rf"kubetune: recovery {recovery}: (\S+) \(local rank 0\) exited with code 137 \(SIGKILL\); "
                        r"the gang restarted from step (\d+)", timeout=300)
    assert line.group(1) == f"{name}-train-{pod}"
    resumed_from = int(line.group(2))
    next_step = run.wait_for(rf"kubetune: step {resumed_from + 1}/", after=run.index_of(line.string), timeout=300)
    seconds = run.time_of(next_step.string) - killed_at
    print(f"\nkill -9 of {name}-train-{pod}'s worker (rank {rank}): next step logged {seconds:.1f}s later, "
          f"resumed from step {resumed_from}")
    return run.index_of(line.string), resumed_from


@pytest.mark.slow
def test_killed_workers_are_recovered_by_the_whole_gang(s3, sst2_s3, minilm_dir, cache, uninterrupted, tmp_path):
    """Two recoveries in one run: node 1's worker, then node 0's (whose agent hosts the
    rendezvous store locally), each killed after a committed checkpoint."""
    name = "killed"
    run = Launcher(_spec(tmp_path, name, s3, minilm_dir, sst2_s3), cache)
    first, resumed_from = _kill_worker(run, 1, name, 1, after=0)
    _, second = _kill_worker(run, 0, name, 2, after=first)
    assert EVERY <= resumed_from <= second < MAX_STEPS
    assert run.wait() == 0, run.output[-4000:]  # no user action

    fs = s3fs_for(s3.endpoint)
    losses = step_losses(fs, f"{BUCKET}/store", name)
    reference = uninterrupted["losses"]
    assert sorted(losses) == list(range(1, MAX_STEPS + 1)), "every step logged exactly once"
    for step in (s for s in reference if s > resumed_from):
        assert losses[step] == pytest.approx(reference[step], abs=1e-4), f"step {step}"
    assert summary(fs, f"{BUCKET}/store", name)["global_step"] == uninterrupted["summary"]["global_step"] == MAX_STEPS
    assert abs(_accuracy(s3, name) - uninterrupted["accuracy"]) * 100 <= 0.5


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_its_pods_with_a_checkpoint(s3, sst2_s3, minilm_dir, cache, tmp_path):
    run = Launcher(_spec(tmp_path, "sigterm", s3, minilm_dir, sst2_s3), cache, "--stage", "train")
    run.wait_for(r"kubetune: step 2/")
    tree = run.descendants()
    assert len(run.workers()) == 2
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait(120) == EXIT_RETRY_AFTER_CHECKPOINT, run.output[-4000:]
    assert not _alive(tree), "a child outlived the launcher"
    step = int(re.search(r"interrupted at step (\d+): checkpoint saved", run.output).group(1))  # local words
    assert s3fs_for(s3.endpoint).exists(f"{BUCKET}/store/runs/sigterm/checkpoints/step-{step:06d}")


@pytest.mark.slow
def test_sigkill_to_the_launcher_takes_its_trainers_along(s3, sst2_s3, minilm_dir, cache, tmp_path):
    run = Launcher(_spec(tmp_path, "sigkill", s3, minilm_dir, sst2_s3), cache, "--stage", "train")
    run.wait_for(r"kubetune: step 1/")
    tree = run.descendants()
    assert len(run.workers()) == 2 and len(tree) >= 4  # two agents, two workers
    run.proc.send_signal(signal.SIGKILL)
    run.wait(30)
    deadline = time.monotonic() + 10
    while (alive := _alive(tree)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"outlived the launcher: {alive}"


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Still running (a zombie waiting for a reaper is dead)."""
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


def _fsdp_spec(tmp: Path, name: str, s3: RestartableS3, model: Path, data: dict[str, str]) -> Path:
    path = write_spec(tmp / f"{name}.yaml", name, f"s3://{BUCKET}/store", s3.endpoint, model, data,
                      max_steps=MAX_STEPS, checkpoint_every=EVERY, max_seq_length=32, precision="fp32", fsdp={})
    text = path.read_text().replace("kubernetes:\n", "resources:\n  nodes: 1\n  gpus_per_node: 2\nkubernetes:\n", 1)
    path.write_text(text)
    return path


@pytest.mark.gpu
@pytest.mark.skipif(local_gpu_count() < 2, reason="needs two CUDA GPUs (FSDP shards the model across GPUs)")
def test_an_fsdp_run_resumes_from_its_sharded_checkpoint_to_the_same_losses(s3, sst2_s3, minilm_dir, cache, tmp_path):
    """Issue 16, point 5: one pod with 2 GPUs under `train.fsdp`, preempted (SIGTERM) after a
    checkpoint, resumes from the sharded checkpoint in the store to the uninterrupted run's
    losses, and its final model/ is one consolidated folder that `from_pretrained` loads."""
    from transformers import AutoModelForSequenceClassification

    fs = s3fs_for(s3.endpoint)
    store = f"{BUCKET}/store"
    reference = Launcher(_fsdp_spec(tmp_path, "fsdp-reference", s3, minilm_dir, sst2_s3), cache, "--stage", "train")
    assert reference.wait() == 0, reference.output[-4000:]

    spec = _fsdp_spec(tmp_path, "fsdp-preempted", s3, minilm_dir, sst2_s3)
    preempted = Launcher(spec, cache, "--stage", "train")
    preempted.wait_for(r"checkpoint committed: .*step-")
    preempted.proc.send_signal(signal.SIGTERM)
    assert preempted.wait(300) == EXIT_RETRY_AFTER_CHECKPOINT, preempted.output[-4000:]
    step = int(re.search(r"interrupted at step (\d+): checkpoint saved", preempted.output).group(1))
    checkpoint = f"{store}/runs/fsdp-preempted/checkpoints/step-{step:06d}"
    assert fs.exists(f"{checkpoint}/pytorch_model_fsdp_0/__1_0.distcp"), fs.find(checkpoint)  # rank 1's shard

    resumed = Launcher(spec, cache, "--stage", "train")
    assert resumed.wait() == 0, resumed.output[-4000:]
    assert int(re.search(r"resuming from .*step-(\d+)", resumed.output).group(1)) == step
    losses, expected = step_losses(fs, store, "fsdp-preempted"), step_losses(fs, store, "fsdp-reference")
    assert sorted(losses) == sorted(expected) == list(range(1, MAX_STEPS + 1))
    for later in (s for s in expected if s > step):
        assert losses[later] == pytest.approx(expected[later], rel=1e-3, abs=1e-4), f"step {later}"

    model_dir = tmp_path / "model"
    fs.get(f"{store}/runs/fsdp-preempted/model/", str(model_dir), recursive=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert sum(p.numel() for p in model.parameters()) > 20_000_000  # all of MiniLM, not one shard
