"""Batch prediction: sharding, output targets, errors, and the acceptance runs — MiniLM
fine-tuned for text classification (SST-2) and NER (CoNLL-2003), then `kubetune run --local
--stage predict` over a file in the S3 test server with two local ranks: every input row is
written exactly once, and each prediction equals what the evaluation code path (Trainer.predict
on the same rows, one process) gives."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import run_cli, run_entrypoint
from kubetune.contract.spec.job import SpecError, validate_spec
from kubetune.contract import names as kn
from kubetune.contract.names import PREDICTIONS_OWNER_FILE as OWNER_FILE
from kubetune.workload.entrypoints.arguments import pod_env
from kubetune.workload.stages.prediction import output_target, rank_and_world, shard_bounds
from kubetune.workload.stages.run import PodEnv

REPO = Path(__file__).resolve().parents[3]


# -- units ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 10, 101])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_row_once_in_order(n, world):
    rows = [i for rank in range(world) for i in range(*shard_bounds(n, rank, world))]
    assert rows == list(range(n))
    sizes = [len(range(*shard_bounds(n, rank, world))) for rank in range(world)]
    assert max(sizes) - min(sizes) <= 1


def test_output_target_file_or_folder():
    assert output_target("s3://b/preds.jsonl", None, 1) == ("jsonl", False)
    assert output_target("/x/preds.parquet", None, 1) == ("parquet", False)
    assert output_target("s3://b/preds/", None, 4) == ("jsonl", True)
    assert output_target("s3://b/preds", "parquet", 2) == ("parquet", True)
    with pytest.raises(SpecError, match="2 ranks cannot share one file; give a folder"):
        output_target("s3://b/preds.jsonl", None, 2)
    with pytest.raises(SpecError, match="--format parquet: does not match"):
        output_target("/x/preds.jsonl", "parquet", 1)


def test_rank_from_the_rendered_predict_job():
    """A predict pod sets KUBETUNE_NODE_RANK/NUM_NODES; torchrun adds one process per GPU.
    Without them (a local process, a training-style gang) RANK and WORLD_SIZE place the shard."""
    torchrun = {"LOCAL_WORLD_SIZE": "4", "LOCAL_RANK": "1", "RANK": "1", "WORLD_SIZE": "2"}
    assert rank_and_world(pod_env({kn.ENV_NUM_NODES: "3", kn.ENV_NODE_RANK: "2", **torchrun})) == (9, 12)
    assert rank_and_world(pod_env(torchrun)) == (1, 2)
    assert rank_and_world(pod_env({})) == (0, 1)
    with pytest.raises(SpecError, match="RANK=2 is outside WORLD_SIZE=2"):
        rank_and_world(pod_env({"RANK": "2", "WORLD_SIZE": "2"}))


def test_render_predict_stage_is_an_indexed_job_of_independent_shards():
    from kubetune.launch.render import render_objects
    from kubetune.contract.spec.job import load_spec

    spec = load_spec(REPO / "jobs" / "sst2-minilm.yaml", ["resources.nodes=2"])
    objs = render_objects(spec, stage="predict", predict={"input": "s3://b/in.jsonl", "output": "s3://b/out/"})
    jobs = [o for o in objs if o["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in jobs] == ["sst2-minilm-predict"]
    body = jobs[0]["spec"]
    assert body["completionMode"] == "Indexed" and body["completions"] == body["parallelism"] == 2
    container = body["template"]["spec"]["containers"][0]
    assert container["command"][-4:] == ["--input", "s3://b/in.jsonl", "--output", "s3://b/out/"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETUNE_NUM_NODES"] == "2" and env["KUBETUNE_NODE_RANK"] == "$(JOB_COMPLETION_INDEX)"
    assert not any(o["kind"] == "Service" for o in objs)  # no rendezvous: shards are independent
    with pytest.raises(SpecError, match="--stage predict needs --input URI and --output URI"):
        render_objects(spec, stage="predict")


def test_cli_predict_needs_input_and_output(tmp_path):
    result = run_cli("run", "jobs/quickstart.yaml", "--local", "--stage", "predict", "--input", "x.jsonl")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: --stage predict needs --input URI and --output URI"


# -- acceptance: MiniLM, S3, two local ranks ---------------------------------------------------------


def write_spec(tmp_path: Path, spec: dict) -> Path:
    validate_spec(spec)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def put_s3(endpoint: str, local: Path, uri: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    fs.mkdir(uri.split("/")[2])
    fs.put_file(str(local), uri)


def read_parts(endpoint: str, folder: str) -> tuple[list[str], list[dict]]:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(folder, refresh=True))
    records = []
    for name in (n for n in names if n.startswith("part-")):
        with fs.open(f"{folder}/{name}", "r") as handle:
            records += [json.loads(line) for line in handle if line.strip()]
    return names, records


def spec_precision(spec_file: Path) -> str:
    from kubetune.contract.spec.job import load_spec

    return load_spec(spec_file).train.precision


def evaluation_outputs(spec_file: Path, rows_file: Path) -> tuple[object, list[str] | None, object, object]:
    """The evaluate entrypoint's own code path, in this process, on the rows of `rows_file`:
    (Trainer.predict output, labels, raw rows, features)."""
    import tempfile

    from kubetune.contract.layout import RunLayout
    from kubetune.contract.spec.job import load_spec
    from kubetune.storage import Store
    from kubetune.workload.data.tables import read_table
    from kubetune.workload.stages.evaluation import load_trained
    from kubetune.workload.model.devices import inference_autocast
    from kubetune.workload.model.predictor import load_for_inference, make_predictor
    from kubetune.workload.tasks import get_task

    spec = load_spec(spec_file)
    store = Store.from_spec(spec.storage)
    task = get_task(spec)
    env = pod_env()  # what the entrypoint reads: here one process, the test's cache folder
    raw = read_table(store, str(rows_file), None, "rows")
    folder, labels = load_trained(store, RunLayout(spec.name), env.cache_root)
    model, tokenizer = load_for_inference(task, folder, env.cache_root)
    features = task.prepare_test(raw, tokenizer, labels)
    with tempfile.TemporaryDirectory() as tmp, inference_autocast(spec.train.precision):  # as score_model
        output = make_predictor(spec, task, model, tokenizer, tmp, env.world_size).predict(features, metric_key_prefix="test")
    return output, labels, raw, features


def predict_two_ranks_on_s3(spec_file: Path, endpoint: str, rows_file: Path, name: str) -> list[dict]:
    """Upload `rows_file` to the S3 server, run the predict stage with 2 local ranks into an S3
    folder; returns the records of both parts, checked for exactly-once coverage."""
    source = f"s3://predict-test/inputs/{name}.jsonl"
    put_s3(endpoint, rows_file, source)
    started = time.monotonic()
    result = run_cli("run", str(spec_file), "--local", "--stage", "predict", "--input", source,
                     "--output", f"s3://predict-test/predictions/{name}/", "--set", "resources.nodes=2")
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"{name}: predict with 2 ranks {time.monotonic() - started:.0f}s")
    assert "predict rank 0/2" in result.stdout and "predict rank 1/2" in result.stdout
    parts, records = read_parts(endpoint, f"predict-test/predictions/{name}")
    assert parts == [OWNER_FILE, "part-00000.jsonl", "part-00001.jsonl"]  # and the launcher's owner record
    n = sum(1 for line in rows_file.read_text().splitlines() if line.strip())
    assert sorted(r["row"] for r in records) == list(range(n))  # every row exactly once
    assert [r["row"] for r in records] == list(range(n))  # parts in rank order = input order
    return records


@pytest.mark.slow
def test_classification_predict_with_two_ranks_on_s3_equals_evaluation(tmp_path, local_store, shared_data,
                                                                        s3_server, monkeypatch, capsys):
    from kubetune.workload.entrypoints import evaluate, train

    monkeypatch.setenv("KUBETUNE_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("KUBETUNE_CACHE", str(tmp_path / "cache"))
    data = local_store / "datasets" / "sst2"
    data.mkdir(parents=True)
    train_lines = (shared_data / "sst2" / "train.tsv").read_text().splitlines(keepends=True)
    dev_lines = (shared_data / "sst2" / "dev.tsv").read_text().splitlines(keepends=True)
    (data / "train.tsv").write_text("".join(train_lines[:401]))
    (data / "test.tsv").write_text("".join(dev_lines[:81]))  # header + 80 sentences
    spec_file = write_spec(tmp_path, {
        "name": "sst2-predict",
        "task": "text-classification",
        "model": {"source": "models/all-MiniLM-L6-v2"},
        "data": {"train": "datasets/sst2/train.tsv", "test": "datasets/sst2/test.tsv",
                 "columns": {"text": "sentence", "label": "label"}},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 2e-4, "warmup": 0.1, "max_seq_length": 48,
                  "logging_steps": 5, "checkpoint_every": 1000},  # no checkpoints: this test is about predict
        "storage": {"root": str(local_store), "endpoint_url": s3_server},
        "resources": {"profile": "cpu"},
    })
    started = time.monotonic()
    assert train.main(["--spec", str(spec_file)]) == 0
    assert evaluate.main(["--spec", str(spec_file)]) == 0
    capsys.readouterr()
    print(f"sst2: train + evaluate {time.monotonic() - started:.0f}s")
    metrics = json.loads((local_store / "runs" / "sst2-predict" / "eval" / "metrics.json").read_text())

    rows_file = tmp_path / "rows.jsonl"  # the test rows as JSON lines, labels included
    import csv

    with open(data / "test.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = predict_two_ranks_on_s3(spec_file, s3_server, rows_file, "sst2")

    output, labels, raw, _ = evaluation_outputs(spec_file, rows_file)
    expected = [labels[i] for i in np.asarray(output.predictions).argmax(-1)]
    assert [r["prediction"] for r in records] == expected
    logits = np.asarray(output.predictions, dtype=np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    # Each rank batches (and pads) its own rows: in fp32 the scores agree to 1e-4; under bf16
    # autocast (train.precision auto on a CPU with bf16 units) to bf16's resolution, 2**-8.
    from kubetune.workload.model.devices import precision

    tolerance = 2**-8 if precision(spec_precision(spec_file)).name == "bf16" else 1e-4
    np.testing.assert_allclose([r["score"] for r in records], probs.max(-1), atol=tolerance)
    for record in records:
        assert set(record["scores"]) == set(labels) and abs(sum(record["scores"].values()) - 1) < 1e-5
        assert record["sentence"] == rows[record["row"]]["sentence"]
    accuracy = np.mean([r["prediction"] == r["label"] for r in records])
    print(f"sst2: test accuracy {metrics['accuracy']:.4f}, from predictions {accuracy:.4f}")
    assert accuracy == pytest.approx(metrics["accuracy"])
    assert accuracy > 0.6  # 400 sentences, two epochs: clearly better than chance


@pytest.mark.slow
def test_ner_predict_with_two_ranks_on_s3_equals_evaluation(tmp_path, local_store, shared_data, s3_server,
                                                             monkeypatch, capsys):
    from kubetune.workload.entrypoints import evaluate, train
    from kubetune.workload.tasks.token_classification import word_predictions

    monkeypatch.setenv("KUBETUNE_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("KUBETUNE_CACHE", str(tmp_path / "cache"))
    data = local_store / "datasets" / "conll2003"
    data.mkdir(parents=True)
    train_lines = (shared_data / "conll2003" / "train.jsonl").read_text().splitlines(keepends=True)
    test_lines = (shared_data / "conll2003" / "test.jsonl").read_text().splitlines(keepends=True)
    (data / "train.jsonl").write_text("".join(train_lines[:500]))
    (data / "test.jsonl").write_text("".join(test_lines[:60]))
    spec_file = write_spec(tmp_path, {
        "name": "ner-predict",
        "task": "token-classification",
        "model": {"source": "models/all-MiniLM-L6-v2"},
        "data": {"train": "datasets/conll2003/train.jsonl", "test": "datasets/conll2003/test.jsonl",
                 "columns": {"tokens": "tokens", "tags": "ner_tags"}},
        "train": {"epochs": 1, "batch_size": 16, "learning_rate": 2e-4, "max_seq_length": 64, "logging_steps": 5,
                  "checkpoint_every": 1000},
        "storage": {"root": str(local_store), "endpoint_url": s3_server},
        "resources": {"profile": "cpu"},
    })
    started = time.monotonic()
    assert train.main(["--spec", str(spec_file)]) == 0
    assert evaluate.main(["--spec", str(spec_file)]) == 0
    capsys.readouterr()
    print(f"ner: train + evaluate {time.monotonic() - started:.0f}s")
    metrics = json.loads((local_store / "runs" / "ner-predict" / "eval" / "metrics.json").read_text())

    rows_file = data / "test.jsonl"
    records = predict_two_ranks_on_s3(spec_file, s3_server, rows_file, "ner")

    output, labels, raw, features = evaluation_outputs(spec_file, rows_file)
    preds = np.asarray(output.predictions).argmax(-1)
    for i, record in enumerate(records):
        aligned = np.asarray(features[i]["labels"])
        expected = word_predictions(preds[i][: len(aligned)], aligned, len(raw[i]["tokens"]), labels)
        assert record["prediction"] == expected
        assert len(record["scores"]) == len(record["tokens"])
        assert all(s is None or 0 < s <= 1 for s in record["scores"])
    token_accuracy = np.mean([p == g for r in records for p, g in zip(r["prediction"], r["ner_tags"])])
    print(f"ner: test f1 {metrics['f1']:.4f}, token accuracy {metrics['accuracy']:.4f} (from predictions {token_accuracy:.4f})")
    assert token_accuracy == pytest.approx(metrics["accuracy"])
    assert token_accuracy > 0.82  # the all-"O" baseline of these 60 sentences is 0.779


def test_predict_without_a_trained_model_is_a_one_line_error(tmp_path):
    spec_file = write_spec(tmp_path, {
        "name": "untrained", "task": "text-classification", "model": {"source": "models/m"},
        "data": {"train": "t.tsv"}, "storage": {"root": str(tmp_path / "store")},
    })
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "fine"}\n')
    result = run_entrypoint("predict", spec_file, "--input", str(rows), "--output", str(tmp_path / "out.jsonl"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'store'}/runs/untrained/model: no committed model; run the train stage first"
    ]
    assert not (tmp_path / "out.jsonl").exists()


def test_predict_refuses_a_spec_the_run_was_not_trained_with(tmp_path):
    """As evaluate does (issue 28): another learning rate or label set is another run, whose
    model this is not; the test data may differ. One line, exit 2, before any model loads."""
    from kubetune.contract.layout import RunLayout
    from kubetune.storage import Store

    trained = {"name": "trained", "task": "text-classification", "model": {"source": "models/m"},
               "data": {"train": "t.tsv", "test": "t.tsv"}, "storage": {"root": str(tmp_path / "store")}}
    store, layout = Store(str(tmp_path / "store")), RunLayout("trained")
    store.write_text(layout.spec, validate_spec(trained).to_yaml())
    store.write_text(f"{layout.model}/config.json", "{}")
    store.commit(layout.model, ["config.json"])
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "fine"}\n')
    other = {**trained, "train": {"learning_rate": 1e-3}}
    result = run_entrypoint("predict", write_spec(tmp_path, other), "--input", str(rows),
                            "--output", str(tmp_path / "out.jsonl"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'store'}/runs/trained/spec.yaml: run 'trained' was trained with a different train; "
        "predict it with the spec it was trained with"]
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.slow
def test_question_answering_predict_matches_the_evaluation_decoding(tmp_path, minilm_dir, shared_data, monkeypatch):
    """QA batch prediction (no answers needed in the input) decodes the same answer spans as
    `evaluate`, with two ranks splitting the questions; long contexts overflow into windows."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from kubetune.storage import Store
    from kubetune.workload.entrypoints import predict
    from kubetune.workload.tasks.squad import postprocess

    store_root = tmp_path / "store"
    articles = json.loads((shared_data / "xquad" / "xquad.en.json").read_text())["data"][:1]
    rows = [{"id": qa["id"], "question": qa["question"], "context": p["context"],
             "answers": {"text": [a["text"] for a in qa["answers"]], "answer_start": [a["answer_start"] for a in qa["answers"]]}}
            for p in articles[0]["paragraphs"][:3] for qa in p["qas"]]
    rows_file = tmp_path / "questions.jsonl"
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec_file = write_spec(tmp_path, {
        "name": "qa-predict", "task": "question-answering", "model": {"source": str(minilm_dir)},
        "data": {"train": str(rows_file)}, "train": {"max_seq_length": 96, "batch_size": 4},
        "storage": {"root": str(store_root)},
    })
    # A QA model as training would commit it (MiniLM with a seeded, untrained span head).
    model_dir = tmp_path / "qa-model"
    torch.manual_seed(0)
    AutoModelForQuestionAnswering.from_pretrained(str(minilm_dir)).save_pretrained(str(model_dir))
    AutoTokenizer.from_pretrained(str(minilm_dir)).save_pretrained(str(model_dir))
    store = Store(str(store_root))
    store.commit("runs/qa-predict/model", store.upload_dir(model_dir, "runs/qa-predict/model"))
    monkeypatch.setenv("KUBETUNE_CACHE", str(tmp_path / "cache"))

    inputs = tmp_path / "inputs.jsonl"  # questions without answers or ids
    inputs.write_text("".join(json.dumps({"question": r["question"], "context": r["context"]}) + "\n" for r in rows))
    out = tmp_path / "answers"
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert predict.main(["--spec", str(spec_file), "--input", str(inputs), "--output", str(out)]) == 0
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    # The answer parts only: rank 0 also keeps kubetune's owner record in the folder.
    records = [json.loads(line) for part in sorted(out.glob("part-*")) for line in part.read_text().splitlines()]
    assert [r["row"] for r in records] == list(range(len(rows)))

    output, _, raw, features = evaluation_outputs(spec_file, rows_file)
    assert len(features) > len(rows)  # some contexts needed more than one window
    examples = [{"id": r["id"], "context": r["context"]} for r in rows]
    kept = features.select_columns(["example_id", "offset_mapping"]).to_list()
    expected = postprocess(examples, kept, output.predictions[0], output.predictions[1])
    assert [r["prediction"] for r in records] == [expected[r["id"]] for r in rows]
    assert all(isinstance(r["score"], float) for r in records if r["prediction"])


def test_parts_are_written_whole_and_stale_parts_removed(tmp_path):
    """Parquet parts round-trip (nested scores included); rank 0 removes the parts of an earlier
    run with more ranks that the owner record lists, so the folder never holds a row twice, and
    nothing it does not list."""
    import datasets
    import pyarrow.parquet as pq

    from kubetune.storage import Store
    from kubetune.workload.stages.prediction import Prediction, write_part

    out = tmp_path / "preds"
    out.mkdir()
    (out / "part-00002.parquet").write_text("stale")
    (out / "part-00003.parquet").write_text("the user's, named like a part")
    (out / OWNER_FILE).write_text('{"job": "p", "parts": ["part-00002.parquet"]}')  # an earlier 3-rank run
    (out / "notes.txt").write_text("kept")
    spec = validate_spec({"name": "p", "model": {"source": "m"}, "data": {"train": "t.tsv"},
                          "storage": {"root": str(tmp_path / "store")}})
    for rank in (1, 0):
        job = Prediction(spec=spec, store=Store(str(tmp_path / "store")), task=None,
                         rows=datasets.Dataset.from_dict({"text": ["a"]}), first_row=rank, total_rows=2,
                         output_url=str(out), output_format="parquet", to_folder=True, rank=rank, world_size=2,
                         env=PodEnv())
        records = [{"text": "a", "row": rank, "prediction": "pos", "score": np.float32(0.75),
                    "scores": {"pos": 0.75, "neg": 0.25}}]
        assert write_part(job, records) == f"{out}/part-0000{rank}.parquet"
    assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE, "notes.txt", "part-00000.parquet",
                                                     "part-00001.parquet", "part-00003.parquet"]
    table = pq.read_table(out / "part-00001.parquet").to_pylist()
    assert table == [{"text": "a", "row": 1, "prediction": "pos", "score": 0.75, "scores": {"pos": 0.75, "neg": 0.25}}]
