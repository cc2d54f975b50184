"""The Job and JobSet engines' progress reporter against the fake API server over HTTPS, with
the rendered Role enforced (get and patch on the one progress ConfigMap): rank 0 patches the
ConfigMap's labels and metrics, throttled, and the real kubernetes client reads them back as
`kubectl get configmap -L` would; a refusing (403) or absent API server costs one warning line,
not the run. No training: the callback is driven with the Trainer's own state objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakes.k8s_fake_server import FakeKubeAPI, closed_port
from helpers_tls import self_signed_certificate
from kubernetes import client
from transformers import TrainerControl, TrainerState, TrainingArguments

from kubetune.contract import names as kn
from kubetune.contract.spec.job import load_spec
from kubetune.launch.render import render_objects
from kubetune.workload.entrypoints.arguments import pod_env
from kubetune.workload.trainer.callbacks import ConfigMapProgressCallback, ConfigMapReporter

JOB = Path(__file__).resolve().parents[3] / "jobs" / "imdb-bert-multinode.yaml"
TOKEN = "header.payload.signature"
NAME = "imdb-bert-multinode-progress"


def _progress_objects() -> dict[str, dict[str, Any]]:
    spec = load_spec(JOB)
    spec.kubernetes.namespace = "ml"
    return {o["kind"]: o for o in render_objects(spec, stage="train", engine="job") if o["metadata"]["name"] == NAME}


def _credentials(folder: Path, ca: Path) -> Path:
    """The projected volume's files, as the kubelet writes them."""
    folder.mkdir()
    (folder / kn.TOKEN_FILE).write_text(TOKEN)
    (folder / kn.CA_FILE).write_bytes(ca.read_bytes())
    (folder / kn.NAMESPACE_FILE).write_text("ml")
    return folder


def _reporter(port: int, credentials: Path) -> ConfigMapReporter:
    """Built from the pod's environment, as build_trainer does."""
    env = pod_env({kn.ENV_KUBERNETES_HOST: "127.0.0.1", kn.ENV_KUBERNETES_PORT: str(port),
                   kn.ENV_PROGRESS_CONFIGMAP: NAME, kn.ENV_PROGRESS_CREDENTIALS: str(credentials)})
    assert env.kubernetes_server and env.progress_credentials and env.progress_configmap
    return ConfigMapReporter(env.kubernetes_server, env.progress_credentials, env.progress_configmap)


def _train(callback: ConfigMapProgressCallback, steps: int, tmp_path: Path) -> None:
    """The calls the Trainer makes: begin, a log per step, end."""
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none")
    state, control = TrainerState(max_steps=steps), TrainerControl()
    callback.on_train_begin(args, state, control)
    for step in range(1, steps + 1):
        state.global_step, state.epoch = step, step / steps
        callback.on_log(args, state, control, logs={"loss": 1.0 / step, "learning_rate": 1e-4 * (1 - step / steps)})
    callback.on_train_end(args, state, control)


@pytest.fixture
def api(tmp_path: Path):
    cert, key = self_signed_certificate(tmp_path)
    objs = _progress_objects()
    with FakeKubeAPI(token=TOKEN, tls=(cert, key), lifetime_s=60) as server:
        server.put("configmaps", objs["ConfigMap"])
        server.enforce_role(objs["Role"]["rules"])  # only what the rendered Role grants
        server.ca = cert
        yield server


def _patches(api: FakeKubeAPI) -> int:
    return sum(1 for method, path, _, _ in api.answered if method == "PATCH" and path.endswith(f"/configmaps/{NAME}"))


def test_rank_0_patches_labels_and_metrics_that_kubectl_reads(api: FakeKubeAPI, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]):
    reporter = _reporter(api.httpd.server_address[1], _credentials(tmp_path / "credentials", api.ca))
    _train(ConfigMapProgressCallback(reporter, samples_per_step=32), steps=200, tmp_path=tmp_path)
    assert _patches(api) == 2  # 200 steps within 30 s: the start and the end only
    assert "warning" not in capsys.readouterr().err
    config = client.Configuration(host=api.url)
    config.ssl_ca_cert = str(api.ca)
    config.api_key = {"authorization": f"Bearer {TOKEN}"}
    core = client.CoreV1Api(client.ApiClient(config))
    with pytest.raises(client.ApiException) as refused:  # the pod's Role: that one ConfigMap, no listing
        core.list_namespaced_config_map("ml")
    assert refused.value.status == 403
    api.enforce_role([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])  # a person's `kubectl get`
    (found,) = core.list_namespaced_config_map("ml", label_selector=f"{kn.JOB_LABEL}=imdb-bert-multinode").items
    labels = found.metadata.labels
    assert (labels[kn.PROGRESS_LABEL], labels[kn.STEP_LABEL], labels[kn.ETA_LABEL]) == ("100", "200", "0")
    metrics = json.loads(found.data[kn.PROGRESS_METRICS_KEY])
    assert metrics["step"] == 200 and metrics["loss"] == pytest.approx(1 / 200) and metrics["epoch"] == 1.0
    assert metrics["learning_rate"] == pytest.approx(0.0) and metrics["samples_per_second"] > 0


def test_every_log_is_sent_when_the_interval_allows_and_a_rank_other_than_0_sends_none(api: FakeKubeAPI, tmp_path: Path):
    reporter = _reporter(api.httpd.server_address[1], _credentials(tmp_path / "credentials", api.ca))
    _train(ConfigMapProgressCallback(reporter, samples_per_step=32, interval=0.0), steps=20, tmp_path=tmp_path)
    assert _patches(api) == 22
    callback = ConfigMapProgressCallback(reporter, samples_per_step=32, interval=0.0)
    args, state = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none"), TrainerState(max_steps=5)
    state.is_world_process_zero = False
    callback.on_train_begin(args, state, TrainerControl())
    callback.on_train_end(args, state, TrainerControl())
    assert _patches(api) == 22


@pytest.mark.parametrize("server", ["refusing", "absent"])
def test_a_refusing_or_absent_api_server_costs_one_warning_line(server: str, api: FakeKubeAPI, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]):
    if server == "refusing":  # a Role that names another ConfigMap: 403 for this one
        api.enforce_role([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["other"], "verbs": ["get", "patch"]}])
    port = api.httpd.server_address[1] if server == "refusing" else closed_port()
    reporter = _reporter(port, _credentials(tmp_path / "credentials", api.ca))
    _train(ConfigMapProgressCallback(reporter, samples_per_step=32, interval=0.0), steps=30, tmp_path=tmp_path)  # no raise
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    kind = "HTTPError" if server == "refusing" else "URLError"
    assert warnings == [f"kubetune: warning: could not report progress to ConfigMap {NAME} ({kind}); training goes on"]
    assert api.get("configmaps", NAME)["metadata"]["labels"].get(kn.PROGRESS_LABEL) is None  # nothing written


def test_no_api_server_or_configmap_no_reporter():
    env = pod_env({kn.ENV_PROGRESS_CONFIGMAP: NAME})  # a local run: no API server given
    assert env.kubernetes_server is None
    assert pod_env({kn.ENV_KUBERNETES_HOST: "fd00::1", kn.ENV_KUBERNETES_PORT: "443"}).kubernetes_server == "https://[fd00::1]:443"


def test_each_failure_in_a_row_doubles_the_wait(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]):
    """An unreachable API server is tried after 30, 60, 120... seconds, not at every log."""
    cert, _ = self_signed_certificate(tmp_path)
    attempts: list[float] = []
    now = [1000.0]

    class Counting(ConfigMapReporter):
        def patch(self, body: dict[str, Any]) -> None:
            attempts.append(now[0])
            super().patch(body)

    reporter = Counting(f"https://127.0.0.1:{closed_port()}", _credentials(tmp_path / "credentials", cert), NAME)
    monkeypatch.setattr("kubetune.workload.trainer.callbacks.time.monotonic", lambda: now[0])
    callback = ConfigMapProgressCallback(reporter, samples_per_step=32)
    args, state, control = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none"), TrainerState(max_steps=1000), TrainerControl()
    callback.on_train_begin(args, state, control)
    for step in range(1, 301):  # one log a second for 300 s
        now[0] += 1.0
        state.global_step = step
        callback.on_log(args, state, control, logs={"loss": 1.0})
    assert [round(t - 1000) for t in attempts] == [0, 60, 180]  # waits of 60 (2 x 30), then 120 (4 x 30)
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
