"""The initializer: two nodes of one run sharing a cache volume download the model once, and
tokenize once; a trainer after them finds both by the keys it already uses. The store is moto's
S3 server over HTTP behind a counting proxy, so every read of the store is counted."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests
import yaml

from kubetune.contract import names as kn
from kubetune.launch.quickstart import prepare

REPO = Path(__file__).resolve().parents[3]
MODEL_PREFIX = "/kubetune-test/root/models/all-MiniLM-L6-v2/"


class CountingProxy:
    """An HTTP proxy in front of the S3 server that records each request's method and path."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.requests: list[tuple[str, str]] = []
        self.sizes: list[int] = []  # bytes of each answer, in the order of `requests`
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                """Forward as it comes (streamed: a big object's first bytes arrive at once, so the
                client never times out and re-reads it in ranges), counting the bytes sent."""
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = requests.request(self.command, proxy.upstream + self.path, data=body, stream=True,
                                          headers=dict(self.headers.items()), timeout=60)
                with proxy.lock:
                    number = len(proxy.requests)
                    proxy.requests.append((self.command, unquote(urlsplit(self.path).path)))
                    proxy.sizes.append(0)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(key, value)
                if "content-length" not in {k.lower() for k in answer.headers}:
                    self.send_header("Content-Length", "0")
                self.end_headers()
                if self.command == "HEAD":
                    return
                for chunk in answer.raw.stream(1 << 20, decode_content=False):
                    self.wfile.write(chunk)
                    with proxy.lock:
                        proxy.sizes[number] += len(chunk)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def model_reads(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET" and path.startswith(MODEL_PREFIX)]

    def model_bytes(self) -> dict[str, int]:
        """Bytes read from the store per model file (range reads added up)."""
        out: dict[str, int] = {}
        for (method, path), size in zip(self.requests, self.sizes):
            if method == "GET" and path.startswith(MODEL_PREFIX):
                out[path[len(MODEL_PREFIX):]] = out.get(path[len(MODEL_PREFIX):], 0) + size
        return out


def _initialize(spec: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, kn.ENV_CACHE: str(cache), kn.ENV_HF_HOME: str(cache / "huggingface"),
           "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, "-m", kn.INITIALIZE_MODULE, "--spec", str(spec)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # three processes that load transformers and tokenize (no training)
def test_two_nodes_download_the_model_once_and_a_trainer_reads_none(s3_bucket, minilm_dir, tmp_path: Path):
    endpoint, bucket = s3_bucket
    proxy = CountingProxy(endpoint)
    prepare(f"s3://{bucket}/root", endpoint_url=endpoint)
    model_files = sorted(p.relative_to(minilm_dir).as_posix() for p in minilm_dir.rglob("*") if p.is_file())
    spec = yaml.safe_load((REPO / "jobs" / "quickstart.yaml").read_text())
    spec["storage"] = {"root": f"s3://{bucket}/root", "endpoint_url": proxy.url}
    spec["kubernetes"] = {"cache_pvc": "kubetune-cache"}  # the gang shares a cache volume
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    cache = tmp_path / "cache"  # the shared volume: both nodes' init containers mount it

    nodes = [_initialize(spec_file, cache) for _ in range(2)]  # two nodes at once
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    read = proxy.model_bytes()
    sizes = {f: (minilm_dir / f).stat().st_size for f in model_files}
    # every model file's bytes read from the store once, whichever node fetched it (s3fs may
    # open a GET it abandons after a few MiB for ranged reads: less than half a file more);
    # beyond that only each node's pre-model check of config.json (is this a model folder?)
    assert sorted(read) == model_files
    once = {f: sizes[f] <= read[f] < 1.5 * sizes[f] for f in model_files if f != "config.json"}
    assert all(once.values()), (read, sizes)
    assert read["config.json"] <= 3 * sizes["config.json"]  # two nodes' checks, one download
    assert sum("tokenized and cached" in out for out in outputs) == 1, outputs  # tokenized once too
    assert sum("tokenized data from the store's cache" in out for out in outputs) == 1, outputs

    # a trainer on the same volume finds the model by the key it already uses: no model read
    trainer = _initialize(spec_file, cache)
    out = trainer.communicate(timeout=600)[0]
    assert trainer.returncode == 0, out
    again = proxy.model_bytes()
    assert {f: n for f, n in again.items() if f != "config.json"} == {f: n for f, n in read.items() if f != "config.json"}
    tokenized_reads = [p for m, p in proxy.requests if m == "GET" and "/tokenized" in p and p.endswith(".arrow")]
    assert len(tokenized_reads) == len(set(tokenized_reads))  # each cached file fetched once, ever


@pytest.mark.slow  # a subprocess that imports the workload
def test_without_a_shared_volume_the_initializer_only_checks(local_store: Path, tmp_path: Path):
    spec = yaml.safe_load((REPO / "jobs" / "quickstart.yaml").read_text())
    spec["storage"] = {"root": str(local_store)}
    spec["data"] = {"train": "missing/train.tsv", "columns": {"text": "text", "label": "label"}}
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    node = _initialize(spec_file, tmp_path / "cache")
    out = node.communicate(timeout=300)[0]
    assert node.returncode == 2, out  # a bad spec fails in the initializer, before the gang
    assert "data.train" in out
    assert not (tmp_path / "cache" / "models").exists()
