"""Starting an entrypoint as a local child process (`launch.entrypoint_process`): what the child
receives is what a pod's entrypoint receives, checked in a real child process (a stand-in
module on PYTHONPATH that reports its argv and environment)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from kubetune.contract import names as kn
from kubetune.contract.spec.job import load_spec, validate_spec
from kubetune.launch.entrypoint_process import entrypoint_env, run_entrypoint

REPORTER = """
import json, os, sys
spec = sys.argv[sys.argv.index("--spec") + 1]
names = sys.argv[sys.argv.index("--names") + 1].split(",")
print(json.dumps({"argv": sys.argv[1:], "spec": open(spec).read(), "env": {n: os.environ.get(n) for n in names}}))
sys.exit(int(os.environ.get("REPORTER_EXIT", "0")))
"""
WATCHED = [kn.ENV_SPEC, kn.ENV_SPEC_FILE, kn.ENV_DIE_WITH_PARENT, "REPORTER_EXIT"]


@pytest.fixture
def job(tmp_path, monkeypatch):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "reporter.py").write_text(REPORTER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path / "mods"), os.environ.get("PYTHONPATH")])))
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "jobs" / "promote-me.yaml"
    path.write_text(yaml.safe_dump({"name": "promote-me", "model": {"source": "models/m"}, "data": {"train": "d/t.tsv"},
                                    "storage": {"root": str(tmp_path / "store")}}))
    monkeypatch.chdir(tmp_path)
    return load_spec("jobs/promote-me.yaml", ["train.epochs=2"])


def test_the_child_gets_the_resolved_spec_and_the_users_file_name(job):
    result = run_entrypoint("reporter", job, ["--run", "r1", "--names", ",".join(WATCHED)], capture=True)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    spec_arg = seen["argv"][seen["argv"].index("--spec") + 1]
    assert seen["argv"][-4:] == ["--run", "r1", "--names", ",".join(WATCHED)]
    assert seen["spec"] == job.to_yaml()  # the resolved spec, overrides applied, as the ConfigMap carries it
    assert yaml.safe_load(seen["spec"])["train"]["epochs"] == 2
    assert seen["env"][kn.ENV_SPEC] == spec_arg  # the mounted copy, which error lines replace by the user's file
    assert seen["env"][kn.ENV_SPEC_FILE] == "jobs/promote-me.yaml"
    assert seen["env"][kn.ENV_DIE_WITH_PARENT] == str(os.getpid())
    assert not os.path.exists(spec_arg)  # the temporary copy is gone once the child ended


def test_the_childs_exit_code_and_output_come_back(job, monkeypatch):
    monkeypatch.setenv("REPORTER_EXIT", "2")
    result = run_entrypoint("reporter", job, ["--names", "REPORTER_EXIT"], capture=True)
    assert result.returncode == 2
    assert json.loads(result.stdout)["env"]["REPORTER_EXIT"] == "2"


def test_an_inherited_spec_file_name_is_not_passed_for_a_spec_without_one(job):
    """A spec validated from data (no file, or a file name not fit for an environment) has no
    name to pass; one left in the caller's environment would be another spec's."""
    unnamed = validate_spec(yaml.safe_load(job.to_yaml()))
    assert unnamed.spec_file is None
    mounted = Path("/tmp/kubetune-x/spec.yaml")
    env = entrypoint_env(unnamed, mounted, environ={kn.ENV_SPEC_FILE: "jobs/other.yaml", "KEEP": "1"})
    assert kn.ENV_SPEC_FILE not in env
    assert env[kn.ENV_SPEC] == str(mounted) and env["KEEP"] == "1"
