"""GPU checks (issue 16), skipped with a reason where no CUDA device is present: bf16 training
reaches the loss of fp32 training, and gradient checkpointing lowers peak GPU memory. Both run
the real train entrypoint in-process on the quickstart data with the pretrained MiniLM, so the
memory is read with torch's own allocator statistics.

The third GPU check, an FSDP run that resumes from its sharded checkpoint to the same losses,
needs two GPUs and the launcher's local gang: tests/e2e/test_local_recovery.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none present)"),
]

REPO = Path(__file__).resolve().parents[2]


def _train(local_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, *overrides: str) -> dict:
    """Train the quickstart job under `name`; its summary.json and the peak GPU memory (GiB)."""
    from kubetune.launch.quickstart import prepare
    from kubetune.workload.entrypoints import train

    prepare(str(local_store))  # the quickstart data beside the store's MiniLM
    monkeypatch.setenv("KUBETUNE_WORKDIR", str(tmp_path / f"work-{name}"))
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    sets = [f"storage.root={local_store}", f"name={name}", "train.seed=7", *overrides]
    assert train.main(["--spec", str(REPO / "jobs" / "quickstart.yaml"), *[a for s in sets for a in ("--set", s)]]) == 0
    peak = torch.cuda.max_memory_allocated() / 2**30
    summary = json.loads((local_store / "runs" / name / "metrics" / "summary.json").read_text())
    return {**summary, "peak_gib": peak}


def test_bf16_training_reaches_the_fp32_loss(local_store, tmp_path, monkeypatch):
    fp32 = _train(local_store, tmp_path, monkeypatch, "fp32", "train.precision=fp32")
    bf16 = _train(local_store, tmp_path, monkeypatch, "bf16", "train.precision=bf16")
    print(f"train_loss fp32 {fp32['train_loss']:.4f} bf16 {bf16['train_loss']:.4f}")
    assert bf16["speed_settings"]["precision"] == "bf16"
    assert bf16["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.1, abs=0.02)


def test_gradient_checkpointing_lowers_peak_gpu_memory(local_store, tmp_path, monkeypatch):
    # Longer sequences and larger batches than the quickstart's, so activations dominate.
    sizes = ["train.batch_size=64", "train.max_seq_length=256", "train.epochs=1"]
    plain = _train(local_store, tmp_path, monkeypatch, "plain", *sizes)
    checkpointed = _train(local_store, tmp_path, monkeypatch, "checkpointed", *sizes, "train.gradient_checkpointing=true")
    print(f"peak GPU memory: {plain['peak_gib']:.3f} GiB without, {checkpointed['peak_gib']:.3f} GiB with checkpointing")
    assert checkpointed["peak_gib"] < plain["peak_gib"]
