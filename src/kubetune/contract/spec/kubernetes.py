"""The cluster sections of a job spec: `resources:` (what a pod asks for) and `kubernetes:`
(how the job's pods run), and the Kubernetes name and quantity rules they check.

Split from `kubetune.contract.spec.job` (which re-exports these models) so each module stays small;
a local run ignores both sections. pydantic only: the launcher imports it on a laptop.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubetune.contract.names import ENGINE_JOB, ENV_PREFIX, RENDERED_ENV, Engine
from kubetune.contract.profiles import PROFILES
from kubetune.contract.spec.checks import check_annotations, check_tolerations
from kubetune.contract.spec.credentials import WorkloadIdentity

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variable names whose value is a credential: `*_TOKEN`, `*_KEY`, `*PASSWORD*`, `*SECRET*` (and
# AWS's access key id and `*CREDENTIAL*`). In `kubernetes.env` such a name must not carry a
# literal value: the spec is stored with the run, embedded in a ConfigMap and logged.
SECRET_ENV_NAME = re.compile(r"(^|_)(TOKEN|KEY|KEY_ID)$|PASSWORD|SECRET|CREDENTIAL", re.IGNORECASE)
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


class Strict(BaseModel):
    """The base of every spec section: an unknown field is an error that names it, never a
    silently ignored setting, and assignments are validated too. Numbers are strict: `true` is
    not a batch size of 1, `"3"` is not 3 (pydantic's strict mode; floats still take ints), and
    `.inf`/`.nan` are refused everywhere (a non-finite learning rate trains NaNs)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class NodeRange(Strict):
    """An elastic gang's size: torchrun's `--nnodes=MIN:MAX`. The job starts with as many nodes as
    it gets up to `max`, trains on while at least `min` remain, and grows back when lost nodes
    return."""

    min: int = Field(ge=1, description="the fewest nodes the gang trains on; fewer stops it until nodes return")
    max: int = Field(ge=1, description="the most nodes the gang grows to (the pods rendered)")

    @model_validator(mode="after")
    def _ordered(self) -> NodeRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class ResourcesSpec(Strict):
    """Compute per job. Used by the Kubernetes renderer; a local run ignores what it cannot use."""

    profile: str | None = Field(default=None, description="named preset, e.g. cpu, gpu-1, gpu-8, gpu-8x4")
    nodes: int | NodeRange = Field(
        default=1,
        description="pods, one per node; more than 1: an Indexed Job whose pods meet in a rendezvous; "
        "{min, max}: an elastic gang (torchrun --nnodes=MIN:MAX) that trains on when nodes are lost "
        "and grows back when they return",
    )
    gpus_per_node: int = Field(default=0, ge=0, description="GPUs per pod (nvidia.com/gpu); 0: CPU only")
    cpu: str | None = Field(default=None, description="per node, a Kubernetes quantity: 4, 500m")
    memory: str | None = Field(default=None, description="per node, a Kubernetes quantity: 16Gi")
    interruptions_per_hour: float = Field(
        default=0.0, ge=0,
        description="expected interruptions of the job per hour (spot or preemptible capacity), for "
        "train.checkpoint_every: auto; 0: none expected, auto uses its longest interval (docs/elastic.md)",
    )
    threads_per_process: int | None = Field(
        default=None, gt=0,
        description="CPU threads of each process (OMP_NUM_THREADS, MKL_NUM_THREADS, the tokenizers' pool); "
        "unset: the pod's CPU limit divided by its processes (torchrun's workers), at least 1; "
        "`run --local`: the cores this machine lets it use divided by the local processes",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        """A profile fills every field the spec leaves out; fields the spec sets win."""
        if isinstance(data, dict) and isinstance(data.get("profile"), str) and data["profile"] in PROFILES:
            data = {**PROFILES[data["profile"]], **{k: v for k, v in data.items() if v is not None}}
        return data

    @field_validator("nodes", mode="before")
    @classmethod
    def _node_count_or_range(cls, value: Any) -> Any:
        """One message for either form, instead of pydantic's pair of union errors."""
        if isinstance(value, dict):
            try:
                return NodeRange.model_validate(value)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise ValueError(f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}") from None
        if isinstance(value, bool) or not isinstance(value, int) and not isinstance(value, NodeRange):
            raise ValueError(f"must be a node count such as 2, or a range such as {{min: 1, max: 4}} (got {value!r})")
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be at least 1 (got {value})")
        return value

    @property
    def max_nodes(self) -> int:
        """The pods rendered, and the size a run starts at: `nodes`, or the range's `max`."""
        return self.nodes.max if isinstance(self.nodes, NodeRange) else self.nodes

    @property
    def min_nodes(self) -> int:
        """The fewest nodes the gang trains on: `nodes` for a fixed size, the range's `min`."""
        return self.nodes.min if isinstance(self.nodes, NodeRange) else self.nodes

    @property
    def elastic(self) -> bool:
        """Whether the gang may change size (a range whose ends differ)."""
        return self.min_nodes != self.max_nodes

    @model_validator(mode="after")
    def _range_fits_profile(self) -> ResourcesSpec:
        """An elastic gang grows back onto the profile's nodes: its replacement pods must fit
        them. A range is refused when its `gpus_per_node` exceeds the GPUs of the profile's nodes,
        or when a profile of several nodes (gpu-8x4) has fewer than the range's `max`: the gang
        could never reach `max`, and Kueue admits all `max` pods or none. A fixed size keeps the
        profile's rule (a field the spec sets wins)."""
        preset = PROFILES.get(self.profile or "")
        if not self.elastic or preset is None:
            return self
        gpus, nodes = int(preset["gpus_per_node"]), int(preset["nodes"])
        if self.gpus_per_node > gpus:
            raise ValueError(f"gpus_per_node {self.gpus_per_node} with nodes {{min: {self.min_nodes}, max: "
                             f"{self.max_nodes}}}: profile {self.profile}'s nodes have {gpus} GPUs")
        if nodes > 1 and self.max_nodes > nodes:
            raise ValueError(f"nodes {{min: {self.min_nodes}, max: {self.max_nodes}}}: profile {self.profile} "
                             f"has {nodes} nodes; max must be at most {nodes}")
        return self

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str | None) -> str | None:
        if name is not None and name not in PROFILES:
            raise ValueError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
        return name

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        return _check_quantity(value)


def check_elastic_engine(resources: ResourcesSpec, kubernetes: KubernetesSpec) -> None:
    """A node range renders only as an Indexed Job (docs/elastic.md#engines): JobSet and Kubeflow
    Trainer have no elastic form that replaces one lost pod while the others train on."""
    if resources.elastic and kubernetes.engine != ENGINE_JOB:
        raise ValueError(f"resources.nodes: a range {{min: {resources.min_nodes}, max: {resources.max_nodes}}} runs "
                         f"only with kubernetes.engine job, not {kubernetes.engine} (docs/elastic.md#engines)")


def _check_quantity(value: Any) -> Any:
    """Kubernetes resource quantities: numbers (YAML may give ints) become strings."""
    if isinstance(value, bool):
        raise ValueError(f"must be a Kubernetes quantity such as 4, 500m or 16Gi (got {value!r})")
    if isinstance(value, (int, float)):
        value = str(value)
    if isinstance(value, str) and not QUANTITY.match(value):
        raise ValueError(f"must be a Kubernetes quantity such as 4, 500m or 16Gi (got {value!r})")
    return value


class EgressRule(Strict):
    """One allowed egress destination when `kubernetes.egress` restricts traffic."""

    cidr: str = Field(description="IPv4/IPv6 block, e.g. 10.0.0.0/8 or 203.0.113.7/32")
    ports: list[int] = Field(default_factory=list, description="TCP ports; empty: every port")

    @field_validator("cidr")
    @classmethod
    def _is_cidr(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"must be a CIDR block such as 10.0.0.0/8 (got {value!r})") from None

    @field_validator("ports")
    @classmethod
    def _port_range(cls, ports: list[int]) -> list[int]:
        for port in ports:
            if not 0 < port < 65536:
                raise ValueError(f"port {port} is outside 1-65535")
        return ports


class SecretKeyRef(Strict):
    """One key of a Kubernetes Secret, rendered as `valueFrom.secretKeyRef`: the spec names the
    Secret, never holds its value."""

    secret: str = Field(description="name of a Secret in the job's namespace")
    key: str = Field(description="the key inside that Secret")
    optional: bool = Field(
        default=False,
        description="true: the pod starts without the variable when the Secret or key is missing "
        "(e.g. HF_TOKEN for a model that is public today); false: it waits for the Secret",
    )

    @field_validator("secret")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        return _check_dns_subdomain(value) or value

    @field_validator("key")
    @classmethod
    def _key_name(cls, value: str) -> str:
        if not re.match(r"^[-._A-Za-z0-9]+$", value) or len(value) > 253:
            raise ValueError(f"must be a Secret key: letters, digits, '-', '_' and '.' (got {value!r})")
        return value


def _check_env_name(name: str) -> None:
    """A variable the user may set: a valid name, and none the rendered pod sets itself."""
    if not ENV_NAME.match(name):
        raise ValueError(f"{name!r} is not an environment variable name (letters, digits, '_')")
    if name.upper().startswith(ENV_PREFIX) or name in RENDERED_ENV:
        raise ValueError(f"{name}: set by kubetune itself in every pod; choose another name")


def _check_dns_subdomain(value: str | None) -> str | None:
    if value is not None and (len(value) > 253 or not DNS_SUBDOMAIN.match(value)):
        raise ValueError(f"must be a DNS-1123 name: lowercase letters, digits, '-' and '.' (got {value!r})")
    return value


class KubernetesSpec(Strict):
    """How the job's pods run on a cluster. A local run ignores this section."""

    namespace: str | None = Field(default=None, description="unset: the namespace kubectl/kubeconfig uses")
    engine: Engine = Field(
        default="job",
        description="what runs the training gang: job (an Indexed Job), jobset (a JobSet, jobset.x-k8s.io) or "
        "trainjob (a Kubeflow Trainer v2 TrainJob on the ClusterTrainingRuntime in k8s/); `--engine` overrides it",
    )
    queue: str | None = Field(default=None, description="Kueue LocalQueue (kueue.x-k8s.io/queue-name)")
    service_account: str | None = Field(default=None, description="pods get no API token either way")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="Always", description="the containers' imagePullPolicy"
    )
    image_pull_secrets: list[str] = Field(default_factory=list, description="Secrets for pulling the image from a private registry")
    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels the pods must run on (nodeSelector)")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Kubernetes tolerations, as in a pod spec")
    affinity: dict[str, Any] | None = Field(default=None, description="Kubernetes affinity, as in a pod spec")
    priority_class: str | None = Field(default=None, description="the pods' PriorityClass (priorityClassName)")
    storage_secret: str | None = Field(
        default="kubetune-storage",
        description="Secret with the store's credentials; null when pods get them otherwise (IRSA, "
        "kubernetes.workload_identity, which makes null the default)",
    )
    storage_credentials: Literal["file", "env"] = Field(
        default="file",
        description="file: the Secret's key `credentials` is a credentials file (AWS_SHARED_CREDENTIALS_FILE for S3, "
        "GOOGLE_APPLICATION_CREDENTIALS for gs://); env: the Secret's keys (AWS_ACCESS_KEY_ID, AZURE_STORAGE_*, ...) "
        "become environment variables",
    )
    workload_identity: WorkloadIdentity | None = Field(
        default=None,
        description="the pods' cloud identity by GKE or Azure Workload Identity instead of a key in a Secret; "
        "needs kubernetes.service_account",
    )
    cache_pvc: str | None = Field(default=None, description="PersistentVolumeClaim for the model/dataset cache")
    cache_size: str = Field(default="50Gi", description="size of the cache emptyDir when no cache_pvc is set")
    scratch_size: str = Field(default="20Gi", description="size of the /tmp emptyDir (local checkpoints before upload)")
    shm_size: str | None = Field(default=None, description="/dev/shm size; default 1Gi, or 8Gi per GPU")
    active_deadline_seconds: int = Field(default=86400, gt=0, description="wall-clock limit of a Job")
    backoff_limit: int = Field(default=3, ge=0, description="failed attempts of the whole gang of pods before the Job fails")
    ttl_seconds_after_finished: int | None = Field(default=604800, ge=0, description="delete finished Jobs after this")
    termination_grace_period_seconds: int = Field(default=300, gt=0, description="time to save a checkpoint on SIGTERM")
    rendezvous_port: int = Field(default=29500, gt=1023, lt=65536, description="torchrun master port (multi-node)")
    network_policy: bool = Field(default=True, description="render a NetworkPolicy for the job's pods")
    egress: list[EgressRule] | None = Field(
        default=None,
        description="unset: all egress allowed; a list: only these destinations, DNS, the job's own pods "
        "and, when the spec loads from the Hub, AWS S3 or W&B, HTTPS to public addresses (kubernetes.public_https)",
    )
    public_https: bool | None = Field(
        default=None,
        description="with kubernetes.egress: allow TCP 443 to every public address (not 10/8, 172.16/12, "
        "192.168/16, 100.64/10, link-local, loopback); unset: when the spec may load from the Hugging Face Hub "
        "(a model.source or model.tokenizer that is no URI or local folder), from AWS S3 or report to W&B; "
        "false: never",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="plain environment variables for every container (non-secret settings); "
        "a secret-looking name (*_TOKEN, *_KEY, *PASSWORD*, *SECRET*) is refused: use secret_env",
    )
    secret_env: dict[str, SecretKeyRef] = Field(
        default_factory=dict,
        description="environment variables read from Secret keys, e.g. HF_TOKEN: {secret: hf, key: token}; "
        "rendered as valueFrom.secretKeyRef; `run --local` takes them from your own environment",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="extra labels on every object and pod")
    annotations: dict[str, str] = Field(default_factory=dict, description="extra annotations on every pod")

    @field_validator("namespace", "queue")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 63 or not DNS_LABEL.match(value)):
            raise ValueError(f"must be a DNS-1123 label: lowercase letters, digits and '-' (got {value!r})")
        return value

    @field_validator("service_account", "priority_class", "cache_pvc", "storage_secret")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        return _check_dns_subdomain(value)

    @field_validator("image_pull_secrets")
    @classmethod
    def _dns_names(cls, values: list[str]) -> list[str]:
        for value in values:
            _check_dns_subdomain(value)
        return values

    _annotations = field_validator("annotations")(lambda cls, v: check_annotations(v))
    _tolerations = field_validator("tolerations")(lambda cls, v: check_tolerations(v))

    @field_validator("labels")
    @classmethod
    def _label_values(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not LABEL_KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
                raise ValueError(f"{key!r} is not a valid label key")
            if len(value) > 63 or not LABEL_VALUE.match(value):
                raise ValueError(f"{key}: {value!r} is not a valid label value (63 characters: letters, digits, '-_.')")
        return labels

    @field_validator("env", mode="before")
    @classmethod
    def _plain_env(cls, env: Any) -> Any:
        """Names checked, values made strings (YAML gives `1` and `true` their own types), and
        a literal value for a credential-looking name refused before anything stores it."""
        if not isinstance(env, dict):
            return env
        out: dict[str, Any] = {}
        for name, value in env.items():
            _check_env_name(str(name))
            if SECRET_ENV_NAME.search(str(name)):
                raise ValueError(
                    f"{name}: looks like a secret, so its value must not be written in the spec; "
                    f"use kubernetes.secret_env: {{{name}: {{secret: NAME, key: KEY}}}}"
                )
            if isinstance(value, bool):
                value = "true" if value else "false"
            out[str(name)] = str(value) if isinstance(value, (int, float)) else value
        return out

    @field_validator("secret_env")
    @classmethod
    def _secret_env_names(cls, refs: dict[str, SecretKeyRef]) -> dict[str, SecretKeyRef]:
        for name in refs:
            _check_env_name(name)
        return refs

    @model_validator(mode="after")
    def _public_https_restricts(self) -> KubernetesSpec:
        if self.public_https is not None and self.egress is None:
            raise ValueError("public_https: only with kubernetes.egress (unset, every destination is allowed)")
        return self

    @model_validator(mode="after")
    def _identity_has_its_account(self) -> KubernetesSpec:
        if self.workload_identity is None:
            return self
        if not self.service_account:
            raise ValueError("workload_identity: needs kubernetes.service_account, the ServiceAccount the cloud "
                             "identity trusts (kubetune renders it with the annotation)")
        if "storage_secret" not in self.model_fields_set:  # the identity replaces the default Secret
            object.__setattr__(self, "storage_secret", None)
        return self

    @model_validator(mode="after")
    def _env_once(self) -> KubernetesSpec:
        both = sorted(set(self.env) & set(self.secret_env))
        if both:
            raise ValueError(f"env and secret_env both set {', '.join(both)}")
        return self

    @field_validator("cache_size", "scratch_size", "shm_size", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        return _check_quantity(value)
