"""`kubetune runs` calls a sweep's pruned trial `pruned`: not failed, not resumable, even though
it left a checkpoint behind (docs/sweeps.md)."""

from __future__ import annotations

from kubetune.launch.runs import PRUNED, RESUMABLE, run_state


def test_a_pruned_trial_is_pruned_not_resumable():
    stopped = {"state": "pruned", "step": 4}
    assert run_state(False, stopped, last_write=100.0, resumable=True, now=200.0) == PRUNED
    assert run_state(False, {"state": "running"}, last_write=100.0, resumable=True, now=10_000.0) == RESUMABLE
