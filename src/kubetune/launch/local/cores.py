"""How many cores (and GPUs: `local_gpu_count`, `split_gpus`) a local run may use: the ones its CPU affinity allows (`taskset`, a
container's cpuset), less the ones other work keeps busy as the stage starts, at least 1.

Why the busy ones: on 2 cores that other processes keep busy, torch's default of a thread per
core makes its threads wait on each other behind the other work; issue 28 measured the
quickstart at 9.9 samples/s that way and at 51.5 with one thread, at the same load. A pod has
its CPU limit for that; a local run has only what the kernel reports. The busy share is read
from `/proc/stat` over a quarter of a second (the 1-minute load average would still count the
run just before, and give the next one a thread too few); where there is no `/proc/stat` every
core of the affinity counts as free.

Hand-written (twenty lines) because psutil's `cpu_percent(percpu=True)` would be a new
dependency of the launcher for the same two reads of one file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")
SAMPLE_SECONDS = 0.25


def affinity() -> set[int]:
    """The CPUs this process may run on."""
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def usable_cores(sample_seconds: float = SAMPLE_SECONDS) -> int:
    """The CPUs of the affinity, less the busy share of them over `sample_seconds`, at least 1."""
    cpus = affinity()
    first = cpu_times(cpus)
    if not first:
        return len(cpus)
    time.sleep(sample_seconds)
    return free_cores(len(cpus), busy_cores(first, cpu_times(cpus)))


def cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies of each CPU in `cpus`, from `/proc/stat`; {} where it cannot be read."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return {}
    times = {}
    for line in lines:
        label, *fields = line.split()
        if not label.startswith("cpu") or label == "cpu" or int(label[3:]) not in cpus:
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        total = user + nice + system + idle + iowait + irq + softirq + steal
        times[int(label[3:])] = (total - idle - iowait, total)
    return times


def busy_cores(first: dict[int, tuple[int, int]], second: dict[int, tuple[int, int]]) -> float:
    """How many cores' worth of work ran between two `cpu_times` readings."""
    busy = 0.0
    for cpu, (busy_after, total_after) in second.items():
        busy_before, total_before = first.get(cpu, (busy_after, total_after))
        if total_after > total_before:
            busy += (busy_after - busy_before) / (total_after - total_before)
    return busy


def free_cores(cores: int, busy: float) -> int:
    """`cores` less the busy ones, rounded, at least 1 and at most `cores`."""
    return max(1, min(cores, round(cores - busy)))


def local_gpu_count() -> int:
    """NVIDIA GPUs on this machine, without importing torch (0 when nvidia-smi is absent)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    result = subprocess.run([exe, "-L"], capture_output=True, text=True, check=False)
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))


def split_gpus(gpus: int, pods: int) -> list[list[int] | None]:
    """GPU indices per pod: an equal share each, or None (CPU) when there are too few."""
    share = gpus // pods
    if share == 0:
        return [None] * pods
    return [list(range(i * share, (i + 1) * share)) for i in range(pods)]
