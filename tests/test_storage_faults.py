"""Which store faults are transient (retried at a pod's start, then a retriable exit) and
which are permanent (exit 2 at once): `kubetune.storage.is_transient`, on the exceptions
botocore, aiohttp and s3fs really raise, and `Store.check_reachable`'s deadline against a
closed port. The outage itself, through the train entrypoint, is in
tests/e2e/test_store_startup.py."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from botocore import exceptions as boto
from s3fs.errors import translate_boto_error

from kubetune.contract.spec.job import SpecError, validate_spec
from kubetune.storage import StorageError, Store, StoreUnavailableError, is_space_error, is_transient, store_timeouts


def _client_error(code: str, status: int) -> boto.ClientError:
    return boto.ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                            "ListObjectsV2")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _aiohttp_refused() -> Exception:
    import aiohttp

    async def get() -> None:
        async with aiohttp.ClientSession() as session:
            await session.get(f"http://127.0.0.1:{_closed_port()}/")

    with pytest.raises(aiohttp.ClientConnectorError) as info:
        asyncio.run(get())
    return info.value


@pytest.mark.parametrize("code,status", [("SlowDown", 503), ("ServiceUnavailable", 503), ("InternalError", 500),
                                         ("Throttling", 400), ("RequestTimeout", 400), ("BadGateway", 502),
                                         ("TooManyRequests", 429)])
def test_throttling_and_5xx_are_transient(code, status):
    error = _client_error(code, status)
    assert is_transient(error)
    assert is_transient(translate_boto_error(error))  # as s3fs raises it: an OSError caused by it


@pytest.mark.parametrize("code,status", [("AccessDenied", 403), ("InvalidAccessKeyId", 403),
                                         ("SignatureDoesNotMatch", 403), ("NoSuchBucket", 404), ("NoSuchKey", 404)])
def test_credentials_and_missing_things_are_permanent(code, status):
    error = _client_error(code, status)
    assert not is_transient(error)
    assert not is_transient(translate_boto_error(error))


def test_connection_faults_are_transient():
    url = "http://127.0.0.1:9"
    for error in (boto.EndpointConnectionError(endpoint_url=url), boto.ConnectTimeoutError(endpoint_url=url),
                  boto.ReadTimeoutError(endpoint_url=url), _aiohttp_refused(), ConnectionRefusedError(111, "refused"),
                  TimeoutError()):
        assert is_transient(error), repr(error)
    for error in (FileNotFoundError("no such file"), PermissionError("denied"), ValueError("bug")):
        assert not is_transient(error), repr(error)


def test_check_reachable_retries_until_its_deadline(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    store = Store("s3://bucket/prefix", endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        store.check_reachable(2)
    elapsed = time.monotonic() - start
    assert 2 <= elapsed < 10, elapsed
    assert "storage.root" in str(info.value) and "startup_timeout_seconds: 2" in str(info.value)
    assert isinstance(info.value, StorageError)  # a CLI verb still reports it as one error line


def test_startup_timeout_is_a_spec_field():
    spec = validate_spec({"name": "x", "model": {"source": "m"}, "data": {"train": "t.csv"}})
    assert spec.storage.startup_timeout_seconds == 300
    with pytest.raises(SpecError, match="storage.startup_timeout_seconds"):
        validate_spec({"name": "x", "model": {"source": "m"}, "data": {"train": "t.csv"},
                       "storage": {"startup_timeout_seconds": -1}})


def test_a_store_that_accepts_and_never_answers_fails_within_the_startup_timeout(monkeypatch):
    """Issue 23, point 6: a socket server that accepts and sleeps (`helpers_proxy.TcpProxy`,
    silent); `startup_timeout_seconds: 5` once gave up after 123.6 s (a 60 s read timeout per
    probe). Now every timeout is derived from it: the run fails within it plus one probe."""
    from helpers_proxy import TcpProxy

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    silent = TcpProxy(mode="silent")
    try:
        spec = validate_spec({"name": "x", "model": {"source": "m"}, "data": {"train": "t.csv"},
                              "storage": {"root": "s3://bucket/prefix", "endpoint_url": silent.endpoint,
                                          "startup_timeout_seconds": 5}})
        store = Store.from_spec(spec.storage)
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="startup_timeout_seconds: 5"):
            store.check_reachable(spec.storage.startup_timeout_seconds)
        elapsed = time.monotonic() - start
    finally:
        silent.close()
    assert 5 <= elapsed < 5 + 5 + 2, elapsed  # the timeout, and at most one probe's read timeout


def test_store_timeouts_follow_the_startup_timeout():
    assert store_timeouts(5) == (5.0, 5.0)
    assert store_timeouts(0) == (5.0, 5.0)  # never below 5 s: a slow but live store still answers
    assert store_timeouts(30) == (5.0, 30.0)
    assert store_timeouts(300) == (5.0, 60.0)
    options = Store("s3://bucket/x", endpoint_url="http://127.0.0.1:9", timeout_s=12).options["config_kwargs"]
    assert (options["connect_timeout"], options["read_timeout"]) == (5.0, 12.0)


def test_a_full_device_is_a_space_error_not_an_outage():
    """A real ENOSPC (writing to /dev/full) and S3's no-room codes are space errors, never
    transient: an outage is retried, a full volume is not."""
    with pytest.raises(OSError) as info:
        with open("/dev/full", "wb") as handle:
            handle.write(b"x" * 4096)
            handle.flush()
    assert is_space_error(info.value) and not is_transient(info.value)
    for code, status in (("EntityTooLarge", 400), ("QuotaExceeded", 403), ("XMinioStorageFull", 507)):
        assert is_space_error(_client_error(code, status)), code
    assert not is_space_error(_client_error("SlowDown", 503))
    assert not is_space_error(ConnectionRefusedError(111, "refused"))
