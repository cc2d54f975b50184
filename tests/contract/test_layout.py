"""The resume rule both sides use (`resume_step`): the workload resumes from the checkpoint it
picks, and `kubetune runs` calls a run resumable exactly when it picks one."""

from __future__ import annotations

import pytest

from kubetune.contract.layout import checkpoint_name, checkpoint_step, resume_step


@pytest.mark.parametrize(
    ("latest", "committed", "expected"),
    [
        ("step-000008\n", [4, 8], 8),  # LATEST names a committed checkpoint: that one
        ("step-000004\n", [4, 8], 4),  # ... even when a newer one is committed too
        ("step-000012\n", [4, 8], 8),  # LATEST names a missing or uncommitted one: the newest committed
        (None, [8, 4], 8),  # no LATEST (killed between a first marker and LATEST): the newest committed
        ("garbage", [4], 4),  # LATEST unreadable as a checkpoint name
        ("step-000012\n", [], None),  # nothing committed: nothing to resume from
        (None, [], None),  # a fresh run
    ],
)
def test_the_resume_rule(latest, committed, expected):
    assert resume_step(latest, committed) == expected


def test_checkpoint_names_round_trip():
    assert checkpoint_name(200) == "step-000200"
    assert checkpoint_step(checkpoint_name(200)) == 200
    assert checkpoint_step("checkpoint-200") is None
