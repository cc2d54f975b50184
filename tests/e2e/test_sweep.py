"""A sweep as a user runs it (issue 26): `kubetune sweep jobs/x.yaml --local` as a child process,
over the learning rate of the quickstart job (real MiniLM, a few steps), with the median pruner.

One sweep serves every test of this module (it is the expensive part): the controller is
killed (SIGKILL) while trial 1 trains and started again, which must finish the budget without
running a trial twice or losing one; the same sweep then shows pruning by the rule, the table,
the picture, the best trial, and `--promote` going through the promotion gate.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import REPO, run_cli, succeeded

pytestmark = pytest.mark.slow

STEPS, EVERY = 6, 2
TRIALS = 4


def _job(root: Path, tmp: Path, **promotion: Any) -> Path:
    spec = {
        "name": "qs",
        "model": {"source": "models/all-MiniLM-L6-v2"},
        "data": {"train": "datasets/quickstart/train.tsv", "test": "datasets/quickstart/test.tsv"},
        "train": {"max_steps": STEPS, "batch_size": 8, "max_seq_length": 32, "logging_steps": EVERY,
                  "checkpoint_every": EVERY},
        # A killed trial's lease stops blocking its restart after this long.
        "storage": {"root": str(root), "lease_seconds": 5},
        "promotion": {"metric": "accuracy", **promotion},
        "sweep": {
            "parameters": {"train.learning_rate": {"type": "loguniform", "low": 1.0e-6, "high": 3.0e-4}},
            "objective": {"metric": "loss", "direction": "minimize"},
            "trials": TRIALS, "parallel": 1, "sampler": "random", "seed": 3,
            "pruner": "median", "pruner_startup_trials": 1,
        },
    }
    path = tmp / "qs.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _records(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "sweeps/qs/trials.jsonl").read_text().splitlines()]


def _evals(root: Path, number: int) -> dict[int, float]:
    lines = (root / f"runs/qs-t{number:03d}/metrics/train.jsonl").read_text().splitlines()
    return {r["step"]: r["eval_loss"] for r in map(json.loads, lines) if "eval_loss" in r}


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from kubetune.launch.quickstart import prepare

    tmp = tmp_path_factory.mktemp("sweep")
    root = tmp / "store"
    prepare(str(root))
    job = _job(root, tmp)
    env = {**os.environ, "KUBETUNE_CACHE": str(tmp / "cache")}
    # First controller: killed (SIGKILL, no chance to tidy up) once trial 1 has a checkpoint.
    first = subprocess.Popen([sys.executable, "-m", "kubetune.cli.main", "sweep", str(job), "--local"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    latest = root / "runs/qs-t001/checkpoints/LATEST"
    deadline = time.monotonic() + 900
    while not latest.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first_out = first.communicate()[0]
    assert latest.exists(), first_out[-3000:]
    at_kill = _records(root)
    second = succeeded(run_cli("sweep", str(job), "--local", env={"KUBETUNE_CACHE": str(tmp / "cache")}))
    return {"root": root, "job": job, "tmp": tmp, "first": first_out, "at_kill": at_kill,
            "second": second.stdout + second.stderr, "records": _records(root)}


def test_a_killed_controller_started_again_finishes_the_budget_without_repeating_or_losing_a_trial(swept):
    at_kill, records, second = swept["at_kill"], swept["records"], swept["second"]
    assert [(r["number"], r["state"]) for r in at_kill] == [(0, "complete"), (1, "running")]
    assert [r["number"] for r in records] == list(range(TRIALS))  # each trial once, none lost
    ended = [(r["number"], r["state"], r.get("exit_code")) for r in records]
    assert all(state in ("complete", "pruned") for _, state, _ in ended), (ended, second[-4000:])
    # The restarted sampler proposes new values, not the first controller's again.
    assert len({r["params"]["train.learning_rate"] for r in records}) == TRIALS
    assert "trial 0 starts" not in second  # finished before the kill: not run again
    assert "trial 1 started again: it resumes from its last checkpoint" in second
    assert "kubetune: resuming from" in second and "runs/qs-t001/checkpoints/step-" in second
    assert records[0]["params"] == at_kill[0]["params"] and records[1]["params"] == at_kill[1]["params"]
    study = sorted(p.name for p in (swept["root"] / "sweeps/qs/study").iterdir())
    assert study == [f"{n:08d}.json" for n in range(len(study))]  # one journal, no gap, no rewrite


def test_each_trial_is_a_run_and_pruning_follows_the_median_rule(swept):
    root, records = swept["root"], swept["records"]
    pruned = [r for r in records if r["state"] == "pruned"]
    assert pruned, "no trial was pruned"
    for r in records:
        run = root / r["run"]
        assert _evals(root, r["number"]), f"{r['run']}: no validation metrics"
        assert (run / "lineage.json").exists() or r["state"] == "pruned"
        status = json.loads((run / "metrics/status.json").read_text())
        if r["state"] == "complete":
            assert (run / "model/COMMITTED").exists() and status["state"] == "complete"
            assert r["objective"] == pytest.approx(min(_evals(root, r["number"]).values()))
        else:
            assert (run / "PRUNE").exists() and status["state"] == "pruned" and r["exit_code"] == 79
            assert not (run / "model/COMMITTED").exists()
    for r in pruned:  # the median rule, recomputed from the runs' own metrics
        step = r["pruned_at_step"]
        mine = _evals(root, r["number"])
        earlier = [_evals(root, o["number"])[step] for o in records
                   if o["state"] == "complete" and o["number"] < r["number"]]
        assert earlier and min(v for s, v in mine.items() if s <= step) > statistics.median(earlier)
        assert r["steps"] <= step + EVERY  # it stopped at its next checkpoint at the latest


def test_the_best_trial_the_table_and_the_picture(swept):
    root, records = swept["root"], swept["records"]
    summary = json.loads((root / "sweeps/qs/summary.json").read_text())
    complete = [r for r in records if r["state"] == "complete"]
    best = min(complete, key=lambda r: r["objective"])
    assert summary["best_trial"] == best["number"] and summary["best_params"] == best["params"]
    assert summary["best_value"] == pytest.approx(best["objective"])
    table = succeeded(run_cli("sweep", "status", "qs", "--store", str(root))).stdout.splitlines()
    assert table[0].split()[:3] == ["trial", "parameters", "loss"]
    assert table[1].split()[0] == str(best["number"])  # best first
    assert len(table) == 1 + TRIALS
    as_json = json.loads(succeeded(run_cli("sweep", "status", "qs", "--store", str(root), "--json")).stdout)
    assert as_json["summary"]["best_trial"] == best["number"]
    assert (root / "sweeps/qs/sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = swept["tmp"] / "sweep.png"
    succeeded(run_cli("plot", "--sweep", "qs", "--store", str(root), "-o", str(out)))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_promote_hands_the_best_trial_to_the_gate(swept):
    root, tmp = swept["root"], swept["tmp"]
    best_run = json.loads((root / "sweeps/qs/summary.json").read_text())["best_run"].rpartition("/")[2]
    env = {"KUBETUNE_CACHE": str(tmp / "cache")}
    # A floor no model reaches: the gate says no, and nothing is registered.
    refused = succeeded(run_cli("sweep", str(_job(root, tmp, min={"accuracy": 1.01})), "--local", "--promote", env=env))
    assert "not promoted" in refused.stdout + refused.stderr
    assert not (root / "registry/qs/CURRENT").exists()
    decision = json.loads((root / f"runs/{best_run}/promotion.json").read_text())
    assert decision["promote"] is False and decision["run"] == best_run
    # A floor it passes: promoted, as a retrain candidate would be.
    passed = succeeded(run_cli("sweep", str(_job(root, tmp, min={"accuracy": 0.0})), "--local", "--promote", env=env))
    assert "promoted v0001" in passed.stdout + passed.stderr
    assert "trial 0 starts" not in passed.stdout + passed.stderr  # the finished sweep is not run again
    versions = list((root / "registry/qs/versions").iterdir())
    assert [v.name for v in versions] == ["v0001"]
    assert json.loads((versions[0] / "version.json").read_text())["run"] == best_run
