"""Which cluster and namespace: a kubeconfig file and context, or a pod's service account."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from kubetune.launch.cluster.api import Cluster, ClusterError, one_line

# Where a pod's service account states the pod's own namespace.
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def connect(kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None) -> Cluster:
    """A Cluster from a kubeconfig file (`kubeconfig`, else $KUBECONFIG, else ~/.kube/config)
    or, inside a pod, the in-cluster service account. The namespace is `namespace`, else the
    context's, else the pod's own, else "default"."""
    cfg = client.Configuration()
    if kubeconfig is not None and not Path(kubeconfig).expanduser().is_file():
        raise ClusterError(f"kubeconfig {kubeconfig}: no such file")
    path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    found = kubeconfig is not None or any(Path(p).expanduser().is_file() for p in path.split(os.pathsep) if p)
    try:
        if found:
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg, persist_config=False)
            if namespace is None:
                contexts, current = config.list_kube_config_contexts(config_file=path)
                chosen = next((c for c in contexts if c["name"] == context), current) if context else current
                namespace = ((chosen or {}).get("context") or {}).get("namespace")
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
            if namespace is None and IN_CLUSTER_NAMESPACE.is_file():
                namespace = IN_CLUSTER_NAMESPACE.read_text().strip()
        else:
            raise ClusterError(
                "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG or create ~/.kube/config "
                "(or run inside a cluster)"
            )
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = f"kubeconfig {path}" if found else "in-cluster configuration"
        raise ClusterError(f"{where}: {one_line(str(exc))}") from None
    cfg.retries = 2  # connection refused fails in well under a second, not after long retries
    return Cluster(client.ApiClient(cfg), namespace or "default")
