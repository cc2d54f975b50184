"""question-answering (extractive): find the answer span in a context (the SQuAD case).

Input is SQuAD v1.1 JSON (`data.format: squad`) or any table (JSON lines, parquet, ...) with
the columns id, question, context and answers (`{"text": [...], "answer_start": [...]}`, or a list of `{"text", "answer_start"}`).

Long contexts are cut into overlapping windows of `train.max_seq_length` tokens (question +
context piece), `data.qa.doc_stride` tokens of overlap (default max_seq_length // 4). Each
window is one feature; a training window that does not contain the whole answer is labelled
with the [CLS] position (start = end = 0), as in BERT's SQuAD recipe and HF's run_qa.py.

Evaluation maps start/end logits back to text: for every window the `n_best` highest start
and end positions inside the context are paired, spans longer than `max_answer_length`
tokens or ending before they start are dropped, and the span with the highest start + end
logit over all windows of a question is its answer (SQuAD v1: every question has an answer).
Metrics are SQuAD v1.1's official exact match and F1 (answers normalised: lower case, no
punctuation, no articles a/an/the, single spaces; the best over the gold answers), on a
0-100 scale as the official script and every SQuAD leaderboard report them.

Features keep `example_id` and `offset_mapping` (needed to map logits back to text); the
Trainer drops them before the model sees a batch (they are not arguments of the model's
forward, and the collator removes them as well). During training the validation split is
scored the same way (exact_match / f1, default metric f1 picks the best checkpoint).
"""

from __future__ import annotations

import collections
import json
from typing import Any, TYPE_CHECKING

import datasets
import numpy as np

from kubetune.workload.errors import DataError
from kubetune.workload.tasks.base import Evaluation, Prepared, Task
from kubetune.workload.tasks.squad import DEFAULT_MAX_ANSWER_LENGTH, DEFAULT_N_BEST, postprocess, squad_metrics

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedTokenizerBase
    from transformers.trainer_utils import PredictionOutput

    from kubetune.contract.spec.job import JobSpec
    from kubetune.workload.data.tables import Splits

EXTRA_COLUMNS = ("example_id", "offset_mapping")


def answer_lists(value: Any) -> tuple[list[str], list[int]]:
    """(texts, starts) from either SQuAD-as-columns {"text": [...], "answer_start": [...]} or a
    list of {"text", "answer_start"} records."""
    if value is None:
        return [], []
    if isinstance(value, dict):
        return [str(t) for t in value.get("text") or []], [int(s) for s in value.get("answer_start") or []]
    if isinstance(value, list):
        return [str(a["text"]) for a in value], [int(a["answer_start"]) for a in value]
    raise ValueError(f"unreadable answers {value!r}")


def answer_positions(offsets: list[tuple[int, int]], context: list[int], texts: list[str],
                     starts: list[int]) -> tuple[int, int]:
    """Token positions (start, end) of the first gold answer in one window, whose context
    tokens are `context`; (0, 0), the [CLS] position, when the window does not hold it whole."""
    if not texts:
        return 0, 0
    start_char, end_char = starts[0], starts[0] + len(texts[0])
    first, last = context[0], context[-1]
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return 0, 0
    start_pos = first
    while start_pos <= last and offsets[start_pos][0] <= start_char:
        start_pos += 1
    end_pos = last
    while end_pos >= first and offsets[end_pos][1] >= end_char:
        end_pos -= 1
    return start_pos - 1, end_pos + 1


def split_by_article(source: str, train_out: str, test_out: str, test_articles: int) -> tuple[int, int]:
    """Split a SQuAD-format file by article (no context shared between the two files): the
    last `test_articles` articles go to `test_out`. Returns the question counts."""
    with open(source) as handle:
        doc = json.load(handle)
    articles = doc["data"]
    if not 0 < test_articles < len(articles):
        raise ValueError(f"test_articles must be between 1 and {len(articles) - 1}")
    parts = {train_out: articles[:-test_articles], test_out: articles[-test_articles:]}
    counts = []
    for path, chosen in parts.items():
        with open(path, "w") as handle:
            json.dump({"version": doc.get("version", "1.1"), "data": chosen}, handle)
        counts.append(sum(len(p["qas"]) for a in chosen for p in a["paragraphs"]))
    return counts[0], counts[1]


class QuestionAnswering(Task):
    name = "question-answering"
    default_metric = "f1"
    greater_is_better = True
    metric_names = ("f1", "exact_match", "loss")
    # Validation windows are matched to their predictions by input ids (see in_feature_order).
    include_for_metrics = ("inputs",)
    input_roles = ("question", "context")

    def __init__(self, spec: JobSpec):
        super().__init__(spec)
        self._validation: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None

    # -- options ---------------------------------------------------------------------------------
    @property
    def doc_stride(self) -> int:
        qa = self.spec.data.qa
        if qa is not None and qa.doc_stride is not None:
            return qa.doc_stride
        return max(1, self.spec.train.max_seq_length // 4)

    @property
    def max_answer_length(self) -> int:
        qa = self.spec.data.qa
        return qa.max_answer_length if qa is not None else DEFAULT_MAX_ANSWER_LENGTH

    @property
    def n_best(self) -> int:
        qa = self.spec.data.qa
        return qa.n_best if qa is not None else DEFAULT_N_BEST

    # -- data ------------------------------------------------------------------------------------
    def check_split(self, ds: datasets.Dataset, field: str, need_answers: bool) -> None:
        c = self.columns()
        for i, (qid, context, answers) in enumerate(zip(ds[c["id"]], ds[c["context"]], ds[c["answers"]])):
            try:
                texts, starts = answer_lists(answers)
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{field}: question {qid!r}: answers must be {{text: [...], answer_start: [...]}}") from None
            if need_answers and not texts:
                raise DataError(f"{field}: question {qid!r} (row {i}) has no answer")
            if len(texts) != len(starts):
                raise DataError(f"{field}: question {qid!r}: {len(texts)} answer texts but {len(starts)} answer_start values")
            for text, start in zip(texts, starts):
                if context[start : start + len(text)] != text:
                    raise DataError(
                        f"{field}: question {qid!r}: answer {text!r} is not at answer_start {start} of its context"
                    )

    def check_data(self, splits: Splits) -> None:
        for ds, field in self.named_splits(splits):
            self.check_split(ds, field, need_answers=field != "data.test")  # test rows may lack answers

    def _features(self, ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase) -> datasets.Dataset:
        """Windows of question + context with start/end positions, example ids and offsets
        (None outside the context)."""
        if not getattr(tokenizer, "is_fast", False):
            raise DataError("model.tokenizer: question-answering needs a fast tokenizer (offset mapping)")
        c = self.columns()
        max_length = min(self.spec.train.max_seq_length, tokenizer.model_max_length)
        stride = self.doc_stride
        pad_right = tokenizer.padding_side == "right"
        context_index = 1 if pad_right else 0

        def encode(batch: dict[str, list]) -> dict[str, list]:
            questions = [q.lstrip() for q in batch[c["question"]]]
            contexts = batch[c["context"]]
            enc = tokenizer(
                questions if pad_right else contexts,
                contexts if pad_right else questions,
                truncation="only_second" if pad_right else "only_first",
                max_length=max_length,
                stride=stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
            sample_map = enc.pop("overflow_to_sample_mapping")
            enc["example_id"], enc["start_positions"], enc["end_positions"] = [], [], []
            for i, offsets in enumerate(enc["offset_mapping"]):
                example = sample_map[i]
                sequence_ids = enc.sequence_ids(i)
                enc["example_id"].append(str(batch[c["id"]][example]))
                texts, starts = answer_lists(batch[c["answers"]][example])
                context = [k for k, s in enumerate(sequence_ids) if s == context_index]
                start_pos, end_pos = answer_positions(offsets, context, texts, starts)
                enc["start_positions"].append(start_pos)
                enc["end_positions"].append(end_pos)
                enc["offset_mapping"][i] = [
                    list(o) if sequence_ids[k] == context_index else None for k, o in enumerate(offsets)
                ]
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        try:
            return ds.map(encode, batched=True, remove_columns=ds.column_names)
        except Exception as exc:
            if "stride" in str(exc):
                raise DataError(
                    f"data.qa.doc_stride: {stride} is too large for max_seq_length {max_length} "
                    "with these questions; lower it"
                ) from None
            raise

    def _examples(self, ds: datasets.Dataset) -> list[dict[str, Any]]:
        c = self.columns()
        return [
            {"id": str(qid), "context": context, "answers": answer_lists(answers)[0]}
            for qid, context, answers in zip(ds[c["id"]], ds[c["context"]], ds[c["answers"]])
        ]

    def prepare(self, splits: Splits, tokenizer: PreTrainedTokenizerBase) -> Prepared:
        train = self._features(splits.train, tokenizer).remove_columns(list(EXTRA_COLUMNS))
        validation = self._features(splits.validation, tokenizer)
        # The validation questions travel in `extra` (JSON, so the tokenization cache keeps
        # them): a cache hit skips `prepare`, and `bind` picks them up from there.
        prepared = Prepared(train=train, validation=validation, labels=None,
                            extra={"train_examples": len(splits.train), "validation": self._examples(splits.validation)})
        self.bind(prepared)
        return prepared

    def bind(self, prepared: Prepared) -> None:
        """What validation scoring needs: the questions with their contexts and gold answers,
        and each window's example id, offsets and input ids."""
        features = prepared.validation.select_columns(["input_ids", *EXTRA_COLUMNS]).to_list()
        self._validation = (prepared.extra.get("validation") or [], features)

    def model_kwargs(self, prepared: Prepared) -> dict[str, Any]:
        self.bind(prepared)  # called with fresh and with cached data alike
        return {}

    def prepare_test(self, test: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> datasets.Dataset:
        self.check_split(test, "data.test" if self.spec.data.test else "data.validation", need_answers=False)
        return self._features(test, tokenizer)

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        from transformers import DataCollatorWithPadding

        padding = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
        self._pad_id = tokenizer.pad_token_id

        def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
            return padding([{k: v for k, v in row.items() if k not in EXTRA_COLUMNS} for row in rows])

        return collate

    # -- model -----------------------------------------------------------------------------------
    def auto_model_class(self) -> Any:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering

    # -- metrics ---------------------------------------------------------------------------------
    def _answers(self, predictions: Any, examples: list[dict[str, Any]], features: list[dict[str, Any]]) -> dict[str, str]:
        start_logits, end_logits = predictions[0], predictions[1]
        return postprocess(examples, features, start_logits, end_logits, self.n_best, self.max_answer_length)

    def in_feature_order(self, eval_pred: EvalPrediction, features: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Start/end logits in the order of `features`. The Trainer may evaluate in another
        order (with group_by_length it batches validation by length too), so rows are matched
        to windows by their input ids (`include_for_metrics`); equal inputs give equal logits,
        so which of two identical windows gets which row does not matter."""
        start, end = (np.asarray(p) for p in eval_pred.predictions[:2])
        if len(start) != len(features):
            raise DataError(f"validation: {len(start)} predictions for {len(features)} windows")
        inputs = getattr(eval_pred, "inputs", None)
        if inputs is None:
            return start, end
        slots: dict[tuple[int, ...], list[int]] = collections.defaultdict(list)
        for i, feature in enumerate(features):
            slots[tuple(feature["input_ids"])].append(i)
        order = np.empty(len(features), dtype=np.int64)
        for row, ids in enumerate(np.asarray(inputs)):
            ids = [int(t) for t in ids]
            while ids and ids[-1] in (-100, getattr(self, "_pad_id", None)):
                ids.pop()
            if not slots.get(tuple(ids)):
                raise DataError("validation: a prediction matches no validation window")
            order[slots[tuple(ids)].pop()] = row
        return start[order], end[order]

    def compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        """Validation: SQuAD exact match and F1 of the decoded answers."""
        if self._validation is None:
            return {}
        examples, features = self._validation
        start, end = self.in_feature_order(eval_pred, features)
        answers = self._answers((start, end), examples, features)
        return squad_metrics(answers, {e["id"]: e["answers"] for e in examples})

    def score(self, output: PredictionOutput, raw: datasets.Dataset, features: datasets.Dataset, labels: list[str] | None) -> Evaluation:
        examples = self._examples(raw)
        kept = features.select_columns(list(EXTRA_COLUMNS)).to_list()
        answers = self._answers(output.predictions, examples, kept)
        references = {e["id"]: e["answers"] for e in examples if e["answers"]}
        metrics: dict[str, Any] = squad_metrics(answers, references)
        metrics.update({
            "loss": float(output.metrics.get("test_loss", float("nan"))),
            "num_samples": len(examples),
            "num_scored": len(references),
            "num_features": len(kept),
            "doc_stride": self.doc_stride,
            "max_answer_length": self.max_answer_length,
        })
        lines = [
            f"SQuAD v1.1 metrics over {len(references)} questions with gold answers "
            f"({len(kept)} windows of {self.spec.train.max_seq_length} tokens, stride {self.doc_stride}):",
            f"  exact_match {metrics['exact_match']:.2f}",
            f"  f1          {metrics['f1']:.2f}",
            "",
            "first predictions (id | predicted | gold):",
        ]
        for e in examples[:20]:
            lines.append(f"  {e['id']} | {answers.get(e['id'], '')!r} | {e['answers'][:3]!r}")
        return Evaluation(metrics=metrics, report="\n".join(lines) + "\n")

    # -- batch prediction --------------------------------------------------------------------------
    def prepare_inputs(self, rows: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> datasets.Dataset:
        """Windows as for evaluation; rows need no answers (and no id: the row number is used)."""
        c = self.columns()
        ids = [str(v) for v in rows[c["id"]]] if c["id"] in rows.column_names else [str(i) for i in range(len(rows))]
        if len(set(ids)) != len(ids):
            raise DataError(f"--input: column {c['id']!r} repeats an id; each question needs its own")
        keep = [c["question"], c["context"]]
        inputs = rows.select_columns(keep).add_column("__id", ids)
        inputs = inputs.add_column("__answers", [{"text": [], "answer_start": []}] * len(rows))
        task = QuestionAnswering(self.spec.model_copy(update={"data": self.spec.data.model_copy(update={
            "columns": {**self.spec.data.columns, "id": "__id", "answers": "__answers"}})}))
        self._input_ids = ids
        return task._features(inputs, tokenizer)

    def format_predictions(self, outputs: list[Any], rows: datasets.Dataset, features: datasets.Dataset,
                           labels: list[str] | None) -> list[dict[str, Any]]:
        """The answer text per question (as `evaluate` decodes it) and its score: the start +
        end logit of the chosen span (null when no span was found)."""
        context = self.columns()["context"]
        examples = [{"id": qid, "context": ctx} for qid, ctx in zip(self._input_ids, rows[context])]
        kept = features.select_columns(list(EXTRA_COLUMNS)).to_list()
        start = [np.asarray(o)[:, 0] for o in outputs]
        end = [np.asarray(o)[:, 1] for o in outputs]
        scores: dict[str, float] = {}
        answers = postprocess(examples, kept, start, end, self.n_best, self.max_answer_length, scores)
        return [{"prediction": answers[e["id"]], "score": scores[e["id"]]} for e in examples]
