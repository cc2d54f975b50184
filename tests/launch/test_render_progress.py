"""The Job and JobSet engines' progress channel as rendered: a ConfigMap `<name>-progress`, a Role
that may only get and patch that one ConfigMap, bound to the pods' ServiceAccount, and the train
container alone given its name and a projected token. Every object strictly valid for the
oldest and newest supported Kubernetes versions; a TrainJob (its own status) and the evaluate
stage get none of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from kubetune.contract import names as kn
from kubetune.contract.spec.job import load_spec
from kubetune.launch.render import render_objects
from kubetune.launch.validate import supported_versions

JOB = Path(__file__).resolve().parents[2] / "jobs" / "imdb-bert-multinode.yaml"


def _render(engine: str, stage: str = "train", **settings: Any) -> list[dict[str, Any]]:
    spec = load_spec(JOB)
    for key, value in settings.items():
        setattr(spec.kubernetes, key, value)
    return render_objects(spec, stage=stage, engine=engine)


def _train_pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    gang = next(o for o in objs if o["kind"] in ("Job", "JobSet"))
    if gang["kind"] == "JobSet":
        node = next(r for r in gang["spec"]["replicatedJobs"] if r["name"] == kn.TRAINER_NODE)
        return node["template"]["spec"]["template"]["spec"]
    return gang["spec"]["template"]["spec"]


@pytest.mark.parametrize("engine", ["job", "jobset"])
def test_the_role_may_only_get_and_patch_the_progress_configmap(engine: str):
    objs = _render(engine, service_account="trainer")
    by_kind = {o["kind"]: o for o in objs if o["metadata"]["name"] == "imdb-bert-multinode-progress"}
    assert set(by_kind) == {"ConfigMap", "Role", "RoleBinding"}  # the spec's account: none of its own
    for obj in by_kind.values():
        for version in (supported_versions()[0], supported_versions()[-1]):
            assert kubernetes_validate.validate(obj, version, strict=True)
        assert obj["metadata"]["labels"][kn.JOB_LABEL] == "imdb-bert-multinode"
    assert by_kind["Role"]["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                         "resourceNames": ["imdb-bert-multinode-progress"], "verbs": ["get", "patch"]}]
    binding = by_kind["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "imdb-bert-multinode-progress"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "trainer", "namespace": "ml-training"}]
    assert list(by_kind["ConfigMap"]["data"]) == [kn.PROGRESS_METRICS_KEY]


@pytest.mark.parametrize("engine", ["job", "jobset"])
def test_only_the_train_container_gets_the_name_and_a_projected_token(engine: str):
    pod = _train_pod(_render(engine))
    assert pod["automountServiceAccountToken"] is False  # no token anywhere else
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[kn.ENV_PROGRESS_CONFIGMAP] == "imdb-bert-multinode-progress"
    assert env[kn.ENV_PROGRESS_CREDENTIALS] == kn.PROGRESS_CREDENTIALS_DIR
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == kn.PROGRESS_CREDENTIALS_DIR)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    sources = volume["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == kn.TOKEN_FILE
    assert {i["path"] for s in sources[1:] for i in next(iter(s.values()))["items"]} == {kn.CA_FILE, kn.NAMESPACE_FILE}


@pytest.mark.parametrize("engine", ["job", "jobset"])
def test_without_a_service_account_the_train_pods_get_the_jobs_own_never_default(engine: str):
    objs = _render(engine, namespace=None, service_account=None)
    (account,) = [o for o in objs if o["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == "imdb-bert-multinode-progress"
    assert account["automountServiceAccountToken"] is False
    binding = next(o for o in objs if o["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "imdb-bert-multinode-progress"}]  # the binding's namespace
    assert _train_pod(objs)["serviceAccountName"] == "imdb-bert-multinode-progress"
    evaluate = next(o for o in _render(engine, stage="all", service_account=None) if o["metadata"]["name"].endswith("-evaluate"))
    assert "serviceAccountName" not in evaluate["spec"]["template"]["spec"]  # only the train pods report
    with_account = _render(engine, service_account="trainer")
    assert not [o for o in with_account if o["kind"] == "ServiceAccount"]
    assert _train_pod(with_account)["serviceAccountName"] == "trainer"


@pytest.mark.parametrize(("engine", "stage"), [("trainjob", "train"), ("job", "evaluate")])
def test_no_progress_configmap_for_a_trainjob_or_evaluation(engine: str, stage: str):
    objs = _render(engine, stage=stage)
    assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding", "ServiceAccount") or o["metadata"]["name"].endswith("-progress")]
    assert kn.ENV_PROGRESS_CONFIGMAP not in str(objs)
