"""token-classification (NER): label alignment, tag inference, seqeval scoring, data checks,
and the acceptance run: MiniLM fine-tuned on a CoNLL-2003 subset through the entrypoints."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from kubetune.contract.spec.job import validate_spec
from kubetune.workload.data.tables import Splits
from kubetune.workload.errors import DataError
from kubetune.workload.tasks import get_task
from kubetune.workload.tasks.token_classification import (
    IGNORE,
    align_labels,
    infer_tags,
    seqeval_metrics,
    word_predictions,
)

REPO = Path(__file__).resolve().parents[3]


def ner_spec(**data):
    return validate_spec({
        "name": "ner",
        "task": "token-classification",
        "model": {"source": "models/m"},
        "data": {"train": "t.jsonl", "columns": {"tags": "ner_tags"}, **data},
        "train": {"max_seq_length": 16},
    })


def rows(*sentences):
    return datasets.Dataset.from_dict({
        "tokens": [list(words) for words, _ in sentences],
        "ner_tags": [list(tags) for _, tags in sentences],
    })


SENTENCES = [
    (["Johanson", "visited", "Reykjavik", "yesterday", "."], ["B-PER", "O", "B-LOC", "O", "O"]),
    (["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
    (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
]


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir))


def test_align_labels_first_subtoken_only():
    # [CLS] johan ##son visited reykjavik [SEP]
    assert align_labels([None, 0, 0, 1, 2, None], [5, 0, 3]) == [IGNORE, 5, IGNORE, 0, 3, IGNORE]
    assert align_labels([None, None], []) == [IGNORE, IGNORE]


def test_infer_tags_orders_o_first_then_type_b_before_i():
    assert infer_tags([["I-PER", "O", "B-LOC"], ["B-PER", "I-LOC", "B-MISC"]]) == [
        "O", "B-LOC", "I-LOC", "B-MISC", "B-PER", "I-PER"
    ]


def test_prepare_aligns_word_tags_to_subtokens(tokenizer):
    task = get_task(ner_spec())
    prepared = task.prepare(Splits(train=rows(*SENTENCES), validation=rows(SENTENCES[0]), test=None), tokenizer)
    labels = prepared.labels
    assert labels == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    first = prepared.train[0]
    tokens = tokenizer.convert_ids_to_tokens(first["input_ids"])
    assert tokens == ["[CLS]", "johan", "##son", "visited", "reykjavik", "yesterday", ".", "[SEP]"]
    named = [labels[i] if i != IGNORE else None for i in first["labels"]]
    assert named == [None, "B-PER", None, "O", "B-LOC", "O", "O", None]
    assert prepared.train[2]["labels"] == [IGNORE, labels.index("B-PER"), labels.index("I-PER"), IGNORE]
    assert {"input_ids", "attention_mask", "labels"} <= set(prepared.train.column_names)


def test_validation_metrics_also_after_a_tokenization_cache_hit(tokenizer):
    """A cache hit skips `prepare`; the tag list comes with the cached data (model_kwargs)."""
    from transformers import EvalPrediction

    prepared = get_task(ner_spec()).prepare(Splits(train=rows(*SENTENCES), validation=rows(*SENTENCES), test=None),
                                            tokenizer)
    fresh = get_task(ner_spec())
    assert fresh.model_kwargs(prepared)["id2label"][0] == "O"
    width = max(len(x) for x in prepared.validation["labels"])
    gold = np.full((len(SENTENCES), width), IGNORE)
    for i, aligned in enumerate(prepared.validation["labels"]):
        gold[i, : len(aligned)] = aligned
    logits = np.eye(len(prepared.labels))[np.where(gold == IGNORE, 0, gold)]
    metrics = fresh.compute_metrics(EvalPrediction(predictions=logits, label_ids=gold))
    assert metrics["f1"] == 1.0 and metrics["accuracy"] == 1.0


def test_truncated_words_are_predicted_o_on_the_test_split(tokenizer):
    long_sentence = (["Paris"] + ["word"] * 30 + ["London"], ["B-LOC"] + ["O"] * 30 + ["B-LOC"])
    task = get_task(ner_spec())
    labels = ["O", "B-LOC", "I-LOC"]
    features = task.prepare_test(rows(long_sentence), tokenizer, labels)
    aligned = np.asarray(features[0]["labels"])
    assert len(aligned) == 16  # max_seq_length
    # A perfect model on the kept words: gold ids where labelled.
    preds = np.where(aligned == IGNORE, 0, aligned)
    words = word_predictions(preds, aligned, 32, labels)
    assert words[:1] == ["B-LOC"] and words[-1] == "O" and len(words) == 32


def test_seqeval_metrics_known_case():
    y_true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    y_pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O"]]
    m = seqeval_metrics(y_true, y_pred)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(0.8)
    assert m["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_type"]["PER"]["f1"] == pytest.approx(1.0)
    # Entity level: a wrong boundary is a miss, although most tokens are right.
    m = seqeval_metrics([["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-PER", "O"]])
    assert m["f1"] == 0.0 and m["accuracy"] == pytest.approx(2 / 3)


def test_score_counts_every_word_and_writes_per_type_report(tokenizer):
    from transformers.trainer_utils import PredictionOutput

    task = get_task(ner_spec())
    labels = ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    raw = rows(*SENTENCES)
    features = task.prepare_test(raw, tokenizer, labels)
    width = max(len(ids) for ids in features["input_ids"])
    logits = np.zeros((len(raw), width, len(labels)), dtype=np.float32)
    for i, aligned in enumerate(features["labels"]):
        for j, gold in enumerate(aligned):
            logits[i, j, gold if gold != IGNORE else 0] = 1.0
    logits[1, 1, :] = 0
    logits[1, 1, labels.index("B-LOC")] = 1.0  # EU: ORG predicted as LOC
    output = PredictionOutput(predictions=logits, label_ids=None, metrics={"test_loss": 0.1})
    evaluation = task.score(output, raw, features, labels)
    m = evaluation.metrics
    assert m["precision"] == pytest.approx(4 / 5) and m["recall"] == pytest.approx(4 / 5)
    assert m["per_type"]["ORG"]["recall"] == 0.0 and m["per_type"]["PER"]["f1"] == 1.0
    assert m["num_samples"] == 3 and m["num_truncated"] == 0
    assert "ORG" in evaluation.report and "micro avg" in evaluation.report


def test_integer_tags_need_data_labels():
    task = get_task(ner_spec())
    splits = Splits(train=datasets.Dataset.from_dict({"tokens": [["a", "b"]], "ner_tags": [[1, 0]]}),
                    validation=datasets.Dataset.from_dict({"tokens": [["a"]], "ner_tags": [[0]]}), test=None)
    with pytest.raises(DataError, match="data.labels"):
        task.check_data(splits)
    task = get_task(ner_spec(labels=["O", "B-PER"]))
    task.check_data(splits)
    assert task.label_map(splits.train) == ["O", "B-PER"]


@pytest.mark.parametrize(
    ("validation", "message"),
    [
        ((["a", "b"], ["O"]), "row 0: 2 words but 1 tags"),
        ((["a"], ["B-DATE"]), "tag 'B-DATE' is not among the training tags"),
    ],
)
def test_bad_rows_are_one_line_data_errors(validation, message):
    task = get_task(ner_spec())
    splits = Splits(train=rows(*SENTENCES), validation=rows(validation), test=None)
    with pytest.raises(DataError, match=message):
        task.check_data(splits)


def test_bad_ner_data_exits_2_before_loading_a_model(tmp_path, local_store, capsys, monkeypatch):
    from kubetune.workload.entrypoints import train

    monkeypatch.setenv("KUBETUNE_WORKDIR", str(tmp_path / "work"))
    data = local_store / "datasets" / "bad"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text(json.dumps({"tokens": ["a", "b"], "ner_tags": ["B-PER"]}) + "\n"
                                       + json.dumps({"tokens": ["c"], "ner_tags": ["O"]}) + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: bad-ner\ntask: token-classification\nmodel: {source: models/all-MiniLM-L6-v2}\n"
        f"data: {{train: datasets/bad/train.jsonl, validation: datasets/bad/train.jsonl, columns: {{tags: ner_tags}}}}\n"
        f"storage: {{root: {local_store}}}\n"
    )
    assert train.main(["--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.train: row 0: 2 words but 1 tags")
    assert not (local_store / "runs" / "bad-ner").exists()


def test_ner_job_file_loads():
    from kubetune.contract.spec.job import load_spec

    spec = load_spec(REPO / "jobs" / "conll2003-ner.yaml")
    assert spec.task == "token-classification"
    assert spec.model.source == "models/all-MiniLM-L6-v2"
    assert spec.data.train == "datasets/conll2003/train.jsonl"
    assert spec.column("tags") == "ner_tags"


# -- acceptance ----------------------------------------------------------------------------------

# The first 4,000 of CoNLL-2003's 14,041 training sentences (5% held out for validation), 2
# epochs. Measured on 2 CPU cores: test entity F1 0.790 (P 0.770, R 0.811; PER 0.893, LOC 0.852,
# ORG 0.692, MISC 0.642); with 3,000 sentences 0.757, too close to the bar.
NER_TRAIN_SENTENCES = 4000
NER_F1_BAR = 0.75


@pytest.mark.slow
def test_conll2003_ner_minilm_reaches_entity_f1(tmp_path, local_store, shared_data, capsys, monkeypatch):
    """MiniLM-L6 fine-tuned on 4,000 CoNLL-2003 sentences, scored on the full test split
    (3,453 sentences, 5,648 entities) through the train and evaluate entrypoints."""
    from kubetune.workload.entrypoints import evaluate, train

    monkeypatch.setenv("KUBETUNE_WORKDIR", str(tmp_path / "work"))
    data = local_store / "datasets" / "conll2003"
    data.mkdir(parents=True)
    lines = (shared_data / "conll2003" / "train.jsonl").read_text().splitlines(keepends=True)
    (data / "train.jsonl").write_text("".join(lines[:NER_TRAIN_SENTENCES]))
    shutil.copy(shared_data / "conll2003" / "test.jsonl", data / "test.jsonl")
    job = REPO / "jobs" / "conll2003-ner.yaml"
    overrides = [
        f"storage.root={local_store}",
        "data.validation=null",  # 10% of the subset is held out instead of the 3,250-sentence file
        "data.validation_split=0.05",
        "train.epochs=2",
        "train.learning_rate=1e-4",
        "train.warmup=0.1",
        "train.batch_size=16",
        "train.max_seq_length=96",
    ]
    args = ["--spec", str(job), *[a for o in overrides for a in ("--set", o)]]
    started = time.monotonic()
    assert train.main(args) == 0
    trained = time.monotonic()
    assert evaluate.main(args) == 0
    done = time.monotonic()
    out = capsys.readouterr().out
    assert "trainable params 22,568,841 of 22,568,841 (100.0%)" in out

    metrics = json.loads((local_store / "runs" / "conll2003-ner" / "eval" / "metrics.json").read_text())
    report = (local_store / "runs" / "conll2003-ner" / "eval" / "report.txt").read_text()
    print(f"NER: {NER_TRAIN_SENTENCES} sentences, train {trained - started:.0f}s, evaluate {done - trained:.0f}s, "
          f"test f1 {metrics['f1']:.4f} p {metrics['precision']:.4f} r {metrics['recall']:.4f}")
    assert metrics["num_samples"] == 3453
    assert set(metrics["per_type"]) == {"LOC", "MISC", "ORG", "PER"}
    assert metrics["f1"] >= NER_F1_BAR
    assert metrics["per_type"]["PER"]["f1"] >= 0.85
    for kind in ("LOC", "MISC", "ORG", "PER"):
        assert kind in report
    labels = json.loads((local_store / "runs" / "conll2003-ner" / "model" / "labels.json").read_text())
    assert labels[0] == "O" and len(labels) == 9
