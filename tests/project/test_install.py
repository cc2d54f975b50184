"""The README's install resolves at once: pip never fetches a second version of any package.

Why: with open ranges, pip backtracked through 299 botocore releases (3.9 GB) before it found a
set that s3fs's aiobotocore and moto's boto3 both accept. pyproject.toml pins that set and
constraints.txt (the lock the README's commands pass to pip) holds every version; this test
runs pip's real resolver (dry run, nothing installed) into a fresh, empty venv and reads pip's log:
a package fetched in two versions is a backtrack.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# "Downloading botocore-1.43.117-py3-none-any.whl", "Processing /x/mdurl-0.1.2-py3-none-any.whl"
_FETCH = re.compile(
    r"(?:Downloading|Processing|Using cached) (?:\S*/)?([A-Za-z0-9_.]+?)-(\d[^-\s]*?)"
    r"(?:-py|-cp|\.tar\.gz|\.zip)"
)


def fetched_versions(pip_log: str) -> dict[str, set[str]]:
    """Every distribution pip fetched while resolving, with the versions it fetched."""
    versions: dict[str, set[str]] = collections.defaultdict(set)
    for line in pip_log.splitlines():
        match = _FETCH.search(line)
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1).lower())
            versions[name].add(match.group(2))
    return versions


def test_fetched_versions_sees_a_backtrack():
    """The log parser itself: two botocore wheels are a backtrack, one of each is not."""
    log = (
        "  Downloading botocore-1.43.117-py3-none-any.whl (16.1 MB)\n"
        "  Downloading botocore-1.43.116-py3-none-any.whl (16.1 MB)\n"
        "Processing /opt/pypi/files/mdurl-0.1.2-py3-none-any.whl (from x)\n"
        "  Downloading PyYAML-6.0.4-cp311-cp311-manylinux2014_x86_64.whl (828 kB)\n"
    )
    found = fetched_versions(log)
    assert found["botocore"] == {"1.43.117", "1.43.116"}
    assert found["mdurl"] == {"0.1.2"} and found["pyyaml"] == {"6.0.4"}


@pytest.mark.slow
# The README's first command (train,quickstart) and the test install (dev), each after
# `pip install -c constraints.txt torch==2.13.0` (given here in the same resolve), held to the lock.
@pytest.mark.parametrize("extras", ["train,quickstart", "dev"])
def test_readme_install_resolves_without_backtracking(tmp_path, extras):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"),
         "install", "--dry-run", "--ignore-installed", "--report", str(report),
         "-c", str(REPO / "constraints.txt"), "torch==2.13.0", "-e", f"{REPO}[{extras}]"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    versions = fetched_versions(result.stdout)
    assert len(versions) > 50, result.stdout[-2000:]  # the parser saw the fetches
    twice = {name: sorted(v) for name, v in versions.items() if len(v) > 1}
    assert not twice, f"pip backtracked over: {twice}"
    installed = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"kubetune", "botocore", "s3fs", "torch"} <= installed
