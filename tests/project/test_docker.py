"""The images, without a Docker engine: what the Dockerfiles copy exists and reaches the build
context, the extras they install exist, they run as the user the pods expect, and the
commands they (and the rendered pods) run name real modules."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kubetune.contract import names as kn
from kubetune.contract.names import SPEC_PATH
from kubetune.launch.render import RUN_AS_USER, evaluate_command, names, render_objects
from kubetune.contract.spec.job import load_spec

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.cpu"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def dockerignore_allows(rel: str) -> bool:
    """.dockerignore semantics for the simple patterns used there (last match wins)."""
    allowed = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/"):
            allowed = negate
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_files_exist_and_reach_the_build_context(dockerfile):
    copies = [args for word, args in instructions(dockerfile) if word == "COPY"]
    assert copies
    for args in copies:
        *sources, _dest = args.split()
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}: missing"
            assert dockerignore_allows(source), f"{dockerfile.name}: COPY {source}: excluded by .dockerignore"
    assert dockerignore_allows("src/kubetune/spec.py")
    assert not dockerignore_allows(".venv/bin/python")
    assert not dockerignore_allows(".kubetune/runs/x/model/model.safetensors")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_the_unprivileged_user_the_pods_expect(dockerfile):
    users = [args for word, args in instructions(dockerfile) if word == "USER"]
    assert users == [f"{RUN_AS_USER}:{RUN_AS_USER}"]
    runs = " ".join(args for word, args in instructions(dockerfile) if word == "RUN")
    assert f"kubetune:x:{RUN_AS_USER}:{RUN_AS_USER}:" in runs  # the passwd entry, on any base


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_installs_existing_extras_and_checks_the_entrypoints(dockerfile):
    runs = " && ".join(args for word, args in instructions(dockerfile) if word == "RUN")
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    installed = re.findall(r'"\./\[([a-z,]+)\]"', runs)
    assert installed, "the package is not installed with its extras"
    for group in installed:
        assert set(group.split(",")) <= extras
    assert "train" in installed[0].split(",")
    # The image's own check imports every module a pod runs; run the same command here.
    check = next(cmd for cmd in runs.split(" && ") if cmd.startswith("python -c"))
    result = subprocess.run([sys.executable, *shlex.split(check)[1:]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_rendered_pod_commands_name_modules_the_image_checks(tmp_path):
    imported = set()
    for dockerfile in DOCKERFILES:
        runs = " ".join(args for word, args in instructions(dockerfile) if word == "RUN")
        imported |= set(re.findall(r"kubetune\.[a-z_.]+[a-z]", runs))
    spec = load_spec(REPO / "jobs" / "imdb-bert-multinode.yaml")
    commands = [
        o["spec"]["template"]["spec"]["containers"][0]["command"] for o in render_objects(spec) if o["kind"] == "Job"
    ]
    commands.append(evaluate_command())
    modules = {cmd[i + 1] for cmd in commands for i, word in enumerate(cmd[:-1]) if word == "-m"}
    assert modules == {kn.DISTRUN_MODULE, kn.TRAIN_MODULE, kn.EVALUATE_MODULE}
    assert modules <= imported
    assert all(cmd[0] == "python" and cmd[-2:] == ["--spec", SPEC_PATH] for cmd in commands)
    assert names(spec).train.endswith("-train")
