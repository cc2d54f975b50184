"""The two log lines of a whole-gang recovery, written in the pod and read by the local launcher.

When a worker of a multi-node run fails, torchrun's elastic agent restarts the whole gang from
the checkpoint `LATEST` (the train command uses a c10d rendezvous and `--max-restarts`). The pod
side says what happened in two lines: the agent's wrapper (the distrun entrypoint) writes
WORKER_FAILED when one of its workers dies, and rank 0 of the restarted gang writes RESUMED.
`kubetune run --local` joins them into one line per recovery. They are stated here, with their
parsers, because both sides must agree on them (as on any other contract name).

Also here, because both sides call it: `die_with_parent`, the parent-death signal that keeps a
local run's processes from outliving their launcher (names.ENV_DIE_WITH_PARENT).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys

WORKER_FAILED = "kubetune: worker failed: node {node} local rank {local_rank} exit code {code}; the agents restart the gang"
RESUMED = "kubetune: resuming from step {step} after restart {restart}"

_WORKER_FAILED_RE = re.compile(r"kubetune: worker failed: node (\S+) local rank (\d+) exit code (-?\d+);")
_RESUMED_RE = re.compile(r"kubetune: resuming from step (\d+) after restart (\d+)")


def worker_failed_line(node: str, local_rank: int, code: int) -> str:
    return WORKER_FAILED.format(node=node, local_rank=local_rank, code=code)


def resumed_line(step: int, restart: int) -> str:
    return RESUMED.format(step=step, restart=restart)


def parse_worker_failed(line: str) -> tuple[str, int, int] | None:
    """(node, local rank, exit code) of a WORKER_FAILED line; negative codes are signals."""
    match = _WORKER_FAILED_RE.search(line)
    return (match.group(1), int(match.group(2)), int(match.group(3))) if match else None


def parse_resumed(line: str) -> tuple[int, int] | None:
    """(step, restart) of a RESUMED line."""
    match = _RESUMED_RE.search(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


# linux/prctl.h
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, expected_parent: int | None = None) -> bool:
    """Ask Linux to send `sig` to this process when the thread that forked it ends (its parent
    process, when that forked from its main thread, as the launcher and torchrun's agent do).

    Written by hand because it is one prctl(2) call through ctypes, which no maintained library
    wraps. Returns False where there is no prctl (not Linux): nothing happens there. If the
    parent died before the call (getppid is no longer `expected_parent`, the pid the parent
    passed down), the signal would never come, so the process sends it to itself at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if expected_parent is not None and os.getppid() != expected_parent:
        os.kill(os.getpid(), sig)
    return True
