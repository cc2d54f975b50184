"""token-classification: one tag per word (named-entity recognition, the CoNLL-2003 case).

Rows hold a list of words and a list of IOB2 tags of the same length (`{"tokens": [...],
"ner_tags": ["B-ORG", "O", ...]}`). Words are split into sub-tokens by the model's tokenizer;
the first sub-token of each word carries the word's tag and the others get -100, so they are
ignored by the loss and by the metrics (the standard alignment of BERT's paper and HF's
run_ner.py).

Tags are names. Their order is `data.labels` when the spec lists it, else inferred from the
train split ("O" first, then by entity type, B- before I-). Integer tags (as in exported HF
datasets) are read as ids into `data.labels`, which must then be set.

Metrics are entity-level, as the CoNLL community reports them (seqeval, conlleval-compatible):
precision, recall and F1 overall (micro over entities) and per entity type, plus token
accuracy. On the test split every word is scored: words cut off by `train.max_seq_length`
count as predicted "O" (the report says how many sentences were cut), so a too-short
max_seq_length shows up as lower recall rather than being hidden.
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

import datasets
import numpy as np

from kubetune.workload.errors import DataError
from kubetune.workload.tasks.base import Evaluation, LabelledTask, Prepared

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedTokenizerBase
    from transformers.trainer_utils import PredictionOutput

    from kubetune.contract.spec.job import JobSpec

IGNORE = -100


def _tag_order(tag: str) -> tuple[int, str, int]:
    if tag == "O":
        return (0, "", 0)
    prefix, _, kind = tag.partition("-")
    return (1, kind or prefix, {"B": 0, "I": 1, "E": 2, "S": 3}.get(prefix, 4) if kind else 0)


def infer_tags(rows: list[list[Any]]) -> list[str]:
    """The tag set of the train split, "O" first, then grouped by entity type (B- before I-)."""
    return sorted({str(t) for row in rows for t in (row or [])}, key=_tag_order)


def align_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """Word-level label ids → one label per sub-token: the first sub-token of a word gets the
    word's label; later sub-tokens of the same word and special tokens get -100."""
    aligned: list[int] = []
    previous: int | None = None
    for word in word_ids:
        if word is None:
            aligned.append(IGNORE)
        elif word != previous:
            aligned.append(word_labels[word])
        else:
            aligned.append(IGNORE)
        previous = word
    return aligned


def word_predictions(pred_ids: np.ndarray, label_ids: np.ndarray, n_words: int, labels: list[str]) -> list[str]:
    """Per-word predicted tags of one sentence from per-token argmax ids, using the aligned
    label row (not -100 = first sub-token of a word, in word order); words beyond the
    truncation point are "O"."""
    kept = [labels[int(p)] for p, gold in zip(pred_ids, label_ids) if gold != IGNORE]
    return kept[:n_words] + ["O"] * max(0, n_words - len(kept))


def seqeval_metrics(y_true: list[list[str]], y_pred: list[list[str]]) -> dict[str, Any]:
    """Entity-level precision/recall/F1 (micro over entities), token accuracy, and the same
    per entity type under `per_type`."""
    from seqeval.metrics import accuracy_score, classification_report

    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
    per_type = {
        kind: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
               "support": int(v["support"])}
        for kind, v in report.items()
        if not kind.endswith(" avg")
    }
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_type": per_type,
    }


class TokenClassification(LabelledTask):
    missing_labels = "model: the trained model carries no tag list (labels.json)"

    name = "token-classification"
    default_metric = "f1"
    greater_is_better = True
    metric_names = ("f1", "precision", "recall", "accuracy", "loss")
    input_roles = ("tokens",)

    def __init__(self, spec: JobSpec):
        super().__init__(spec)
        self._labels: list[str] | None = None

    # -- data ------------------------------------------------------------------------------------
    def label_map(self, train: datasets.Dataset) -> list[str]:
        if self.spec.data.labels:
            return list(self.spec.data.labels)
        column = self.spec.column("tags")
        values = [t for row in train[column] for t in (row or [])]
        if values and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in values):
            raise DataError(f"data.train: column {column!r} holds integer tags; list the tag names in data.labels (id order)")
        labels = infer_tags(train[column])
        if len(labels) < 2:
            raise DataError(f"data.train: column {column!r} has fewer than 2 distinct tags ({labels})")
        return labels

    def _names(self, tags: list[Any], labels: list[str]) -> list[str]:
        """Tag values as names (integer tags are ids into data.labels)."""
        if self.spec.data.labels and tags and all(isinstance(t, (int, np.integer)) for t in tags):
            return [labels[int(t)] if 0 <= int(t) < len(labels) else f"<id {t}>" for t in tags]
        return [str(t) for t in tags]

    def check_labels(self, ds: datasets.Dataset, labels: list[str], field: str) -> None:
        words, tags = self.spec.column("tokens"), self.spec.column("tags")
        known = set(labels)
        for i, (row_words, row_tags) in enumerate(zip(ds[words], ds[tags])):
            if not isinstance(row_words, list) or not isinstance(row_tags, list):
                raise DataError(f"{field}: row {i}: columns {words!r} and {tags!r} must hold lists (words, tags)")
            if len(row_words) != len(row_tags):
                raise DataError(f"{field}: row {i}: {len(row_words)} words but {len(row_tags)} tags")
            unknown = [t for t in self._names(row_tags, labels) if t not in known]
            if unknown:
                raise self.unknown_label(f"{field}: row {i}", "tag", unknown[0], labels)

    def _tokenize(self, ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str]) -> datasets.Dataset:
        if not getattr(tokenizer, "is_fast", False):
            raise DataError("model.tokenizer: token-classification needs a fast tokenizer (word_ids for alignment)")
        words, tags = self.spec.column("tokens"), self.spec.column("tags")
        label_id = {name: i for i, name in enumerate(labels)}
        max_length = min(self.spec.train.max_seq_length, tokenizer.model_max_length)

        def encode(batch: dict[str, list]) -> dict[str, list]:
            enc = tokenizer([[str(w) for w in ws] for ws in batch[words]], is_split_into_words=True,
                            truncation=True, max_length=max_length)
            enc["labels"] = [
                align_labels(enc.word_ids(i), [label_id[t] for t in self._names(row_tags, labels)])
                for i, row_tags in enumerate(batch[tags])
            ]
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        return ds.map(encode, batched=True, remove_columns=ds.column_names)

    def use_labels(self, labels: list[str]) -> None:
        self._labels = labels  # the validation metrics name tags by id

    def encode(self, ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str]) -> datasets.Dataset:
        return self._tokenize(ds, tokenizer, labels)

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8)

    # -- model -----------------------------------------------------------------------------------
    def auto_model_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def model_kwargs(self, prepared: Prepared) -> dict[str, Any]:
        labels = prepared.labels or []
        self._labels = labels  # for validation metrics, also when `prepare` was skipped (cached data)
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
        }

    # -- metrics ---------------------------------------------------------------------------------
    def _sequences(self, predictions: Any, label_ids: Any, labels: list[str]) -> tuple[list[list[str]], list[list[str]]]:
        """Gold and predicted tags over the first sub-tokens of the (kept) words."""
        preds = np.asarray(predictions).argmax(-1)
        gold = np.asarray(label_ids)
        y_true, y_pred = [], []
        for p_row, g_row in zip(preds, gold):
            mask = g_row != IGNORE
            y_true.append([labels[int(g)] for g in g_row[mask]])
            y_pred.append([labels[int(p)] for p in p_row[mask]])
        return y_true, y_pred

    def compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        """Validation: entity-level scores over the words that fit into max_seq_length."""
        labels = self._labels or []
        y_true, y_pred = self._sequences(eval_pred.predictions, eval_pred.label_ids, labels)
        metrics = seqeval_metrics(y_true, y_pred)
        return {k: v for k, v in metrics.items() if k != "per_type"}

    def score(self, output: PredictionOutput, raw: datasets.Dataset, features: datasets.Dataset, labels: list[str] | None) -> Evaluation:
        from seqeval.metrics import classification_report

        labels = labels or []
        tags_column = self.spec.column("tags")
        preds = np.asarray(output.predictions).argmax(-1)
        y_true, y_pred, truncated = [], [], 0
        for i, (row_tags, row_aligned) in enumerate(zip(raw[tags_column], features["labels"])):
            gold = self._names(row_tags, labels)
            aligned = np.asarray(row_aligned)
            kept = int((aligned != IGNORE).sum())
            truncated += kept < len(gold)
            y_true.append(gold)
            y_pred.append(word_predictions(preds[i][: len(aligned)], aligned, len(gold), labels))
        metrics: dict[str, Any] = seqeval_metrics(y_true, y_pred)
        metrics["loss"] = float(output.metrics.get("test_loss", float("nan")))
        metrics["num_samples"] = len(y_true)
        metrics["num_truncated"] = truncated
        report = classification_report(y_true, y_pred, digits=4, zero_division=0)
        report += (
            f"\nentity-level (seqeval, conlleval-compatible): precision {metrics['precision']:.4f} "
            f"recall {metrics['recall']:.4f} f1 {metrics['f1']:.4f}; token accuracy {metrics['accuracy']:.4f}\n"
            f"{len(y_true)} sentences, {truncated} cut at max_seq_length={self.spec.train.max_seq_length} "
            "(their cut words count as predicted O)\n"
        )
        return Evaluation(metrics=metrics, report=report)

    # -- batch prediction --------------------------------------------------------------------------
    def prepare_inputs(self, rows: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> datasets.Dataset:
        """Words → sub-tokens as in training, keeping each sub-token's word index (-1: none)."""
        if not labels:
            raise DataError("model: the trained model carries no tag list (labels.json)")
        words = self.spec.column("tokens")
        for i, row_words in enumerate(rows[words]):
            if not isinstance(row_words, list):
                raise DataError(f"--input: row {i}: column {words!r} must hold a list of words")
        max_length = min(self.spec.train.max_seq_length, tokenizer.model_max_length)

        def encode(batch: dict[str, list]) -> dict[str, list]:
            enc = tokenizer([[str(w) for w in ws] for ws in batch[words]], is_split_into_words=True,
                            truncation=True, max_length=max_length)
            enc["word_ids"] = [[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(batch[words]))]
            return enc

        return rows.map(encode, batched=True, remove_columns=rows.column_names)

    def format_predictions(self, outputs: list[Any], rows: datasets.Dataset, features: datasets.Dataset,
                           labels: list[str] | None) -> list[dict[str, Any]]:
        """Per word: the tag of its first sub-token and that tag's probability; words cut off
        by max_seq_length are "O" with probability null (as `evaluate` counts them). `score`
        is the mean probability over the tagged words."""
        labels = labels or []
        words = self.spec.column("tokens")
        out = []
        for logits, word_ids, row_words in zip(outputs, features["word_ids"], rows[words]):
            z = np.asarray(logits, dtype=np.float64)
            probs = np.exp(z - z.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            tags: list[str] = ["O"] * len(row_words)
            scores: list[float | None] = [None] * len(row_words)
            previous = -1
            for position, word in enumerate(word_ids[: len(probs)]):
                if word >= 0 and word != previous:
                    best = int(probs[position].argmax())
                    tags[word], scores[word] = labels[best], float(probs[position][best])
                previous = word
            kept = [p for p in scores if p is not None]
            out.append({"prediction": tags, "score": float(np.mean(kept)) if kept else None, "scores": scores})
        return out
