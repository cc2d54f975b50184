"""Credentials the way each platform gives them (issue 27, point 3): for every store (S3, Google
Cloud Storage, Azure Blob, the Hugging Face Hub) the rendered pods take credentials only by
Secret reference or workload identity, never a value; GKE and Azure workload identity render
their annotations and label; `validate` and `render` name in one line what a cluster's pods
would lack.

The gs:// and az:// schemes are accepted by the spec once the storage branch of issue 27 adds
them to `SUPPORTED_SCHEMES`; until then these tests add them themselves, which changes nothing
of what is checked here (the credentials, not the store)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from kubetune.contract import names as kn
from kubetune.contract.spec import checks
from kubetune.contract.spec.job import validate_spec
from kubetune.launch.render import RenderError, render_objects
from kubetune.launch.validate import latest_version, validate_objects

# Values that would be credentials if they reached a manifest: set in the launcher's own
# environment, where a careless renderer would copy them from.
LEAKS = {"AWS_SECRET_ACCESS_KEY": "aws-secret-MUST-NOT-LEAK", "HF_TOKEN": "hf_MUSTNOTLEAKtoken",
         "AZURE_STORAGE_KEY": "azure-key-MUST-NOT-LEAK", "GOOGLE_OAUTH_ACCESS_TOKEN": "ya29.MUST-NOT-LEAK"}
GSA = "trainer@my-project.iam.gserviceaccount.com"
CLIENT_ID = "00000000-1111-2222-3333-444444444444"
HF_TOKEN_REF = {"HF_TOKEN": {"secret": "hf", "key": "token", "optional": True}}


@pytest.fixture(autouse=True)
def every_scheme(monkeypatch):
    for name, value in LEAKS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(checks, "SUPPORTED_SCHEMES", tuple(dict.fromkeys((*checks.SUPPORTED_SCHEMES, "gs", "az"))))


def spec_for(root: str, data: str = "datasets/t.tsv", **kubernetes: Any):
    return validate_spec({"name": "creds", "model": {"source": "hf://org/model"}, "data": {"train": data},
                          "storage": {"root": root}, "kubernetes": {"secret_env": HF_TOKEN_REF, **kubernetes}})


def pods(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for obj in objs:
        spec = obj.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
        if template:
            found.append(template)
    return found


CASES = {
    "s3 secret file": ("s3://bucket/runs", {}),
    "s3 secret env": ("s3://bucket/runs", {"storage_credentials": "env"}),
    "gs secret file": ("gs://bucket/runs", {}),
    "gs workload identity": ("gs://bucket/runs", {"service_account": "trainer",
                                                  "workload_identity": {"gcp_service_account": GSA}}),
    "az secret env": ("az://container/runs", {"storage_credentials": "env"}),
    "az workload identity": ("az://container/runs", {"service_account": "trainer",
                                                     "workload_identity": {"azure_client_id": CLIENT_ID}}),
    "hf data, local root": (".kubetune", {}),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_no_credential_value_in_any_manifest(case):
    root, kubernetes = CASES[case]
    spec = spec_for(root, data="hf://datasets/org/data/train.parquet", **kubernetes)
    objs = render_objects(spec, stage="all")
    validate_objects(objs, latest_version())
    text = json.dumps(objs)
    assert not [name for name, value in LEAKS.items() if value in text]
    for template in pods(objs):
        for container in template["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            # HF_TOKEN only by reference; no variable anywhere carries a value from a Secret inline.
            assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": "hf", "key": "token", "optional": True}}}
            assert not [e for e in container["env"] if "value" in e and kn.CREDENTIALS_DIR not in e["value"]
                        and e["name"] in (*LEAKS, "AZURE_STORAGE_CONNECTION_STRING", "AWS_ACCESS_KEY_ID")]


def test_a_gs_root_reads_its_key_file_from_the_mounted_secret():
    (template, *_) = pods(render_objects(spec_for("gs://bucket/runs"), stage="train"))
    container = template["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[kn.ENV_GCP_CREDENTIALS_FILE] == f"{kn.CREDENTIALS_DIR}/{kn.CREDENTIALS_KEY}"
    assert kn.ENV_AWS_CREDENTIALS_FILE not in env
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "storage-credentials")
    assert volume["secret"]["secretName"] == "kubetune-storage"


def test_gke_workload_identity_annotates_the_service_account_every_pod_runs_as():
    spec = spec_for("gs://bucket/runs", service_account="trainer", workload_identity={"gcp_service_account": GSA})
    assert spec.kubernetes.storage_secret is None  # the identity replaces the default Secret
    objs = render_objects(spec, stage="all")
    (account,) = [o for o in objs if o["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == "trainer"
    assert account["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": GSA}
    assert account["automountServiceAccountToken"] is False
    for template in pods(objs):
        assert template["spec"]["serviceAccountName"] == "trainer"
        assert not [v for v in template["spec"]["volumes"] if "secret" in v]
        assert "azure.workload.identity/use" not in template["metadata"]["labels"]


def test_azure_workload_identity_labels_every_pod_and_annotates_its_account():
    spec = spec_for("az://container/runs", service_account="trainer", workload_identity={"azure_client_id": CLIENT_ID})
    objs = render_objects(spec, stage="all")
    (account,) = [o for o in objs if o["kind"] == "ServiceAccount"]
    assert account["metadata"]["annotations"] == {"azure.workload.identity/client-id": CLIENT_ID}
    templates = pods(objs)
    assert len(templates) == 2
    for template in templates:
        assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        assert template["spec"]["serviceAccountName"] == "trainer"
        assert not any("envFrom" in c for c in template["spec"]["containers"])


@pytest.mark.parametrize(("root", "kubernetes", "says"), [
    ("gs://bucket/runs", {"storage_secret": None},
     "storage.root gs://bucket/runs: the pods would have no Google Cloud credentials: set kubernetes.storage_secret"),
    ("gs://bucket/runs", {"storage_credentials": "env"},
     "kubernetes.storage_credentials: a gs:// root takes a key file from the Secret"),
    ("az://container/runs", {},
     "kubernetes.storage_credentials: an az:// root takes its credentials as environment variables"),
    ("az://container/runs", {"storage_secret": None},
     "the pods would have no Azure credentials: set kubernetes.storage_secret (storage_credentials: env) "
     "or kubernetes.workload_identity.azure_client_id"),
    ("az://container/runs", {"service_account": "trainer", "workload_identity": {"gcp_service_account": GSA}},
     "the pods would have no Azure credentials"),
])
def test_render_names_what_the_pods_would_lack(root, kubernetes, says):
    with pytest.raises(RenderError, match=re.escape(says)) as caught:
        render_objects(spec_for(root, **kubernetes), stage="train")
    assert "\n" not in str(caught.value)
    assert render_objects(spec_for("s3://bucket/runs", **kubernetes), stage="train")  # S3 needs none of these


def test_validate_refuses_in_one_line(tmp_path, capsys):
    from kubetune.cli.main import main

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "creds", "model": {"source": "m/m"}, "data": {"train": "t.tsv"},
                                   "storage": {"root": "gs://bucket/runs"}, "kubernetes": {"storage_secret": None}}))
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {job}: storage.root gs://bucket/runs: the pods would have no")


@pytest.mark.parametrize(("kubernetes", "says"), [
    ({"workload_identity": {"gcp_service_account": GSA}}, "workload_identity: needs kubernetes.service_account"),
    ({"service_account": "t", "workload_identity": {}}, "set exactly one of gcp_service_account"),
    ({"service_account": "t", "workload_identity": {"gcp_service_account": "me@gmail.com"}},
     "must be a Google service account email"),
    ({"service_account": "t", "workload_identity": {"azure_client_id": "not-a-guid"}}, "must be a client id"),
])
def test_a_workload_identity_without_its_parts_is_one_line(kubernetes, says):
    from kubetune.contract.errors import SpecError

    with pytest.raises(SpecError, match=says):
        spec_for("s3://bucket/runs", **kubernetes)


@pytest.mark.parametrize("engine", ["jobset", "trainjob"])
def test_the_other_engines_pods_carry_the_identity_too(engine):
    spec = spec_for("az://container/runs", service_account="trainer", workload_identity={"azure_client_id": CLIENT_ID})
    objs = render_objects(spec, stage="train", engine=engine)
    assert [o["kind"] for o in objs].count("ServiceAccount") == 1
    text = json.dumps([o for o in objs if o["kind"] in ("JobSet", "TrainJob")])
    assert '"azure.workload.identity/use": "true"' in text and '"serviceAccountName": "trainer"' in text
