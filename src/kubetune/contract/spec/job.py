"""The job spec: the one contract the launcher and the container share.

The launcher validates a YAML file against these models, embeds the *resolved* spec (every
default filled in) in a ConfigMap, and the container validates that same file again, so both
sides always agree on what a job means. Every model forbids unknown fields: a typo is an error
that names the field, never a silently ignored setting.

The public names live here: the models, `load_spec`, `validate_spec`, `apply_override` and
`SpecError`. The cluster sections (`resources:`, `kubernetes:`) are in `spec_kubernetes`, file
reading and error formatting in `spec_loading`; this module re-exports what callers use.

This module must stay light (pydantic + yaml only): the launcher imports it on a laptop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from kubetune.contract.errors import SpecError
from kubetune.contract.spec.checks import check_checkpoint_every, check_endpoint, check_image, check_uri, check_writable_uri
from kubetune.contract.spec.kubernetes import DNS_LABEL, EgressRule, KubernetesSpec, ResourcesSpec, Strict, check_elastic_engine
from kubetune.contract.spec.loading import apply_override, format_errors, read_spec_file, screen_secrets, spec_file_label
from kubetune.contract.spec.retrain import PromotionSpec, RetrainSpec
from kubetune.contract.spec.sweep import SweepSpec, check_sweep
from kubetune.contract.spec.speed import DEFAULT_ATTENTION, Attention, FsdpSpec, check_structure as check_speed_structure
from kubetune.contract.spec.tracking import TrackingSpec

__all__ = [
    "TASK_COLUMNS",
    "DataSpec",
    "EarlyStoppingSpec",
    "EgressRule",
    "FreezeSpec",
    "GenerationSpec",
    "JobSpec",
    "KubernetesSpec",
    "LoraSpec",
    "ModelSpec",
    "PromotionSpec",
    "QuestionAnsweringSpec",
    "ResourcesSpec",
    "RetrainSpec",
    "SpecError",
    "StorageSpec",
    "SweepSpec",
    "Task",
    "TrainSpec",
    "apply_override",
    "load_spec",
    "validate_spec",
]

# Sections a resolved spec leaves out when unset.
OPTIONAL_SECTIONS = ("retrain", "promotion", "tracking", "sweep")

# The task names; `typing.get_args(Task)` lists them.
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

DataFormat = Literal["csv", "tsv", "json", "jsonl", "parquet", "squad"]

# Derived object names (`<name>-evaluate`, pod `<name>-train-<index>-xxxxx`, CronJob suffixes)
# must stay within Kubernetes' 63-character label limit.
MAX_NAME_LENGTH = 40


class ModelSpec(Strict):
    """Where the pretrained weights come from: a store path, an object-store URI, a local
    folder (`/…`, `./…`) or, when none of those exists, a Hugging Face Hub id."""

    source: str = Field(min_length=1, description="a path under storage.root, an s3:// or hf://org/name[@rev] URI, a local folder or a Hub id")
    revision: str | None = Field(default=None, description="Hub branch, tag or commit of model.source and the tokenizer (a Hub id, or an hf:// URI without @rev)")
    tokenizer: str | None = Field(default=None, description="defaults to model.source")

    _uris = field_validator("source", "tokenizer")(lambda cls, v: check_uri(v))


class QuestionAnsweringSpec(Strict):
    """question-answering: how long contexts are windowed and how answers are decoded."""

    doc_stride: int | None = Field(
        default=None, gt=0, description="tokens of overlap between windows of a long context; default max_seq_length // 4"
    )
    max_answer_length: int = Field(default=30, gt=0, description="longest answer span, in tokens")
    n_best: int = Field(default=20, gt=0, description="start and end candidates per window")


class DataSpec(Strict):
    """Dataset files and how their columns map to the task's roles."""

    train: str = Field(min_length=1, description="a file, glob or prefix (resolved as a run starts; an hf:// one pinned to a commit); relative: under storage.root")
    validation: str | None = Field(default=None, description="picks the best model; unset: data.validation_split of train held out")
    test: str | None = Field(default=None, description="what evaluate scores (unset: data.validation); the retrain gate's default")
    format: DataFormat | None = Field(default=None, description="inferred from the file extension when unset")
    columns: dict[str, str] = Field(default_factory=dict, description="task role -> column name")
    labels: list[str] | None = Field(default=None, description="label names in id order; inferred from train when unset")
    validation_split: float = Field(default=0.1, gt=0, lt=1, description="share of train held out when data.validation is unset")
    split_seed: int = Field(default=42, description="seed of that held-out split")
    max_train_samples: int | None = Field(default=None, gt=0, description="the first N rows only (after the split; not streamed)")
    max_eval_samples: int | None = Field(default=None, gt=0, description="validate on the first N rows only")
    max_test_samples: int | None = Field(default=None, gt=0, description="score the first N test rows only")
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

    _uris = field_validator("train", "validation", "test")(lambda cls, v: check_uri(v))

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None:
            if len(labels) < 2:
                raise ValueError("must list at least 2 labels")
            if len(set(labels)) != len(labels):
                raise ValueError("must not repeat a label")
        return labels


class EarlyStoppingSpec(Strict):
    metric: str = Field(min_length=1, description="validation metric to watch, e.g. accuracy or loss")
    patience: int = Field(default=3, gt=0, description="evaluations without improvement before stopping")
    threshold: float = Field(default=0.0, ge=0, description="the smallest change that counts as an improvement")


class FreezeSpec(Strict):
    """Which pretrained weights stay fixed. `encoder: true` trains the task head only."""

    embeddings: bool = Field(default=False, description="freeze the embedding layer")
    lower_layers: int = Field(default=0, ge=0, description="freeze the N lowest encoder layers")
    encoder: bool = Field(
        default=False, description="freeze everything but the task head (seq2seq: the encoder; decoder trains)"
    )


class LoraSpec(Strict):
    r: int = Field(default=8, gt=0, description="rank of the adapter matrices")
    alpha: int = Field(default=16, gt=0, description="scaling: the adapter's update is multiplied by alpha / r")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: list[str] | None = Field(default=None, description="defaults to the attention projections")
    merge: bool = Field(default=False, description="also save the adapter merged into a full model")


class TrainSpec(Strict):
    epochs: float = Field(default=3.0, gt=0, description="passes over the training data; may be fractional")
    max_steps: int | None = Field(default=None, gt=0, description="overrides epochs when set")
    learning_rate: float = Field(default=5e-5, gt=0, description="peak learning rate, reached after the warmup")
    batch_size: int = Field(default=32, gt=0, description="per device")
    eval_batch_size: int | None = Field(default=None, gt=0, description="per device, to evaluate and predict; default 2 x batch_size")
    gradient_accumulation_steps: int = Field(default=1, gt=0, description="batches per optimizer step")
    global_batch_size: int | None = Field(default=None, gt=0, exclude_if=lambda v: v is None, description=(
        "samples per optimizer step over all ranks, kept as an elastic gang changes size (docs/elastic.md#exact-across-world-sizes); "
        "unset: batch_size x gradient_accumulation_steps x the full gang's processes"))
    weight_decay: float = Field(default=0.01, ge=0, description="the optimizer's weight decay")
    warmup: float = Field(default=0.0, ge=0, description="fraction of all steps if < 1, else a number of steps")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "polynomial", "cosine_with_restarts"] = Field(
        default="linear", description="the learning-rate schedule (the Trainer's lr_scheduler_type)")
    optimizer: Literal["adamw", "sgd"] = Field(default="adamw", description="adamw: torch's fused AdamW; sgd: plain SGD")
    dropout: float | None = Field(default=None, ge=0, lt=1, description="overrides the model's dropout")
    max_seq_length: int = Field(default=128, gt=0, description="tokens per input; longer ones are cut (question-answering: windowed)")
    max_target_length: int | None = Field(default=None, gt=0, description="seq2seq: target tokens; default max_seq_length")
    packing: bool = Field(default=False, description="causal-lm: pack short training samples into full max_seq_length sequences")
    seed: int = Field(default=42, description="seed of the weight initialisation and the data order")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(default="auto", description=(
        "auto: bf16 on GPUs that support it and on CPUs with bf16 units (AMX, AVX-512 BF16), else fp32"))
    group_by_length: bool = Field(default=True, description="batch similar lengths together: far less padding")
    metric: str | None = Field(default=None, description="validation metric that picks the best model; task default")
    early_stopping: EarlyStoppingSpec | None = Field(default=None, description="stop when a validation metric stops improving")
    freeze: FreezeSpec = Field(default_factory=FreezeSpec, description="which pretrained weights stay fixed")
    lora: LoraSpec | None = Field(default=None, description="train LoRA adapters; the pretrained weights stay fixed")
    checkpoint_every: Annotated[int | Literal["auto"] | None, BeforeValidator(check_checkpoint_every)] = Field(default=None, description=(
        "steps; each epoch when unset; auto: from the measured save cost and resources.interruptions_per_hour "
        "(Young/Daly, docs/elastic.md#checkpoint_every-auto)"))
    keep_checkpoints: int = Field(default=2, gt=0, description="committed checkpoints kept while training: the newest, and the best")
    keep_checkpoints_after_success: int = Field(
        default=0, ge=0,
        description="checkpoints kept once the model is committed (newest first, with the best); 0: none, "
                    "since a finished run resumes nothing and each checkpoint holds the optimizer state",
    )
    logging_steps: int = Field(default=10, gt=0, description="steps between logged losses (train.jsonl, progress, trackers)")
    dataloader_workers: int | None = Field(
        default=0, ge=0, description="data loader worker processes per rank; null: sized from the pod's CPUs (0 without a GPU)"
    )
    attention: Attention = Field(
        default=DEFAULT_ATTENTION, exclude_if=lambda v: v == DEFAULT_ATTENTION,
        description="attention kernel (from_pretrained attn_implementation); sdpa falls back to eager where the "
        "architecture lacks it; flash_attention_2 needs CUDA and the flash_attn package",
    )
    gradient_checkpointing: bool = Field(
        default=False, exclude_if=lambda v: not v,
        description="recompute activations in the backward pass: less memory, about 20-30% more compute",
    )
    compile: bool = Field(default=False, exclude_if=lambda v: not v, description="torch.compile the model")
    tf32: bool | None = Field(
        default=None, exclude_if=lambda v: v is None,
        description="TF32 matmuls; null: on where the GPU supports it (Ampere or newer), else off",
    )
    fsdp: FsdpSpec | None = Field(
        default=None, exclude_if=lambda v: v is None, description="shard the model across GPUs (needs CUDA, 2+ GPUs)"
    )
    quantization: Literal["4bit"] | None = Field(
        default=None, exclude_if=lambda v: v is None,
        description="4bit: QLoRA, a frozen 4-bit base (bitsandbytes) under LoRA adapters; causal-lm with train.lora, CUDA",
    )
    max_restarts: int = Field(
        default=3, ge=0, description="multi-node: restarts of the whole gang from LATEST after a rank fails (torchrun --max-restarts)"
    )
    collective_timeout_seconds: int = Field(
        default=300, gt=0, description="how long ranks wait in a collective for a lost peer (TrainingArguments.ddp_timeout)"
    )


class GenerationSpec(Strict):
    """How seq2seq and causal-lm models generate text at evaluation and prediction."""

    max_new_tokens: int = Field(default=64, gt=0, description="the most tokens generated per sample")
    num_beams: int = Field(default=1, gt=0, description="1: greedy decoding")


class StorageSpec(Strict):
    """Where runs live. Credentials come from each store's environment, never the spec (docs/storage.md)."""

    root: str = Field(default=".kubetune", min_length=1, description="local folder, s3://, gs:// or az://bucket/prefix")
    endpoint_url: str | None = Field(default=None, description="an S3-compatible (MinIO, R2, ...) or GCS endpoint; not az://")
    region: str | None = Field(default=None, description="the S3 region, for stores that need one")
    startup_timeout_seconds: float = Field(
        default=300, ge=0,
        description="how long a pod retries an unreachable store (refused, timeouts, 5xx, throttling) "
        "before it exits with a code the Job retries; every store request also waits at most this long "
        "for an answer (at least 5 s, at most 60 s)",
    )
    lease_seconds: int = Field(
        default=60, gt=0, le=3600,
        description="a run folder has one writer: its lease in the store, renewed by the writer every third of "
        "this; a writer that died stops blocking the run after it, and a writer that could not renew within it "
        "stops writing (keep it above the store's read timeout)",
    )

    _uris = field_validator("root")(lambda cls, v: check_writable_uri(v))

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_endpoint(value, info.data.get("root"))


# Parts of a spec that define what a run computes; storage, resources and image may change
# between attempts of the same run (a retried pod on another node pool).
RUN_DEFINING = ("task", "model", "data", "train")
# train fields that say how a run is kept and supervised, not what it computes: an attempt may
# change them (keep more checkpoints, wait longer for a lost peer) without becoming another run.
OPERATIONAL_TRAIN_FIELDS = ("keep_checkpoints", "keep_checkpoints_after_success", "max_restarts",
                            "collective_timeout_seconds")


def run_defining(spec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a spec (as `JobSpec.model_dump(mode="json")` or a stored spec.yaml) that
    define what its run computes: RUN_DEFINING, without the operational train fields."""
    parts = {key: spec.get(key) for key in RUN_DEFINING}
    if isinstance(parts["train"], dict):
        parts["train"] = {k: v for k, v in parts["train"].items() if k not in OPERATIONAL_TRAIN_FIELDS}
    return parts


class JobSpec(Strict):
    """A fine-tuning job: what to train, on what, how, and where results go."""

    name: str = Field(description="DNS-1123 label: lowercase letters, digits and '-'")
    task: Task = Field(default="text-classification", description="what the model learns: its head, column roles and metrics")
    model: ModelSpec = Field(description="the pretrained model to start from")
    data: DataSpec = Field(description="the dataset files and their columns")
    train: TrainSpec = Field(default_factory=TrainSpec, description="hyperparameters, what trains, checkpoints, speed, recovery")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="text generation (seq2seq, causal-lm)")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="where data, models and runs live")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="nodes, GPUs, CPU and memory per pod, or a profile")
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec, description="how the pods run on a cluster")
    tracking: TrackingSpec | None = Field(default=None, description="experiment trackers: TensorBoard, MLflow, W&B")
    # Optional sections, left out of the resolved YAML when unset (docs/retraining.md).
    retrain: RetrainSpec | None = Field(default=None, description="scheduled retraining: skip unchanged data, warm start")
    promotion: PromotionSpec | None = Field(default=None, description="the gate a retrained model passes to become current")
    sweep: SweepSpec | None = Field(
        default=None, description="a hyperparameter search over this job: `kubetune sweep` (docs/sweeps.md)"
    )
    image: str = Field(default="ghcr.io/kubetune/kubetune:0.1.0", min_length=1, description="the image every pod runs")

    _image = field_validator("image")(lambda cls, v: check_image(v))

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
        check_speed_structure(self)  # 4bit without LoRA, FSDP on fewer than 2 GPUs, ...
        check_elastic_engine(self.resources, self.kubernetes)  # a node range on JobSet or TrainJob
        return self

    @model_validator(mode="after")
    def _sweep_fits(self) -> "JobSpec":
        if self.sweep is not None:  # each parameter a sweepable field, each bound a valid spec, a known objective
            check_sweep(self, JobSpec, self.task)
        return self

    # The file this spec was loaded from, as the user named it (not part of the spec: never
    # dumped); the renderer passes it to the pod as names.ENV_SPEC_FILE.
    _spec_file: str | None = PrivateAttr(default=None)

    @property
    def spec_file(self) -> str | None:
        """The spec file's name as given on the command line (None when not loaded from a
        file, or not fit for a pod's environment: see spec_loading.spec_file_label)."""
        return self._spec_file

    def column(self, role: str) -> str | None:
        """The user's column for a task role, or the task's default name."""
        return self.data.columns.get(role, TASK_COLUMNS[self.task].get(role))

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        for section in OPTIONAL_SECTIONS:  # unset: absent, so specs without them render as before
            if data.get(section) is None:
                data.pop(section, None)
        return yaml.safe_dump(data, sort_keys=False)


def validate_spec(data: Any, source: str = "<spec>", overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Validate a parsed mapping; every error becomes one SpecError line naming the field (and
    the `--set` override that wrote it, when one did)."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a YAML mapping, got {type(data).__name__}")
    screen_secrets(data, source)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise format_errors(source, exc, overrides, JobSpec) from None


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Read, override and validate a job spec file."""
    path = Path(path)
    spec = validate_spec(read_spec_file(path, overrides), str(path), overrides)
    spec._spec_file = spec_file_label(str(path))
    return spec
