"""text-classification: single texts or pairs → one label (the IMDB/SST-2 case).

Labels may be strings (`Positive`) or integers (`0`/`1`) in the files; they are names to us,
mapped to ids in a fixed order (listed in the spec, else sorted from the train split). The
label map travels with the model in its config (id2label/label2id).
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

import datasets
import numpy as np

from kubetune.workload.errors import DataError
from kubetune.workload.tasks.base import Evaluation, LabelledTask, Prepared

# Metric name prefix of one class's F1 on the test/gate split: f1_class_<label>.
PER_CLASS_F1 = "f1_class_"

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedTokenizerBase
    from transformers.trainer_utils import PredictionOutput



def _label_names(values: list[Any]) -> list[str]:
    names = {str(v) for v in values if v is not None}
    # Numeric labels in numeric order (0, 1, 2, 10), strings alphabetically.
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


class TextClassification(LabelledTask):
    name = "text-classification"
    default_metric = "accuracy"
    greater_is_better = True
    metric_names = ("accuracy", "f1_macro", "loss")
    # What `score` reports besides: a promotion gate may compare any of them (and f1_class_<label>).
    score_metric_names = ("accuracy", "loss", *(f"{m}_{a}" for m in ("precision", "recall", "f1")
                                                  for a in ("macro", "micro", "weighted")))
    per_class_prefix = PER_CLASS_F1
    input_roles = ("text", "text_pair")

    # -- data ------------------------------------------------------------------------------------
    def label_map(self, train: datasets.Dataset) -> list[str]:
        column = self.spec.column("label")
        if self.spec.data.labels:
            labels = list(self.spec.data.labels)
        else:
            labels = _label_names(train[column])
            if len(labels) < 2:
                raise DataError(f"data.train: column {column!r} has fewer than 2 distinct labels ({labels})")
        return labels

    def check_labels(self, ds: datasets.Dataset, labels: list[str], field: str) -> None:
        column = self.spec.column("label")
        seen = set(_label_names(ds[column])) if len(ds) else set()
        if any(v is None for v in ds[column]):
            raise DataError(f"{field}: column {column!r} has empty labels")
        unknown = sorted(seen - set(labels))
        if unknown:
            raise self.unknown_label(field, "label", unknown[0], labels)

    def _tokenize(self, ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str], with_labels: bool = True) -> datasets.Dataset:
        text, pair, label = self.spec.column("text"), self.spec.column("text_pair"), self.spec.column("label")
        label_id = {name: i for i, name in enumerate(labels)}
        max_length = min(self.spec.train.max_seq_length, tokenizer.model_max_length)

        def encode(batch: dict[str, list]) -> dict[str, list]:
            texts = [t if t is not None else "" for t in batch[text]]
            pairs = [t if t is not None else "" for t in batch[pair]] if pair else None
            # No padding here: the collator pads each batch to its own longest sequence.
            enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
            if with_labels:
                enc["labels"] = [label_id[str(v)] for v in batch[label]]
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        return ds.map(encode, batched=True, remove_columns=ds.column_names)

    def encode(self, ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str]) -> datasets.Dataset:
        return self._tokenize(ds, tokenizer, labels)

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        from transformers import DataCollatorWithPadding

        from kubetune.workload.model.devices import pad_multiple

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple())  # 8 on GPUs only

    # -- model -----------------------------------------------------------------------------------
    def auto_model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def model_kwargs(self, prepared: Prepared) -> dict[str, Any]:
        labels = prepared.labels or []
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
        }

    # -- metrics ---------------------------------------------------------------------------------
    def compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        logits, labels = eval_pred.predictions, eval_pred.label_ids
        preds = np.asarray(logits).argmax(-1)
        return {
            "accuracy": float(accuracy_score(labels, preds)),
            "f1_macro": float(f1_score(labels, preds, average="macro", zero_division=0)),
        }

    def score(self, output: PredictionOutput, raw: datasets.Dataset, features: datasets.Dataset, labels: list[str] | None) -> Evaluation:
        from sklearn.metrics import accuracy_score, classification_report, precision_recall_fscore_support

        labels = labels or []
        y_true = np.asarray(output.label_ids)
        y_pred = np.asarray(output.predictions).argmax(-1)
        ids = list(range(len(labels)))
        metrics: dict[str, Any] = {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "loss": float(output.metrics.get("test_loss", float("nan"))),
            "num_samples": int(len(y_true)),
        }
        for average in ("macro", "micro", "weighted"):
            p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=average, zero_division=0)
            metrics[f"precision_{average}"] = float(p)
            metrics[f"recall_{average}"] = float(r)
            metrics[f"f1_{average}"] = float(f)
        _, _, per_class, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=None, zero_division=0)
        for name, f in zip(labels, per_class):  # per-class floors for the promotion gate
            metrics[f"{PER_CLASS_F1}{name}"] = float(f)
        report = classification_report(y_true, y_pred, labels=ids, target_names=labels, digits=4, zero_division=0)
        return Evaluation(metrics=metrics, report=report)

    # -- batch prediction --------------------------------------------------------------------------
    def prepare_inputs(self, rows: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> datasets.Dataset:
        if not labels:
            raise DataError("model: the trained model carries no label map")
        return self._tokenize(rows, tokenizer, labels, with_labels=False)

    def format_predictions(self, outputs: list[Any], rows: datasets.Dataset, features: datasets.Dataset,
                           labels: list[str] | None) -> list[dict[str, Any]]:
        """The most probable label, its probability, and every label's probability."""
        labels = labels or []
        out = []
        for logits in outputs:
            z = np.asarray(logits, dtype=np.float64)
            probs = np.exp(z - z.max())
            probs /= probs.sum()
            best = int(probs.argmax())
            out.append({"prediction": labels[best], "score": float(probs[best]),
                        "scores": {name: float(p) for name, p in zip(labels, probs)}})
        return out
