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
