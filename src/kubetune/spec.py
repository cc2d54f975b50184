"""The job spec: the one contract the launcher and the container share.

The launcher validates a YAML file against these models, embeds the *resolved* spec (every
default filled in) in a ConfigMap, and the container validates that same file again, so both
sides always agree on what a job means. Every model forbids unknown fields: a typo is an error
that names the field, never a silently ignored setting.

This module must stay light (pydantic + yaml only): the launcher imports it on a laptop.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    encoder: bool = Field(default=False, description="freeze everything but the task head")


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
    cpu: str | None = None
    memory: str | None = None


class JobSpec(_Strict):
    """A fine-tuning job: what to train, on what, how, and where results go."""

    name: str = Field(description="DNS-1123 label: lowercase letters, digits and '-'")
    task: Task = "text-classification"
    model: ModelSpec
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
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
