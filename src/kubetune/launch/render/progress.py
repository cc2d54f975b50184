"""The Job and JobSet engines' progress channel: a ConfigMap `<name>-progress` that rank 0 of
the training patches (labels names.PROGRESS_LABEL, names.STEP_LABEL, names.ETA_LABEL; the
latest metrics as JSON under names.PROGRESS_METRICS_KEY), so `kubectl get configmap -L ...`
shows a run's progress without reading logs. A TrainJob reports through Kubeflow Trainer's
own status endpoint instead (`workload.trainer.callbacks`).

Why a ConfigMap and not an annotation on pod 0: RBAC's `resourceNames` cannot name a pod the
Job controller names at random, so a pod allowed to annotate itself could patch every pod of
the namespace. A ConfigMap's name is fixed when rendered, so the Role here grants `get` and
`patch` on that one object and nothing else, bound to the train pods' ServiceAccount:
`kubernetes.service_account`, else one of the job's own (`<name>-progress`, no other rights),
never the namespace's `default`, which every other pod there shares. The pods still get no
automounted token: only the train container receives a projected one
(names.PROGRESS_CREDENTIALS_DIR)."""

from __future__ import annotations

from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.render.naming import Names
from kubetune.launch.render.pod import object_metadata

COMPONENT = "progress"
# Seconds a projected token lives; the kubelet renews it well before then and the reporter
# reads the file again for every request.
TOKEN_SECONDS = 3600
VOLUME = "progress-credentials"


def service_account(spec: JobSpec, n: Names) -> str:
    """The train pods' ServiceAccount: the spec's, else the job's own."""
    return spec.kubernetes.service_account or n.progress


def progress_objects(spec: JobSpec, n: Names) -> list[dict[str, Any]]:
    """The ConfigMap, the Role that may get and patch only it, and the binding to the train
    pods' ServiceAccount (rendered too when the spec names none). A subject without a namespace
    is the binding's own (the spec's, or the namespace it is applied in)."""
    subject: dict[str, Any] = {"kind": "ServiceAccount", "name": service_account(spec, n)}
    if spec.kubernetes.namespace:
        subject["namespace"] = spec.kubernetes.namespace
    own = [] if spec.kubernetes.service_account else [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": object_metadata(spec, n.progress, COMPONENT),
         "automountServiceAccountToken": False}]
    return own + [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": object_metadata(spec, n.progress, COMPONENT),
         "data": {kn.PROGRESS_METRICS_KEY: "{}"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": object_metadata(spec, n.progress, COMPONENT),
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [n.progress],
                    "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": object_metadata(spec, n.progress, COMPONENT),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": n.progress},
         "subjects": [subject]},
    ]


def grant_progress(spec: JobSpec, pod_spec: dict[str, Any], n: Names) -> None:
    """Run the train pod as the bound ServiceAccount and give its container (the pod's first)
    the ConfigMap's name and a projected token, CA and namespace, the files a service account's
    automount would write, in its own folder."""
    pod_spec["serviceAccountName"] = service_account(spec, n)
    pod_spec["volumes"].append({"name": VOLUME, "projected": {"sources": [
        {"serviceAccountToken": {"path": kn.TOKEN_FILE, "expirationSeconds": TOKEN_SECONDS}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": kn.CA_FILE, "path": kn.CA_FILE}]}},
        {"downwardAPI": {"items": [{"path": kn.NAMESPACE_FILE, "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}})
    container = pod_spec["containers"][0]
    container["volumeMounts"].append({"name": VOLUME, "mountPath": kn.PROGRESS_CREDENTIALS_DIR, "readOnly": True})
    container["env"] += [{"name": kn.ENV_PROGRESS_CONFIGMAP, "value": n.progress},
                         {"name": kn.ENV_PROGRESS_CREDENTIALS, "value": kn.PROGRESS_CREDENTIALS_DIR}]
