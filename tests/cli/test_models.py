"""`kubetune models promote` as a user runs it (a real `kubetune` process, which starts the promote
entrypoint as its child): bad input is one `error:` line that starts with the user's spec file,
as the launcher's own errors do, exit 2, and CURRENT does not move. Each case fails before any
model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from kubetune.contract.exitcodes import EXIT_BAD_INPUT
from kubetune.contract.layout import RunLayout
from kubetune.registry import Registry
from kubetune.storage import Store

ROWS = "".join(f"{'good' if i % 2 else 'bad'} film {i}\t{'positive' if i % 2 else 'negative'}\n" for i in range(12))


@pytest.fixture
def folder(tmp_path):
    """A job in jobs/reviews.yaml over a local store whose registry has a current version."""
    store = Store(str(tmp_path / "store"))
    store.write_text("datasets/reviews/test.tsv", "text\tlabel\n" + ROWS)
    earlier = RunLayout("earlier")
    store.write_text(f"{earlier.model}/config.json", "{}")
    store.commit(earlier.model, ["config.json"])
    Registry(store, "reviews").promote("earlier", {"reason": "seeded"}, None)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "reviews.yaml").write_text(yaml.safe_dump({
        "name": "reviews", "model": {"source": "models/m"},
        "data": {"train": "datasets/reviews/test.tsv", "test": "datasets/reviews/test.tsv",
                 "labels": ["negative", "positive"]},
        "storage": {"root": str(tmp_path / "store")},
    }))
    return tmp_path


def kubetune(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubetune.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize(("run", "overrides", "says"), [
    ("earlier", ["promotion.metric=bleu"], "promotion.metric: task text-classification does not produce metric 'bleu'"),
    ("never-trained", [], "runs/never-trained/model: no committed model; run the train stage first"),
], ids=["gate-metric-the-task-lacks", "run-without-a-model"])
def test_promote_errors_start_with_the_users_spec_file(folder, run, overrides, says):
    store = Store(str(folder / "store"))
    before = store.read_text("registry/reviews/CURRENT")
    out = kubetune(folder, "models", "promote", "jobs/reviews.yaml", run, *(a for o in overrides for a in ("--set", o)))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == EXIT_BAD_INPUT, out.stderr[-2000:]
    assert lines[-1].startswith("error: jobs/reviews.yaml: ") and says in lines[-1], lines[-1]
    assert "Traceback" not in out.stderr
    assert store.read_text("registry/reviews/CURRENT") == before


def test_models_show_prints_a_table_like_show_and_json_on_request(folder):
    """`models show` labels each field as `kubetune show` does (no raw JSON); `--json` is the
    registry's record itself, for scripts; `models list --json` names CURRENT and every version."""
    out = kubetune(folder, "models", "show", "jobs/reviews.yaml")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "version:     v0001  (current)"
    assert "run:         earlier" in lines and "decision:    seeded" in lines
    assert not out.stdout.lstrip().startswith("{")
    record = json.loads(kubetune(folder, "models", "show", "jobs/reviews.yaml", "v0001", "--json").stdout)
    assert (record["version"], record["run"], record["decision"]["reason"]) == ("v0001", "earlier", "seeded")
    listed = json.loads(kubetune(folder, "models", "list", "jobs/reviews.yaml", "--json").stdout)
    assert listed["current"] == "v0001" and [v["version"] for v in listed["versions"]] == ["v0001"]


def test_models_show_renders_the_gate_checks_as_a_table():
    from kubetune.cli.models import show_lines

    decision = {"reason": "failed min accuracy (0.4750 < 0.5500)", "candidate": {"accuracy": 0.475},
                "checks": [{"check": "min accuracy", "value": 0.475, "limit": 0.55, "ok": False}]}
    lines = show_lines({"version": "v0002", "run": "r2", "created": "2026-12-07T10:00:00+00:00",
                        "decision": decision, "parent": "v0001"}, current="v0001")
    assert lines[0] == "version:     v0002" and "created:     2026-12-07T10:00:00Z" in lines
    assert "gate:        accuracy 0.4750" in lines
    assert [line.split() for line in lines[lines.index("checks:") + 1:]] == [
        ["CHECK", "VALUE", "LIMIT", "OK"], ["min", "accuracy", "0.4750", "0.5500", "no"]]
