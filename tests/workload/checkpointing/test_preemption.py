"""The workload's SIGTERM handler lives only as long as the run (issue 28, point 6): a process
that runs the workload in-process (a test, a library caller) gets its own handler back, after
a normal end and after a real SIGTERM before training, which leaves with exit 76 (interrupted, nothing new saved)."""

from __future__ import annotations

import os
import signal

import pytest

from kubetune.contract.exitcodes import EXIT_INTERRUPTED_UNSAVED
from kubetune.workload.checkpointing.preemption import Preemption


def test_the_handler_is_the_runs_inside_the_block_and_the_callers_after():
    def callers(signum, frame):  # what the process had before the run
        raise AssertionError("the caller's handler must not run here")

    previous = signal.signal(signal.SIGTERM, callers)
    try:
        preemption = Preemption()
        with preemption.caught():
            assert signal.getsignal(signal.SIGTERM) == preemption._handler
        assert signal.getsignal(signal.SIGTERM) is callers
        assert (preemption.requested, preemption.training) == (False, False)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_real_sigterm_before_training_exits_76_and_puts_the_handler_back():
    before = signal.getsignal(signal.SIGTERM)
    preemption = Preemption()
    with pytest.raises(SystemExit) as leaving:
        with preemption.caught():
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread at once
            for _ in range(1000):  # the handler runs between bytecodes
                pass
    assert leaving.value.code == EXIT_INTERRUPTED_UNSAVED
    assert signal.getsignal(signal.SIGTERM) == before
    assert not preemption.requested  # forgotten with the run
