"""Two real trainings of one job started at once against one store (issue 12, point 8): the
lease lets exactly one train and commit; the other stops with the lease's one line and exit
code 2 (exitcodes.EXIT_BAD_INPUT: a permanent refusal, not a retry) and writes nothing into
the run folder. Tiny: MiniLM, 16 rows, 4 steps, sequences of 16 tokens, one thread each."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from kubetune.contract.exitcodes import EXIT_BAD_INPUT
from kubetune.contract.names import ENV_CACHE, ENV_WORKDIR, TRAIN_MODULE

# Two trainings of MiniLM at once (issue 28, point 6).
pytestmark = pytest.mark.slow

ROWS = "".join(f"{'good' if i % 2 else 'bad'} film {i}\t{'pos' if i % 2 else 'neg'}\n" for i in range(16))


def test_two_trainings_of_one_job_at_once_one_trains_the_other_is_refused(tmp_path, minilm_dir):
    store = tmp_path / "store"
    (store / "data").mkdir(parents=True)
    (store / "data" / "train.tsv").write_text("text\tlabel\n" + ROWS)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "twice", "model": {"source": str(minilm_dir)},
        "data": {"train": "data/train.tsv", "validation": "data/train.tsv"},
        # A checkpoint (and evaluation) every step keeps the winner busy well past the loser's
        # wait (one lease period, 2 s, and a second): the loser must meet a live lease, not a
        # finished run (which it would report as already complete, exit 0).
        "train": {"max_steps": 4, "batch_size": 4, "max_seq_length": 16, "checkpoint_every": 1,
                  "logging_steps": 1},
        "storage": {"root": str(store), "lease_seconds": 2},
    }))
    procs = []
    for i in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
               ENV_WORKDIR: str(tmp_path / f"work{i}"), ENV_CACHE: str(tmp_path / f"cache{i}")}
        procs.append(subprocess.Popen([sys.executable, "-m", TRAIN_MODULE, "--spec", str(spec_file)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [(p.returncode, out, err) for p in procs for out, err in [p.communicate(timeout=600)]]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, EXIT_BAD_INPUT], [(c, e[-2000:]) for c, _, e in results]
    (_, won_out, _), (_, lost_out, lost_err) = sorted(results, key=lambda r: r[0])

    errors = [line for line in lost_err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in lost_err, lost_err[-3000:]
    assert "run 'twice'" in errors[0] and "is being written by" in errors[0]
    assert "kubetune: step" not in lost_out and "checkpoint" not in lost_out.lower()

    run = store / "runs" / "twice"
    assert (run / "model" / "COMMITTED").is_file()
    assert not (run / "LEASE.json").exists()  # released by the winner, never left by the loser
    steps = [json.loads(line)["step"] for line in (run / "metrics" / "train.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(set(steps)) and steps[-1] == 4, steps  # one run's steps, each once
    assert "kubetune: step 4/4" in won_out
