"""`kubetune validate --data`: the workload's own checks, run as a child process.

Why a child process: reading parquet/CSV and the task's label rules need the workload's
libraries (datasets, pyarrow), which the launcher must never import (docs/architecture.md);
`run --local` starts the same entrypoints the same way. The child gets the resolved spec as a
file, exactly as a pod gets its ConfigMap, and the user's spec file name (names.ENV_SPEC_FILE),
so its error line names that file as the pod's would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_BAD_INPUT
from kubetune.contract.spec.job import JobSpec


def check_data(spec: JobSpec, timeout: float = 1800) -> tuple[int, str]:
    """(exit code, one line): the check entrypoint's verdict with 0, or its error line with its
    exit code (2 for bad data or model; a transient store fault keeps its retriable code)."""
    with tempfile.TemporaryDirectory(prefix="kubetune-check-") as tmp:
        spec_file = Path(tmp) / "spec.yaml"
        spec_file.write_text(spec.to_yaml())
        env = {**os.environ, kn.ENV_SPEC: str(spec_file)}
        if spec.spec_file:
            env[kn.ENV_SPEC_FILE] = spec.spec_file
        result = subprocess.run([sys.executable, "-m", kn.CHECK_MODULE, "--spec", str(spec_file)],
                                capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode == 0:
        lines = result.stdout.strip().splitlines()
        return 0, lines[-1] if lines else f"ok: {spec.name}"
    if "ModuleNotFoundError" in result.stderr:
        return EXIT_BAD_INPUT, "validate --data needs the workload's libraries: pip install 'kubetune[train]'"
    errors = [line.removeprefix("error: ") for line in result.stderr.splitlines() if line.startswith("error: ")]
    if errors:
        return result.returncode, errors[-1]
    tail = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
    return result.returncode, f"the data check failed: {tail}"
