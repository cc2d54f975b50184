"""What every task provides to the shared train/evaluate entrypoints.

A task knows its model class, how to turn rows into model inputs, how to batch them and how to
score predictions. Everything else (storage, checkpoints, logging, distribution) is shared.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, TYPE_CHECKING

import datasets

from kubetune.workload.errors import DataError
from kubetune.contract.spec.job import JobSpec

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedModel, PreTrainedTokenizerBase
    from transformers.trainer_utils import PredictionOutput

    from kubetune.workload.data.tables import Splits


@dataclass
class Prepared:
    """Tokenized splits plus what the task learned from the data (e.g. its label map)."""

    train: datasets.Dataset
    validation: datasets.Dataset
    labels: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Test-split results: flat metrics for eval/metrics.json and a human-readable report."""

    metrics: dict[str, Any]
    report: str


def apply_generation_settings(model: PreTrainedModel, generation: Any) -> None:
    """Generation length and beams from the spec's `generation` section, kept in the model's
    saved generation_config (shared by the generative tasks)."""
    model.generation_config.max_new_tokens = generation.max_new_tokens
    model.generation_config.max_length = None
    model.generation_config.num_beams = generation.num_beams


class Task(abc.ABC):
    """Base class: subclasses fill in the task-specific steps."""

    name: str = ""
    default_metric: str = "loss"
    greater_is_better: bool = False
    # Validation metrics `train.metric` / `train.early_stopping.metric` may name.
    metric_names: tuple[str, ...] = ("loss",)
    # Generation-based tasks use Seq2SeqTrainer; the others the plain Trainer.
    generative: bool = False
    # Roles a batch-prediction input must have (targets/labels are optional there).
    input_roles: tuple[str, ...] = ()
    # True when `preprocess_logits` must run (the Trainer gets it as preprocess_logits_for_metrics).
    uses_preprocess_logits: bool = False

    def __init__(self, spec: JobSpec):
        self.spec = spec

    def columns(self) -> dict[str, str | None]:
        """Role -> column for the roles this task reads (None: role not used)."""
        from kubetune.contract.spec.job import TASK_COLUMNS

        return {role: self.spec.column(role) for role in TASK_COLUMNS[self.spec.task]}

    def check_spec(self) -> None:
        """Task-level spec checks that need the task's own knowledge (metric names)."""
        from kubetune.contract.spec.job import SpecError

        train = self.spec.train
        for where, metric in (("train.metric", train.metric),
                              ("train.early_stopping.metric", train.early_stopping and train.early_stopping.metric)):
            if metric and metric.removeprefix("eval_") not in self.metric_names:
                raise SpecError(f"{where}: unknown metric {metric!r} for {self.name} (choose: {', '.join(self.metric_names)})")

    def best_metric(self) -> tuple[str, bool]:
        """(metric, greater_is_better) that picks the best checkpoint and drives early stopping."""
        train = self.spec.train
        metric = (train.early_stopping.metric if train.early_stopping else None) or train.metric or self.default_metric
        metric = metric.removeprefix("eval_")
        greater = self.greater_is_better if metric == self.default_metric else not metric.endswith(("loss", "perplexity"))
        return metric, greater

    # -- data ------------------------------------------------------------------------------------
    def check_data(self, splits: Splits) -> None:
        """Task-specific checks of the raw splits (labels etc.); raise DataError."""

    def unknown_label(self, where: str, kind: str, value: str, labels: list[str]) -> DataError:
        """The one line for a label (or tag) the training split does not have, with the hint
        that applies when the labels were inferred from it rather than listed in the spec."""
        hint = f" (set data.labels to list every {kind})" if not self.spec.data.labels else ""
        return DataError(f"{where}: {kind} {value!r} is not among the training {kind}s {labels}{hint}")

    @staticmethod
    def named_splits(splits: Splits) -> list[tuple[datasets.Dataset, str]]:
        """Each split that is present with the spec field that names it in an error line, so
        every task checks train, validation and test alike."""
        named = [(splits.train, "data.train"), (splits.validation, "data.validation"), (splits.test, "data.test")]
        return [(ds, name) for ds, name in named if ds is not None]

    @abc.abstractmethod
    def prepare(self, splits: Splits, tokenizer: PreTrainedTokenizerBase) -> Prepared:
        """Implemented by each task."""

    @abc.abstractmethod
    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        """Implemented by each task."""

    # -- model -----------------------------------------------------------------------------------
    def model_kwargs(self, prepared: Prepared) -> dict[str, Any]:
        return {}

    @abc.abstractmethod
    def auto_model_class(self) -> Any:
        """Implemented by each task."""

    def configure_model(self, model: PreTrainedModel) -> None:
        """Task settings on a loaded model, for training and inference (e.g. generation length)."""

    def preprocess_logits(self, logits: Any, labels: Any) -> Any:
        """Trainer's `preprocess_logits_for_metrics`: shrink logits before they are gathered
        (a language model's [batch, seq, vocab] would not fit); identity by default."""
        return logits

    # -- metrics ---------------------------------------------------------------------------------
    def compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        """Validation metrics during training (the best model is picked by one of them)."""
        return {}

    @abc.abstractmethod
    def prepare_test(self, test: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> datasets.Dataset:
        """Tokenize the test split with the label map the model was trained with."""

    @abc.abstractmethod
    def score(self, output: PredictionOutput, raw: datasets.Dataset, features: datasets.Dataset, labels: list[str] | None) -> Evaluation:
        """Turn `Trainer.predict` output on the test split into metrics and a report."""

    # -- batch prediction --------------------------------------------------------------------------
    def input_columns(self) -> dict[str, str | None]:
        """Role -> column a prediction input must have."""
        return {role: self.spec.column(role) for role in self.input_roles}

    def prepare_inputs(self, rows: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> datasets.Dataset:
        """Tokenize prediction rows (no labels/targets needed); features may be more than rows
        (e.g. long contexts split into windows) as long as `format_predictions` maps them back."""
        raise TypeError(f"{type(self).__name__} must override prepare_inputs and format_predictions, or predict_rows")

    def format_predictions(self, outputs: list[Any], rows: datasets.Dataset, features: datasets.Dataset,
                           labels: list[str] | None) -> list[dict[str, Any]]:
        """One JSON-able dict per input row, in row order, from the model's per-feature
        outputs (logits, each trimmed to its feature's length)."""
        raise TypeError(f"{type(self).__name__} must override prepare_inputs and format_predictions, or predict_rows")

    def predict_rows(self, rows: datasets.Dataset, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None,
                     batch_size: int) -> list[dict[str, Any]]:
        """Predictions with scores for `rows`, one dict per row in order. The default runs the
        model forward over `prepare_inputs` and hands the logits to `format_predictions`;
        generative tasks override this to generate text."""
        from kubetune.workload.model.inference import forward_batches

        features = self.prepare_inputs(rows, tokenizer, labels)
        outputs = forward_batches(model, features, self.collator(tokenizer), batch_size)
        return self.format_predictions(outputs, rows, features, labels)


class LabelledTask(Task):
    """A task whose rows carry labels from a closed set learnt from the training split (text
    and token classification): one label map, every split checked against it, the same
    preparation of train, validation and test."""

    missing_labels = "model: the trained model carries no label map"

    @abc.abstractmethod
    def label_map(self, train: datasets.Dataset) -> list[str]:
        """The labels, in id order: `data.labels` or those the training split holds."""

    @abc.abstractmethod
    def check_labels(self, ds: datasets.Dataset, labels: list[str], field: str) -> None:
        """Raise DataError (naming `field`) for a row whose labels are not in `labels`."""

    @abc.abstractmethod
    def encode(self, ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str]) -> datasets.Dataset:
        """Token ids and label ids of every row."""

    def use_labels(self, labels: list[str]) -> None:
        """Called with the label map before encoding; a task that scores with it keeps it."""

    def check_data(self, splits: Splits) -> None:
        labels = self.label_map(splits.train)
        for ds, name in self.named_splits(splits):
            self.check_labels(ds, labels, name)

    def prepare(self, splits: Splits, tokenizer: PreTrainedTokenizerBase) -> Prepared:
        labels = self.label_map(splits.train)
        self.use_labels(labels)
        return Prepared(
            train=self.encode(splits.train, tokenizer, labels),
            validation=self.encode(splits.validation, tokenizer, labels),
            labels=labels,
        )

    def prepare_test(self, test: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> datasets.Dataset:
        if not labels:
            raise DataError(self.missing_labels)
        self.use_labels(labels)
        self.check_labels(test, labels, "data.test" if self.spec.data.test else "data.validation")
        return self.encode(test, tokenizer, labels)

