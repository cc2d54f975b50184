"""Speed settings a machine cannot run (issue 16): flash attention, FSDP and 4-bit without CUDA
are refused by the train stage and by `validate --data` alike, with one `error:` line naming the
field and exit code 2, before the store, the model folder or the data are looked at: the spec
points at a model folder and a store root that do not exist, and the error is still about the
speed setting (a model folder that was touched would have been named instead), and no store root
was created. Combinations no machine can run are refused by `validate` already."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from helpers import run_cli, run_entrypoint

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals on a machine without CUDA")


def job_file(tmp_path: Path, task: str = "text-classification", resources: dict | None = None, **train) -> Path:
    spec = {"name": "speedy", "task": task, "model": {"source": "/nonexistent/model-folder"},
            "data": {"train": "datasets/none/train.tsv"}, "storage": {"root": str(tmp_path / "store")},
            "train": train, "resources": resources or {}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert line.startswith("error: ")
    return line


def test_train_stage_refuses_before_the_model_loads(tmp_path):
    """One stage process (each costs seconds of imports); the same check refuses train.fsdp and
    train.quantization in tests/workload/model/test_speed.py, in process."""
    line = one_error_line(run_entrypoint("train", job_file(tmp_path, attention="flash_attention_2")))
    assert "train.attention: " in line and "CUDA" in line, line
    assert "model.source" not in line and "nonexistent" not in line  # the model folder was never looked at
    assert not (tmp_path / "store").exists()  # nothing written, not even the store root


def test_validate_data_refuses_the_same_way(tmp_path):
    path = job_file(tmp_path, attention="flash_attention_2")
    assert run_cli("validate", str(path)).returncode == 0  # the spec itself is fine: a GPU node can run it
    line = one_error_line(run_cli("validate", str(path), "--data"))
    assert line.startswith(f"error: {path}: train.attention: ") and "CUDA" in line, line
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("override,field", [
    ("train.quantization=4bit", "train.quantization"),  # needs train.lora and causal-lm
    ("train.fsdp={}", "train.fsdp"),  # no GPUs in resources
])
def test_validate_and_render_refuse_impossible_combinations(tmp_path, override, field):
    path = job_file(tmp_path)
    for verb in ("validate", "render"):
        line = one_error_line(run_cli(verb, str(path), "--set", override))
        assert field in line, line
