"""seq2seq: encoding (prefix, targets), BLEU/ROUGE, encoder freezing, and the acceptance runs —
the shipped translation and summarization jobs, run with `kubetune run --local` on subsets of
the real Multi30k and SciTLDR files with tiny randomly initialised T5 and BART models (no Hub
here; see tests/tiny_models.py): training loss falls, BLEU/chrF/ROUGE are written to
eval/metrics.json, and the predict stage generates one scored text per input row."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import datasets
import pytest

from helpers import run_cli
from kubetune.contract.spec.job import validate_spec
from kubetune.workload.data.tables import Splits
from kubetune.workload.errors import DataError
from kubetune.workload.tasks import get_task
from kubetune.workload.tasks.seq2seq import text_metrics
from tiny_models import build_tokenizer, seq2seq_config, tiny_seq2seq

REPO = Path(__file__).resolve().parents[3]
TEXT_METRICS = {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum"}


def s2s_spec(**overrides):
    spec = {
        "name": "s2s",
        "task": "seq2seq",
        "model": {"source": "models/m"},
        "data": {"train": "t.jsonl", "columns": {"source": "en", "target": "de"}},
        "train": {"max_seq_length": 16, "max_target_length": 6},
    }
    for key, value in overrides.items():
        spec[key] = {**spec.get(key, {}), **value}
    return validate_spec(spec)


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["A man is riding a bike.", "Ein Mann fährt Fahrrad.", "Two dogs play in the snow.",
             "Zwei Hunde spielen im Schnee.", "translate English to German: "] * 20
    return build_tokenizer(texts, vocab_size=300, append_eos=True)


def test_sources_get_the_prefix_and_targets_end_with_eos(tokenizer):
    task = get_task(s2s_spec(data={"source_prefix": "translate English to German: "}, train={"max_seq_length": 64}))
    rows = datasets.Dataset.from_dict({"en": ["A man is riding a bike."], "de": ["Ein Mann fährt Fahrrad."]})
    features = task.prepare_test(rows, tokenizer, None)
    source = tokenizer.decode(features[0]["input_ids"], skip_special_tokens=True)
    assert source.startswith("translate English to German: A man")
    labels = features[0]["labels"]
    assert len(labels) == 6 and labels[-1] == tokenizer.eos_token_id  # cut at max_target_length, eos kept
    assert features[0]["length"] == len(features[0]["input_ids"]) <= 64
    # Prediction inputs need no target column.
    inputs = task.prepare_inputs(rows.remove_columns("de"), tokenizer, None)
    assert inputs[0]["input_ids"] == features[0]["input_ids"] and "labels" not in inputs.column_names


def test_a_non_text_column_is_a_data_error_naming_the_role():
    task = get_task(s2s_spec())
    bad = datasets.Dataset.from_dict({"en": ["a", "b"], "de": [1, 2]})
    with pytest.raises(DataError, match=r"^data.train: data.columns.target: column 'de' must hold text"):
        task.check_data(Splits(train=bad, validation=bad, test=None))


def test_text_metrics_bounds():
    same = text_metrics(["Ein Mann fährt Fahrrad ."], ["Ein Mann fährt Fahrrad ."])
    assert set(same) == TEXT_METRICS
    assert all(value == pytest.approx(100.0) for value in same.values())
    disjoint = text_metrics(["xyz qqq"], ["Ein Mann fährt Fahrrad"])
    assert disjoint["bleu"] == pytest.approx(0.0) and disjoint["rouge1"] == 0.0 and disjoint["rougeL"] == 0.0


@pytest.mark.parametrize("arch", ["t5", "bart", "marian"])
def test_freeze_encoder_keeps_the_decoder_and_shared_embeddings_training(tokenizer, arch):
    from transformers import AutoModelForSeq2SeqLM

    from kubetune.contract.spec.job import FreezeSpec
    from kubetune.workload.model.adapt import apply_freezing

    model = AutoModelForSeq2SeqLM.from_config(seq2seq_config(arch, tokenizer))
    decoder_trainable = [p for p in model.get_decoder().parameters() if p.requires_grad]  # Marian: fixed positions
    apply_freezing(model, FreezeSpec(encoder=True))
    shared = {id(p) for p in model.get_input_embeddings().parameters()}
    encoder = [p for p in model.get_encoder().parameters() if id(p) not in shared]
    assert encoder and not any(p.requires_grad for p in encoder)
    assert decoder_trainable and all(p.requires_grad for p in decoder_trainable)
    assert all(p.requires_grad for p in model.get_input_embeddings().parameters())


def test_generation_settings_reach_the_model(tokenizer):
    from transformers import AutoModelForSeq2SeqLM

    task = get_task(s2s_spec(generation={"max_new_tokens": 7, "num_beams": 3}))
    model = AutoModelForSeq2SeqLM.from_config(seq2seq_config("t5", tokenizer))
    task.configure_model(model)
    assert (model.generation_config.max_new_tokens, model.generation_config.num_beams) == (7, 3)


# -- acceptance: the shipped jobs on real data -------------------------------------------------------


def subset(source: Path, target: Path, n: int) -> list[dict]:
    lines = source.read_text().splitlines()[:n]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")
    return [json.loads(line) for line in lines]


def train_losses(store: Path, job: str) -> list[float]:
    lines = (store / "runs" / job / "metrics" / "train.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def run_job(job: str, store: Path, tmp_path: Path, *overrides: str, stage: str = "all", extra: tuple = ()):
    env = {"KUBETUNE_WORKDIR": str(tmp_path / "work"), "KUBETUNE_CACHE": str(tmp_path / "cache")}
    sets = [a for o in (f"storage.root={store}", "resources.profile=cpu", *overrides) for a in ("--set", o)]
    started = time.monotonic()
    result = run_cli("run", str(REPO / "jobs" / job), "--local", "--stage", stage, *extra, *sets, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result, time.monotonic() - started


@pytest.mark.slow
def test_multi30k_translation_job_trains_evaluates_and_predicts(tmp_path, shared_data):
    store = tmp_path / "store"
    data = store / "datasets" / "multi30k"
    rows = subset(shared_data / "multi30k" / "train.jsonl", data / "train.jsonl", 240)
    subset(shared_data / "multi30k" / "validation.jsonl", data / "validation.jsonl", 16)
    test_rows = subset(shared_data / "multi30k" / "test.jsonl", data / "test.jsonl", 24)
    tiny_seq2seq(store / "models" / "tiny-t5", [r["en"] for r in rows] + [r["de"] for r in rows], "t5", 600)
    common = ("model.source=models/tiny-t5", "train.epochs=2", "train.batch_size=8", "train.learning_rate=3e-3",
              "train.max_seq_length=32", "train.max_target_length=32", "train.logging_steps=5",
              "generation.max_new_tokens=16", "generation.num_beams=2")
    result, seconds = run_job("multi30k-translation.yaml", store, tmp_path, *common)

    losses = train_losses(store, "multi30k-translation")
    metrics = json.loads((store / "runs" / "multi30k-translation" / "eval" / "metrics.json").read_text())
    print(f"translation: {seconds:.0f}s, loss {losses[0]:.3f} -> {losses[-1]:.3f}, test bleu {metrics['bleu']:.2f} "
          f"chrf {metrics['chrf']:.2f} rougeL {metrics['rougeL']:.2f}")
    assert len(losses) >= 4 and losses[-1] < losses[0] - 0.3
    assert TEXT_METRICS <= set(metrics) and metrics["num_samples"] == 24 and metrics["split"] == "data.test"
    assert all(0.0 <= metrics[k] <= 100.0 for k in TEXT_METRICS) and math.isfinite(metrics["loss"])
    assert metrics["chrf"] > 0 and 0 < metrics["gen_len"] <= 17
    assert "eval_bleu" in result.stdout  # validation generated text during training
    report = (store / "runs" / "multi30k-translation" / "eval" / "report.txt").read_text()
    assert f"source:     {test_rows[0]['en']}" in report and "prediction: " in report
    generation = json.loads((store / "runs" / "multi30k-translation" / "model" / "generation_config.json").read_text())
    assert (generation["max_new_tokens"], generation["num_beams"]) == (16, 2)

    out = tmp_path / "predictions.jsonl"
    run_job("multi30k-translation.yaml", store, tmp_path, *common, stage="predict",
            extra=("--input", "datasets/multi30k/test.jsonl", "--output", str(out)))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["row"] for r in records] == list(range(24))
    assert [r["en"] for r in records] == [r["en"] for r in test_rows]
    for record in records:
        assert isinstance(record["prediction"], str) and 1 <= record["generated_tokens"] <= 16
        assert record["score"] <= 0.0  # a mean log-probability


@pytest.mark.slow
def test_scitldr_summarization_job_with_a_frozen_encoder(tmp_path, shared_data):
    store = tmp_path / "store"
    data = store / "datasets" / "scitldr"
    rows = subset(shared_data / "scitldr" / "train.jsonl", data / "train.jsonl", 120)
    subset(shared_data / "scitldr" / "dev.jsonl", data / "dev.jsonl", 8)
    subset(shared_data / "scitldr" / "test.jsonl", data / "test.jsonl", 12)
    tiny_seq2seq(store / "models" / "tiny-t5", [r["document"] for r in rows] + [r["summary"] for r in rows],
                 "t5", 800)
    result, seconds = run_job(
        "scitldr-summarization.yaml", store, tmp_path,
        "model.source=models/tiny-t5", "train.epochs=3", "train.batch_size=8",
        "train.gradient_accumulation_steps=1", "train.learning_rate=3e-3", "train.max_seq_length=128",
        "train.max_target_length=32", "train.logging_steps=5", "train.freeze.encoder=true",
        "generation.max_new_tokens=24", "generation.num_beams=1",
    )
    losses = train_losses(store, "scitldr-summarization")
    metrics = json.loads((store / "runs" / "scitldr-summarization" / "eval" / "metrics.json").read_text())
    print(f"summarization: {seconds:.0f}s, loss {losses[0]:.3f} -> {losses[-1]:.3f}, test rouge1 "
          f"{metrics['rouge1']:.2f} rouge2 {metrics['rouge2']:.2f} rougeL {metrics['rougeL']:.2f}")
    trainable = next(line for line in result.stdout.splitlines() if "trainable params" in line)
    assert "(100.0%)" not in trainable  # the encoder stack was frozen
    assert len(losses) >= 4 and losses[-1] < losses[0] - 0.3
    assert TEXT_METRICS <= set(metrics) and metrics["num_samples"] == 12
    assert metrics["rouge1"] > 0 and math.isfinite(metrics["loss"])


def test_validation_metrics_need_no_prepare_call(tokenizer):
    """With tokenized splits from the cache the Trainer never calls prepare(); the collator
    (always built) hands the tokenizer to compute_metrics."""
    import numpy as np

    task = get_task(s2s_spec())
    task.collator(tokenizer)
    ids = tokenizer(["Ein Mann fährt Fahrrad."])["input_ids"]
    prediction = type("EvalPrediction", (), {"predictions": np.array(ids), "label_ids": np.array(ids)})
    metrics = task.compute_metrics(prediction)
    assert metrics["bleu"] == pytest.approx(100.0) and metrics["gen_len"] == len(ids[0])
