"""The job spec: the one contract the launcher and the container share.

The launcher validates a YAML file against these models, embeds the *resolved* spec (every
default filled in) in a ConfigMap, and the container validates that same file again, so both
sides always agree on what a job means. Every model forbids unknown fields: a typo is an error
that names the field, never a silently ignored setting.

This module must stay light (pydantic + yaml only): the launcher imports it on a laptop.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubetune.contract.profiles import PROFILES

TASKS = (
    "text-classification",
    "token-classification",
    "question-answering",
    "seq2seq",
    "causal-lm",
)
Task = Literal[
    "text-classification",
    "token-classification",
    "question-answering",
    "seq2seq",
    "causal-lm",
]

# Column roles each task understands, with the column names assumed when the spec names none.
# `data.columns` maps a role to the column that holds it in the user's files.
TASK_COLUMNS: dict[str, dict[str, str | None]] = {
    "text-classification": {"text": "text", "text_pair": None, "label": "label"},
    "token-classification": {"tokens": "tokens", "tags": "ner_tags"},
    "question-answering": {"id": "id", "question": "question", "context": "context", "answers": "answers"},
    "seq2seq": {"source": "source", "target": "target"},
    "causal-lm": {"prompt": "prompt", "response": "response", "messages": None},
}

DATA_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "squad")
DataFormat = Literal["csv", "tsv", "json", "jsonl", "parquet", "squad"]

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
# Derived object names (`<name>-evaluate`, pod `<name>-train-<index>-xxxxx`, CronJob suffixes)
# must stay within Kubernetes' 63-character label limit.
MAX_NAME_LENGTH = 40

# Keys that would put a secret into a spec. Credentials come from the environment (AWS_*
# variables, or a Kubernetes Secret mounted into the pod), never from a file that is stored,
# rendered into a ConfigMap and logged.
SECRET_KEYS = {
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "access_key",
    "secret_key",
    "secret_access_key",
    "key",
    "secret",
    "token",
    "password",
}


class SpecError(Exception):
    """A user-facing, one-line error: names the file and the field or the cause. Exit code 2."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(_Strict):
    """Where the pretrained weights come from: a store path, an object-store URI, a local
    folder (`/…`, `./…`) or, when none of those exists, a Hugging Face Hub id."""

    source: str = Field(min_length=1)
    revision: str | None = None
    tokenizer: str | None = Field(default=None, description="defaults to model.source")


class QuestionAnsweringSpec(_Strict):
    """question-answering: how long contexts are windowed and how answers are decoded."""

    doc_stride: int | None = Field(
        default=None, gt=0, description="tokens of overlap between windows of a long context; default max_seq_length // 4"
    )
    max_answer_length: int = Field(default=30, gt=0, description="longest answer span, in tokens")
    n_best: int = Field(default=20, gt=0, description="start and end candidates per window")


class DataSpec(_Strict):
    """Dataset files and how their columns map to the task's roles."""

    train: str = Field(min_length=1)
    validation: str | None = None
    test: str | None = None
    format: DataFormat | None = Field(default=None, description="inferred from the file extension when unset")
    columns: dict[str, str] = Field(default_factory=dict, description="task role -> column name")
    labels: list[str] | None = Field(default=None, description="label names in id order; inferred from train when unset")
    validation_split: float = Field(default=0.1, gt=0, lt=1)
    split_seed: int = 42
    max_train_samples: int | None = Field(default=None, gt=0)
    max_eval_samples: int | None = Field(default=None, gt=0)
    max_test_samples: int | None = Field(default=None, gt=0)
    strip_html: bool = Field(default=False, description="replace <br /> and other tags in text columns with spaces")
    streaming: bool | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="read train while training instead of loading it first (needs data.validation); "
        "unset: stream when the train files total 2 GiB or more",
    )
    qa: QuestionAnsweringSpec | None = Field(
        default=None, exclude_if=lambda v: v is None, description="question-answering options (unset: defaults)"
    )
    source_prefix: str | None = Field(
        default=None, description="seq2seq: text put before every source, e.g. 'translate English to German: '"
    )

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None:
            if len(labels) < 2:
                raise ValueError("must list at least 2 labels")
            if len(set(labels)) != len(labels):
                raise ValueError("must not repeat a label")
        return labels


class EarlyStoppingSpec(_Strict):
    metric: str = Field(min_length=1, description="validation metric to watch, e.g. accuracy or loss")
    patience: int = Field(default=3, gt=0, description="evaluations without improvement before stopping")
    threshold: float = Field(default=0.0, ge=0)


class FreezeSpec(_Strict):
    """Which pretrained weights stay fixed. `encoder: true` trains the task head only."""

    embeddings: bool = False
    lower_layers: int = Field(default=0, ge=0, description="freeze the N lowest encoder layers")
    encoder: bool = Field(
        default=False, description="freeze everything but the task head (seq2seq: the encoder; decoder trains)"
    )


class LoraSpec(_Strict):
    r: int = Field(default=8, gt=0)
    alpha: int = Field(default=16, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    target_modules: list[str] | None = Field(default=None, description="defaults to the attention projections")
    merge: bool = Field(default=False, description="also save the adapter merged into a full model")


class TrainSpec(_Strict):
    epochs: float = Field(default=3.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0, description="overrides epochs when set")
    learning_rate: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=32, gt=0, description="per device")
    eval_batch_size: int | None = Field(default=None, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup: float = Field(default=0.0, ge=0, description="fraction of all steps if < 1, else a number of steps")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "polynomial", "cosine_with_restarts"] = "linear"
    optimizer: Literal["adamw", "sgd"] = "adamw"
    dropout: float | None = Field(default=None, ge=0, lt=1, description="overrides the model's dropout")
    max_seq_length: int = Field(default=128, gt=0)
    max_target_length: int | None = Field(default=None, gt=0, description="seq2seq: target tokens; default max_seq_length")
    packing: bool = Field(
        default=False, description="causal-lm: pack short training samples into full max_seq_length sequences"
    )
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 on GPUs that support it, else fp32"
    )
    group_by_length: bool = Field(default=True, description="batch similar lengths together: far less padding")
    metric: str | None = Field(default=None, description="validation metric that picks the best model; task default")
    early_stopping: EarlyStoppingSpec | None = None
    freeze: FreezeSpec = Field(default_factory=FreezeSpec)
    lora: LoraSpec | None = None
    checkpoint_every: int | None = Field(default=None, gt=0, description="steps; each epoch when unset")
    keep_checkpoints: int = Field(default=2, gt=0)
    logging_steps: int = Field(default=10, gt=0)
    dataloader_workers: int = Field(default=0, ge=0)


class GenerationSpec(_Strict):
    """How seq2seq and causal-lm models generate text at evaluation and prediction."""

    max_new_tokens: int = Field(default=64, gt=0)
    num_beams: int = Field(default=1, gt=0, description="1: greedy decoding")


class StorageSpec(_Strict):
    """Where runs live. Credentials are read from the standard AWS environment variables."""

    root: str = Field(default=".kubetune", min_length=1, description="local folder or s3://bucket/prefix")
    endpoint_url: str | None = Field(default=None, description="any S3-compatible endpoint (MinIO, Ceph, R2, ...)")
    region: str | None = None

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s):// URL")
        return value


class ResourcesSpec(_Strict):
    """Compute per job. Used by the Kubernetes renderer; a local run ignores what it cannot use."""

    profile: str | None = Field(default=None, description="named preset, e.g. cpu, gpu-1, gpu-8, gpu-8x4")
    nodes: int = Field(default=1, gt=0)
    gpus_per_node: int = Field(default=0, ge=0)
    cpu: str | None = Field(default=None, description="per node, a Kubernetes quantity: 4, 500m")
    memory: str | None = Field(default=None, description="per node, a Kubernetes quantity: 16Gi")

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        """A profile fills every field the spec leaves out; fields the spec sets win."""
        if isinstance(data, dict) and isinstance(data.get("profile"), str) and data["profile"] in PROFILES:
            data = {**PROFILES[data["profile"]], **{k: v for k, v in data.items() if v is not None}}
        return data

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


def _check_quantity(value: Any) -> Any:
    """Kubernetes resource quantities: numbers (YAML may give ints) become strings."""
    if isinstance(value, bool):
        raise ValueError(f"must be a Kubernetes quantity such as 4, 500m or 16Gi (got {value!r})")
    if isinstance(value, (int, float)):
        value = str(value)
    if isinstance(value, str) and not QUANTITY.match(value):
        raise ValueError(f"must be a Kubernetes quantity such as 4, 500m or 16Gi (got {value!r})")
    return value


class EgressRule(_Strict):
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


def _check_dns_subdomain(value: str | None) -> str | None:
    if value is not None and (len(value) > 253 or not DNS_SUBDOMAIN.match(value)):
        raise ValueError(f"must be a DNS-1123 name: lowercase letters, digits, '-' and '.' (got {value!r})")
    return value


class KubernetesSpec(_Strict):
    """How the job's pods run on a cluster. A local run ignores this section."""

    namespace: str | None = Field(default=None, description="unset: the namespace kubectl/kubeconfig uses")
    queue: str | None = Field(default=None, description="Kueue LocalQueue (kueue.x-k8s.io/queue-name)")
    service_account: str | None = Field(default=None, description="pods get no API token either way")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "Always"
    image_pull_secrets: list[str] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Kubernetes tolerations, as in a pod spec")
    affinity: dict[str, Any] | None = Field(default=None, description="Kubernetes affinity, as in a pod spec")
    priority_class: str | None = None
    storage_secret: str | None = Field(
        default="kubetune-storage",
        description="Secret with S3 credentials; null when pods get them otherwise (IRSA, workload identity)",
    )
    storage_credentials: Literal["file", "env"] = Field(
        default="file",
        description="file: the Secret's key `credentials` is an AWS credentials file (AWS_SHARED_CREDENTIALS_FILE); "
        "env: the Secret's keys (AWS_ACCESS_KEY_ID, ...) become environment variables",
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
        description="unset: all egress allowed; a list: only these destinations, DNS and the job's own pods",
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

    @field_validator("labels")
    @classmethod
    def _label_values(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not LABEL_KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
                raise ValueError(f"{key!r} is not a valid label key")
            if len(value) > 63 or not LABEL_VALUE.match(value):
                raise ValueError(f"{key}: {value!r} is not a valid label value (63 characters: letters, digits, '-_.')")
        return labels

    @field_validator("cache_size", "scratch_size", "shm_size", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        return _check_quantity(value)


class JobSpec(_Strict):
    """A fine-tuning job: what to train, on what, how, and where results go."""

    name: str = Field(description="DNS-1123 label: lowercase letters, digits and '-'")
    task: Task = "text-classification"
    model: ModelSpec
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)
    image: str = Field(default="ghcr.io/kubetune/kubetune:0.1.0", min_length=1)

    @field_validator("name")
    @classmethod
    def _dns_safe(cls, name: str) -> str:
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters (got {len(name)})")
        if not DNS_LABEL.match(name):
            raise ValueError("must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending alphanumeric")
        return name

    @model_validator(mode="after")
    def _columns_fit_task(self) -> "JobSpec":
        roles = TASK_COLUMNS[self.task]
        unknown = sorted(set(self.data.columns) - set(roles))
        if unknown:
            raise ValueError(
                f"data.columns: unknown role {unknown[0]!r} for task {self.task} (roles: {', '.join(roles)})"
            )
        return self

    @model_validator(mode="after")
    def _task_options_fit(self) -> "JobSpec":
        qa = self.data.qa
        if qa is not None and self.task != "question-answering":
            raise ValueError(f"data.qa: only for task question-answering (task is {self.task})")
        if qa is not None and qa.doc_stride is not None and qa.doc_stride >= self.train.max_seq_length // 2:
            raise ValueError(
                f"data.qa.doc_stride: must be < half of train.max_seq_length ({self.train.max_seq_length // 2})"
            )
        freeze = self.train.freeze
        if self.train.lora is not None and (freeze.encoder or freeze.embeddings or freeze.lower_layers):
            raise ValueError("train.freeze: not combinable with train.lora (LoRA already freezes the pretrained weights)")
        return self

    def column(self, role: str) -> str | None:
        """The user's column for a task role, or the task's default name."""
        return self.data.columns.get(role, TASK_COLUMNS[self.task].get(role))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Loading


def _reject_secrets(data: Any, where: str = "") -> None:
    """Refuse credentials anywhere in the spec, naming the field."""
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{where}.{key}" if where else str(key)
            if str(key).lower() in SECRET_KEYS:
                raise SpecError(
                    f"{path}: credentials must not be written in a job spec; "
                    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment (or a Kubernetes Secret)"
                )
            _reject_secrets(value, path)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `key.path=value` override in place. Splits on the first `=`; the value is
    parsed as YAML so numbers and booleans get their types (`train.epochs=1`)."""
    if "=" not in assignment:
        raise SpecError(f"--set {assignment}: expected key.path=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise SpecError(f"--set {assignment}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {assignment}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


_MESSAGES = {
    "extra_forbidden": lambda e: "unknown field",
    "missing": lambda e: "required field is missing",
    "greater_than": lambda e: f"must be > {e['ctx']['gt']}",
    "greater_than_equal": lambda e: f"must be >= {e['ctx']['ge']}",
    "less_than": lambda e: f"must be < {e['ctx']['lt']}",
    "less_than_equal": lambda e: f"must be <= {e['ctx']['le']}",
    "literal_error": lambda e: f"must be one of {e['ctx']['expected']}",
    "string_too_short": lambda e: "must not be empty",
}


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind in _MESSAGES:
        message = _MESSAGES[kind](err)
    else:
        message = err["msg"].removeprefix("Value error, ")
        if kind.endswith("_type") or kind.endswith("_parsing"):
            message = f"{message} (got {err.get('input')!r})"
    if message.startswith("data.columns:"):  # model-level validators name the field themselves
        return message
    return f"{loc}: {message}" if loc else message


def validate_spec(data: Any, source: str = "<spec>") -> JobSpec:
    """Validate a parsed mapping; every error becomes one SpecError line naming the field."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a YAML mapping, got {type(data).__name__}")
    try:
        _reject_secrets(data)
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(_format_error(e) for e in exc.errors())
        raise SpecError(f"{source}: {errors}") from None


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Read, override and validate a job spec file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: malformed YAML: {where}{problem}") from None
    if data is None:
        data = {}
    if isinstance(data, dict):
        for assignment in overrides:
            try:
                apply_override(data, assignment)
            except SpecError as exc:
                raise SpecError(f"{path}: {exc}") from None
    return validate_spec(data, str(path))
