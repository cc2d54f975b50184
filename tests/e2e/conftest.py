"""Shared end-to-end fixtures: the quickstart store that the quickstart test and the
run-watching tests (`runs`, `show`, `plot`) all read, so the suite trains the README's main job
once instead of once per module."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import yaml
from helpers import REPO, run_cli, succeeded
from helpers_resume import TrainProcess


@pytest.fixture(scope="session")
def watched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with three quickstart runs: `quickstart` (the README's main job as shipped, run
    twice: the second run finds it complete), `quickstart-lr` (complete, 8 steps at another
    learning rate, with TensorBoard) and `quickstart-stopped` (SIGTERM after its first
    checkpoint: exit 75, resumable)."""
    base = tmp_path_factory.mktemp("watched")
    root = base / "store"
    succeeded(run_cli("prepare-quickstart", "--root", str(root)))
    job = ["run", "jobs/quickstart.yaml", "--local", "--set", f"storage.root={root}",
           "--set", "train.keep_checkpoints_after_success=1"]
    first = succeeded(run_cli(*job))
    again = run_cli(*job, "--stage", "train")  # the same job again: it finds the run complete
    second = succeeded(run_cli(
        "run", "jobs/quickstart.yaml", "--local", "--set", f"storage.root={root}",
        "--set", "name=quickstart-lr", "--set", "train.max_steps=8", "--set", "train.checkpoint_every=4",
        "--set", "train.learning_rate=3.0e-5", "--set", "train.logging_steps=2", "--stage", "train",
        "--set", "tracking.tensorboard=true"))
    spec = yaml.safe_load((REPO / "jobs" / "quickstart.yaml").read_text())
    spec["name"] = "quickstart-stopped"
    spec["storage"]["root"] = str(root)
    spec["train"].update(checkpoint_every=3, logging_steps=1)
    spec_file = base / "stopped.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    proc = TrainProcess(spec_file, base / "work-stopped")
    proc.wait_for(r"checkpoint committed", timeout=900)
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait(300) == 75, proc.output[-3000:]
    return {"root": root, "first": first, "again": again, "second": second}
