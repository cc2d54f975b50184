"""The NetworkPolicy follows the spec (issue 28, point 2): with `kubernetes.egress`, a pod can
still reach what its spec loads: the Hub, AWS S3 or W&B over HTTPS to public addresses, never
the cluster's private ranges; every shipped job renders to pods that reach everything they load."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from kubetune.cli.main import main
from kubetune.contract.spec.job import SpecError, validate_spec
from kubetune.launch.render import render_objects

REPO = Path(__file__).resolve().parents[2]
JOBS = sorted((REPO / "jobs").glob("*.yaml"))
# Addresses of the public services a spec may load from (any public address would do: the
# policy cannot name hosts) and of a cluster-internal one.
HUB = "18.239.50.80"          # a huggingface.co address
AWS_S3 = "52.216.8.205"       # an s3.amazonaws.com address
WANDB = "35.186.228.49"       # an api.wandb.ai address
INSIDE = ["10.0.0.7", "172.20.1.1", "192.168.3.4", "100.64.0.9", "169.254.169.254", "127.0.0.1"]

BASE: dict[str, Any] = {
    "name": "demo",
    "model": {"source": "google-bert/bert-base-uncased"},
    "data": {"train": "datasets/sst2/train.tsv"},
    "storage": {"root": "s3://bucket/prefix", "endpoint_url": "http://10.96.0.20:9000"},
    "kubernetes": {"egress": [{"cidr": "10.96.0.0/12", "ports": [9000]}]},
}


def make_spec(**changes: Any):
    data = {**BASE, **changes}
    return validate_spec(data)


def policy_of(spec) -> dict[str, Any]:
    (policy,) = [o for o in render_objects(spec) if o["kind"] == "NetworkPolicy"]
    return policy["spec"]


def allows(policy: dict[str, Any], address: str, port: int) -> bool:
    """Whether the policy lets a pod connect to `address:port` over TCP (NetworkPolicy's rules:
    any rule whose peers and ports both match; no `to`: every peer; no `ports`: every port)."""
    ip = ipaddress.ip_address(address)
    for rule in policy["egress"]:
        ports = rule.get("ports")
        if ports and not any(p.get("protocol", "TCP") == "TCP" and p["port"] == port for p in ports):
            continue
        peers = rule.get("to")
        if not peers:
            return True
        for peer in peers:
            block = peer.get("ipBlock")
            if block and ip.version == ipaddress.ip_network(block["cidr"]).version \
                    and ip in ipaddress.ip_network(block["cidr"]) \
                    and not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])):
                return True
    return False


def test_a_hub_model_with_restricted_egress_reaches_public_https_and_nothing_private():
    policy = policy_of(make_spec())
    assert allows(policy, HUB, 443) and allows(policy, "2600:9000:2000::1", 443)
    assert not allows(policy, HUB, 80) and not allows(policy, HUB, 22)
    for address in INSIDE:
        assert not allows(policy, address, 443), address
    assert allows(policy, "10.96.0.20", 9000)  # the listed store


@pytest.mark.parametrize("source", ["/models/bert", "./models/bert", "s3://bucket/models/bert"])
def test_a_model_from_the_store_or_a_folder_opens_nothing(source):
    policy = policy_of(make_spec(model={"source": source}))
    assert not allows(policy, HUB, 443)


def test_a_hub_tokenizer_aws_s3_and_wandb_each_open_public_https():
    store_model = {"source": "s3://bucket/models/bert"}
    assert allows(policy_of(make_spec(model={**store_model, "tokenizer": "bert-base-uncased"})), HUB, 443)
    assert allows(policy_of(make_spec(model=store_model, storage={"root": "s3://bucket/prefix"})), AWS_S3, 443)
    assert allows(policy_of(make_spec(model=store_model, tracking={"wandb": {"project": "p"}})), WANDB, 443)
    offline = make_spec(model=store_model, tracking={"wandb": {"project": "p"}},
                        kubernetes={**BASE["kubernetes"], "env": {"WANDB_MODE": "offline"}})
    assert not allows(policy_of(offline), WANDB, 443)


def test_public_https_says_it_outright_and_only_with_egress():
    never = make_spec(kubernetes={**BASE["kubernetes"], "public_https": False})
    assert not allows(policy_of(never), HUB, 443)
    always = make_spec(model={"source": "s3://bucket/m"}, kubernetes={**BASE["kubernetes"], "public_https": True})
    assert allows(policy_of(always), HUB, 443)
    with pytest.raises(SpecError, match=r"kubernetes.*public_https: only with kubernetes.egress") as err:
        make_spec(kubernetes={"public_https": True})
    assert "\n" not in str(err.value)


def test_render_and_validate_say_why_public_https_is_open(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(BASE))
    for verb in ("render", "validate"):
        assert main([verb, str(job)]) == 0
        err = capsys.readouterr().err
        assert ("kubetune: egress: HTTPS (TCP 443) to public addresses allowed for model.source "
                "google-bert/bert-base-uncased (the Hugging Face Hub unless s3://bucket/prefix holds that folder); "
                "kubernetes.public_https: false leaves it out") in err, verb


def what_it_loads(spec) -> list[tuple[str, str, int]]:
    """(what, address, port) of everything a shipped job's pods fetch: the store's endpoint
    (a cluster Service: an address in the first egress CIDR listed for its port, as the job's
    comment says), AWS S3, the Hub for a model or tokenizer that is no URI or folder, W&B."""
    found = []
    if spec.storage.endpoint_url:
        port = urlsplit(spec.storage.endpoint_url).port or 443
        listed = [r for r in spec.kubernetes.egress or [] if not r.ports or port in r.ports]
        address = str(next(ipaddress.ip_network(listed[0].cidr).hosts())) if listed else "10.96.0.10"
        found.append(("store", address, port))
    elif spec.storage.root.startswith("s3://"):
        found.append(("AWS S3", AWS_S3, 443))
    for source in (spec.model.source, spec.model.tokenizer):
        if source and "://" not in source and not source.startswith(("/", "./", "../", "~")):
            found.append((f"Hub {source}", HUB, 443))
    for uri in (spec.data.train, spec.data.validation, spec.data.test):
        if uri and uri.startswith("hf://"):
            found.append((f"Hub {uri}", HUB, 443))
    if spec.tracking is not None and spec.tracking.wandb is not None:
        found.append(("W&B", WANDB, 443))
    return found


@pytest.mark.parametrize("job", JOBS, ids=[j.stem for j in JOBS])
def test_every_shipped_job_renders_to_pods_that_reach_what_they_load(job):
    spec = validate_spec(yaml.safe_load(job.read_text()))
    if not spec.kubernetes.network_policy:
        return
    policy = policy_of(spec)
    for what, address, port in what_it_loads(spec):
        assert allows(policy, address, port), f"{job.name}: {what} at {address}:{port}"
    if spec.kubernetes.egress is not None:
        assert not allows(policy, "169.254.169.254", 80)  # never the metadata endpoint


def test_the_multinode_job_from_the_issue_reaches_the_hub_and_its_store():
    spec = validate_spec(yaml.safe_load((REPO / "jobs" / "imdb-bert-multinode.yaml").read_text()))
    assert spec.kubernetes.egress is not None and spec.model.source == "google-bert/bert-base-uncased"
    policy = policy_of(spec)
    assert allows(policy, HUB, 443) and allows(policy, "10.96.0.1", 9000)
