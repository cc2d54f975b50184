"""Watching and comparing runs (issue 15): the quickstart's progress lines and end summary,
`kubetune runs` and `kubetune show` over a real store, a run stopped by SIGTERM listed as
resumable, and `kubetune plot` over two real runs.

The README's main job is tested here too: every test of this module reads one quickstart store
(`watched`), so the suite trains that job once. It is module-scoped, not session-scoped, on
purpose: under pytest-xdist a session fixture is built once per worker that uses it, and a
module's tests all go to one worker.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, run_cli, succeeded
from helpers_resume import TrainProcess

# Every test reads the trained quickstart store (`watched`): a real training run (issue 28, point 6).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with three quickstart runs: `quickstart` (the README's main job as shipped, run
    twice: the second run finds it complete), `quickstart-lr` (complete, 8 steps at another
    learning rate, with TensorBoard) and `quickstart-stopped` (SIGTERM after its first
    checkpoint: exit 75, resumable)."""
    base = tmp_path_factory.mktemp("watched")
    root = base / "store"
    # As on a machine that cannot reach the Hub (a closed port): the synthetic sentences.
    succeeded(run_cli("prepare-quickstart", "--root", str(root), env={"HF_ENDPOINT": "http://127.0.0.1:9"}))
    job = ["run", "jobs/quickstart.yaml", "--local", "--set", f"storage.root={root}",
           "--set", "train.keep_checkpoints_after_success=1"]
    first = succeeded(run_cli(*job))
    again = run_cli(*job, "--stage", "train")  # the same job again: it finds the run complete
    succeeded(run_cli(
        "run", "jobs/quickstart.yaml", "--local", "--set", f"storage.root={root}",
        "--set", "name=quickstart-lr", "--set", "train.max_steps=8", "--set", "train.checkpoint_every=4",
        "--set", "train.learning_rate=3.0e-5", "--set", "train.logging_steps=2", "--stage", "train",
        "--set", "tracking.tensorboard=true"))
    spec = yaml.safe_load((REPO / "jobs" / "quickstart.yaml").read_text())
    spec["name"] = "quickstart-stopped"
    spec["storage"]["root"] = str(root)
    spec["train"].update(checkpoint_every=3, logging_steps=1)
    spec_file = base / "stopped.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    proc = TrainProcess(spec_file, base / "work-stopped")
    proc.wait_for(r"checkpoint committed", timeout=900)
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait(300) == 75, proc.output[-3000:]
    return {"root": root, "first": first, "again": again}


def test_quickstart_runs_offline_from_a_fresh_store(watched):
    """The README's main job: prepare the offline store, train, evaluate (the module's
    quickstart store, trained once for this test and the run-watching tests)."""
    root = watched["root"]
    assert (root / "models" / "all-MiniLM-L6-v2" / "config.json").exists()
    assert len((root / "datasets" / "quickstart" / "train.tsv").read_text().splitlines()) == 401

    out = watched["first"]
    metrics = json.loads((root / "runs" / "quickstart" / "eval" / "metrics.json").read_text())
    assert metrics["num_samples"] == 100
    assert metrics["accuracy"] >= 0.9
    assert "test:    accuracy" in out.stdout
    # One progress line per logging step, with the fields users look for.
    progress = [line for line in out.stdout.splitlines() if line.startswith("kubetune: step ")]
    assert progress and all(k in progress[0] for k in ("loss", "lr", "samples/s", "eta"))

    # Started again, a finished run reports that it is done instead of training again.
    again = watched["again"]
    assert again.returncode == 0
    assert "already complete" in again.stdout


def test_quickstart_prints_progress_lines_and_the_end_summary(watched):
    out = watched["first"].stdout
    progress = [line for line in out.splitlines() if line.startswith("kubetune: step ")]
    assert progress and all(k in progress[0] for k in ("loss", "samples/s"))
    assert "/46" in progress[-1]  # step/total: two epochs of 360 rows at batch size 16
    root = watched["root"]
    assert f"run:     {root}/runs/quickstart" in out
    assert "best:    accuracy" in out and "at step" in out
    assert "test:    accuracy" in out
    assert "wall:    " in out
    # Offline, the data are synthetic, and the summary says what its accuracy means (issue 27, point 5).
    assert "origin:  data.train: synthetic sentences: the accuracy shows the mechanics, not quality" in out


def test_runs_lists_complete_and_resumable_runs_newest_first(watched):
    root = watched["root"]
    table = succeeded(run_cli("runs", "--store", str(root))).stdout.splitlines()
    header, rows = table[0], {line.split()[0]: line for line in table[1:]}
    assert header.split()[:4] == ["name", "task", "model", "state"]
    assert set(rows) == {"quickstart", "quickstart-lr", "quickstart-stopped"}
    assert [line.split()[0] for line in table[1:]] == ["quickstart-stopped", "quickstart-lr", "quickstart"]
    assert " complete " in rows["quickstart"] and " 46/46 " in rows["quickstart"]
    assert " preempted-and-resumable " in rows["quickstart-stopped"]

    runs = {r["name"]: r for r in json.loads(succeeded(run_cli("runs", "--store", str(root), "--json")).stdout)}
    metrics = json.loads((root / "runs" / "quickstart" / "eval" / "metrics.json").read_text())
    done = runs["quickstart"]
    assert done["state"] == "complete" and done["task"] == "text-classification"
    assert done["test"] == {"metric": "accuracy", "value": metrics["accuracy"]}
    assert done["best"]["metric"] == "accuracy" and 0.0 <= done["best"]["value"] <= 1.0
    assert done["step"] == done["max_steps"] == 46 and done["duration_seconds"] > 0
    stopped = runs["quickstart-stopped"]
    assert stopped["state"] == "preempted-and-resumable" and stopped["test"] is None
    assert stopped["latest_checkpoint"] >= 3 and stopped["step"] < stopped["max_steps"]


def test_runs_reads_the_store_of_a_job_spec(watched, tmp_path):
    spec = yaml.safe_load((REPO / "jobs" / "quickstart.yaml").read_text())
    spec["storage"]["root"] = str(watched["root"])
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    names = [r["name"] for r in json.loads(succeeded(run_cli("runs", str(job), "--json")).stdout)]
    assert sorted(names) == ["quickstart", "quickstart-lr", "quickstart-stopped"]


def test_show_prints_metrics_report_checkpoints_and_lineage(watched):
    root = watched["root"]
    out = succeeded(run_cli("show", "quickstart", "--store", str(root))).stdout
    assert "state:       complete" in out
    assert "test:        accuracy" in out
    assert "per-class report:" in out and "negative" in out and "positive" in out
    assert "checkpoints: step-" in out
    stopped = succeeded(run_cli("show", "quickstart-stopped", "--store", str(root))).stdout
    assert "preempted-and-resumable" in stopped and "LATEST" in stopped


def test_show_of_an_unknown_run_is_one_line_exit_2(watched):
    result = run_cli("show", "nope", "--store", str(watched["root"]))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: run 'nope'") and result.stderr.count("\n") == 1
    assert "quickstart" in result.stderr  # names the runs that exist


def _png_is_a_real_figure(path: Path) -> None:
    from PIL import Image

    image = Image.open(path).convert("RGB")
    width, height = image.size
    assert width >= 800 and height >= 300
    colours = image.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50  # lines, text and axes, not a blank canvas
    dominant = max(count for count, _ in colours)
    assert dominant < 0.97 * width * height


def test_plot_overlays_two_runs_in_one_png(watched, tmp_path):
    root = watched["root"]
    out = tmp_path / "compare.png"
    result = succeeded(run_cli("plot", "quickstart", "quickstart-lr", "-o", str(out), "--store", str(root)))
    assert str(out) in result.stdout
    _png_is_a_real_figure(out)
    one = tmp_path / "one.png"
    succeeded(run_cli("plot", "quickstart", "-o", str(one), "--store", str(root)))
    assert out.read_bytes() != one.read_bytes()  # the second run's lines are drawn


def test_every_finished_run_leaves_curves_png_in_the_store(watched):
    root = watched["root"]
    for run in ("quickstart", "quickstart-lr"):
        _png_is_a_real_figure(root / "runs" / run / "metrics" / "curves.png")
    assert not (root / "runs" / "quickstart-stopped" / "metrics" / "curves.png").exists()
    assert "curves:" in succeeded(run_cli("show", "quickstart", "--store", str(root))).stdout


def test_plot_of_an_unknown_run_is_one_line_exit_2(watched, tmp_path):
    result = run_cli("plot", "nope", "-o", str(tmp_path / "x.png"), "--store", str(watched["root"]))
    assert result.returncode == 2 and result.stderr.startswith("error: run 'nope'")
    assert not (tmp_path / "x.png").exists()


def test_tensorboard_event_files_in_the_store_hold_the_loss_of_every_logging_step(watched):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = watched["root"] / "runs" / "quickstart-lr"
    logged = [json.loads(line) for line in (run / "metrics" / "train.jsonl").read_text().splitlines()]
    loss_steps = {r["step"]: r["loss"] for r in logged if "loss" in r}
    assert {2, 4, 6, 8} <= set(loss_steps)  # every logging step (and the early first line)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = {e.step: e.value for e in events.Scalars("train/loss")}
    assert sorted(scalars) == sorted(loss_steps)
    for step, loss in loss_steps.items():
        assert scalars[step] == pytest.approx(loss, rel=1e-5)
    assert "eval/accuracy" in events.Tags()["scalars"]
    assert not (watched["root"] / "runs" / "quickstart" / "tensorboard").exists()  # only when asked for


def test_evaluating_other_test_data_shows_its_own_scores_and_path_in_the_summary(watched):
    """Issue 28, point 3: `run --stage evaluate` on other test data ends with a summary of that
    data's scores (40 rows here), its path and its metrics file, while the run's own scores on
    its 100 test rows stay in eval/metrics.json."""
    root = watched["root"]
    rows = (root / "datasets" / "quickstart" / "test.tsv").read_text().splitlines()
    other = root / "datasets" / "other" / "sample.tsv"
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_text("\n".join(rows[:41]) + "\n")  # the header and 40 rows
    out = succeeded(run_cli("run", "jobs/quickstart.yaml", "--local", "--stage", "evaluate",
                            "--set", f"storage.root={root}", "--set", "data.test=datasets/other/sample.tsv"))
    run = root / "runs" / "quickstart"
    assert json.loads((run / "eval" / "sample" / "metrics.json").read_text())["num_samples"] == 40
    assert json.loads((run / "eval" / "metrics.json").read_text())["num_samples"] == 100
    summary = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
               if re.match(r"^(best|test|data|metrics):", line)}
    assert summary["test"].endswith("num_samples 40"), out.stdout[-2000:]
    assert summary["data"] == f"{other} (data.test)"
    assert summary["metrics"] == str(run / "eval" / "sample" / "metrics.json")
    assert summary["best"].endswith("(validation: 10% of data.train held out, seed 42)")


# The documented commands that run for real against the quickstart store, in the docs' own
# words (tests/helpers_docs.py). The fast project test parses, validates and renders every one;
# those left out here train (`retrain`, the plain `run jobs/quickstart.yaml --local`, which is
# this module's fixture), need a cluster (`submit`, `logs`, `cancel`, `list`, `status` of a
# cluster job), a registry version (`models show/rollback/promote`), another job's trained model
# (`run jobs/sst2-minilm.yaml --stage predict`) or the image (`run --container`).
RUN_HERE = ("validate", "render", "runs", "show", "plot", "status", "models list", "run")


def _runs_here(command) -> bool:
    argv = command.argv
    if command.setup:
        return True
    if command.verb not in RUN_HERE or "--container" in argv or any(a.startswith("s3://") for a in argv):
        return False
    if command.verb == "status":
        return argv[1].endswith(".yaml") or "--local" in argv
    if command.verb == "run":
        return "predict" in argv and argv[1] == "jobs/quickstart.yaml"
    return True


def test_the_docs_journeys_run_as_written_against_the_quickstart_store(watched, tmp_path):
    """Issue 28, point 4: from a folder laid out as the docs assume (the repository's `jobs/`,
    the quickstart store as `./.kubetune`), every documented command that needs no cluster and
    trains nothing runs as written, with the docs' setup lines (mkdir, cp) before it, and exits
    0; the README's first command is the one this module's fixture ran."""
    import subprocess
    import sys

    from helpers_docs import doc_commands

    here = tmp_path / "journey"
    here.mkdir()
    (here / "jobs").symlink_to(REPO / "jobs")
    (here / ".kubetune").symlink_to(watched["root"])
    commands = doc_commands()
    assert ["run", "jobs/quickstart.yaml", "--local"] in [c.argv for c in commands]  # the fixture's `first`
    ran = []
    for c in filter(_runs_here, commands):
        argv = c.argv if c.setup else [sys.executable, "-m", "kubetune.cli.main", *c.argv]
        out = subprocess.run(argv, cwd=here, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"{c.where}: {c.written}\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
        ran.append((c, out))
    verbs = {c.verb for c, _ in ran if not c.setup}
    assert {"validate", "render", "runs", "show", "plot", "status", "models list", "run"} <= verbs, verbs
    assert (here / "compare.png").stat().st_size > 0  # watching-runs.md's plot
    assert any(p.name.endswith(".jsonl") for p in (here / "predictions").iterdir())  # the predict journey
    statuses = [out.stdout for c, out in ran if c.verb == "status"]
    assert statuses and all("state:    complete, step 46/46" in s and "no cluster asked" in s for s in statuses)
    validated = [out.stderr for c, out in ran if c.argv[:2] == ["validate", "jobs/reviews.yaml"]]
    assert validated and "ok: reviews: data (train 360, validation 40, test 100 rows)" in validated[0]
