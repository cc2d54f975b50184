"""The evaluate stage: score the run's committed model on the test split.

Loads the committed model of the run from storage, scores the test split (data.test, else
data.validation) and writes `eval/metrics.json` and `eval/report.txt`. Batch prediction loads
the model the same way (`load_trained`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import datasets

from kubetune.contract.layout import RunLayout, run_layout
from kubetune.contract.spec.job import RUN_DEFINING, JobSpec, SpecError, run_defining
from kubetune.registry import Registry
from kubetune.storage import COMMIT_MARKER, Store
from kubetune.workload.model.source import local_model_dir
from kubetune.workload.data.splits import load_test_split
from kubetune.workload.stages.run import PodEnv
from kubetune.workload.tasks import Evaluation, Task, get_task
from kubetune.workload.tracking.mlflow_run import log_test_metrics


def load_trained(store: Store, layout: RunLayout, cache: Path) -> tuple[str, list[str] | None]:
    """Local folder of the run's committed model (downloaded into `cache` from an object
    store), and its label map (if the task has one)."""
    if not store.is_committed(layout.model):
        raise SpecError(f"{store.url(layout.model)}: no committed model; run the train stage first")
    marker = store.read_text(f"{layout.model}/{COMMIT_MARKER}")
    folder = local_model_dir(store, store.url(layout.model), cache, version=marker)
    labels_file = os.path.join(folder, "labels.json")
    labels = json.load(open(labels_file)) if os.path.exists(labels_file) else None
    return folder, labels


def score_model(spec: JobSpec, task: Task, folder: str, labels: list[str] | None, data: datasets.Dataset,
                env: PodEnv) -> Evaluation:
    """Score one model folder on one checked split (the evaluate stage, the retrain gate), on
    the ranks of `env`."""
    from kubetune.workload.model.devices import inference_autocast  # torch: after the checks
    from kubetune.workload.model.predictor import load_for_inference, make_predictor

    model, tokenizer = load_for_inference(task, folder, env.cache_root)
    features = task.prepare_test(data, tokenizer, labels)
    with tempfile.TemporaryDirectory(prefix="kubetune-eval-") as tmp:
        trainer = make_predictor(spec, task, model, tokenizer, tmp, env.world_size)
        with inference_autocast(spec.train.precision):  # the precision training evaluated in
            output = trainer.predict(features, metric_key_prefix="test")
    return task.score(output, data, features, labels)


# What an evaluation may change in a finished run's spec: the test split and its limit. Any other
# run-defining difference means the scores would not describe this run's model.
EVAL_FREE = ("test", "max_test_samples")


def check_trained_with(store: Store, layout: RunLayout, spec: JobSpec, verb: str) -> dict[str, Any] | None:
    """Refuse (SpecError) to score or predict with a spec whose run-defining parts differ from
    the ones the run was trained with (all but EVAL_FREE): its labels, tokenisation or task
    would not be the model's. The stage that evaluates and the one that predicts share it.
    Returns the stored spec's `data` section, or None when the run stored no spec."""
    if not store.exists(layout.spec):
        return None
    import yaml

    stored = run_defining(yaml.safe_load(store.read_text(layout.spec)) or {})
    current = run_defining(spec.model_dump(mode="json"))
    changed = [k for k in RUN_DEFINING if k != "data" and stored[k] != current[k]]
    stored_data, data = dict(stored["data"] or {}), dict(current["data"] or {})
    changed += [f"data.{k}" for k in sorted(set(stored_data) | set(data))
                if k not in EVAL_FREE and stored_data.get(k) != data.get(k)]
    if changed:
        raise SpecError(f"{store.url(layout.spec)}: run {spec.name!r} was trained with a different "
                        f"{', '.join(changed)}; {verb} it with the spec it was trained with")
    return stored_data


def eval_paths(store: Store, layout: RunLayout, spec: JobSpec) -> tuple[str, str]:
    """Where this evaluation's metrics and report go (`RunLayout.eval_files`: the run's own
    test data in `eval/`, other test data in `eval/<name>/`). Refuses (SpecError) a spec whose
    run-defining parts differ from the stored run's."""
    stored_data = check_trained_with(store, layout, spec, "evaluate")
    if stored_data is None:
        return layout.eval_metrics, layout.eval_report
    data = spec.model_dump(mode="json")["data"] or {}
    return layout.eval_files(data.get("test"), stored_data.get("test"))


def run_evaluation(spec: JobSpec, env: PodEnv, model: str | None = None) -> int:
    """Score the test split; rank 0 writes the metrics and the report. Returns 0."""
    store = Store.from_spec(spec.storage)
    store.check_reachable(spec.storage.startup_timeout_seconds)
    layout = run_layout(spec.name, env.run_folder)
    metrics_path, report_path = eval_paths(store, layout, spec) if not model else (layout.eval_metrics,
                                                                                    layout.eval_report)
    task = get_task(spec)
    test, field = load_test_split(spec, store, task.columns())
    # `--model current|vNNNN|RUN`: score that model; the metrics land in this run and say whose.
    source, version = Registry(store, spec.name).resolve(model) if model else (layout, None)
    folder, labels = load_trained(store, source, env.cache_root)
    evaluation = score_model(spec, task, folder, labels, test, env)
    if env.is_main:
        metrics = {**evaluation.metrics, "split": field, "data": store.resolve(getattr(spec.data, field.split(".")[1]))}
        if model:
            metrics.update({"model_run": source.job, "model_version": version})
        store.write_json(metrics_path, metrics)
        store.write_text(report_path, evaluation.report)
        print(evaluation.report, flush=True)
        print(f"kubetune: test metrics: {store.url(metrics_path)}", flush=True)
        if not model:  # this run's own model: its metrics join its tracker run
            log_test_metrics(spec, store, layout, evaluation.metrics)
    return 0
