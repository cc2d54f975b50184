"""The network objects of a job: the headless Service that gives train pods stable DNS names,
and the NetworkPolicy that keeps other pods out.
"""

from __future__ import annotations

from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.render.naming import Names
from kubetune.launch.render.pod import object_metadata


def headless_service(spec: JobSpec, n: Names) -> dict[str, Any]:
    """Stable DNS names `<job>-train-<i>.<service>` for the train pods, ready or not (rank 0
    must be resolvable before it is Ready, or rendezvous deadlocks)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(spec, n.service, "rendezvous"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {kn.JOB_LABEL: spec.name, kn.STAGE_LABEL: kn.STAGE_TRAIN},
            "ports": [
                {
                    "name": "rendezvous",
                    "port": spec.kubernetes.rendezvous_port,
                    "targetPort": spec.kubernetes.rendezvous_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def network_policy(spec: JobSpec, n: Names) -> dict[str, Any]:
    """Ingress only from the same job's pods (rendezvous and NCCL/gloo collectives use many
    ports). Egress: all, unless `kubernetes.egress` lists destinations; then those, DNS (port
    53) and the job's own pods."""
    own = {"podSelector": {"matchLabels": {kn.JOB_LABEL: spec.name}}}
    policy: dict[str, Any] = {
        "podSelector": {"matchLabels": {kn.JOB_LABEL: spec.name}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [own]}],
    }
    if spec.kubernetes.egress is None:
        policy["egress"] = [{}]
    else:
        rules: list[dict[str, Any]] = [
            {"to": [own]},
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        ]
        for rule in spec.kubernetes.egress:
            out: dict[str, Any] = {"to": [{"ipBlock": {"cidr": rule.cidr}}]}
            if rule.ports:
                out["ports"] = [{"protocol": "TCP", "port": p} for p in rule.ports]
            rules.append(out)
        policy["egress"] = rules
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_metadata(spec, n.network_policy, "network"),
        "spec": policy,
    }

