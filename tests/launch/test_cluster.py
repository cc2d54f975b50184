"""The cluster verbs against a local Kubernetes API server (tests/fakes/k8s_fake_server.py), driven
through the real `kubernetes` client: nothing of the client is patched, so these tests check
what goes over the wire."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fakes.k8s_fake_server import FakeKubeAPI, JobScript, PodRun, closed_port

from kubetune.cli.main import main
from kubetune.cli.cluster import submit
from kubetune.launch.cluster import ClusterError, connect
from kubetune.launch.cluster import api as cluster_api
from kubetune.launch.cluster.state import duration, job_state, job_status

NS = "ml"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_api, "POLL_SECONDS", 0.02)


@pytest.fixture
def api() -> Any:
    with FakeKubeAPI(lifetime_s=30) as server:  # a test that hangs fails when the server goes
        yield server


@pytest.fixture
def kubeconfig(api: FakeKubeAPI, tmp_path: Path) -> Path:
    return api.kubeconfig(tmp_path / "kubeconfig", namespace=NS)


def labels(job: str, component: str) -> dict[str, str]:
    return {"kubetune.io/job": job, "app.kubernetes.io/component": component, "kubetune.io/stage": component}


def job_obj(name: str, job: str, component: str, completions: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels(job, component)},
        "spec": {
            "completions": completions,
            "parallelism": completions,
            "completionMode": "Indexed",
            "template": {
                "metadata": {"labels": labels(job, component)},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": component, "image": "kubetune:test", "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": 2}}}
                    ],
                },
            },
        },
    }


def objects(job: str = "sst2", nodes: int = 2) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hand-made train and evaluate stages, shaped like the renderer's."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{job}-spec", "labels": labels(job, "spec")}, "data": {"spec.yaml": "name: x\n"}}
    np = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": job, "labels": labels(job, "network")},
        "spec": {"podSelector": {"matchLabels": {"kubetune.io/job": job}}, "policyTypes": ["Ingress"]},
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{job}-workers", "labels": labels(job, "train")},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"kubetune.io/job": job}},
    }
    train = [job_obj(f"{job}-train", job, "train", nodes), svc, np, cm]  # out of order on purpose
    evaluate = [cm, np, job_obj(f"{job}-evaluate", job, "evaluate")]
    return train, evaluate


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def posts(api: FakeKubeAPI) -> list[str]:
    return [f"{path.rsplit('/', 1)[-1]}/{body['metadata']['name']}" for m, path, q, body in api.requests if m == "POST"]


# ---------------------------------------------------------------------------------------------
# connecting


def test_connect_takes_namespace_from_the_kubeconfig_context(kubeconfig: Path) -> None:
    assert connect(str(kubeconfig)).namespace == NS
    assert connect(str(kubeconfig), namespace="other").namespace == "other"


def test_connect_uses_kubeconfig_env_and_default_namespace(api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = api.kubeconfig(tmp_path / "cfg", namespace=None)
    monkeypatch.setenv("KUBECONFIG", str(path))
    c = connect()
    assert c.namespace == "default"
    assert c.api_client.configuration.host == api.url


def test_connect_without_any_configuration_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ClusterError, match="no Kubernetes configuration"):
        connect()


def test_missing_kubeconfig_file_is_a_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "status", "x", "--kubeconfig", str(tmp_path / "nope"))
    assert (code, out, err) == (1, "", f"error: kubeconfig {tmp_path / 'nope'}: no such file\n")


def test_unknown_context_is_a_cli_error(kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "list", "--kubeconfig", str(kubeconfig), "--context", "nope")
    assert code == 1
    assert err.startswith("error: kubeconfig") and "nope" in err
    assert err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# submit


def test_submit_creates_the_train_stage_in_dependency_order(api: FakeKubeAPI, kubeconfig: Path) -> None:
    train, evaluate = objects()
    code = submit(connect(str(kubeconfig)), "sst2", [train, evaluate])
    assert code == 0
    assert posts(api) == ["configmaps/sst2-spec", "services/sst2-workers", "networkpolicies/sst2", "jobs/sst2-train"]
    assert api.names("jobs") == ["sst2-train"]  # evaluation waits for training (--wait)
    stored = api.get("jobs", "sst2-train")
    assert stored["metadata"]["namespace"] == NS
    assert stored["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1", "cpu": "2"}
    assert all(q.get("dryRun") is None for m, p, q, b in api.requests if m == "POST")


def test_submit_refuses_a_job_that_exists(api: FakeKubeAPI, kubeconfig: Path) -> None:
    train, evaluate = objects()
    api.put("jobs", job_obj("sst2-evaluate", "sst2", "evaluate"))  # left over from an earlier run
    c = connect(str(kubeconfig))
    with pytest.raises(ClusterError, match=r"job sst2 already exists in namespace ml \(Job/sst2-evaluate\); pass --replace"):
        submit(c, "sst2", [train, evaluate])
    assert posts(api) == []


def test_submit_replace_deletes_then_creates(api: FakeKubeAPI, kubeconfig: Path) -> None:
    train, evaluate = objects()
    old = api.put("jobs", job_obj("sst2-train", "sst2", "train"))
    api.add_pod("sst2-train", 0, "Running")
    code = submit(connect(str(kubeconfig)), "sst2", [train, evaluate], replace=True)
    assert code == 0
    deletes = [(p, q) for m, p, q, b in api.requests if m == "DELETE"]
    assert deletes == [(f"/apis/batch/v1/namespaces/{NS}/jobs/sst2-train", {"propagationPolicy": ["Foreground"]})]
    assert api.get("jobs", "sst2-train")["metadata"]["uid"] != old["metadata"]["uid"]
    assert api.names("pods") == []  # the old run's pods went with its Job


def test_submit_dry_run_sends_every_object_with_dry_run_and_stores_nothing(api: FakeKubeAPI, kubeconfig: Path) -> None:
    train, evaluate = objects()
    code = submit(connect(str(kubeconfig)), "sst2", [train, evaluate], dry_run=True, wait=True)
    assert code == 0
    creates = [(p.rsplit("/", 1)[-1], q) for m, p, q, b in api.requests if m == "POST"]
    assert [p for p, q in creates] == ["configmaps", "services", "networkpolicies", "jobs", "jobs"]
    assert all(q == {"dryRun": ["All"]} for p, q in creates)
    assert api.names("jobs") == [] and api.names("configmaps") == []


def test_dry_run_replace_deletes_nothing(api: FakeKubeAPI, kubeconfig: Path) -> None:
    train, evaluate = objects()
    api.put("jobs", job_obj("sst2-train", "sst2", "train"))
    code = submit(connect(str(kubeconfig)), "sst2", [train, evaluate], dry_run=True, replace=True)
    assert code == 0
    assert [q for m, p, q, b in api.requests if m == "DELETE"] == [{"propagationPolicy": ["Foreground"], "dryRun": ["All"]}]
    assert api.names("jobs") == ["sst2-train"]


def test_dry_run_reports_an_invalid_object(api: FakeKubeAPI, kubeconfig: Path) -> None:
    bad = job_obj("sst2-train", "sst2", "train")
    bad["spec"]["template"]["spec"]["containers"] = []
    with pytest.raises(ClusterError, match=r"create Job/sst2-train in namespace ml \(dry run\): invalid: .*containers: Required"):
        submit(connect(str(kubeconfig)), "sst2", [[bad]], dry_run=True)


def test_submit_wait_trains_then_evaluates_and_streams_progress(
    api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Pending long enough that neither Job can be done when submit first reads it, even on a
    # loaded machine: the wait must then go through a watch.
    api.script_job("sst2-train", JobScript(pods={0: PodRun(["step 10 loss 0.70", "step 20 loss 0.41"]), 1: PodRun(["rank one up"])}, pending_s=1.0))
    api.script_job("sst2-evaluate", JobScript(pods={0: PodRun(["accuracy 0.91"])}, pending_s=1.0))
    train, evaluate = objects()
    code = submit(connect(str(kubeconfig)), "sst2", [train, evaluate], wait=True)
    out = capsys.readouterr().out
    assert code == 0
    for line in ("[rank 0] step 10 loss 0.70", "[rank 0] step 20 loss 0.41", "[rank 1] rank one up", "[rank 0] accuracy 0.91"):
        assert line in out
    assert out.index("train Job sst2-train succeeded") < out.index("Job/sst2-evaluate created") < out.index("accuracy 0.91")
    assert out.rstrip().endswith("job sst2 succeeded")
    # the evaluate stage reuses the ConfigMap and NetworkPolicy instead of creating them twice
    assert posts(api) == ["configmaps/sst2-spec", "services/sst2-workers", "networkpolicies/sst2", "jobs/sst2-train", "jobs/sst2-evaluate"]
    # waiting is a watch on the Job (and its pods), not polling reads
    watched = {(p.rsplit("/", 1)[-1], q.get("fieldSelector", q.get("labelSelector", [""]))[0])
               for m, p, q, b in api.requests if m == "GET" and q.get("watch") == ["true"]}
    assert any(plural == "jobs" and selector.startswith("metadata.name=sst2-") for plural, selector in watched)
    assert ("pods", "batch.kubernetes.io/job-name=sst2-train") in watched
    reads = [p for m, p, q, b in api.requests if m == "GET" and p.endswith("/jobs/sst2-train")]
    assert len(reads) <= 3


@pytest.mark.parametrize("reason", ["BackoffLimitExceeded", "DeadlineExceeded", "PodFailurePolicy"])
def test_submit_wait_reports_a_failed_train_job(
    api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str], reason: str
) -> None:
    lines = [f"line {i}" for i in range(30)] + ["ValueError: data.columns: no column 'sentence'"]
    api.script_job("sst2-train", JobScript(outcome=reason, message="Job has reached the specified backoff limit", pods={0: PodRun(lines, 2)}))
    train, evaluate = objects(nodes=1)
    code = submit(connect(str(kubeconfig)), "sst2", [train, evaluate], wait=True)
    err = capsys.readouterr().err
    assert code == 1
    assert f"train Job sst2-train failed: {reason}: Job has reached the specified backoff limit" in err
    assert "[rank 0] ValueError: data.columns: no column 'sentence'" in err
    assert "[rank 0] line 11\n" in err and "[rank 0] line 10\n" not in err  # the last 20 lines
    assert api.get("jobs", "sst2-evaluate") is None


def test_submit_wait_fails_when_evaluation_fails(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.script_job("sst2-train", JobScript())
    api.script_job("sst2-evaluate", JobScript(outcome="BackoffLimitExceeded", pods={0: PodRun(["no model found"], 1)}))
    train, evaluate = objects(nodes=1)
    assert submit(connect(str(kubeconfig)), "sst2", [train, evaluate], wait=True) == 1
    err = capsys.readouterr().err
    assert "evaluate Job sst2-evaluate failed: BackoffLimitExceeded" in err
    assert "[rank 0] no model found" in err


def test_wait_notices_a_cancelled_job(api: FakeKubeAPI, kubeconfig: Path) -> None:
    train, _ = objects(nodes=1)
    c = connect(str(kubeconfig))

    def delete_when_created() -> None:
        while api.get("jobs", "sst2-train") is None:
            time.sleep(0.01)
        api.delete("jobs", NS, "sst2-train", False, {})

    threading.Thread(target=delete_when_created, daemon=True).start()
    with pytest.raises(ClusterError, match="Job sst2-train in namespace ml no longer exists"):
        submit(c, "sst2", [train], wait=True)


def test_submit_evaluate_stage_reuses_the_training_objects(api: FakeKubeAPI, kubeconfig: Path) -> None:
    train, evaluate = objects(nodes=1)
    c = connect(str(kubeconfig))
    submit(c, "sst2", [train])
    assert submit(c, "sst2", [evaluate], reuse=("ConfigMap", "Service", "NetworkPolicy")) == 0
    assert api.names("jobs") == ["sst2-evaluate", "sst2-train"]
    with pytest.raises(ClusterError, match="already exists"):
        submit(c, "sst2", [evaluate], reuse=("ConfigMap", "Service", "NetworkPolicy"))


# ---------------------------------------------------------------------------------------------
# status, logs, list, cancel


def test_status_shows_phase_pods_per_index_restarts_and_last_line(
    api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = api.put("jobs", job_obj("sst2-train", "sst2", "train", completions=3))
    job["status"] = {"active": 3, "startTime": (datetime.now(timezone.utc) - timedelta(minutes=5, seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    api.put("jobs", job)
    api.add_pod("sst2-train", 0, "Failed", ["oom"], name="sst2-train-0-aaaaa")
    api.add_pod("sst2-train", 0, "Running", ["epoch 1", "step 120 loss 0.35 samples/s 410", ""], restarts=1, name="sst2-train-0-bbbbb")
    api.add_pod("sst2-train", 1, "Running", ["step 120 loss 0.36"], name="sst2-train-1-ccccc")
    api.add_pod("sst2-train", 2, "Pending", name="sst2-train-2-ddddd", waiting_reason="ImagePullBackOff")
    code, out, err = run_cli(capsys, "status", "sst2", "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "job sst2 in namespace ml"
    row = next(line.split() for line in lines if line.startswith("train "))
    assert row[:4] == ["train", "sst2-train", "Running", "0/3"]
    assert row[4].startswith("5m0")
    pod0 = next(line for line in lines if line.startswith("0 "))
    assert pod0.split()[:5] == ["0", "sst2-train-0-bbbbb", "Running", "2", "1"]
    assert pod0.endswith("step 120 loss 0.35 samples/s 410")
    assert next(line for line in lines if line.startswith("2 ")).endswith("(waiting: ImagePullBackOff)")


def test_status_of_a_failed_job_names_the_reason(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.put("jobs", job_obj("sst2-train", "sst2", "train"))
    api.set_job_condition("sst2-train", "Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
    code, out, _ = run_cli(capsys, "status", "sst2", "--kubeconfig", str(kubeconfig))
    assert code == 0
    assert next(line.split() for line in out.splitlines() if line.startswith("train ")) == [
        "train", "sst2-train", "Failed", "0/1", "0s", "DeadlineExceeded"
    ]
    assert "(no pods left)" in out
    assert "other objects: " not in out


def test_logs_prints_every_rank_with_its_prefix_and_filters_by_rank(
    api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.put("jobs", job_obj("sst2-train", "sst2", "train", completions=2))
    api.add_pod("sst2-train", 1, "Running", ["b1", "b2"])
    api.add_pod("sst2-train", 0, "Succeeded", ["a1"])
    code, out, _ = run_cli(capsys, "logs", "sst2", "--kubeconfig", str(kubeconfig))
    assert code == 0
    assert out.splitlines() == ["[rank 0] a1", "[rank 1] b1", "[rank 1] b2"]
    code, out, _ = run_cli(capsys, "logs", "sst2", "--rank", "1", "--kubeconfig", str(kubeconfig))
    assert out.splitlines() == ["[rank 1] b1", "[rank 1] b2"]
    code, out, err = run_cli(capsys, "logs", "sst2", "--rank", "2", "--kubeconfig", str(kubeconfig))
    assert (code, err) == (1, "error: --rank 2: job sst2 has no such rank (ranks are 0 to nodes - 1)\n")


def test_logs_waits_for_a_pending_pod(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.put("jobs", job_obj("sst2-train", "sst2", "train"))
    pod = api.add_pod("sst2-train", 0, "Pending")

    def start_after_the_launcher_saw_it_pending() -> None:
        api.wait_for_request("GET", "/jobs/sst2-train")  # it reads the Job after listing pending pods
        api.log(pod, "hello")
        api.set_pod_phase(pod, "Running")

    threading.Thread(target=start_after_the_launcher_saw_it_pending, daemon=True).start()
    code, out, err = run_cli(capsys, "logs", "sst2", "--kubeconfig", str(kubeconfig))
    assert code == 0
    assert "waiting for rank 0 of sst2-train to start: ContainerCreating" in err
    assert out == "[rank 0] hello\n"


def test_logs_follow_streams_until_the_job_ends(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.put("jobs", job_obj("sst2-train", "sst2", "train", completions=2))
    p0 = api.add_pod("sst2-train", 0, "Running", ["start 0"])
    p1 = api.add_pod("sst2-train", 1, "Pending")

    def later() -> None:
        api.wait_for_request("GET", f"/pods/{p0}/log")  # listed with rank 1 still pending
        api.log(p0, "step 1")
        api.set_pod_phase(p1, "Running")
        api.log(p1, "start 1")
        time.sleep(0.2)
        api.finish_pod(p0)
        api.finish_pod(p1)
        api.set_job_condition("sst2-train", "Complete")

    threading.Thread(target=later, daemon=True).start()
    code, out, err = run_cli(capsys, "logs", "sst2", "-f", "--kubeconfig", str(kubeconfig))
    assert code == 0
    assert sorted(out.splitlines()) == ["[rank 0] start 0", "[rank 0] step 1", "[rank 1] start 1"]
    assert "waiting for rank 1" in err


def test_logs_of_train_and_evaluate_name_the_stage(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.put("jobs", job_obj("sst2-train", "sst2", "train"))
    api.put("jobs", job_obj("sst2-evaluate", "sst2", "evaluate"))
    api.add_pod("sst2-evaluate", 0, "Running", ["accuracy 0.9"])
    api.add_pod("sst2-train", 0, "Succeeded", ["done"])
    code, out, _ = run_cli(capsys, "logs", "sst2", "--kubeconfig", str(kubeconfig))
    assert out.splitlines() == ["[train rank 0] done", "[evaluate rank 0] accuracy 0.9"]


def test_list_shows_jobs_by_label(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.put("jobs", job_obj("sst2-train", "sst2", "train"))
    api.set_job_condition("sst2-train", "Complete")
    api.put("jobs", job_obj("sst2-evaluate", "sst2", "evaluate"))
    api.put("jobs", job_obj("imdb-train", "imdb", "train"))
    api.set_job_condition("imdb-train", "Failed", "BackoffLimitExceeded")
    api.put("jobs", {**job_obj("other", "x", "train"), "metadata": {"name": "other", "labels": {"app": "other"}}})
    api.put("jobs", job_obj("elsewhere-train", "elsewhere", "train"), ns="team-b")
    code, out, _ = run_cli(capsys, "list", "--kubeconfig", str(kubeconfig))
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["NAME", "TRAIN", "EVALUATE", "SCHEDULE", "AGE"]
    assert [r[:4] for r in rows[1:]] == [["imdb", "Failed", "(BackoffLimitExceeded)", "-"], ["sst2", "Succeeded", "Pending", "-"]]


def test_list_of_an_empty_namespace(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "list", "-n", "empty", "--kubeconfig", str(kubeconfig))
    assert (code, out) == (0, "no kubetune jobs in namespace empty\n")


def test_cancel_deletes_everything_the_job_created(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, evaluate = objects()
    c = connect(str(kubeconfig))
    submit(c, "sst2", [train])
    c.create(evaluate[-1])
    api.add_pod("sst2-train", 0)
    api.add_pod("sst2-train", 1)
    other, _ = objects("imdb", nodes=1)
    submit(c, "imdb", [other])
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "cancel", "sst2", "--kubeconfig", str(kubeconfig))
    assert code == 0
    for plural in ("jobs", "services", "configmaps", "networkpolicies"):
        assert all(not n.startswith("sst2") for n in api.names(plural)), plural
    assert api.names("jobs") == ["imdb-train"] and api.names("pods") == []
    deletes = [(p.rsplit("/", 2)[-2], q) for m, p, q, b in api.requests if m == "DELETE"]
    assert deletes[:2] == [("jobs", {"propagationPolicy": ["Background"]})] * 2  # Jobs go first
    assert sorted(p for p, q in deletes[2:]) == ["configmaps", "networkpolicies", "services"]
    assert "cancelled sst2 in namespace ml" in out


def test_cancel_wait_waits_until_the_objects_are_gone(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.put("jobs", job_obj("sst2-train", "sst2", "train"))
    code, _, _ = run_cli(capsys, "cancel", "sst2", "--wait", "--kubeconfig", str(kubeconfig))
    assert code == 0
    assert [q for m, p, q, b in api.requests if m == "DELETE"] == [{"propagationPolicy": ["Foreground"]}]
    assert [p for m, p, q, b in api.requests if m == "GET"][-1].endswith("/jobs/sst2-train")
    assert api.names("jobs") == []


# ---------------------------------------------------------------------------------------------
# API errors become one line and exit code 1


def test_unknown_job_is_exit_1(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ("status", "logs", "cancel"):
        code, out, err = run_cli(capsys, verb, "nope", "--kubeconfig", str(kubeconfig))
        assert (code, out) == (1, "")
        assert err == "error: no job nope in namespace ml (see `kubetune list`)\n"


def test_forbidden_is_exit_1_with_one_line(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.deny("list", "jobs")
    code, out, err = run_cli(capsys, "list", "--kubeconfig", str(kubeconfig))
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: list jobs in namespace ml: forbidden: jobs.batch is forbidden: User")


def test_forbidden_create_stops_submit(api: FakeKubeAPI, kubeconfig: Path) -> None:
    api.deny("create", "jobs")
    train, _ = objects()
    with pytest.raises(ClusterError, match=r"^create Job/sst2-train in namespace ml: forbidden: .*cannot create resource \"jobs\"") as info:
        submit(connect(str(kubeconfig)), "sst2", [train])
    assert str(info.value).endswith(
        "(created before the failure: ConfigMap/sst2-spec, Service/sst2-workers, NetworkPolicy/sst2; `kubetune cancel sst2` removes them)"
    )


def test_forbidden_logs_in_status_degrade_to_a_note(api: FakeKubeAPI, kubeconfig: Path) -> None:
    api.put("jobs", job_obj("sst2-train", "sst2", "train"))
    api.add_pod("sst2-train", 0, "Running", ["x"])
    api.deny("get", "pods/log")
    status = job_status(connect(str(kubeconfig)), "sst2")
    assert status.pods["sst2-train"][0].last_line.startswith("(no log: ")


def test_conflict_from_the_server_is_exit_1(api: FakeKubeAPI, kubeconfig: Path) -> None:
    train, _ = objects()
    c = connect(str(kubeconfig))
    c.create(train[0])
    with pytest.raises(ClusterError, match=r'create Job/sst2-train in namespace ml: already exists: jobs.batch "sst2-train" already exists') as info:
        c.create(train[0])
    assert info.value.status == 409


def test_wrong_token_is_unauthorized(api: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = api.kubeconfig(tmp_path / "cfg", token="stale")
    code, _, err = run_cli(capsys, "list", "--kubeconfig", str(path))
    assert code == 1
    assert "unauthorized (check the credentials in your kubeconfig)" in err


def test_unreachable_server_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    path = tmp_path / "cfg"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    started = time.monotonic()
    for argv in (["list"], ["status", "sst2"], ["cancel", "sst2"]):
        code, out, err = run_cli(capsys, *argv, "--kubeconfig", str(path))
        assert code == 1
        assert err.startswith("error: ") and f"cannot reach the Kubernetes API server at {url}" in err
        assert err.count("\n") == 1
    assert time.monotonic() - started < 20


# ---------------------------------------------------------------------------------------------
# the CLI with the renderer


SPEC = """\
name: sst2
model: {source: minilm}
data: {train: data/train.csv}
resources: {nodes: 2}
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(SPEC)
    return path


def test_cli_submit_wait_runs_the_rendered_job(
    api: FakeKubeAPI, kubeconfig: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.script_job("sst2-train", JobScript(pods={0: PodRun(["step 1"]), 1: PodRun(["step 1"])}))
    api.script_job("sst2-evaluate", JobScript(pods={0: PodRun(["accuracy 0.9"])}))
    code, out, err = run_cli(capsys, "submit", str(spec_file), "--wait", "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    assert "[rank 1] step 1" in out and "[rank 0] accuracy 0.9" in out
    assert api.names("jobs") == ["sst2-evaluate", "sst2-train"]
    assert api.get("jobs", "sst2-evaluate")["spec"]["suspend"] is False
    assert api.get("services", "sst2-workers")["spec"]["publishNotReadyAddresses"] is True


def test_cli_submit_twice_needs_replace(api: FakeKubeAPI, kubeconfig: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "submit", str(spec_file), "--kubeconfig", str(kubeconfig))[0] == 0
    code, out, err = run_cli(capsys, "submit", str(spec_file), "--kubeconfig", str(kubeconfig))
    assert code == 1
    assert err.startswith("error: job sst2 already exists in namespace ml (")
    assert "--replace" in err
    code, out, err = run_cli(capsys, "submit", str(spec_file), "--replace", "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    assert "Job/sst2-train created" in out
    assert f"`kubetune submit {spec_file} --stage evaluate`" in out


def test_cli_submit_dry_run_and_namespace_flag(api: FakeKubeAPI, kubeconfig: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "submit", str(spec_file), "--dry-run", "-n", "team-a", "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    creates = [(p, q) for m, p, q, b in api.requests if m == "POST"]
    assert creates and all(p.split("/namespaces/")[1].startswith("team-a/") and q == {"dryRun": ["All"]} for p, q in creates)
    assert "Job/sst2-evaluate accepted (server dry run, nothing created)" in out
    plan = out.splitlines()[:10]
    assert plan[0] == "plan for sst2 in namespace team-a (server dry run):"
    assert [line.split() for line in plan[1:]] == [
        ["create", "ConfigMap/sst2-spec"], ["create", "ConfigMap/sst2-progress"], ["create", "ServiceAccount/sst2-progress"],
        ["create", "Service/sst2-workers"], ["create", "NetworkPolicy/sst2"], ["create", "Role/sst2-progress"],
        ["create", "RoleBinding/sst2-progress"], ["create", "Job/sst2-train"], ["create", "Job/sst2-evaluate"],
    ]
    assert out.index("create Job/sst2-evaluate") < out.index("ConfigMap/sst2-spec accepted")
    assert api.names("jobs", ns="team-a") == []


def test_cli_submit_bad_spec_is_exit_2(kubeconfig: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SPEC.replace("name: sst2", "name: Bad_Name"))
    code, _, err = run_cli(capsys, "submit", str(path), "--kubeconfig", str(kubeconfig))
    assert code == 2
    assert "name" in err


def test_cli_submit_schedule_creates_a_cronjob(api: FakeKubeAPI, kubeconfig: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "submit", str(spec_file), "--schedule", "0 3 * * 0", "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    assert api.get("cronjobs", "sst2-train")["spec"]["schedule"] == "0 3 * * 0"
    code, out, _ = run_cli(capsys, "list", "--kubeconfig", str(kubeconfig))
    assert out.splitlines()[1].split()[:3] == ["sst2", "-", "-"] and "0 3 * * 0" in out
    code, out, _ = run_cli(capsys, "status", "sst2", "--kubeconfig", str(kubeconfig))
    assert code == 0
    assert out.splitlines()[-1] == ("other objects: CronJob/sst2-train, RoleBinding/sst2-progress, Role/sst2-progress, NetworkPolicy/sst2, "
                                    "Service/sst2-workers, ServiceAccount/sst2-progress, ConfigMap/sst2-progress, ConfigMap/sst2-spec")


def test_cluster_verbs_import_no_torch(api: FakeKubeAPI, kubeconfig: Path, spec_file: Path) -> None:
    script = (
        "import sys\n"
        "from kubetune.cli.main import main\n"
        "import kubetune.launch.cluster.api as cluster_api\n"
        "cluster_api.POLL_SECONDS = 0.02\n"
        f"codes = [main(['submit', {str(spec_file)!r}, '--kubeconfig', {str(kubeconfig)!r}]),\n"
        f"         main(['status', 'sst2', '--kubeconfig', {str(kubeconfig)!r}]),\n"
        f"         main(['logs', 'sst2', '--kubeconfig', {str(kubeconfig)!r}]),\n"
        f"         main(['list', '--kubeconfig', {str(kubeconfig)!r}]),\n"
        f"         main(['cancel', 'sst2', '--kubeconfig', {str(kubeconfig)!r}])]\n"
        "print('CODES', codes, 'torch' in sys.modules, any(m.startswith('kubetune.workload') for m in sys.modules))\n"
    )
    # logs waits for the pod that nothing else creates here: give it one that has run
    api.script_job("sst2-train", JobScript(pods={0: PodRun(["hi"]), 1: PodRun(["hi"])}))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "CODES [0, 0, 0, 0, 0] False False" in result.stdout, result.stderr


def test_cli_submit_evaluate_stage_after_training(api: FakeKubeAPI, kubeconfig: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.script_job("sst2-train", JobScript())
    assert run_cli(capsys, "submit", str(spec_file), "--stage", "train", "--wait", "--kubeconfig", str(kubeconfig))[0] == 0
    api.script_job("sst2-evaluate", JobScript(pods={0: PodRun(["accuracy 0.93"])}))
    code, out, err = run_cli(capsys, "submit", str(spec_file), "--stage", "evaluate", "--wait", "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    assert "ConfigMap/sst2-spec exists, kept" in out and "[rank 0] accuracy 0.93" in out


# ---------------------------------------------------------------------------------------------
# state helpers


def v1job(conditions: list[dict[str, str]] | None = None, suspend: bool = False, active: int = 0) -> Any:
    from kubernetes import client

    return client.V1Job.from_dict(
        {
            "metadata": {"name": "x-train", "labels": labels("x", "train")},
            "spec": {"suspend": suspend, "completions": 2, "template": {"spec": {"containers": [{"name": "c"}]}}},
            "status": {"active": active, "conditions": conditions or []},
        }
    )


@pytest.mark.parametrize(
    ("conditions", "suspend", "active", "phase", "reason"),
    [
        ([], False, 0, "Pending", ""),
        ([], True, 0, "Queued", "Suspended"),
        ([], False, 2, "Running", ""),
        ([{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}], False, 0, "Succeeded", ""),
        ([{"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy"}, {"type": "Failed", "status": "True"}], False, 0, "Failed", "PodFailurePolicy"),
        ([{"type": "Failed", "status": "False", "reason": "X"}], False, 1, "Running", ""),
    ],
)
def test_job_state_reads_conditions(conditions: list[dict[str, str]], suspend: bool, active: int, phase: str, reason: str) -> None:
    state = job_state(v1job(conditions, suspend, active))
    assert (state.phase, state.reason, state.stage, state.completions) == (phase, reason, "train", 2)


def test_duration_formats() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert [duration(start, start + timedelta(seconds=s)) for s in (42, 312, 7380, 273600)] == ["42s", "5m12s", "2h03m", "3d04h"]
    assert duration(None) == "-"


def test_in_cluster_without_a_service_account_token_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ClusterError, match=r"^in-cluster configuration: .*token") as info:
        connect()
    assert "\n" not in str(info.value)


def test_status_and_list_print_json_on_request(api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json` on the cluster's read verbs: the same data as their tables, times in ISO 8601."""
    api.put("jobs", job_obj("sst2-train", "sst2", "train", completions=2))
    api.set_job_condition("sst2-train", "Failed", "DeadlineExceeded", "too long")
    code, out, err = run_cli(capsys, "status", "sst2", "--json", "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    status = json.loads(out)
    assert (status["job"], status["namespace"], status["progress"]) == ("sst2", "ml", None)
    assert [(j["stage"], j["phase"], j["reason"], j["completions"]) for j in status["jobs"]] == [
        ("train", "Failed", "DeadlineExceeded", 2)]
    code, out, err = run_cli(capsys, "list", "--json", "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    listed = json.loads(out)
    assert listed["namespace"] == "ml" and [(r["name"], r["train"]) for r in listed["jobs"]] == [("sst2", "Failed (DeadlineExceeded)")]
