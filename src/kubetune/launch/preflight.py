"""`kubetune validate --data`: the workload's own checks, run as a child process.

Why a child process: reading parquet/CSV and the task's label rules need the workload's
libraries (datasets, pyarrow), which the launcher must never import (docs/architecture.md).
The check entrypoint (names.CHECK_MODULE) is started as every local entrypoint is
(`launch.entrypoint_process`): with the resolved spec as a file, exactly as a pod gets its
ConfigMap, and the user's spec file name, so its error line names that file as the pod's would.
"""

from __future__ import annotations

from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_BAD_INPUT
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.entrypoint_process import run_entrypoint


def check_data(spec: JobSpec, timeout: float = 1800) -> tuple[int, str]:
    """(exit code, one line): the check entrypoint's verdict with 0, or its error line with its
    exit code (2 for bad data or model; a transient store fault keeps its retriable code)."""
    result = run_entrypoint(kn.CHECK_MODULE, spec, capture=True, timeout=timeout)
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
