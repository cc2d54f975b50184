"""submit, status, logs, list and cancel for the JobSet and TrainJob engines, through the real
`kubernetes` client against the fake API server serving their custom resources (and the fake
controllers of tests/fakes/k8s_fake_engines.py playing JobSet and Kubeflow Trainer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes.k8s_fake_engines import attach
from fakes.k8s_fake_server import FakeKubeAPI, JobScript, PodRun

from kubetune.cli.main import main
from kubetune.contract.exitcodes import EXIT_BAD_INPUT
from kubetune.launch.cluster import api as cluster_api

REPO = Path(__file__).resolve().parents[2]
SPEC = """\
name: sst2
model: {source: minilm}
data: {train: data/train.csv}
resources: {nodes: 2}
kubernetes: {namespace: ml}
"""


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_api, "POLL_SECONDS", 0.02)


@pytest.fixture
def api() -> Any:
    with FakeKubeAPI(lifetime_s=40) as server:
        attach(server, runtime=yaml.safe_load((REPO / "k8s" / "trainjob-runtime.yaml").read_text()))
        yield server


def cli(capsys: pytest.CaptureFixture[str], api: FakeKubeAPI, tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC)
    argv = tuple(str(spec) if a == "JOB" else a for a in argv)
    code = main([*argv, "--kubeconfig", str(api.kubeconfig(tmp_path / "kubeconfig"))])
    out, err = capsys.readouterr()
    return code, out, err


def two_ranks(*lines: str, exit_code: int = 0) -> dict[int, PodRun]:
    return {0: PodRun(list(lines), exit_code), 1: PodRun(["rank one up"], exit_code)}


def test_jobset_submit_follows_a_restart_then_evaluates_and_cancel_removes_everything(
    api: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.script_job("sst2-train-node-0", [
        JobScript(outcome="BackoffLimitExceeded", pods=two_ranks("step 10 loss 0.70", exit_code=1), pending_s=0.5),
        JobScript(pods=two_ranks("step 10 loss 0.70", "step 20 loss 0.41"), pending_s=0.5),
    ])
    api.script_job("sst2-evaluate", JobScript(pods={0: PodRun(["accuracy 0.91"])}))
    code, out, err = cli(capsys, api, tmp_path, "submit", "JOB", "--engine", "jobset", "--wait")
    assert code == 0, err
    assert "JobSet/sst2-train created" in out
    assert "[rank 0] step 20 loss 0.41" in out and "[rank 1] rank one up" in out
    assert out.index("train JobSet sst2-train succeeded") < out.index("Job/sst2-evaluate created") < out.index("accuracy 0.91")
    jobset = api.get("jobsets", "sst2-train")
    assert jobset["status"]["restarts"] == 1  # one incident of a two-pod gang: one restart
    assert api.names("services") == []  # JobSet's own Service, not ours
    # the JobSet went over the wire as the custom resource, watched, not polled
    assert any(m == "POST" and p == "/apis/jobset.x-k8s.io/v1alpha2/namespaces/ml/jobsets" for m, p, _, _ in api.requests)
    assert any(q.get("watch") == ["true"] and p.endswith("/jobsets") for m, p, q, _ in api.requests)

    code, out, err = cli(capsys, api, tmp_path, "status", "sst2")
    assert code == 0, err
    assert "sst2-train" in out and "sst2-train-node-0" in out and "Succeeded" in out
    code, out, err = cli(capsys, api, tmp_path, "list")
    assert code == 0 and "JobSet Succeeded, 1 restarts" in out
    code, out, err = cli(capsys, api, tmp_path, "logs", "sst2", "--rank", "0")
    assert code == 0 and "step 20 loss 0.41" in out

    code, out, err = cli(capsys, api, tmp_path, "cancel", "sst2", "--wait")
    assert code == 0, err
    assert "JobSet/sst2-train deleted" in out
    # delete with propagation: the JobSet took its Jobs and their pods
    assert api.names("jobsets") == api.names("jobs") == api.names("pods") == api.names("configmaps") == []


def test_jobset_user_error_fails_without_restart(api: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.script_job("sst2-train-node-0", [
        JobScript(outcome="PodFailurePolicy", pods={0: PodRun(["error: data.train: no such file"], EXIT_BAD_INPUT), 1: PodRun()}),
        JobScript(),
    ])
    code, out, err = cli(capsys, api, tmp_path, "submit", "JOB", "--engine", "jobset", "--wait", "--stage", "train")
    assert code == 1
    assert "train JobSet sst2-train failed: PodFailurePolicy" in err
    assert "[rank 0] error: data.train: no such file" in err
    assert api.get("jobsets", "sst2-train")["status"]["restarts"] == 0
    assert len(api.scripts["sst2-train-node-0"]) == 1  # the gang was created once


def test_trainjob_submit_follow_status_and_cancel(api: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the runtime's initializer runs first, then the gang (dependsOn)
    api.script_job("sst2-train-initializer-0", JobScript(pods={0: PodRun(["kubetune: initialized sst2"])}))
    api.script_job("sst2-train-node-0", JobScript(pods=two_ranks("step 10 loss 0.70"), pending_s=0.5))
    code, out, err = cli(capsys, api, tmp_path, "submit", "JOB", "--engine", "trainjob", "--wait", "--stage", "train")
    assert code == 0, err
    assert "TrainJob/sst2-train created" in out and "[rank 0] step 10 loss 0.70" in out
    assert "train TrainJob sst2-train succeeded" in out
    trainjob = api.get("trainjobs", "sst2-train")
    assert trainjob["spec"]["runtimeRef"]["name"] == "kubetune"
    # Trainer's JobSet ran the pods kubetune rendered: our command, on the runtime's container
    pod = api.get("pods", api.names("pods")[0])
    job = api.get("jobs", "sst2-train-node-0")
    assert job["metadata"]["labels"]["kubetune.io/job"] == "sst2"
    assert pod["spec"]["containers"][0]["name"] in ("node", "initializer")
    init = api.get("jobs", "sst2-train-initializer-0")["spec"]["template"]["spec"]
    assert init["containers"][0]["command"][2] == "kubetune.workload.entrypoints.initialize"
    assert any(v.get("configMap", {}).get("name") == "sst2-spec" for v in init["volumes"])  # patched per job

    code, out, err = cli(capsys, api, tmp_path, "list")
    assert code == 0 and "TrainJob Succeeded" in out
    code, out, err = cli(capsys, api, tmp_path, "cancel", "sst2", "--wait")
    assert code == 0, err
    assert "TrainJob/sst2-train deleted" in out
    assert api.names("trainjobs") == api.names("jobsets") == api.names("jobs") == api.names("pods") == []


def test_logs_follow_waits_for_the_engine_to_create_the_gang(api: FakeKubeAPI, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    api.script_job("sst2-train-node-0", JobScript(pods=two_ranks("step 10 loss 0.70"), pending_s=0.5))
    code, _, err = cli(capsys, api, tmp_path, "submit", "JOB", "--engine", "jobset", "--stage", "train")
    assert code == 0, err
    code, out, err = cli(capsys, api, tmp_path, "logs", "sst2", "-f")
    assert code == 0, err
    assert "[rank 0] step 10 loss 0.70" in out


def test_submit_to_a_cluster_without_the_engine_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeKubeAPI(lifetime_s=20, crds=False) as api:
        code, out, err = cli(capsys, api, tmp_path, "submit", "JOB", "--engine", "jobset")
        assert code == 1
        assert err.strip().splitlines() == [
            "error: the cluster does not serve JobSet jobset.x-k8s.io/v1alpha2: install JobSet (jobset.x-k8s.io), "
            "or submit with --engine job"]
        assert api.names("configmaps") == []  # refused before anything was created
        # and the plain engine's verbs still work where the CRDs are absent
        code, out, err = cli(capsys, api, tmp_path, "list")
        assert code == 0, err
