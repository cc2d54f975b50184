"""Container entrypoint: `python -m kubetune.workload.evaluate --spec FILE`.

Loads the committed model of the run from storage, scores the test split (data.test, else
data.validation) and writes `eval/metrics.json` and `eval/report.txt`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile

from kubetune.contract.layout import RunLayout, run_layout
from kubetune.contract.spec import SpecError, load_spec
from kubetune.storage import COMMIT_MARKER, Store
from kubetune.workload.data import load_test_split
from kubetune.workload.errors import entrypoint
from kubetune.workload.tasks import get_task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubetune.workload.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="resolved job spec YAML (the mounted ConfigMap)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    return parser.parse_args(argv)


def load_trained(store: Store, layout: RunLayout) -> tuple[str, list[str] | None]:
    """Local folder of the run's committed model, and its label map (if the task has one)."""
    from kubetune.workload.model_source import local_model_dir

    if not store.is_committed(layout.model):
        raise SpecError(f"{store.url(layout.model)}: no committed model; run the train stage first")
    marker = store.read_text(f"{layout.model}/{COMMIT_MARKER}")
    folder = local_model_dir(store, store.url(layout.model), version=marker)
    labels_file = os.path.join(folder, "labels.json")
    labels = json.load(open(labels_file)) if os.path.exists(labels_file) else None
    return folder, labels


@entrypoint
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = load_spec(args.spec, args.overrides)
    store = Store.from_spec(spec.storage)
    store.check_reachable()
    layout = run_layout(spec.name)
    task = get_task(spec)
    test, field = load_test_split(spec, store, task.columns())
    folder, labels = load_trained(store, layout)

    from kubetune.workload.predictor import load_for_inference, make_predictor

    model, tokenizer = load_for_inference(task, folder)
    features = task.prepare_test(test, tokenizer, labels)
    with tempfile.TemporaryDirectory(prefix="kubetune-eval-") as tmp:
        trainer = make_predictor(spec, task, model, tokenizer, tmp)
        output = trainer.predict(features, metric_key_prefix="test")
    evaluation = task.score(output, test, features, labels)
    if int(os.environ.get("RANK", "0")) == 0:
        metrics = {**evaluation.metrics, "split": field, "data": store.resolve(getattr(spec.data, field.split(".")[1]))}
        store.write_json(layout.eval_metrics, metrics)
        store.write_text(layout.eval_report, evaluation.report)
        print(evaluation.report, flush=True)
        print(f"kubetune: test metrics: {store.url(layout.eval_metrics)}", flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
