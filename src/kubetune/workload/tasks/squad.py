"""SQuAD v1.1 scoring for extractive question answering: the official metric, and the mapping
of start/end logits of a question's windows back to its answer text (`question_answering`
explains both)."""

from __future__ import annotations

import collections
import re
import string
from typing import Any

import numpy as np

DEFAULT_MAX_ANSWER_LENGTH = 30
DEFAULT_N_BEST = 20


# ---------------------------------------------------------------------------------------------
# SQuAD v1.1 metric (the official evaluate-v1.1.py, restated)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    true_tokens = normalize_answer(truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(true_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(true_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """Exact match and F1 in percent, each the max over a question's gold answers, averaged
    over the questions in `references`."""
    if not references:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for qid, truths in references.items():
        pred = predictions.get(qid, "")
        truths = truths or [""]
        em += max(exact_match(pred, t) for t in truths)
        f1 += max(f1_score(pred, t) for t in truths)
    return {"exact_match": 100.0 * em / len(references), "f1": 100.0 * f1 / len(references)}


# ---------------------------------------------------------------------------------------------
# Post-processing: logits of windows → answer text per question


def postprocess(
    examples: list[dict[str, Any]],
    features: list[dict[str, Any]],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int = DEFAULT_N_BEST,
    max_answer_length: int = DEFAULT_MAX_ANSWER_LENGTH,
    scores: dict[str, float] | None = None,
) -> dict[str, str]:
    """Best answer text per example id.

    `examples`: dicts with `id` and `context`; `features`: dicts with `example_id` and
    `offset_mapping` (character span of each token in the context, None outside the
    context); `start_logits`/`end_logits`: one row per feature (rows may be longer than the
    feature: padding is ignored)."""
    by_example: dict[str, list[int]] = collections.defaultdict(list)
    for i, feature in enumerate(features):
        by_example[feature["example_id"]].append(i)
    answers: dict[str, str] = {}
    for example in examples:
        context = example["context"]
        best_score, best_text = -np.inf, ""
        for i in by_example.get(example["id"], []):
            offsets = features[i]["offset_mapping"]
            starts = np.asarray(start_logits[i])[: len(offsets)]
            ends = np.asarray(end_logits[i])[: len(offsets)]
            start_top = np.argsort(starts)[::-1][:n_best]
            end_top = np.argsort(ends)[::-1][:n_best]
            for s in start_top:
                if offsets[s] is None:
                    continue
                for e in end_top:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = float(starts[s] + ends[e])
                    if score > best_score:
                        best_score, best_text = score, context[offsets[s][0] : offsets[e][1]]
        answers[example["id"]] = best_text
        if scores is not None:  # the best span's start + end logit (batch prediction reports it)
            scores[example["id"]] = float(best_score) if best_text else None
    return answers


# ---------------------------------------------------------------------------------------------
# Data helpers
