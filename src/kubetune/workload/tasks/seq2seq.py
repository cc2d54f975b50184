"""seq2seq: text → text with an encoder-decoder model (T5, BART, Marian, mT5, ...).

Translation (multi30k: `source: en`, `target: de`) and summarization (scitldr: `source:
document`, `target: summary`) are the same task here: the roles `source` and `target` name
the columns, `data.source_prefix` is put before every source (T5's "translate English to
German: "), sources are cut to `train.max_seq_length` tokens and targets to
`train.max_target_length`.

Training uses `Seq2SeqTrainer` with `predict_with_generate`, so validation generates text
(`generation.max_new_tokens`, `generation.num_beams`) and every evaluation reports

* `bleu` and `chrf` — sacreBLEU's corpus scores (the translation metrics), and
* `rouge1`, `rouge2`, `rougeL`, `rougeLsum` — F-measures x 100 from `rouge-score` with
  stemming (the summarization metrics),

plus `gen_len` (mean generated tokens) and the teacher-forced `loss`. Both metric families are
cheap next to generation, so every run gets both; pick the one that chooses the best
checkpoint with `train.metric` (`bleu` for translation, `rougeL` for summarization; default:
the validation loss).
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

import datasets
import numpy as np

from kubetune.workload.errors import DataError
from kubetune.workload.tasks.base import Evaluation, Prepared, Task, apply_generation_settings

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedModel, PreTrainedTokenizerBase
    from transformers.trainer_utils import PredictionOutput

    from kubetune.contract.spec.job import JobSpec
    from kubetune.workload.data.tables import Splits

METRICS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len", "loss")
EXAMPLES_IN_REPORT = 5


def text_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """sacreBLEU (BLEU, chrF) and ROUGE F-measures (x 100) of predictions against references."""
    import sacrebleu
    from rouge_score import rouge_scorer

    metrics = {
        "bleu": float(sacrebleu.corpus_bleu(predictions, [references]).score),
        "chrf": float(sacrebleu.corpus_chrf(predictions, [references]).score),
    }
    kinds = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(kinds, use_stemmer=True)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    for kind in kinds:  # the mean F-measure over samples (deterministic, unlike bootstrap)
        metrics[kind] = float(np.mean([s[kind].fmeasure for s in scores]) * 100) if scores else 0.0
    return metrics


def decode(tokenizer: PreTrainedTokenizerBase, ids: Any) -> list[str]:
    """Token ids (padded with -100 by the Trainer's gathering) → stripped texts."""
    ids = np.asarray(ids)
    ids = np.where(ids < 0, tokenizer.pad_token_id, ids)
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


class Seq2Seq(Task):
    name = "seq2seq"
    default_metric = "loss"
    greater_is_better = False
    metric_names = METRICS
    generative = True
    input_roles = ("source",)

    def __init__(self, spec: JobSpec):
        super().__init__(spec)
        self.tokenizer: PreTrainedTokenizerBase = None  # set by prepare/prepare_test: compute_metrics decodes with it

    # -- data ------------------------------------------------------------------------------------
    def check_data(self, splits: Splits) -> None:
        for ds, field in self.named_splits(splits):
            self._check_text_columns(ds, field, ("source", "target"))

    def _check_text_columns(self, ds: datasets.Dataset, field: str, roles: tuple[str, ...]) -> None:
        for role in roles:
            column = self.spec.column(role)
            if column in ds.column_names and ds.features[column].dtype not in ("string", "large_string"):
                raise DataError(f"{field}: data.columns.{role}: column {column!r} must hold text (found {ds.features[column]})")

    def _lengths(self, tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
        t = self.spec.train
        return (min(t.max_seq_length, tokenizer.model_max_length),
                min(t.max_target_length or t.max_seq_length, tokenizer.model_max_length))

    def _encode(self, ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, with_target: bool) -> datasets.Dataset:
        source, target = self.spec.column("source"), self.spec.column("target")
        prefix = self.spec.data.source_prefix or ""
        max_source, max_target = self._lengths(tokenizer)

        def encode(batch: dict[str, list]) -> dict[str, list]:
            # No padding here: DataCollatorForSeq2Seq pads each batch (labels with -100).
            enc = tokenizer([prefix + (s or "") for s in batch[source]], truncation=True, max_length=max_source)
            if with_target:
                targets = [t or "" for t in batch[target]]
                enc["labels"] = tokenizer(text_target=targets, truncation=True, max_length=max_target)["input_ids"]
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return dict(enc)

        return ds.map(encode, batched=True, remove_columns=ds.column_names)

    def prepare(self, splits: Splits, tokenizer: PreTrainedTokenizerBase) -> Prepared:
        self.tokenizer = tokenizer
        return Prepared(train=self._encode(splits.train, tokenizer, True),
                        validation=self._encode(splits.validation, tokenizer, True))

    def prepare_test(self, test: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> datasets.Dataset:
        self.tokenizer = tokenizer
        self._check_text_columns(test, "data.test" if self.spec.data.test else "data.validation", ("source", "target"))
        return self._encode(test, tokenizer, True)

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        from transformers import DataCollatorForSeq2Seq

        self.tokenizer = tokenizer  # also when the tokenized splits came from the cache (no prepare)

        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, pad_to_multiple_of=8)

    # -- model -----------------------------------------------------------------------------------
    def auto_model_class(self) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    def configure_model(self, model: PreTrainedModel) -> None:
        """Generation length and beams from the spec, kept in the saved generation_config."""
        apply_generation_settings(model, self.spec.generation)

    # -- metrics ---------------------------------------------------------------------------------
    def _generated_metrics(self, predictions: Any, label_ids: Any) -> tuple[dict[str, float], list[str], list[str]]:
        preds = decode(self.tokenizer, predictions)
        refs = decode(self.tokenizer, label_ids)
        metrics = text_metrics(preds, refs)
        pad = self.tokenizer.pad_token_id
        generated = np.asarray(predictions)
        metrics["gen_len"] = float(np.mean(((generated != pad) & (generated >= 0)).sum(-1))) if len(generated) else 0.0
        return metrics, preds, refs

    def compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        metrics, _, _ = self._generated_metrics(eval_pred.predictions, eval_pred.label_ids)
        return metrics

    def score(self, output: PredictionOutput, raw: datasets.Dataset, features: datasets.Dataset, labels: list[str] | None) -> Evaluation:
        metrics, preds, refs = self._generated_metrics(output.predictions, output.label_ids)
        metrics["loss"] = float(output.metrics.get("test_loss", float("nan")))
        metrics["num_samples"] = len(preds)
        source = self.spec.column("source")
        lines = [f"{k:>10} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)]
        lines.append(f"{'samples':>10} {len(preds)}")
        for i in range(min(EXAMPLES_IN_REPORT, len(preds))):
            lines += ["", f"source:     {raw[i][source]}", f"reference:  {refs[i]}", f"prediction: {preds[i]}"]
        return Evaluation(metrics=metrics, report="\n".join(lines) + "\n")

    # -- batch prediction ------------------------------------------------------------------------
    def prepare_inputs(self, rows: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> datasets.Dataset:
        self._check_text_columns(rows, "--input", ("source",))
        return self._encode(rows, tokenizer, with_target=False)

    def predict_rows(self, rows: datasets.Dataset, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None,
                     batch_size: int) -> list[dict[str, Any]]:
        """Generated text per row; `score` is the mean log-probability per generated token."""
        from transformers import DataCollatorWithPadding

        from kubetune.workload.model.inference import generate_batches

        features = self.prepare_inputs(rows, tokenizer, labels)
        gen = self.spec.generation
        results = generate_batches(model, features, DataCollatorWithPadding(tokenizer), batch_size, tokenizer,
                                   gen.max_new_tokens, gen.num_beams)
        return [{"prediction": text, "score": score, "generated_tokens": n} for text, score, n in results]
