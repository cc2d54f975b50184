"""`kubetune submit` with `kubernetes.workload_identity` (issue 27, point 3), against the local
Kubernetes API server through the real client: the first job creates the annotated
ServiceAccount, a second job naming the same account keeps it instead of refusing to submit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fakes.k8s_fake_server import FakeKubeAPI

from kubetune.cli.main import main

GSA = "trainer@my-project.iam.gserviceaccount.com"


def _job(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "model": {"source": "models/m"}, "data": {"train": "datasets/t.tsv"},
        "storage": {"root": "s3://bucket/runs"},
        "kubernetes": {"service_account": "trainer", "workload_identity": {"gcp_service_account": GSA}}}))
    return str(path)


@pytest.fixture
def api():
    with FakeKubeAPI(lifetime_s=30) as server:
        yield server


def test_jobs_sharing_a_workload_identity_share_its_service_account(api, tmp_path, capsys):
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig", namespace="ml"))
    assert main(["submit", _job(tmp_path, "first"), "--kubeconfig", kubeconfig]) == 0
    account = api.get("serviceaccounts", "trainer")
    assert account["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": GSA}
    assert api.get("jobs", "first-train")["spec"]["template"]["spec"]["serviceAccountName"] == "trainer"

    capsys.readouterr()
    assert main(["submit", _job(tmp_path, "second"), "--kubeconfig", kubeconfig]) == 0
    assert "ServiceAccount/trainer exists, kept" in capsys.readouterr().out
    assert api.names("jobs") == ["first-train", "second-train"]
