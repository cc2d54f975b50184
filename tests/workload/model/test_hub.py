"""The Hub asked before a model is loaded from it, and its faults as one retriable line
(issue 28, point 2): a closed port, a real HTTP server, the offline switch, a fault mid-load."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from huggingface_hub import constants
from huggingface_hub.utils import get_session

from kubetune.contract.errors import UserError
from kubetune.storage import StoreUnavailableError
from kubetune.workload.model.hub import HubUnavailableError, check_hub, hub_faults, is_hub_id


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def endpoint(monkeypatch):
    """huggingface_hub's endpoint (HF_ENDPOINT, read at its import) set to `url`, online."""
    def use(url: str) -> str:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        return url
    return use


def test_an_unreachable_hub_is_one_retriable_line_after_the_startup_timeout(endpoint, capsys):
    url = endpoint(f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(HubUnavailableError) as err:
        check_hub({"model.source": "acme/not-cached-model"}, None, timeout_s=1.5)
    took = time.monotonic() - started
    assert 1.5 <= took < 15
    message = str(err.value)
    assert isinstance(err.value, StoreUnavailableError)  # the entrypoints' retriable exit (69)
    assert "\n" not in message
    assert message.startswith(f"model.source: acme/not-cached-model: the Hugging Face Hub ({url}) unreachable for ")
    assert "(storage.startup_timeout_seconds: 1.5): [Errno 111] Connection refused" in message
    retries = capsys.readouterr().err.splitlines()
    assert retries and all(line.startswith(f"kubetune: the Hugging Face Hub ({url}) unreachable (attempt ") for line in retries)


def test_any_http_answer_counts_as_reachable(endpoint):
    class NotFound(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint(f"http://127.0.0.1:{server.server_port}")
        check_hub({"model.source": "acme/model", "model.tokenizer": "acme/tokenizer"}, "v1", timeout_s=0)
    finally:
        server.shutdown()


def test_offline_or_not_a_hub_id_asks_nothing(endpoint, monkeypatch):
    endpoint(f"http://127.0.0.1:{closed_port()}")
    check_hub({"model.source": "s3://bucket/models/m", "model.tokenizer": "/models/tok"}, None, timeout_s=0)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    check_hub({"model.source": "acme/model"}, None, timeout_s=0)
    assert is_hub_id("acme/model") and not is_hub_id("s3://b/m") and not is_hub_id("/models/m")


def test_a_network_fault_while_loading_a_hub_model_is_one_retriable_line():
    port = closed_port()
    with pytest.raises(HubUnavailableError) as err:
        with hub_faults("model.source", "acme/model"):
            try:
                get_session().head(f"http://127.0.0.1:{port}/x", timeout=5)
            except Exception as exc:  # as transformers wraps the download's fault
                raise OSError("We couldn't connect to the Hub to load the files") from exc
    assert str(err.value) == "model.source: acme/model: network fault while loading it: We couldn't connect to the Hub to load the files"
    with pytest.raises(UserError, match="not a model"):  # not a network fault: unchanged
        with hub_faults("model.source", "acme/model"):
            raise UserError("not a model")
    with pytest.raises(ConnectionRefusedError):  # a store's fault: the entrypoint's to report
        with hub_faults("model.source", "s3://bucket/models/m"):
            raise ConnectionRefusedError(111, "Connection refused")
