"""One lock of the tested set (issue 22): constraints.txt holds every package at the version
the tests run, and the README's two commands, .ci/run and both Dockerfiles install through it,
with the same torch, so an image ships what was tested (docs/container.md, "The lock")."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "constraints.txt"
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.cpu"]


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    return pins


def _commands() -> dict[str, str]:
    readme = REPO / "README.md"
    blocks = re.findall(r"^```bash\n(.+)\n```$", readme.read_text(), flags=re.MULTILINE)
    fresh = [b for b in blocks if "python3 -m venv .venv" in b]
    assert len(fresh) == 2, fresh
    return {"README.md (main job)": fresh[0], "README.md (tests)": fresh[1], ".ci/run": (REPO / ".ci" / "run").read_text()}


def test_the_tests_run_what_the_lock_says():
    """The environment these tests run in is the lock: the same version of every package."""
    pins = locked()
    assert {"torch", "transformers", "datasets", "accelerate", "peft", "s3fs", "botocore", "pydantic"} <= set(pins)
    differ = {}
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"].lower())
        if name in pins and dist.version.split("+")[0] != pins[name]:
            differ[name] = (dist.version, pins[name])
    assert not differ, f"installed vs constraints.txt: {differ} (move the lock: bash docker/update-lock.sh)"


@pytest.mark.parametrize("where", ["README.md (main job)", "README.md (tests)", ".ci/run"])
def test_every_install_goes_through_the_lock_with_its_torch(where):
    command = _commands()[where]
    installs = [s.strip() for s in re.split(r"&&|\n", command) if re.match(r"\s*pip install", s) and "upgrade pip" not in s]
    assert installs, command
    for step in installs:
        assert "-c constraints.txt" in step, f"{where}: {step!r} does not install through the lock"
    torch = re.findall(r"torch==([\w.]+)", command)
    assert torch == [locked()["torch"]], f"{where}: torch {torch}, the lock has {locked()['torch']}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_both_images_install_through_the_lock_with_its_torch(dockerfile):
    text = dockerfile.read_text()
    assert re.search(r"^ARG TORCH_VERSION=(\S+)$", text, flags=re.MULTILINE).group(1) == locked()["torch"]
    assert re.search(r"^COPY constraints\.txt ", text, flags=re.MULTILINE)
    installs = re.findall(r"pip install ([^&]+)", text)
    assert len(installs) >= 3, installs  # pip itself, torch, the package
    for args in installs:
        assert "-c constraints.txt" in args, f"{dockerfile.name}: pip install {args.strip()!r} bypasses the lock"
    assert '"torch==${TORCH_VERSION}"' in text and '"./[train,gcs,azure]"' in text  # every store a pod may read


def test_the_lock_names_the_transformers_the_tests_import():
    import transformers

    assert transformers.__version__ == locked()["transformers"]
