"""Helpers for tests: run the CLI and the entrypoints as real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kubetune.contract.names import STAGE_MODULES

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None, timeout: float = 1800):
    """Run `kubetune ...` as a real child process (as a user would)."""
    return subprocess.run(
        [sys.executable, "-m", "kubetune.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """The finished child process, after asserting it exited 0 (its output's tail otherwise)."""
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    return result


def run_entrypoint(stage: str, spec_file: Path, *extra: str, env: dict | None = None, timeout: float = 1800):
    """Run a stage's pod entrypoint (`python -m <its module> --spec FILE ...`) as a child process."""
    return subprocess.run(
        [sys.executable, "-m", STAGE_MODULES[stage], "--spec", str(spec_file), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )
