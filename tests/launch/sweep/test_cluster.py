"""Trials as Jobs: the rendered trial objects (strict schema, the Kueue queue label, the sweep's
labels, pruning ends the Job), and the controller against the fake API server
(tests/fakes/k8s_fake_server.py) through the real `kubernetes` client: at most `parallel`
trial Jobs at once, every trial submitted once, and a restarted controller adopting the Jobs
the stopped one left running. What a trial's pod would write to the store (its validation
metrics in metrics/train.jsonl) is written by the test, since no pod runs here."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes.k8s_fake_server import FakeKubeAPI, JobScript

from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_BAD_INPUT, EXIT_NO_SPACE, EXIT_PRUNED
from kubetune.contract.layout import RunLayout, SweepLayout, trial_run_name
from kubetune.contract.spec.job import load_spec
from kubetune.launch.cluster import api as cluster_api
from kubetune.launch.cluster import connect
from kubetune.launch.render import RenderError, names
from kubetune.launch.sweep.cluster import ClusterTrials, trial_objects
from kubetune.launch.sweep.controller import Controller
from kubetune.launch.sweep.trials import trial_spec
from kubetune.launch.validate import validate_objects
from kubetune.storage import Store

NS = "ml"
JOB = {
    "name": "sst",
    "model": {"source": "models/m"},
    "data": {"train": "datasets/train.tsv"},
    "train": {"checkpoint_every": 2, "max_steps": 6},
    "kubernetes": {"queue": "team-a", "namespace": NS},
    "sweep": {
        "parameters": {"train.learning_rate": {"type": "loguniform", "low": 1.0e-5, "high": 1.0e-3},
                       "train.scheduler": {"type": "categorical", "choices": ["linear", "cosine"]}},
        "objective": {"metric": "accuracy", "direction": "maximize"},
        "trials": 4, "parallel": 2, "sampler": "random", "seed": 1, "pruner": "none",
    },
}


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_api, "POLL_SECONDS", 0.02)


@pytest.fixture
def api() -> Any:
    with FakeKubeAPI(lifetime_s=60) as server:
        yield server


def job_spec(tmp_path: Path, **sweep: Any) -> Any:
    data = json.loads(json.dumps(JOB))
    data["storage"] = {"root": str(tmp_path / "store")}
    data["sweep"].update(sweep)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_trial_objects_are_valid_jobs_in_the_queue_with_the_sweeps_labels(tmp_path):
    spec = job_spec(tmp_path)
    trial = trial_spec(spec, 3, {"train.learning_rate": 2e-4, "train.scheduler": "cosine"})
    objs = trial_objects(trial, spec.name, 3)
    validate_objects(objs, "1.29")  # the Kubernetes OpenAPI schema, strict: unknown fields fail
    job = next(o for o in objs if o["kind"] == "Job")
    assert job["metadata"]["name"] == names(trial).train == "sst-t003-train"
    assert job["metadata"]["labels"][kn.QUEUE_LABEL] == "team-a"
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels[kn.SWEEP_LABEL] == "sst" and labels[kn.TRIAL_LABEL] == "3"
    for container in job["spec"]["template"]["spec"]["containers"]:  # for the trial's trackers
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[kn.ENV_SWEEP] == "sst" and env[kn.ENV_TRIAL] == "3"
    fail_job = [r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_job[0]["onExitCodes"]["values"] == [EXIT_BAD_INPUT, EXIT_NO_SPACE, EXIT_PRUNED]
    config = next(o for o in objs if o["kind"] == "ConfigMap")
    resolved = yaml.safe_load(config["data"][kn.SPEC_KEY])
    assert resolved["name"] == "sst-t003" and "sweep" not in resolved
    assert resolved["train"]["learning_rate"] == 2e-4 and resolved["train"]["scheduler"] == "cosine"
    assert resolved["train"]["metric"] == "accuracy"  # the kept model is the one the objective scored


def write_metrics(store: Store, run: str, accuracy: float) -> None:
    """What the trial's pod writes: validation evaluations at its checkpoints."""
    lines = [{"step": step, "eval_accuracy": accuracy * step / 6} for step in (2, 4, 6)]
    store.write_text(RunLayout(run).train_metrics, "".join(json.dumps(r) + "\n" for r in lines))


class Concurrency:
    """The most trial Jobs the fake API server held unfinished at one time, sampled every 5 ms."""

    def __init__(self, api: FakeKubeAPI):
        self.api, self.most, self.done = api, 0, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.is_set():
            with self.api.lock:
                jobs = [o for (plural, _, _), o in self.api.objects.items() if plural == "jobs"]
            running = [j for j in jobs if not any(c["type"] in ("Complete", "Failed")
                                                  for c in (j.get("status") or {}).get("conditions", []))]
            self.most = max(self.most, len(running))
            time.sleep(0.005)


def job_posts(api: FakeKubeAPI) -> list[str]:
    return [body["metadata"]["name"] for method, path, _, body in api.requests
            if method == "POST" and path.endswith("/jobs") and body]


def test_an_elastic_trial_is_checked_against_the_oldest_version_that_runs_it(tmp_path):
    """A node range (issue 24) renders a successPolicy, which Kubernetes 1.29 lacks: the trial's
    objects are checked against 1.31 by default, and an older --k8s-version is one line."""
    spec = job_spec(tmp_path)
    trial = trial_spec(spec, 1, {"train.learning_rate": 2e-4, "train.scheduler": "linear"})
    data = trial.model_dump(mode="json")
    data["resources"]["nodes"] = {"min": 1, "max": 3}
    trial = type(trial).model_validate(data)
    job = next(o for o in trial_objects(trial, spec.name, 1) if o["kind"] == "Job")
    assert job["spec"]["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    with pytest.raises(RenderError, match="^resources.nodes {min: 1, max: 3}: .*--k8s-version 1.30$"):
        trial_objects(trial, spec.name, 1, k8s_version="1.30")


def test_cluster_sweep_submits_each_trial_once_at_most_parallel_at_once(api, tmp_path):
    spec = job_spec(tmp_path)
    store = Store.from_spec(spec.storage)
    accuracies = [0.6, 0.9, 0.7, 0.8]
    for number, accuracy in enumerate(accuracies):
        write_metrics(store, trial_run_name("sst", number), accuracy)
        api.script_job(f"sst-t{number:03d}-train", JobScript(pending_s=2.0))
    cluster = connect(kubeconfig=str(api.kubeconfig(tmp_path / "kubeconfig", namespace=NS)))
    watch = Concurrency(api)
    summary = Controller(spec, store, ClusterTrials(cluster, store, "sst"), poll_s=0.05).run()
    watch.done.set()
    assert job_posts(api) == [f"sst-t{n:03d}-train" for n in range(4)]  # each trial once, in order
    assert watch.most == 2  # the parallelism was used, and never exceeded
    for method, path, _, body in api.requests:
        if method == "POST" and path.endswith("/jobs"):
            assert body["metadata"]["labels"][kn.QUEUE_LABEL] == "team-a"
    assert summary["best_trial"] == 1 and summary["best_value"] == pytest.approx(0.9)
    records = [json.loads(line) for line in store.read_text(SweepLayout("sst").trials).splitlines()]
    assert [r["state"] for r in records] == ["complete"] * 4
    assert [r["run"] for r in records] == [f"runs/sst-t{n:03d}" for n in range(4)]


class StopAfter:
    """A runner that stops its controller (as Ctrl-C would) after `n` trials started."""

    def __init__(self, runner: ClusterTrials, n: int):
        self.runner, self.n, self.started = runner, n, 0

    def start(self, number, spec):
        self.runner.start(number, spec)
        self.started += 1

    def finished(self):
        if self.started >= self.n:
            raise KeyboardInterrupt
        return self.runner.finished()

    def adopt(self, number, spec):
        return self.runner.adopt(number, spec)

    def stop(self):
        self.runner.stop()


def test_a_restarted_controller_adopts_the_running_jobs_and_finishes_the_budget(api, tmp_path):
    spec = job_spec(tmp_path)
    store = Store.from_spec(spec.storage)
    for number, accuracy in enumerate([0.6, 0.9, 0.7, 0.8]):
        write_metrics(store, trial_run_name("sst", number), accuracy)
        api.script_job(f"sst-t{number:03d}-train", JobScript(pending_s=0.5))
    cluster = connect(kubeconfig=str(api.kubeconfig(tmp_path / "kubeconfig", namespace=NS)))
    with pytest.raises(KeyboardInterrupt):
        Controller(spec, store, StopAfter(ClusterTrials(cluster, store, "sst"), 2), poll_s=0.05).run()
    stopped = [json.loads(line) for line in store.read_text(SweepLayout("sst").trials).splitlines()]
    assert [r["state"] for r in stopped] == ["running", "running"]
    summary = Controller(spec, store, ClusterTrials(cluster, store, "sst"), poll_s=0.05).run()
    assert job_posts(api) == [f"sst-t{n:03d}-train" for n in range(4)]  # none submitted twice
    records = [json.loads(line) for line in store.read_text(SweepLayout("sst").trials).splitlines()]
    assert [r["number"] for r in records] == [0, 1, 2, 3]
    assert [r["state"] for r in records] == ["complete"] * 4
    assert summary["best_trial"] == 1


def test_a_pruned_trial_job_is_recorded_as_pruned(api, tmp_path):
    spec = job_spec(tmp_path, trials=1, parallel=1)
    store = Store.from_spec(spec.storage)
    run = trial_run_name("sst", 0)
    write_metrics(store, run, 0.5)
    store.write_text(RunLayout(run).prune_marker, "pruned\n")
    store.write_json(RunLayout(run).status, {"state": "pruned"})
    api.script_job("sst-t000-train", JobScript(outcome="PodFailurePolicy"))
    cluster = connect(kubeconfig=str(api.kubeconfig(tmp_path / "kubeconfig", namespace=NS)))
    summary = Controller(spec, store, ClusterTrials(cluster, store, "sst"), poll_s=0.05).run()
    assert summary["trials"]["pruned"] == 1 and summary["best_trial"] is None
