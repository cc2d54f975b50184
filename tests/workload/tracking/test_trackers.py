"""The trackers' checks before the model loads (issue 15): an MLflow server that is down is a
retriable exit (the Job tries the pod again), one that refuses us is one `error:` line and exit
2; W&B without an API key is one line unless WANDB_MODE needs none. Real MLflow client calls
against a closed port and a real HTTP server answering 403."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

pytest.importorskip("mlflow", reason="pip install 'kubetune[tracking]'")
pytest.importorskip("wandb", reason="pip install 'kubetune[tracking]'")

from kubetune.contract import names as kn  # noqa: E402
from kubetune.contract.errors import UserError  # noqa: E402
from kubetune.contract.exitcodes import EXIT_BAD_INPUT, EXIT_STORE_UNAVAILABLE  # noqa: E402
from kubetune.contract.spec.job import validate_spec  # noqa: E402
from kubetune.workload.entrypoints.arguments import pod_env  # noqa: E402
from kubetune.workload.entrypoints.exits import entrypoint  # noqa: E402
from kubetune.workload.tracking.mlflow_run import TrackerUnavailableError, check_mlflow  # noqa: E402
from kubetune.workload.tracking.wandb_run import check_wandb  # noqa: E402


def _spec(uri: str):
    return validate_spec({"name": "demo", "model": {"source": "models/m"}, "data": {"train": "d/t.tsv"},
                          "storage": {"root": "/tmp/x"}, "tracking": {"mlflow": {"tracking_uri": uri, "experiment": "e"}}})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_mlflow_server_that_is_down_is_a_retriable_exit(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries: none here
    spec = _spec(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(TrackerUnavailableError):
        check_mlflow(spec)
    assert entrypoint(lambda: check_mlflow(spec))() == EXIT_STORE_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.startswith("error: tracking.mlflow: http://127.0.0.1:") and err.count("\n") == 1


def test_an_mlflow_server_that_refuses_us_is_one_line_exit_2(monkeypatch, capsys):
    class Forbidden(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(403)
            self.end_headers()
            self.wfile.write(b"forbidden")

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        spec = _spec(f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(UserError) as err:
            check_mlflow(spec)
        assert not isinstance(err.value, TrackerUnavailableError) and "\n" not in str(err.value)
        assert entrypoint(lambda: check_mlflow(spec))() == EXIT_BAD_INPUT
        assert capsys.readouterr().err.startswith("error: tracking.mlflow: ")
    finally:
        server.shutdown()


def test_wandb_needs_a_key_unless_its_mode_needs_none():
    with pytest.raises(UserError) as err:
        check_wandb(pod_env({}))
    message = str(err.value)
    assert "\n" not in message and f"{kn.ENV_WANDB_API_KEY} is not set" in message and "secret_env" in message
    with pytest.raises(UserError, match="is not set"):
        check_wandb(pod_env({kn.ENV_WANDB_MODE: "online", kn.ENV_WANDB_API_KEY: ""}))  # empty: not a key
    check_wandb(pod_env({kn.ENV_WANDB_MODE: " Offline "}))
    check_wandb(pod_env({kn.ENV_WANDB_MODE: "online", kn.ENV_WANDB_API_KEY: "x" * 40}))


def test_a_tracker_down_after_the_model_is_committed_is_a_warning(monkeypatch, tmp_path, capsys):
    """The model tag and the test metrics are sent after the results are stored: a server down
    then costs a warning line, not the stage."""
    from kubetune.contract.layout import run_layout
    from kubetune.storage import Store
    from kubetune.workload.tracking.run_ids import remember_run_id
    from kubetune.workload.tracking.mlflow_run import log_test_metrics, tag_model

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    spec = _spec(f"http://127.0.0.1:{_free_port()}")
    store, layout = Store(str(tmp_path / "store")), run_layout("demo")
    remember_run_id(store, layout, "mlflow", "0123abcd")
    tag_model(spec, store, layout)
    log_test_metrics(spec, store, layout, {"accuracy": 0.9, "split": "test"})
    out = capsys.readouterr().out
    assert "warning: mlflow: model tag not set on run 0123abcd" in out
    assert "warning: mlflow: test metrics not sent to run 0123abcd" in out


def test_a_trials_pods_know_their_sweep_and_others_do_not():
    env = pod_env({kn.ENV_SWEEP: "sst", kn.ENV_TRIAL: "3"})
    assert (env.sweep, env.trial) == ("sst", 3)
    from kubetune.workload.tracking.run_ids import sweep_of

    assert sweep_of(env) == {"kubetune.sweep": "sst", "kubetune.trial": "3"}
    assert sweep_of(pod_env({})) == {} and pod_env({}).sweep is None


def test_a_trials_wandb_run_is_in_its_sweeps_group():
    from kubetune.workload.tracking.wandb_run import wandb_init_arguments

    spec = validate_spec({"name": "sst-t003", "model": {"source": "models/m"}, "data": {"train": "d/t.tsv"},
                          "storage": {"root": "/tmp/x"}, "tracking": {"wandb": {"project": "p"}}})
    trial = wandb_init_arguments(spec, pod_env({kn.ENV_SWEEP: "sst", kn.ENV_TRIAL: "3"}), "abc", "/tmp/w")
    assert trial["group"] == "sst" and trial["job_type"] == "trial" and trial["name"] == "sst-t003"
    assert trial["tags"] == ["kubetune.sweep=sst", "kubetune.trial=3"]
    assert (trial["project"], trial["id"], trial["resume"]) == ("p", "abc", "allow")
    alone = wandb_init_arguments(spec, pod_env({}), "abc", "/tmp/w")
    assert not {"group", "job_type", "tags"} & set(alone)


def test_a_trials_mlflow_run_carries_the_sweeps_tags(tmp_path, monkeypatch):
    """A real MLflow run in a local file store (no server), opened as the train stage opens it."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's file store: kept for tests
    import types

    import mlflow

    from kubetune.contract.layout import run_layout
    from kubetune.storage import Store
    from kubetune.workload.tracking.mlflow_run import open_mlflow_run

    uri = (tmp_path / "mlruns").as_uri()
    spec = _spec(uri).model_copy(update={"name": "sst-t003"})
    runs = {}
    for name, environ in (("trial", {kn.ENV_SWEEP: "sst", kn.ENV_TRIAL: "3"}), ("plain", {})):
        store = Store(str(tmp_path / name))
        run = types.SimpleNamespace(spec=spec, env=pod_env(environ), store=store, layout=run_layout("sst-t003"))
        try:
            runs[name] = open_mlflow_run(run)
            assert mlflow.active_run().info.run_id == runs[name]
        finally:
            mlflow.end_run()
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    tags = client.get_run(runs["trial"]).data.tags
    assert tags["kubetune.sweep"] == "sst" and tags["kubetune.trial"] == "3"
    assert "kubetune.sweep" not in client.get_run(runs["plain"]).data.tags
    found = client.search_runs([client.get_experiment_by_name("e").experiment_id], "tags.`kubetune.sweep` = 'sst'")
    assert [r.info.run_id for r in found] == [runs["trial"]]
