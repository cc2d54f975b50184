"""The first hour of a new user (issue 13): `--version`, `--set` errors that name the override,
`run` without `--local`, and `validate --data` checking the data files and model folder."""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from helpers import run_cli
from kubetune.contract.names import ENV_PROGRESS_INTERVAL

ROWS = "".join(f"{'good' if i % 2 else 'bad'} film {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(30))
HEAD = "".join(ROWS.splitlines(keepends=True)[:6])


@pytest.fixture(scope="module")
def store(tmp_path_factory, minilm_dir) -> Path:
    root = tmp_path_factory.mktemp("first-hour") / "store"
    shutil.copytree(minilm_dir, root / "models" / "minilm")
    (root / "models" / "no-tokenizer").mkdir(parents=True)
    shutil.copy(minilm_dir / "config.json", root / "models" / "no-tokenizer" / "config.json")
    data = root / "datasets" / "toy"
    data.mkdir(parents=True)
    (data / "train.tsv").write_text("text\tlabel\n" + ROWS)
    (data / "test.tsv").write_text("text\tlabel\n" + HEAD)
    (data / "no-label.tsv").write_text("text\tstars\n" + HEAD)
    (data / "unknown-label.tsv").write_text("text\tlabel\nso-so film\tneutral\n" + HEAD)
    return root


def job_file(tmp_path: Path, store: Path, **data) -> Path:
    spec = {
        "name": "first-hour",
        "model": {"source": "models/minilm"},
        "data": {"train": "datasets/toy/train.tsv", "test": "datasets/toy/test.tsv", **data},
        "train": {"epochs": 1, "max_seq_length": 16},
        "storage": {"root": str(store)},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_version_prints_the_installed_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"kubetune {version('kubetune')}"


def test_a_bad_override_is_named_not_the_file():
    result = run_cli("validate", "jobs/quickstart.yaml", "--set", "train.epoch=1")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --set train.epoch=1: unknown field (did you mean epochs?)"
    assert "quickstart.yaml" not in result.stderr


def test_a_file_error_still_names_the_file(tmp_path, store):
    path = job_file(tmp_path, store)
    spec = yaml.safe_load(path.read_text())
    spec["train"]["epoch"] = 1
    path.write_text(yaml.safe_dump(spec))
    result = run_cli("validate", str(path), "--set", "train.epochs=2")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}: train.epoch: unknown field (did you mean epochs?)"


def test_run_without_local_says_how_to_run_it(tmp_path, store):
    result = run_cli("run", str(job_file(tmp_path, store)))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "--local" in line and f"kubetune submit {tmp_path / 'job.yaml'}" in line
    assert "first-hour-train" in line and "Traceback" not in line and not line.startswith("error")


def test_validate_without_data_ends_with_a_verdict(tmp_path, store):
    result = run_cli("validate", str(job_file(tmp_path, store)))
    assert result.returncode == 0
    assert result.stderr.strip().splitlines()[-1].startswith("ok: ")
    assert yaml.safe_load(result.stdout)["name"] == "first-hour"  # stdout stays the resolved spec


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"test": "datasets/toy/missing.tsv"}, "data.test: "),
        ({"test": "datasets/toy/no-label.tsv"}, "'label'"),
        ({"test": "datasets/toy/unknown-label.tsv"}, "'neutral'"),
    ],
    ids=["missing-file", "missing-column", "unknown-label"],
)
def test_validate_data_refuses_bad_data_with_one_line(tmp_path, store, data, expected):
    path = job_file(tmp_path, store, **data)
    result = run_cli("validate", str(path), "--data")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: data.") and "data.test" in line and expected in line
    if "missing" in str(data):
        assert "missing.tsv" in line


def test_validate_data_refuses_a_model_folder_without_tokenizer(tmp_path, store):
    path = job_file(tmp_path, store)
    result = run_cli("validate", str(path), "--data", "--set", "model.source=models/no-tokenizer")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: model.source: ") and "tokenizer" in line


def test_validate_data_accepts_good_data(tmp_path, store):
    result = run_cli("validate", str(job_file(tmp_path, store)), "--data")
    assert result.returncode == 0, result.stderr
    verdict = result.stderr.strip().splitlines()[-1]
    assert verdict.startswith("ok: first-hour: ") and "train 27, validation 3, test 6 rows" in verdict
    assert not (store / "runs").exists()  # a check writes nothing


# --- a finished run's disk, summary.json and progress lines (a real, tiny local training run) ---

TINY = ["--set", "train.max_steps=4", "--set", "train.checkpoint_every=2", "--set", "train.logging_steps=2",
        "--set", "train.batch_size=8", "--set", "train.max_seq_length=16", "--stage", "train"]


@pytest.fixture(scope="module")
def quickstart_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("qs") / "store"
    assert run_cli("prepare-quickstart", "--root", str(root)).returncode == 0
    return root


@pytest.fixture(scope="module")
def clean_run(quickstart_root):
    """A finished tiny quickstart run, `qs-clean`: its output and the command's arguments."""
    args = ["run", "jobs/quickstart.yaml", "--local", "--set", f"storage.root={quickstart_root}",
            "--set", "name=qs-clean", *TINY]
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    return out, args


@pytest.mark.slow
def test_a_finished_run_keeps_no_checkpoints_and_names_its_best_one(quickstart_root, clean_run):
    import json

    out, _ = clean_run
    run = quickstart_root / "runs" / "qs-clean"
    assert (run / "model" / "COMMITTED").is_file()
    assert not (run / "checkpoints").exists(), sorted(p.name for p in (run / "checkpoints").iterdir())
    summary = json.loads((run / "metrics" / "summary.json").read_text())
    assert summary["best_metric_name"] == "eval_accuracy"
    assert summary["best_step"] in (2, 4)
    assert summary["best_checkpoint"] == f"step-{summary['best_step']:06d}"
    assert "train_loss" in summary and "training_loss" not in summary
    speed = summary["speed_settings"]  # what the run actually used (issue 16)
    gpu = speed["device"] == "cuda"
    assert speed["device"] in ("cpu", "cuda") and speed["attention"] == "sdpa" and speed["dataloader_workers"] == 0
    assert speed["pad_to_multiple_of"] == (8 if gpu else None) and speed["pin_memory"] is gpu
    if not gpu:  # auto: bf16 autocast where the CPU has bf16 units (issue 30), with the reason why
        from kubetune.workload.model.devices import cpu_bf16_unit

        unit = cpu_bf16_unit()
        assert speed["precision"] == ("bf16" if unit else "fp32") and speed["tf32"] is False
        assert speed["precision_reason"].startswith("auto:") and (unit or "no bf16 units") in speed["precision_reason"]
        assert f"kubetune: precision {speed['precision']} (auto:" in out.stdout
    assert speed["gradient_checkpointing"] is False and speed["compile"] is False
    assert speed["fsdp"] is None and speed["quantization"] is None
    steps = [line.split()[2] for line in out.stdout.splitlines() if line.startswith("kubetune: step ")]
    assert steps[0] == "1/4", steps  # the first line at step 1, then every logging_steps


@pytest.mark.slow
def test_keep_checkpoints_after_success_keeps_the_newest(quickstart_root):
    out = run_cli("run", "jobs/quickstart.yaml", "--local", "--set", f"storage.root={quickstart_root}",
                  "--set", "name=qs-keep", "--set", "train.keep_checkpoints_after_success=1", *TINY)
    assert out.returncode == 0, out.stderr[-3000:]
    kept = sorted(p.name for p in (quickstart_root / "runs" / "qs-keep" / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["step-000004"], kept  # the newest only


@pytest.mark.slow
def test_an_interrupted_local_run_says_how_to_resume_and_keeps_its_checkpoint(quickstart_root):
    """SIGTERM to `kubetune run --local`: a checkpoint, local words (no 'failed', no Job), no
    evaluation after the signal; the checkpoints stay until the same command finishes the run."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    from helpers import REPO

    args = [sys.executable, "-m", "kubetune.cli.main", "run", "jobs/quickstart.yaml", "--local",
            "--set", f"storage.root={quickstart_root}", "--set", "name=qs-sigterm", *TINY,
            "--set", "train.max_steps=10", "--set", "train.checkpoint_every=null", "--set", "train.logging_steps=1"]
    # No checkpoint_every: evaluation and saving per epoch, the schedule whose epoch end, reached
    # by stopping mid-epoch, used to add a full evaluation and a second upload after SIGTERM.
    import os

    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1",  # lines as they come, every one
                                 ENV_PROGRESS_INTERVAL: "0"})
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 600
    while not any("kubetune: step 2/" in line for line in lines) and time.monotonic() < deadline:
        assert proc.poll() is None, "".join(lines)[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(300)
    reader.join(10)
    output = "".join(lines)
    assert code == 75, output[-3000:]
    assert "run the same command again to resume" in output
    assert "failed" not in output and "Job restarts" not in output and "stopping the others" not in output
    after = output[output.index("SIGTERM received"):]
    assert "eval_" not in after, after  # no evaluation at the interrupted step
    assert after.count("uploading checkpoint") == 1, after  # and one upload of its checkpoint
    run = quickstart_root / "runs" / "qs-sigterm"
    assert (run / "checkpoints" / "LATEST").is_file()  # kept while the run is incomplete
    assert not (run / "model" / "COMMITTED").exists()

    again = run_cli(*args[3:])  # the same command resumes and finishes
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resum" in again.stdout.lower() + again.stderr.lower()
    assert (run / "model" / "COMMITTED").is_file() and not (run / "checkpoints").exists()


def _predict(cwd: Path, run_args: list[str], *extra: str):
    import os
    import subprocess
    import sys

    from helpers import REPO

    args = [a if a != "jobs/quickstart.yaml" else str(REPO / a) for a in run_args]
    args = [a for a in args if a not in ("--stage", "train")]
    return subprocess.run([sys.executable, "-m", "kubetune.cli.main", *args, "--stage", "predict",
                           "--input", "datasets/quickstart/test.tsv", *extra],
                          cwd=cwd, capture_output=True, text=True, timeout=900, env=dict(os.environ))


@pytest.mark.slow
def test_a_relative_prediction_output_is_relative_to_the_current_folder(tmp_path, quickstart_root, clean_run):
    _, args = clean_run
    out = _predict(tmp_path, args, "--output", "preds/")
    assert out.returncode == 0, out.stderr[-3000:]
    parts = list((tmp_path / "preds").glob("part-*.jsonl"))
    assert len(parts) == 1 and parts[0].read_text().count("\n") > 10
    assert not (quickstart_root / "preds").exists()
    stored = _predict(tmp_path, args, "--output", "preds-in-store/", "--output-in-store")
    assert stored.returncode == 0, stored.stderr[-3000:]
    assert list((quickstart_root / "preds-in-store").glob("part-*.jsonl"))
    assert not (tmp_path / "preds-in-store").exists()


@pytest.mark.slow
def test_an_output_folder_of_another_job_is_refused_unless_overwrite(tmp_path, quickstart_root, clean_run):
    _, args = clean_run
    assert _predict(tmp_path, args, "--output", "preds/").returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "preds").iterdir()}
    other = [a if a != "name=qs-clean" else "name=qs-other" for a in args]
    refused = _predict(tmp_path, other, "--output", "preds/")
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line == ("error: --output preds/: already holds predictions of job 'qs-clean'; "
                    "choose another folder, or add --overwrite to replace them")
    assert {p.name: p.read_bytes() for p in (tmp_path / "preds").iterdir()} == before
    # Parts that no job claims are refused too; the same job may write its folder again.
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "part-00000.jsonl").write_text('{"label": "x"}\n')
    assert _predict(tmp_path, other, "--output", "loose/").returncode == 2
    assert _predict(tmp_path, args, "--output", "preds/").returncode == 0


def _stage(run_args: list[str], stage: str, *extra: str):
    """The finished run's own command (same spec and overrides) with another stage."""
    args = [a for a in run_args if a not in ("--stage", "train")]
    return run_cli(*args, "--stage", stage, *extra)


@pytest.mark.slow
def test_other_test_data_is_scored_into_its_own_file(quickstart_root, clean_run):
    """Issue 12: evaluating a finished run on other test data (`--set data.test=...`) writes
    eval/<name>/metrics.json (<name> from the file name) and leaves the run's own
    eval/metrics.json byte for byte; other data, other scores."""
    import json

    _, args = clean_run
    run = quickstart_root / "runs" / "qs-clean"
    own_eval = _stage(args, "evaluate")  # the run's own test data: eval/metrics.json
    assert own_eval.returncode == 0, own_eval.stderr[-3000:]
    before = (run / "eval" / "metrics.json").read_bytes()
    header, *rows = (quickstart_root / "datasets" / "quickstart" / "test.tsv").read_text().splitlines()
    flip = {"positive": "negative", "negative": "positive"}
    flipped = [f"{text}\t{flip[label]}" for text, label in (row.rsplit("\t", 1) for row in rows)]
    (quickstart_root / "datasets" / "other").mkdir(exist_ok=True)
    (quickstart_root / "datasets" / "other" / "flipped.tsv").write_text("\n".join([header, *flipped]) + "\n")
    out = _stage(args, "evaluate", "--set", "data.test=datasets/other/flipped.tsv")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run / "eval" / "metrics.json").read_bytes() == before
    own = json.loads(before)
    scored = json.loads((run / "eval" / "flipped" / "metrics.json").read_text())
    assert own["data"].endswith("datasets/quickstart/test.tsv")
    assert scored["data"].endswith("datasets/other/flipped.tsv") and scored["num_samples"] == own["num_samples"]
    # The same rows with every label flipped: each row is right in exactly one of the two files.
    assert scored["accuracy"] != own["accuracy"]
    assert abs(scored["accuracy"] + own["accuracy"] - 1) < 1e-9


@pytest.mark.slow
def test_overwrite_removes_kubetune_parts_and_keeps_the_users(tmp_path, clean_run):
    """Issue 12: `--overwrite` into another job's folder removes the parts that job's owner
    record lists (here a Parquet part, stale once jsonl parts are written) and nothing else:
    the user's own files named like parts survive byte for byte."""
    import json

    from kubetune.contract.names import PREDICTIONS_OWNER_FILE

    _, args = clean_run
    first = _predict(tmp_path, args, "--output", "ow/", "--format", "parquet")
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "ow"
    assert (out / "part-00000.parquet").is_file()
    (out / "part-00007.jsonl").write_text('{"mine": 7}\n')
    (out / "part-00003.parquet").write_bytes(b"PAR1 mine\x00\x01")
    users = {name: (out / name).read_bytes() for name in ("part-00007.jsonl", "part-00003.parquet")}
    other = [a if a != "name=qs-clean" else "name=qs-other" for a in args]
    second = _predict(tmp_path, other, "--output", "ow/", "--overwrite", "--model", "qs-clean")
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted([PREDICTIONS_OWNER_FILE, "part-00000.jsonl", *users])
    assert {name: (out / name).read_bytes() for name in users} == users
    record = json.loads((out / PREDICTIONS_OWNER_FILE).read_text())
    assert record == {"job": "qs-other", "parts": ["part-00000.jsonl"]}
    # A user's file where a part would go is refused before the model loads: tests/workload/stages/test_prediction_owner.py.
