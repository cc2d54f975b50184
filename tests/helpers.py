"""Helpers for tests: run the CLI and the entrypoints as real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None, timeout: float = 1800):
    """Run `kubetune ...` as a real child process (as a user would)."""
    return subprocess.run(
        [sys.executable, "-m", "kubetune.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )


def run_entrypoint(stage: str, spec_file: Path, *extra: str, env: dict | None = None, timeout: float = 1800):
    return subprocess.run(
        [sys.executable, "-m", f"kubetune.workload.{stage}", "--spec", str(spec_file), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )
