"""Transient store faults at a pod's start are retried (issue 11, point 3): a store that comes
back within storage.startup_timeout_seconds costs a wait, not the job; one that stays down
ends the pod with EXIT_STORE_UNAVAILABLE, which the rendered podFailurePolicy lets the Job
retry; a wrong bucket is still exit 2 at once. Real parts: moto's S3 server over HTTP,
stopped and started again on the same port, and the train entrypoint as a separate process.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from helpers_resume import RestartableS3, TrainProcess, restartable_s3, s3fs_for, write_spec, write_sst2_subset
from kubetune.contract.exitcodes import EXIT_BAD_INPUT, EXIT_STORE_UNAVAILABLE

BUCKET = "startup-tests"


@pytest.fixture(scope="module")
def s3():
    with restartable_s3(BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def data(s3, shared_data: Path) -> dict[str, str]:
    return write_sst2_subset(s3fs_for(s3.endpoint), shared_data, BUCKET, n_train=16, n_val=8, n_test=8)


def _spec(tmp: Path, name: str, s3: RestartableS3, model: Path, data: dict[str, str], timeout: float,
          bucket: str = BUCKET) -> Path:
    spec = write_spec(tmp / f"{name}.yaml", name, f"s3://{bucket}/store", s3.endpoint, model, data,
                      max_steps=2, checkpoint_every=100, max_seq_length=32)
    text = spec.read_text().replace("storage:\n", f"storage:\n  startup_timeout_seconds: {timeout}\n", 1)
    spec.write_text(text)
    return spec


def _error_lines(proc: TrainProcess) -> list[str]:
    return [line for _, line in proc.lines if line.startswith("error:")]


@pytest.mark.slow
def test_store_back_within_the_timeout_the_pod_trains(s3, data, minilm_dir, tmp_path: Path):
    spec = _spec(tmp_path, "back-in-time", s3, minilm_dir, data, timeout=120)
    s3.stop()
    proc = TrainProcess(spec, tmp_path / "pod")
    try:
        proc.wait_for(r"unreachable \(attempt 2", timeout=120)  # it retried, and is still waiting
    finally:
        s3.start()
    restarted = time.monotonic()
    assert proc.wait(600) == 0, proc.output[-3000:]
    assert "Traceback" not in proc.output and not _error_lines(proc)
    committed = [t for t, line in proc.lines if "model committed" in line]
    assert committed and committed[0] > restarted
    assert s3fs_for(s3.endpoint).exists(f"{BUCKET}/store/runs/back-in-time/model/COMMITTED")


@pytest.mark.slow  # waits on real processes, timeouts or leases: keeps `-m "not slow"` under 5 minutes
def test_store_down_past_the_timeout_exits_retriable(s3, data, minilm_dir, tmp_path: Path):
    from kubetune.launch.render.pod import pod_failure_policy

    spec = _spec(tmp_path, "down", s3, minilm_dir, data, timeout=3)
    s3.stop()
    try:
        proc = TrainProcess(spec, tmp_path / "pod")
        code = proc.wait(120)
    finally:
        s3.start()
    assert code == EXIT_STORE_UNAVAILABLE, proc.output[-3000:]
    errors = _error_lines(proc)
    assert len(errors) == 1 and "storage.root" in errors[0] and "startup_timeout_seconds: 3" in errors[0], proc.output
    assert "Traceback" not in proc.output
    retries = [line for _, line in proc.lines if "unreachable (attempt" in line]
    assert retries, "it retried before giving up"
    waited = int(re.search(r"unreachable for (\d+)s", errors[0]).group(1))
    first_retry = next(t for t, line in proc.lines if "unreachable (attempt" in line)
    gave_up = next(t for t, line in proc.lines if line.startswith("error:"))
    assert waited >= 3 and gave_up - first_retry < 15, "it waited the timeout, and not much longer"
    assert not s3fs_for(s3.endpoint).exists(f"{BUCKET}/store/runs/down"), "nothing written"
    # The rendered podFailurePolicy does not fail the Job on this code: the pod is retried,
    # counted against backoffLimit (no rule matches it, so the default, Count, applies).
    rules = pod_failure_policy("train")["rules"]
    matching = [r for r in rules if EXIT_STORE_UNAVAILABLE in r.get("onExitCodes", {}).get("values", [])]
    assert all(r["action"] == "Count" for r in matching), matching
    assert any(EXIT_BAD_INPUT in r.get("onExitCodes", {}).get("values", []) and r["action"] == "FailJob"
               for r in rules)


def test_wrong_bucket_is_exit_2_at_once(s3, data, minilm_dir, tmp_path: Path):
    spec = _spec(tmp_path, "wrong-bucket", s3, minilm_dir, data, timeout=120, bucket="no-such-bucket")
    proc = TrainProcess(spec, tmp_path / "pod")
    assert proc.wait(120) == EXIT_BAD_INPUT, proc.output[-3000:]
    errors = _error_lines(proc)
    assert len(errors) == 1 and "storage.root" in errors[0] and "no-such-bucket" in errors[0], proc.output
    assert "unreachable (attempt" not in proc.output, "a permanent fault is not retried"
    assert "Traceback" not in proc.output
