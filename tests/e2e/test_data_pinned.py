"""Issue 23, point 2, as a pod lives it: a training file relabelled between a kill -9 and the
restart is refused in one line naming the file (exit 2) before anything trains; put back, the
run resumes, and its lineage says what each attempt trained on.

Real parts: the train entrypoint as a separate process (a real SIGKILL), the pretrained MiniLM,
32 real SST-2 rows in a local folder store; 6 steps of 4, a checkpoint every 2 steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from helpers_resume import TrainProcess, train_to_end
from kubetune.contract.exitcodes import EXIT_BAD_INPUT


def _spec(path: Path, root: Path, model: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "pinned", "model": {"source": str(model)},
        "data": {"train": "data/train.tsv", "validation": "data/validation.tsv", "columns": {"text": "sentence"}},
        "train": {"max_steps": 6, "batch_size": 4, "max_seq_length": 16, "checkpoint_every": 2, "logging_steps": 1,
                  "seed": 7},
        "storage": {"root": str(root)}}, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_training_file_changed_between_attempts_is_refused_and_each_attempt_is_in_the_lineage(
        shared_data, minilm_dir, tmp_path):
    root = tmp_path / "store"
    (root / "data").mkdir(parents=True)
    train = (shared_data / "sst2" / "train.tsv").read_text().splitlines()[:33]
    original = "\n".join(train) + "\n"
    flipped = "\n".join([train[0]] + [f"{row.rsplit(chr(9), 1)[0]}\t{1 - int(row.rsplit(chr(9), 1)[1])}"
                                       for row in train[1:]]) + "\n"  # every label flipped, same size
    (root / "data" / "train.tsv").write_text(original)
    (root / "data" / "validation.tsv").write_text("\n".join((shared_data / "sst2" / "dev.tsv").read_text()
                                                            .splitlines()[:17]) + "\n")
    spec = _spec(tmp_path / "spec.yaml", root, minilm_dir)

    first = TrainProcess(spec, tmp_path / "pod-1")
    first.wait_for(r"checkpoint committed: .*step-000002")
    os.kill(first.proc.pid, signal.SIGKILL)
    assert first.wait(60) == -signal.SIGKILL

    (root / "data" / "train.tsv").write_text(flipped)
    refused = TrainProcess(spec, tmp_path / "pod-2")
    assert refused.wait(300) == EXIT_BAD_INPUT, refused.output[-3000:]
    errors = [line for _, line in refused.lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused.output, refused.output[-3000:]
    assert f"data.train: {root / 'data' / 'train.tsv'} changed since the run's first attempt (sha256 " in errors[0]
    assert "start a new run (--set name=...)" in errors[0]
    assert "kubetune: step" not in refused.output and "resuming" not in refused.output

    (root / "data" / "train.tsv").write_text(original)
    resumed = train_to_end(spec, tmp_path / "pod-3")
    step = int(resumed.wait_for(r"resuming from .*step-(\d+)").group(1))
    lineage = json.loads((root / "runs" / "pinned" / "model" / "lineage.json").read_text())
    assert [(a["attempt"], a["resumed_from"]) for a in lineage["attempts"]] == [(1, None), (2, step)]
    digest = hashlib.sha256(original.encode()).hexdigest()
    for attempt in lineage["attempts"]:  # what each attempt trained on: the original file
        (record,) = attempt["data"]["data.train"]
        assert record["sha256"] == digest and record["uri"] == str(root / "data" / "train.tsv")
    assert lineage["data"]["data.train"][0]["sha256"] == digest
    assert json.loads((root / "runs" / "pinned" / "lineage.json").read_text())["attempts"] == lineage["attempts"]
