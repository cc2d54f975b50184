"""One writer per run folder (issue 12, point 8): the lease in the store, held by real
processes on a real local store; a holder killed with SIGKILL blocks nobody past its lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubetune.contract.layout import RunLayout
from kubetune.storage import Store
from kubetune.workload.checkpointing.lease import RunBusyError, RunLease

HOLD = """
import sys, time
from kubetune.contract.layout import RunLayout
from kubetune.storage import Store
from kubetune.workload.checkpointing.lease import RunLease
lease = RunLease(Store(sys.argv[1]), RunLayout(sys.argv[2]), int(sys.argv[3]), holder="holder-process").acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold(root: Path, job: str, seconds: int) -> subprocess.Popen:
    """A separate process that takes the lease and keeps renewing it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root), job, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_naming_the_run_and_holder(tmp_path):
    proc = hold(tmp_path, "busy", 2)
    try:
        start = time.monotonic()
        with pytest.raises(RunBusyError) as err:
            RunLease(Store(str(tmp_path)), RunLayout("busy"), 2).acquire()
        waited = time.monotonic() - start
        # It waited one lease period for a dead holder, and no longer: the holder renews.
        assert 2 <= waited < 10
        message = str(err.value)
        assert "run 'busy'" in message and "holder-process" in message and "\n" not in message
    finally:
        proc.kill()
        proc.wait()


def test_sigkilled_holder_stops_blocking_after_its_lease(tmp_path):
    proc = hold(tmp_path, "crashed", 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = time.monotonic()
    lease = RunLease(Store(str(tmp_path)), RunLayout("crashed"), 2).acquire()
    try:
        assert time.monotonic() - killed < 2 + 2  # the lease time, and the read-back settle
        assert (tmp_path / "runs" / "crashed" / "LEASE.json").exists()
    finally:
        lease.release()
    assert not (tmp_path / "runs" / "crashed" / "LEASE.json").exists()


HOLD_WAIT = HOLD.replace("time.sleep(600)", "pass") + "import os; os._exit(0)\n"


def test_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    """A holder process of this machine that is gone (SIGKILL, then a local rerun) does not
    make the next run wait out its lease."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_WAIT, str(tmp_path), "gone", "600"], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.wait()
    start = time.monotonic()
    RunLease(Store(str(tmp_path)), RunLayout("gone"), 600).acquire().release()
    assert time.monotonic() - start < 5


def test_released_lease_is_free_at_once(tmp_path):
    store = Store(str(tmp_path))
    RunLease(store, RunLayout("seq"), 30).acquire().release()
    start = time.monotonic()
    RunLease(store, RunLayout("seq"), 30).acquire().release()
    assert time.monotonic() - start < 5


def test_lease_of_a_holder_elsewhere_that_stopped_renewing_expires(tmp_path):
    """A holder on another machine that died: its lease blocks until it expires, no longer."""
    import json

    lease_file = tmp_path / "runs" / "far" / "LEASE.json"
    lease_file.parent.mkdir(parents=True)
    lease_file.write_text(json.dumps({"holder": "pod-7 pid 1 (dead)", "expires": time.time() + 2, "host": "elsewhere",
                                      "pid": 1}))
    start = time.monotonic()
    lease = RunLease(Store(str(tmp_path)), RunLayout("far"), 2).acquire()
    waited = time.monotonic() - start
    lease.release()
    assert 1.5 <= waited < 2 + 3
