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
