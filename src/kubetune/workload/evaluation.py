"""The evaluate stage: score the run's committed model on the test split.

Loads the committed model of the run from storage, scores the test split (data.test, else
data.validation) and writes `eval/metrics.json` and `eval/report.txt`. Batch prediction loads
the model the same way (`load_trained`).
"""

from __future__ import annotations

import json
import os
import tempfile

import datasets

from kubetune.contract.layout import RunLayout, run_layout
from kubetune.contract.spec import JobSpec, SpecError
from kubetune.storage import COMMIT_MARKER, Store
from kubetune.workload.model_source import local_model_dir
from kubetune.workload.splits import load_test_split
from kubetune.workload.tasks import Evaluation, Task, get_task


def load_trained(store: Store, layout: RunLayout) -> tuple[str, list[str] | None]:
    """Local folder of the run's committed model, and its label map (if the task has one)."""
    if not store.is_committed(layout.model):
        raise SpecError(f"{store.url(layout.model)}: no committed model; run the train stage first")
    marker = store.read_text(f"{layout.model}/{COMMIT_MARKER}")
    folder = local_model_dir(store, store.url(layout.model), version=marker)
    labels_file = os.path.join(folder, "labels.json")
    labels = json.load(open(labels_file)) if os.path.exists(labels_file) else None
    return folder, labels


def score_model(spec: JobSpec, task: Task, folder: str, labels: list[str] | None, data: datasets.Dataset) -> Evaluation:
    """Score one model folder on one checked split (the evaluate stage, the retrain gate)."""
    from kubetune.workload.predictor import load_for_inference, make_predictor  # torch: after the checks

    model, tokenizer = load_for_inference(task, folder)
    features = task.prepare_test(data, tokenizer, labels)
    with tempfile.TemporaryDirectory(prefix="kubetune-eval-") as tmp:
        trainer = make_predictor(spec, task, model, tokenizer, tmp)
        output = trainer.predict(features, metric_key_prefix="test")
    return task.score(output, data, features, labels)


def run_evaluation(spec: JobSpec) -> int:
    """Score the test split; rank 0 writes the metrics and the report. Returns 0."""
    store = Store.from_spec(spec.storage)
    store.check_reachable(spec.storage.startup_timeout_seconds)
    layout = run_layout(spec.name)
    task = get_task(spec)
    test, field = load_test_split(spec, store, task.columns())
    folder, labels = load_trained(store, layout)
    evaluation = score_model(spec, task, folder, labels, test)
    if int(os.environ.get("RANK", "0")) == 0:
        metrics = {**evaluation.metrics, "split": field, "data": store.resolve(getattr(spec.data, field.split(".")[1]))}
        store.write_json(layout.eval_metrics, metrics)
        store.write_text(layout.eval_report, evaluation.report)
        print(evaluation.report, flush=True)
        print(f"kubetune: test metrics: {store.url(layout.eval_metrics)}", flush=True)
    return 0
