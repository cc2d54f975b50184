"""The launcher reads a run's progress and state from the store alone (issue 15): the
workload's own callbacks (ProgressCallback, the status callback) write `metrics/train.jsonl`
and `metrics/status.json` into a real S3 protocol server (moto over HTTP, through s3fs), driven
by real `TrainerState`s without training a model; `kubetune status --store` (against the fake
API server) and `kubetune runs --store` read them back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes.k8s_fake_server import FakeKubeAPI
from transformers import TrainerControl, TrainerState, TrainingArguments

from kubetune.cli.main import main
from kubetune.contract import names as kn
from kubetune.contract.layout import RunLayout
from kubetune.launch import runs
from kubetune.launch.runs import progress, run_state
from kubetune.storage import Store
from kubetune.workload.trainer.callbacks import ProgressCallback
from kubetune.workload.tracking.status import status_callback, write_status

RUN = "sst2-live"


def _log_steps(store: Store, tmp_path: Path, steps: list[int], max_steps: int = 40) -> None:
    layout = RunLayout(RUN)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), metric_for_best_model="accuracy",
                             greater_is_better=True, report_to="none")
    state, control = TrainerState(), TrainerControl()
    state.max_steps, state.global_step, state.epoch = max_steps, 0, 0.0
    callbacks = [ProgressCallback(store, layout, tmp_path / "train.jsonl", samples_per_step=16), status_callback(store, layout)]
    for cb in callbacks:
        cb.on_train_begin(args, state, control)
    for step in steps:
        state.global_step, state.epoch = step, step / 20
        callbacks[0].on_log(args, state, control, logs={"loss": 1.0 / step, "learning_rate": 1e-4})
    store.write_text(f"{layout.base}/spec.yaml", "name: sst2-live\ntask: text-classification\nmodel: {source: m}\n")


@pytest.fixture
def store(s3_bucket) -> tuple[Store, str, str]:
    endpoint, bucket = s3_bucket
    root = f"s3://{bucket}/team"
    return Store(root, endpoint), root, endpoint


def _put_train_job(api: FakeKubeAPI, ns: str = "ml") -> None:
    labels = {kn.JOB_LABEL: RUN, kn.STAGE_LABEL: "train", "app.kubernetes.io/component": "train"}
    api.put("jobs", {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{RUN}-train", "labels": labels},
                     "spec": {"template": {"metadata": {"labels": labels}, "spec": {"restartPolicy": "Never",
                              "containers": [{"name": "train", "image": "kubetune:test"}]}}}}, ns=ns)


def test_status_shows_progress_read_from_the_store(store, tmp_path, capsys):
    s, root, endpoint = store
    _log_steps(s, tmp_path, [5, 10, 15])
    p = progress(s, RUN)
    assert (p["step"], p["max_steps"], p["percent"]) == (15, 40, 37.5)
    assert p["loss"] == pytest.approx(1 / 15) and p["epoch"] == pytest.approx(0.75)
    with FakeKubeAPI(lifetime_s=30) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", namespace="ml")
        _put_train_job(api)
        code = main(["status", RUN, "--kubeconfig", str(kubeconfig), "--store", root, "--endpoint-url", endpoint])
    out = capsys.readouterr().out
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("progress: "))
    assert "step 15/40 (38%)" in line and "epoch 0.75" in line and "loss 0.0667" in line
    assert "samples/s" in line and "eta" in line


def test_runs_lists_a_live_run_as_running_and_a_silent_one_as_stopped(store, tmp_path, capsys):
    s, root, endpoint = store
    _log_steps(s, tmp_path, [5, 10])
    capsys.readouterr()  # the callback's own progress lines
    assert main(["runs", "--store", root, "--endpoint-url", endpoint, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["name"], row["state"], row["step"], row["max_steps"]) == (RUN, "running", 10, 40)
    status = s.read_json(RunLayout(RUN).status)
    assert status["metric"] == "accuracy" and status["state"] == "running"
    # The same store seen an hour later: no write since, no checkpoint -> failed.
    written = runs._modified(s, RunLayout(RUN).train_metrics)
    later = runs.describe_run(s, RUN, now=written + 3600)
    assert later["state"] == "failed"


@pytest.mark.parametrize("named", ["missing", "uncommitted"])
def test_a_run_whose_latest_names_a_lost_checkpoint_resumes_from_an_older_one(store, tmp_path, named):
    """LATEST names a checkpoint that is gone (or whose upload never committed) while an older
    one is committed: a restart resumes from the older one, so `kubetune runs` shows the run as
    resumable, by the same rule (`contract.layout.resume_step`) as the workload's resume."""
    from kubetune.workload.checkpointing.protocol import find_resume_step, publish_checkpoint

    s, _, _ = store
    layout = RunLayout(RUN)
    _log_steps(s, tmp_path, [5, 10])
    local = tmp_path / "checkpoint-4"
    local.mkdir()
    (local / "model.safetensors").write_bytes(b"w" * 100)
    publish_checkpoint(s, layout, local, 4, keep=2)
    if named == "uncommitted":  # its files, but no marker: an upload cut short
        s.upload_file(local / "model.safetensors", f"{layout.checkpoint(8)}/model.safetensors")
    s.write_text(layout.latest, "step-000008\n")

    later = runs.describe_run(s, RUN, now=runs._modified(s, layout.train_metrics) + 3600)
    assert (later["state"], later["latest_checkpoint"]) == (runs.RESUMABLE, 4)
    assert find_resume_step(s, layout) == 4  # where the workload's resume starts
    s.remove(layout.checkpoint(4))  # nothing committed left: nothing to resume from
    assert runs.describe_run(s, RUN, now=runs._modified(s, layout.train_metrics) + 3600)["state"] == runs.FAILED


@pytest.mark.parametrize(
    "committed, status, age, resumable, expected",
    [
        (True, {"state": "running"}, 0, True, "complete"),
        (False, {"state": "running"}, 10, True, "running"),
        (False, {"state": "running"}, 10_000, True, "preempted-and-resumable"),
        (False, {"state": "preempted"}, 1, True, "preempted-and-resumable"),
        (False, {"state": "preempted"}, 1, False, "failed"),
        (False, {}, 10, False, "running"),
        (False, {}, 10_000, False, "failed"),
    ],
)
def test_run_state_rules(committed, status, age, resumable, expected):
    assert run_state(committed, status, 1000.0, resumable, 1000.0 + age) == expected


def test_write_status_keeps_the_first_start_across_a_resume(store):
    s, _, _ = store
    layout = RunLayout(RUN)
    write_status(s, layout, "running", metric="accuracy")
    first = s.read_json(layout.status)
    write_status(s, layout, "preempted", step=3)
    write_status(s, layout, "running", step=3)
    again = s.read_json(layout.status)
    assert again["started"] == first["started"] and again["metric"] == "accuracy" and again["state"] == "running"


def test_a_stop_whose_checkpoint_did_not_land_says_interrupted_at_the_last_committed_step(store):
    from kubetune.contract.exitcodes import EXIT_INTERRUPTED_UNSAVED, EXIT_RETRY_AFTER_CHECKPOINT
    from kubetune.workload.tracking.status import write_stop_status

    s, _, _ = store
    layout = RunLayout(RUN)
    write_stop_status(s, layout, EXIT_INTERRUPTED_UNSAVED, stopped_at=7, saved_through=4, max_steps=20)
    status = s.read_json(layout.status)
    assert (status["state"], status["step"], status["stopped_at"]) == ("interrupted", 4, 7)
    assert run_state(False, status, 1000.0, True, 1000.0 + 3600) == "preempted-and-resumable"
    write_stop_status(s, layout, EXIT_RETRY_AFTER_CHECKPOINT, stopped_at=9, saved_through=9, max_steps=20)
    status = s.read_json(layout.status)
    assert (status["state"], status["step"]) == ("preempted", 9) and "stopped_at" not in status


def test_runs_on_an_unreachable_store_is_one_line(capsys, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    code = main(["runs", "--store", "s3://bucket/team", "--endpoint-url", f"http://127.0.0.1:{port}"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("error: storage.root: s3://bucket/team") and captured.err.count("\n") == 1


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_status_of_a_job_spec_reads_its_storage_root(kind, request, tmp_path, capsys):
    """`kubetune status JOB.yaml`, no --store: the job's name, namespace and store come from the
    spec (a local folder, or moto's S3 with the spec's storage.endpoint_url)."""
    import yaml

    if kind == "s3":
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        storage = {"root": f"s3://{bucket}/team", "endpoint_url": endpoint}
        s = Store(storage["root"], endpoint)
    else:
        storage = {"root": str(tmp_path / "store")}
        s = Store(storage["root"])
    _log_steps(s, tmp_path, [4, 8, 12, 16], max_steps=32)
    job = tmp_path / "live.yaml"
    job.write_text(yaml.safe_dump({"name": RUN, "task": "text-classification", "model": {"source": "models/m"},
                                   "data": {"train": "d/train.tsv"}, "storage": storage,
                                   "kubernetes": {"namespace": "team-a"}}))
    capsys.readouterr()  # the callbacks' own progress lines
    with FakeKubeAPI(lifetime_s=30) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", namespace=None)
        _put_train_job(api, ns="team-a")
        code = main(["status", str(job), "--kubeconfig", str(kubeconfig)])
    out = capsys.readouterr().out
    assert code == 0, out
    if kind == "s3":
        assert f"job {RUN} in namespace team-a" in out and f"{RUN}-train" in out
    else:  # a local folder is no pod's store: a local run, read from the store alone (issue 28)
        assert f"run {RUN} in {s.url('runs', RUN)} (local: read from the store; no cluster asked)" in out
        assert "state:    running, step 16/32" in out
        assert not api.requests
    (line,) = [x for x in out.splitlines() if x.startswith("progress: ")]
    assert "step 16/32 (50%)" in line and "epoch 0.80" in line and "loss 0.0625" in line


def test_status_local_reads_the_store_without_any_cluster_configuration(tmp_path, capsys, monkeypatch):
    """`kubetune status NAME --local` (and a JOB.yaml with a local storage.root) on a machine
    with no Kubernetes configuration at all: the run's state and progress, as `runs` shows them."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Store(str(tmp_path / "store"))
    _log_steps(s, tmp_path, [4, 8], max_steps=32)
    capsys.readouterr()
    assert main(["status", RUN, "--local", "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "state:    running, step 8/32" in out and "progress: step 8/32 (25%)" in out
    monkeypatch.chdir(tmp_path)  # the default store, ./.kubetune, as for `kubetune runs`
    assert main(["status", RUN, "--local"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: run {RUN!r}: no ") and "(runs in this store: none)" in err and err.count("\n") == 1


def test_status_of_a_missing_job_spec_is_one_line(tmp_path, capsys):
    code = main(["status", str(tmp_path / "nope.yaml")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and "nope.yaml" in captured.err and captured.err.count("\n") == 1
