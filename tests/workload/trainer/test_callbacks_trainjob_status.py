"""The TrainJob progress reporter against a local HTTPS endpoint standing in for Kubeflow
Trainer's status server: its requests carry the token and the trainer status, are throttled,
and a refusing or absent endpoint costs one warning line, not the run. No training: the
callback is driven with the Trainer's own state objects, as the Trainer calls it."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers_tls import self_signed_certificate
from transformers import TrainerControl, TrainerState, TrainingArguments

from kubetune.contract import names as kn
from kubetune.workload.entrypoints.arguments import pod_env
from kubetune.workload.trainer.callbacks import TrainJobStatusCallback

TOKEN = "header.payload.signature"


class StatusServer:
    """HTTPS endpoint recording each POST (Authorization header, JSON body); `refuse` answers 403."""

    def __init__(self, folder: Path, refuse: bool = False):
        self.posts: list[tuple[str, dict]] = []
        self.ca, key = self_signed_certificate(folder, "trainer-status")
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.posts.append((self.headers.get("Authorization", ""), body))
                self.send_response(403 if refuse else 200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.httpd.server_address[1]}/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs/x/status"


def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, ca: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    monkeypatch.setenv(kn.ENV_KUBEFLOW_STATUS_URL, url)
    monkeypatch.setenv(kn.ENV_KUBEFLOW_STATUS_CA, str(ca))
    monkeypatch.setenv(kn.ENV_KUBEFLOW_STATUS_TOKEN, str(token))


def _train(callback: TrainJobStatusCallback, steps: int, tmp_path: Path) -> None:
    """The calls the Trainer makes: begin, a log and a step end per step, end."""
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none")
    state, control = TrainerState(max_steps=steps), TrainerControl()
    callback.on_train_begin(args, state, control)
    for step in range(1, steps + 1):
        state.global_step, state.epoch = step, step / steps
        callback.on_log(args, state, control, logs={"loss": 1.0 / step, "learning_rate": 1e-4})
        callback.on_step_end(args, state, control)
    callback.on_train_end(args, state, control)


def test_reports_progress_with_the_token_throttled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]):
    server = StatusServer(tmp_path)
    _environment(monkeypatch, tmp_path, server.url, server.ca)
    assert pod_env().kubeflow_status  # the pod reads that the endpoint is given
    _train(TrainJobStatusCallback(), steps=200, tmp_path=tmp_path)
    # 200 steps within a second: the start and the end (both forced), at most one between
    assert 2 <= len(server.posts) <= 3, server.posts
    assert {auth for auth, _ in server.posts} == {f"Bearer {TOKEN}"}
    first, last = server.posts[0][1]["trainerStatus"], server.posts[-1][1]["trainerStatus"]
    assert first["progressPercentage"] == 0 and last["progressPercentage"] == 100
    assert last["estimatedRemainingSeconds"] == 0 and "lastUpdatedTime" in last
    assert {m["name"]: float(m["value"]) for m in last["metrics"]}["loss"] == pytest.approx(1 / 200)
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("endpoint", ["refusing", "absent"])
def test_a_failing_endpoint_costs_one_warning_line(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]):
    server = StatusServer(tmp_path, refuse=True)
    url = server.url
    if endpoint == "absent":
        server.httpd.shutdown()
        server.httpd.server_close()
    _environment(monkeypatch, tmp_path, url, server.ca)
    callback = TrainJobStatusCallback()
    _train(callback, steps=50, tmp_path=tmp_path)  # does not raise: training goes on
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert warnings == ["kubetune: warning: could not report progress to the TrainJob status endpoint; training goes on"]
    assert len(server.posts) == (2 if endpoint == "refusing" else 0)


def test_no_endpoint_no_reporter():
    assert not pod_env({}).kubeflow_status
