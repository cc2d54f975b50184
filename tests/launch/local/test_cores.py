"""The cores a local run may use: its affinity, less the busy share of it (issue 28, point 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from kubetune.launch.local.cores import affinity, busy_cores, cpu_times, free_cores, usable_cores


@pytest.mark.parametrize(("cores", "busy", "free"), [(2, 0.0, 2), (2, 0.3, 2), (2, 0.7, 1), (2, 2.0, 1),
                                                     (2, 9.0, 1), (64, 10.4, 54), (1, 0.0, 1)])
def test_free_cores_are_the_rest_rounded_and_at_least_one(cores, busy, free):
    assert free_cores(cores, busy) == free


def test_a_core_kept_busy_counts_as_busy_and_affinity_limits_the_count():
    """A busy loop pinned to CPU 0 makes CPU 0 read as (nearly) fully busy, whatever else runs
    on the machine; under `taskset -c 0` the run may use that one core only."""
    first_cpu = min(affinity())
    loop = subprocess.Popen(["taskset", "-c", str(first_cpu), sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        before = cpu_times({first_cpu})
        time.sleep(1.0)
        busy = busy_cores(before, cpu_times({first_cpu}))
    finally:
        loop.kill()
        loop.wait()
    assert 0.9 <= busy <= 1.0001
    pinned = subprocess.run(["taskset", "-c", str(first_cpu), sys.executable, "-c",
                             "from kubetune.launch.local.cores import affinity, usable_cores; "
                             "print(sorted(affinity()), usable_cores())"],
                            capture_output=True, text=True, check=True, timeout=60)
    assert pinned.stdout.split() == [f"[{first_cpu}]", "1"]
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))
