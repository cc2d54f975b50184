"""`kubetune run --local`'s closing summary (`cli.run.print_summary`): its `test:` line shows the
headline metrics of the one list `kubetune runs` also reads (`launch.runs.HEADLINE_METRICS`)."""

from __future__ import annotations

import yaml

from kubetune.cli.run import print_summary
from kubetune.contract.layout import RunLayout
from kubetune.contract.spec.job import load_spec
from kubetune.launch import runs
from kubetune.storage import Store

METRICS = {"num_samples": 40, "loss": 0.25, "bleu": 12.5, "accuracy": 0.875, "split": "test", "test_runtime": 1.5}


def _job(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"name": "summed", "model": {"source": "models/m"}, "data": {"train": "d/t.tsv"},
                                    "storage": {"root": str(tmp_path / "store")}}))
    spec = load_spec(path)
    store = Store(str(tmp_path / "store"))
    store.write_json(RunLayout("summed").eval_metrics, METRICS)
    return spec, store


def _test_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("test:"))


def test_the_summary_shows_the_headline_metrics_in_order_then_the_sample_count(tmp_path, capsys):
    spec, _ = _job(tmp_path)
    print_summary(spec, wall_seconds=3.0)
    out = capsys.readouterr().out
    assert _test_line(out) == "test:    accuracy 0.8750, bleu 12.5000, loss 0.2500, num_samples 40"
    assert "wall:    3.0 s" in out


def test_the_summary_and_the_runs_table_read_one_list(tmp_path, capsys, monkeypatch):
    """Reorder the one list: both the summary's line and the table's `test` column follow."""
    spec, store = _job(tmp_path)
    monkeypatch.setattr(runs, "HEADLINE_METRICS", ("loss", "accuracy"))
    print_summary(spec)
    assert _test_line(capsys.readouterr().out) == "test:    loss 0.2500, accuracy 0.8750, num_samples 40"
    assert runs.describe_run(store, "summed")["test"] == {"metric": "loss", "value": 0.25}


def test_without_a_headline_metric_the_summary_shows_every_number(tmp_path, capsys, monkeypatch):
    spec, _ = _job(tmp_path)
    monkeypatch.setattr(runs, "HEADLINE_METRICS", ("exact_match",))
    print_summary(spec)
    assert _test_line(capsys.readouterr().out) == "test:    num_samples 40"
    monkeypatch.setattr(runs, "HEADLINE_METRICS", ())
    store = Store(str(tmp_path / "store"))
    store.write_json(RunLayout("summed").eval_metrics, {"test_runtime": 1.5, "split": "test"})
    print_summary(spec)
    assert _test_line(capsys.readouterr().out) == 'test:    {"test_runtime": 1.5}'


def _trained(tmp_path, data: dict, test_override: str | None = "same"):
    """A run trained with `data` (its stored spec), its own scores (872 rows) in eval/, and the
    spec the summary is printed for: the same, or with another data.test."""
    root = tmp_path / "store"
    raw = {"name": "summed", "model": {"source": "models/m"}, "data": data, "storage": {"root": str(root)}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    store = Store(str(root))
    store.write_text(RunLayout("summed").spec, load_spec(path).to_yaml())
    store.write_json(RunLayout("summed").eval_metrics, {"accuracy": 0.7557, "num_samples": 872,
                                                        "split": "data.test", "data": store.resolve(data.get("test") or data["validation"])})
    if test_override != "same":
        raw["data"] = {**data, "test": test_override}
        path.write_text(yaml.safe_dump(raw))
    return load_spec(path), store


def test_after_evaluating_other_test_data_the_summary_shows_its_scores_and_its_path(tmp_path, capsys):
    """Issue 28, point 3: `run --stage evaluate --set data.test=other` wrote eval/<name>/; the
    summary reads that file, not the run's own eval/metrics.json."""
    spec, store = _trained(tmp_path, {"train": "d/train.tsv", "test": "d/test.tsv"}, test_override="new/dev-other.tsv")
    other = RunLayout("summed").eval_files("new/dev-other.tsv", "d/test.tsv")[0]
    assert other == "runs/summed/eval/dev-other/metrics.json"
    store.write_json(other, {"accuracy": 0.83, "num_samples": 200, "split": "data.test",
                             "data": store.resolve("new/dev-other.tsv")})
    print_summary(spec)
    out = capsys.readouterr().out
    assert _test_line(out) == "test:    accuracy 0.8300, num_samples 200"
    assert f"data:    {store.resolve('new/dev-other.tsv')} (data.test)" in out
    assert f"metrics: {store.url(other)}" in out
    assert "0.7557" not in out and "872" not in out


def test_the_summary_says_which_data_picked_the_best_checkpoint(tmp_path, capsys):
    spec, store = _trained(tmp_path, {"train": "d/train.tsv", "test": "d/test.tsv", "validation_split": 0.2,
                                      "split_seed": 7})
    store.write_text(RunLayout("summed").train_metrics, '{"step": 5, "eval_accuracy": 0.9}\n')
    print_summary(spec)
    out = capsys.readouterr().out
    assert "best:    accuracy 0.9000 at step 5 (validation: 20% of data.train held out, seed 7)" in out
    assert f"data:    {store.resolve('d/test.tsv')} (data.test)\n" in out


def test_a_score_on_the_data_that_picked_the_model_is_called_not_held_out(tmp_path, capsys):
    """data.validation doubling as the test split (no data.test): the test line is no held-out
    score, and the summary says so."""
    spec, store = _trained(tmp_path, {"train": "d/train.tsv", "validation": "d/dev.tsv"})
    store.write_json(RunLayout("summed").eval_metrics, {"accuracy": 0.9, "num_samples": 872, "split": "data.validation",
                                                        "data": store.resolve("d/dev.tsv")})
    store.write_text(RunLayout("summed").train_metrics, '{"step": 5, "eval_accuracy": 0.9}\n')
    print_summary(spec)
    out = capsys.readouterr().out
    assert f"(validation: data.validation, {store.resolve('d/dev.tsv')})" in out
    assert "(data.validation: it also picked the best checkpoint, so this is not a held-out score)" in out
