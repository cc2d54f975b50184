"""The docs' cluster journeys run as written (issue 28, point 4), against the fake API server:
every documented `kubetune submit/status/logs/cancel/list` command of the README and docs/
(read from the pages by `helpers_docs`, placeholders filled in) runs through the real command
line and the official kubernetes client over HTTP, and exits 0.

A `submit` runs on an empty cluster, whose controller plays the quickstart's train and evaluate
Jobs to success; a command that reads or removes a job runs once the documented first command,
`kubetune submit jobs/quickstart.yaml --wait`, has run the job there. The journeys that read a
store run in tests/e2e/test_watching_runs.py; every command is parsed, validated and rendered
by tests/project/test_docs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fakes.k8s_fake_engines import attach
from fakes.k8s_fake_server import FakeKubeAPI, JobScript, PodRun
from helpers import REPO
from helpers_docs import doc_commands

from kubetune.cli.main import main
from kubetune.launch.cluster import api as cluster_api

CLUSTER_VERBS = ("submit", "status", "logs", "cancel", "list")
JOB = "quickstart"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_api, "POLL_SECONDS", 0.02)


def _cluster_commands():
    """The documented cluster commands; a `status` of a JOB.yaml with a local store reads the
    store instead (test_watching_runs.py runs those), and `--store s3://...` needs a bucket."""
    return [c for c in doc_commands() if not c.setup and c.verb in CLUSTER_VERBS
            and not (c.verb == "status" and (c.argv[1].endswith(".yaml") or "--local" in c.argv or "--store" in c.argv))]


def _script(api: FakeKubeAPI, job: str) -> None:
    """Training on two nodes (`logs x --rank 1` reads node rank 1), then evaluation; for the
    JobSet and TrainJob engines (the fake controllers of `attach`) the gang's Job is
    `<job>-train-node-0`, after the initializer's."""
    train = JobScript(pods={0: PodRun(["kubetune: step 46/46 | loss 0.05"]), 1: PodRun(["kubetune: rank 1 done"])})
    for name in (f"{job}-train", f"{job}-train-node-0"):
        api.script_job(name, train)
    api.script_job(f"{job}-train-initializer-0", JobScript(pods={0: PodRun(["kubetune: cache ready"])}))
    api.script_job(f"{job}-evaluate", JobScript(pods={0: PodRun(["kubetune: test metrics: eval/metrics.json"])}))


def _target(command) -> tuple[str, str]:
    """The job a documented command acts on, and the spec file that submits it."""
    if command.verb == "submit":
        spec = command.argv[1]
        return yaml.safe_load((REPO / spec).read_text())["name"], spec
    name = command.argv[1] if len(command.argv) > 1 and not command.argv[1].startswith("-") else JOB
    return name, f"jobs/{name}.yaml"


def test_the_docs_list_the_cluster_verbs():
    assert {c.verb for c in _cluster_commands()} == set(CLUSTER_VERBS)


@pytest.mark.parametrize("command", _cluster_commands(), ids=lambda c: f"{c.where} {' '.join(c.argv)}")
def test_each_documented_cluster_command_runs_as_written(command, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the docs' job paths are relative to the repository
    job, spec = _target(command)
    with FakeKubeAPI(lifetime_s=60) as api:
        attach(api, runtime=yaml.safe_load((REPO / "k8s" / "trainjob-runtime.yaml").read_text()))
        kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig", namespace="ml"))
        _script(api, job)
        if command.verb != "submit" or "--replace" in command.argv:
            assert main(["submit", spec, "--wait", "-n", "ml", "--set", "resources.nodes=2",
                         "--kubeconfig", kubeconfig]) == 0
            capsys.readouterr()
        code = main([*command.argv, "--kubeconfig", kubeconfig])
        captured = capsys.readouterr()
    assert code == 0, f"{command.where}: {command.written}\n{captured.out[-1500:]}\n{captured.err[-1500:]}"
    if command.verb == "submit":
        assert (f"plan for {job}" if "--dry-run" in command.argv else f"/{job}-train created") in captured.out
    if command.verb in ("status", "list"):
        assert job in captured.out and "Succeeded" in captured.out
    if command.verb == "logs":
        assert "rank 1] kubetune: rank 1 done" in captured.out
        assert ("rank 0]" in captured.out) == ("--rank" not in command.argv)
