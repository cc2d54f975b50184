"""The network objects of a job: the headless Service that gives train pods stable DNS names,
and the NetworkPolicy that keeps other pods out and, with `kubernetes.egress`, lets the pods
reach what the spec loads.

A NetworkPolicy names addresses, never host names, and the Hugging Face Hub (a CDN), AWS S3
and W&B have no fixed addresses to list. So when egress is restricted and the spec reaches such
a service (`public_destinations`), the policy also allows HTTPS (TCP 443) to every public
address: 0.0.0.0/0 and ::/0 except the private, shared, loopback and link-local ranges
(PRIVATE_RANGES; link-local holds the clouds' metadata endpoints), so the cluster's own
addresses stay closed except for the listed CIDRs. `kubernetes.public_https` says it outright:
true always, false never (every model is in the store or a mirror you listed).
"""

from __future__ import annotations

from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.render.naming import Names
from kubetune.launch.render.pod import object_metadata
from kubetune.storage import has_scheme, is_explicit_local

HTTPS_PORT = 443
# Not "public": RFC 1918 and RFC 6598 (shared, often pod or node ranges), loopback, link-local
# (cloud metadata at 169.254.169.254); for IPv6 unique-local and link-local.
PRIVATE_RANGES = {
    "0.0.0.0/0": ["10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"],
    "::/0": ["::1/128", "fc00::/7", "fe80::/10"],
}


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
    53), the job's own pods and, where the spec reaches a public service (`needs_public_https`),
    HTTPS to public addresses."""
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
        if needs_public_https(spec):
            rules.append(public_https_rule())
        policy["egress"] = rules
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_metadata(spec, n.network_policy, "network"),
        "spec": policy,
    }



# huggingface_hub's endpoint variable: a Hub mirror the user runs (set in kubernetes.env).
HUB_ENDPOINT_ENV = "HF_ENDPOINT"


def public_destinations(spec: JobSpec) -> list[str]:
    """What the spec's pods fetch from public services, one phrase each: a model or tokenizer
    source that is a Hub id unless the store holds such a folder (the workload decides at the
    start, `workload/model/source`), an hf:// data or model URI (unless kubernetes.env sets
    HF_ENDPOINT, a mirror), an S3 store without `storage.endpoint_url` (AWS), W&B
    unless `kubernetes.env` sets WANDB_MODE=offline."""
    found = []
    for field, source in (("model.source", spec.model.source), ("model.tokenizer", spec.model.tokenizer)):
        if source and not has_scheme(source) and not is_explicit_local(source):
            found.append(f"{field} {source} (the Hugging Face Hub unless {spec.storage.root} holds that folder)")
    hub_uris = [field for field, uri in (("model.source", spec.model.source), ("model.tokenizer", spec.model.tokenizer),
                                         ("data.train", spec.data.train), ("data.validation", spec.data.validation),
                                         ("data.test", spec.data.test)) if uri and uri.startswith("hf://")]
    if hub_uris and HUB_ENDPOINT_ENV not in spec.kubernetes.env:  # a mirror inside the cluster needs no 443 out
        found.append(f"{', '.join(hub_uris)} (hf://: the Hugging Face Hub)")
    if spec.storage.root.startswith("s3://") and not spec.storage.endpoint_url:
        found.append(f"storage.root {spec.storage.root} (AWS S3: no storage.endpoint_url)")
    if spec.tracking is not None and spec.tracking.wandb is not None \
            and spec.kubernetes.env.get(kn.ENV_WANDB_MODE) not in ("offline", "disabled"):
        found.append("tracking.wandb (api.wandb.ai)")
    return found


def needs_public_https(spec: JobSpec) -> bool:
    """Whether a restricted egress also allows HTTPS to public addresses: `kubernetes.public_https`
    when set, else whether the spec reaches a public service (`public_destinations`)."""
    k = spec.kubernetes
    if k.egress is None:
        return False
    return k.public_https if k.public_https is not None else bool(public_destinations(spec))


def public_https_rule() -> dict[str, Any]:
    """TCP 443 to every address outside PRIVATE_RANGES."""
    return {
        "to": [{"ipBlock": {"cidr": cidr, "except": ranges}} for cidr, ranges in PRIVATE_RANGES.items()],
        "ports": [{"protocol": "TCP", "port": HTTPS_PORT}],
    }
