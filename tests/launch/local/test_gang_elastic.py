"""An elastic gang run locally as a Job controller would (issue 24, point 3): a pod lost to a
signal does not stop the others and is started again after the delay; a fixed gang still stops
at its first failure. The pods here are small Python processes (no training)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kubetune.contract import names as kn
from kubetune.contract.errors import UserError
from kubetune.contract.spec.job import validate_spec
from kubetune.launch.local.gang import LocalProcess, Replacement, local_replacement, run_processes

# Pod 1 kills itself (as a lost node) the first time; started again, it says so and exits 0.
LOST_ONCE = """
import os, pathlib, signal, sys
marker = pathlib.Path(sys.argv[1]) / "started-once"
if marker.exists():
    (pathlib.Path(sys.argv[1]) / "replaced").write_text("yes"); sys.exit(0)
marker.write_text("yes"); os.kill(os.getpid(), signal.SIGKILL)
"""
# Pod 0 trains on until the replacement has come (or a deadline), then exits 0.
SURVIVOR = """
import pathlib, sys, time
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline and not (pathlib.Path(sys.argv[1]) / "replaced").exists():
    time.sleep(0.05)
"""


def _gang(tmp_path: Path, survive_s: float) -> list[LocalProcess]:
    return [LocalProcess("job-train-0", [sys.executable, "-c", SURVIVOR, str(tmp_path), str(survive_s)], {}, "."),
            LocalProcess("job-train-1", [sys.executable, "-c", LOST_ONCE, str(tmp_path)], {}, ".")]


def test_a_lost_pod_of_an_elastic_gang_is_replaced_while_the_others_go_on(tmp_path, capsys):
    replacement = Replacement(after_s=0.5, limit=3)
    assert run_processes(_gang(tmp_path, survive_s=30), grace_s=5, replacement=replacement) == 0
    err = capsys.readouterr().err
    assert "job-train-1 lost (signal 9); the others train on; a replacement starts in 0.5s" in err
    assert "starting a replacement for job-train-1" in err
    assert (tmp_path / "replaced").read_text() == "yes" and replacement.done == 1


def test_no_replacement_once_the_survivors_have_finished(tmp_path, capsys):
    assert run_processes(_gang(tmp_path, survive_s=0.3), grace_s=5, replacement=Replacement(after_s=3, limit=3)) == 0
    assert "starting a replacement" not in capsys.readouterr().err
    assert not (tmp_path / "replaced").exists()


def test_a_fixed_gang_stops_at_a_lost_pod(tmp_path, capsys):
    assert run_processes(_gang(tmp_path, survive_s=30), grace_s=5) == 128 + 9
    assert "job-train-1 exited with code 137; stopping the others" in capsys.readouterr().err


def _spec(nodes):
    return validate_spec({"name": "job", "model": {"source": "sentence-transformers/all-MiniLM-L6-v2"},
                          "data": {"train": "t.csv", "validation": "v.csv"}, "resources": {"nodes": nodes},
                          "train": {"max_restarts": 2}})


def test_the_replacement_delay_comes_from_the_environment():
    elastic = _spec({"min": 1, "max": 2})
    assert local_replacement(elastic, {}) == Replacement(after_s=kn.LOCAL_REPLACE_DEFAULT_S, limit=2)
    assert local_replacement(elastic, {kn.ENV_LOCAL_REPLACE_SECONDS: "4.5"}).after_s == 4.5
    assert local_replacement(elastic, {kn.ENV_LOCAL_REPLACE_SECONDS: kn.LOCAL_REPLACE_NEVER}) is None
    assert local_replacement(_spec(2), {kn.ENV_LOCAL_REPLACE_SECONDS: "1"}) is None  # a fixed gang
    for bad in ("soon", "-1", "inf"):
        with pytest.raises(UserError, match=rf"^{kn.ENV_LOCAL_REPLACE_SECONDS}: '{bad}' is neither"):
            local_replacement(elastic, {kn.ENV_LOCAL_REPLACE_SECONDS: bad})
