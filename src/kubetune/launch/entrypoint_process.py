"""One workload entrypoint started as a local child process, set up as a pod would set it up.

Why a child process: the entrypoints need the workload's libraries (torch, datasets, pyarrow),
which the launcher must never import (docs/architecture.md). Every launcher verb that runs one
entrypoint on this machine (`validate --data`: the check entrypoint; `models promote`: the
promote entrypoint) starts it here, so each gets what a pod gets:

* the resolved spec as a file (the pod's ConfigMap), passed as `--spec` and named by the mounted
  spec variable (names.ENV_SPEC);
* the user's spec file name as given on the command line (names.ENV_SPEC_FILE), so its one-line
  errors start with that file, as the launcher's own do; left out when the spec has none;
* this process's pid (names.ENV_DIE_WITH_PARENT), so the child dies with the launcher.

`run --local` and `retrain --local` run rendered pods instead (`launch.local`), whose
environment comes from the rendered container.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec


def entrypoint_env(spec: JobSpec, spec_path: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the caller's (credentials, caches), plus what the entrypoint reads
    from a pod's environment."""
    env = dict(os.environ if environ is None else environ)
    env[kn.ENV_SPEC] = str(spec_path)
    env[kn.ENV_DIE_WITH_PARENT] = str(os.getpid())
    if spec.spec_file:
        env[kn.ENV_SPEC_FILE] = spec.spec_file
    else:  # an inherited name would be another spec's
        env.pop(kn.ENV_SPEC_FILE, None)
    return env


def run_entrypoint(
    module: str,
    spec: JobSpec,
    args: Sequence[str] = (),
    capture: bool = False,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m <module> --spec <the resolved spec> ARGS` to its end. With `capture`, its
    stdout and stderr come back as text; without, they go to this process's own, as they come."""
    short = module.rpartition(".")[2]
    with tempfile.TemporaryDirectory(prefix=f"kubetune-{short}-") as tmp:
        spec_path = Path(tmp) / kn.SPEC_KEY
        spec_path.write_text(spec.to_yaml())
        return subprocess.run([sys.executable, "-m", module, "--spec", str(spec_path), *args],
                              env=entrypoint_env(spec, spec_path), capture_output=capture, text=True,
                              timeout=timeout, check=False)
