"""The cluster-side setup in k8s/: valid objects, an example Secret without real keys, and a
launcher Role that grants exactly what the verbs use (every verb runs against an API server
that enforces the Role; every rule must be used)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fakes.k8s_fake_server import FakeKubeAPI, JobScript, PodRun

from kubetune.cli.main import main
from kubetune.launch.cluster import api as cluster_api
from kubetune.contract.names import CREDENTIALS_KEY
from kubetune.launch.validate import supported_versions
from kubetune.contract.spec.job import KubernetesSpec

K8S = Path(__file__).resolve().parents[2] / "k8s"
SETUP_FILES = ["namespace.yaml", "rbac.yaml", "s3-secret.example.yaml", "rbac-jobset.yaml", "rbac-trainjob.yaml"]
# The custom resources of the other engines: listed by status, list and cancel wherever they
# are served, and an unbound Role (403) read as "none of ours there".
ENGINE_RESOURCES = {("jobset.x-k8s.io", "jobsets"), ("trainer.kubeflow.org", "trainjobs")}


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def role_rules(name: str = "rbac.yaml") -> list[dict[str, Any]]:
    return next(o for o in load(name) if o["kind"] == "Role")["rules"]


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}


@pytest.mark.parametrize("name", SETUP_FILES)
def test_setup_files_are_valid_for_every_supported_version(name: str) -> None:
    for version in (supported_versions()[0], supported_versions()[-1]):
        for obj in load(name):
            assert kubernetes_validate.validate(obj, version, strict=True)


def test_setup_objects_share_one_namespace() -> None:
    namespace = load("namespace.yaml")[0]["metadata"]["name"]
    objs = load("rbac.yaml") + load("s3-secret.example.yaml") + load("rbac-jobset.yaml") + load("rbac-trainjob.yaml")
    assert {o["metadata"]["namespace"] for o in objs} == {namespace}
    binding = next(o for o in load("rbac.yaml") if o["kind"] == "RoleBinding")
    account = next(o for o in load("rbac.yaml") if o["kind"] == "ServiceAccount")
    role = next(o for o in load("rbac.yaml") if o["kind"] == "Role")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]


def test_secret_example_matches_what_pods_mount_and_holds_no_keys() -> None:
    (secret,) = load("s3-secret.example.yaml")
    assert secret["metadata"]["name"] == KubernetesSpec().storage_secret
    assert list(secret["stringData"]) == [CREDENTIALS_KEY]
    credentials = secret["stringData"][CREDENTIALS_KEY]
    values = [line.split("=", 1)[1].strip() for line in credentials.splitlines() if "=" in line]
    assert len(values) == 2 and all(v.startswith("REPLACE_WITH_") for v in values)


def test_role_grants_no_secrets_no_writes_beyond_create_delete_progress_patch_and_no_wildcards() -> None:
    rules = role_rules()
    verbs = {v for r in rules for v in r["verbs"]}
    resources = {res for r in rules for res in r["resources"]}
    assert verbs <= {"create", "get", "list", "watch", "delete", "patch"}
    # patch only on ConfigMaps: the progress Role grants it on one, and the RBAC API lets the
    # launcher grant only what it holds (the fake API server's escalation check uses it)
    assert {res for r in rules if "patch" in r["verbs"] for res in r["resources"]} == {"configmaps"}
    watched = {res for r in rules if "watch" in r["verbs"] for res in r["resources"]}
    assert watched == {"jobs", "pods"}  # waiting and log following; nothing else is watched
    assert "secrets" not in resources and "*" not in resources | verbs


SPEC = """\
name: sst2
model: {source: minilm}
data: {train: data/train.csv}
resources: {nodes: 2}
"""


def test_every_verb_works_with_the_role_and_uses_all_of_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cluster_api, "POLL_SECONDS", 0.02)
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC)
    with FakeKubeAPI(lifetime_s=60) as api:
        api.enforce_role(role_rules())
        api.script_job("sst2-train", JobScript(pods={0: PodRun(["step 1"]), 1: PodRun(["step 1"])}, pending_s=1.0))
        api.script_job("sst2-evaluate", JobScript(pods={0: PodRun(["accuracy 0.9"])}, pending_s=1.0))
        kc = ["--kubeconfig", str(api.kubeconfig(tmp_path / "kubeconfig"))]
        job = str(spec)
        for argv, expected in [
            (["submit", job, "--dry-run"], 0),
            (["submit", job, "--wait"], 0),
            (["submit", job], 1),  # exists: refused
            (["submit", job, "--replace", "--dry-run"], 0),
            (["submit", job, "--replace"], 0),
            (["status", "sst2"], 0),
            (["logs", "sst2", "--rank", "0"], 0),
            (["logs", "sst2", "-f"], 0),
            (["list"], 0),
            (["cancel", "sst2", "--wait"], 0),
            (["submit", job, "--schedule", "0 3 * * 0"], 0),
            (["list"], 0),
            (["cancel", "sst2"], 0),
        ]:
            code = main([*argv, *kc])
            err = capsys.readouterr().err
            assert code == expected, f"{argv}: {err}"
            assert "forbidden" not in err, argv
        # every rule used; beyond them only the other engines' lists, refused and read as none
        assert {u for u in api.used if u[:2] not in ENGINE_RESOURCES} == granted(role_rules())
        assert {u[2] for u in api.used if u[:2] in ENGINE_RESOURCES} == {"list"}


@pytest.mark.parametrize("engine", ["jobset", "trainjob"])
def test_each_engine_role_grants_what_its_verbs_use_and_no_more(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """rbac.yaml plus rbac-ENGINE.yaml run every verb of that engine; every rule of the engine's
    Role is used, and it names only that engine's resource."""
    from fakes.k8s_fake_engines import attach

    monkeypatch.setattr(cluster_api, "POLL_SECONDS", 0.02)
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC)
    rules = role_rules(f"rbac-{engine}.yaml")
    assert {(g, res) for g, res, _ in granted(rules)} <= ENGINE_RESOURCES and len({res for _, res, _ in granted(rules)}) == 1
    with FakeKubeAPI(lifetime_s=60) as api:
        attach(api, runtime=load("trainjob-runtime.yaml")[0])
        api.enforce_role(role_rules() + rules)
        api.script_job("sst2-train-node-0", [JobScript(pods={0: PodRun(["step 1"]), 1: PodRun(["step 1"])}, pending_s=0.5)] * 3)
        api.script_job("sst2-train-initializer-0", [JobScript(pods={0: PodRun(["initialized"])})] * 3)
        api.script_job("sst2-evaluate", JobScript(pods={0: PodRun(["accuracy 0.9"])}))
        kc = ["--kubeconfig", str(api.kubeconfig(tmp_path / "kubeconfig"))]
        job = str(spec)
        for argv, expected in [
            (["submit", job, "--engine", engine, "--dry-run"], 0),
            (["submit", job, "--engine", engine, "--wait"], 0),
            (["submit", job, "--engine", engine], 1),  # exists: refused
            (["submit", job, "--engine", engine, "--replace", "--stage", "train"], 0),
            (["status", "sst2"], 0),
            (["logs", "sst2", "-f"], 0),
            (["list"], 0),
            (["cancel", "sst2", "--wait"], 0),
        ]:
            code = main([*argv, *kc])
            err = capsys.readouterr().err
            assert code == expected, f"{argv}: {err}"
            assert "forbidden" not in err, argv
        assert granted(rules) <= api.used
