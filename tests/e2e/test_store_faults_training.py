"""Real trainings (MiniLM, a few steps, one thread) against real store faults (issue 23,
points 4 and 5): a store on a small tmpfs that fills ends the run with EXIT_NO_SPACE and a line
naming the room the checkpoint needed, instead of retrying for ever; an outage backlog (moto's
S3 behind a TCP proxy the test cuts) followed by kill -9 and a resume keeps every logged step
and evaluation in `metrics/train.jsonl`, because each checkpoint carries the log up to its step."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from helpers_proxy import TcpProxy
from helpers_resume import TrainProcess, restartable_s3, s3fs_for, train_to_end, write_spec, write_sst2_subset
from kubetune.contract.exitcodes import EXIT_NO_SPACE

pytestmark = pytest.mark.slow
BUCKET = "faults"


@pytest.fixture
def tiny_volume(tmp_path: Path):
    """A 16 MiB tmpfs: room for the spec, lease and metrics, not for a MiniLM checkpoint
    (its weights alone are 87 MiB). A real ENOSPC from the kernel, not a fake file system."""
    mount = tmp_path / "volume"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root (CAP_SYS_ADMIN): {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_store_ends_the_run_with_the_disk_full_code_naming_the_space(tiny_volume, shared_data, minilm_dir,
                                                                             tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = (shared_data / "sst2" / "train.tsv").read_text().splitlines()[:33]
    (data / "train.tsv").write_text("\n".join(rows) + "\n")
    spec = tmp_path / "full.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "full", "model": {"source": str(minilm_dir)},
        "data": {"train": str(data / "train.tsv"), "validation": str(data / "train.tsv"),
                 "columns": {"text": "sentence"}},
        "train": {"max_steps": 8, "checkpoint_every": 2, "batch_size": 8, "max_seq_length": 32, "logging_steps": 1},
        "storage": {"root": str(tiny_volume / "store")},
    }))
    proc = TrainProcess(spec, tmp_path / "work")
    code = proc.wait(600)
    out = proc.output
    assert code == EXIT_NO_SPACE, out[-3000:]
    line = next(line for line in out.splitlines() if line.startswith("error: no space in the store"))
    needed = int(re.search(r"\((\d+) bytes\)", line).group(1))
    assert "checkpoint step-000002" in line and "free there" in line, line
    assert needed > 16 * 2**20  # the checkpoint's size, more than the whole volume
    assert "retrying" not in out.split("uploading checkpoint step-000002", 1)[1]  # not retried like an outage
    assert "step 8/8" not in out  # training stopped instead of going on into a full store
    assert not (tiny_volume / "store" / "runs" / "full" / "checkpoints" / "LATEST").exists()


@pytest.fixture
def s3(shared_data):
    with restartable_s3(BUCKET) as server:
        yield server


def test_an_outage_backlog_then_kill9_and_resume_keeps_every_logged_step(s3, shared_data, minilm_dir, tmp_path):
    data = write_sst2_subset(s3fs_for(s3.endpoint), shared_data, BUCKET, n_train=72, n_val=16, n_test=8)
    proxy = TcpProxy(urlparse(s3.endpoint).port)
    try:
        spec = write_spec(tmp_path / "backlog.yaml", "backlog", f"s3://{BUCKET}/store", proxy.endpoint, minilm_dir,
                          data, max_steps=9, checkpoint_every=3, keep_checkpoints=3, max_seq_length=32)
        settings = yaml.safe_load(spec.read_text())
        settings["storage"]["lease_seconds"] = 600  # the outage must not cost the lease (that is another test)
        spec.write_text(yaml.safe_dump(settings))
        first = TrainProcess(spec, tmp_path / "pod-1")
        first.wait_for(r"step 1/9 \|")
        proxy.set("cut")  # an outage: every checkpoint and metrics upload queues up behind it
        first.wait_for(r"waiting for \d+ upload\(s\) to finish", timeout=300)
        mark = len(first.lines)
        proxy.set("forward")
        first.wait_for(r"checkpoint committed", timeout=300, after=mark)
        os.kill(first.proc.pid, signal.SIGKILL)  # before the metrics' own upload can follow
        assert first.wait(60) == -signal.SIGKILL

        second = train_to_end(spec, tmp_path / "pod-2")
        assert re.search(r"resuming from .*step-00000[39]", second.output), second.output[-3000:]
        text = s3fs_for(s3.endpoint).cat_file(f"{BUCKET}/store/runs/backlog/metrics/train.jsonl").decode()
    finally:
        proxy.close()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    logged = sorted(r["step"] for r in records if "loss" in r)
    assert logged == list(range(1, 10)), logged  # every step once: none lost behind the backlog, none twice
    evaluated = sorted(r["step"] for r in records if any(k.startswith("eval_") for k in r))
    assert evaluated == [3, 6, 9], evaluated
