"""The embedded default: run a job's entrypoints as local processes instead of pods.

Training starts only through the container entrypoints (`python -m kubetune.workload.train`),
so a local run exercises exactly the command a pod runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kubetune.layout import RunLayout
from kubetune.spec import JobSpec
from kubetune.storage import Store

STAGES = {"train": ["train"], "evaluate": ["evaluate"], "all": ["train", "evaluate"]}


def entrypoint_command(stage: str, spec_file: str) -> list[str]:
    return [sys.executable, "-m", f"kubetune.workload.{stage}", "--spec", spec_file]


def run_local(spec: JobSpec, stage: str = "all") -> int:
    """Run the stages in order as child processes; stop at the first failure and return its
    exit code (2 for bad input, as the entrypoints return)."""
    with tempfile.TemporaryDirectory(prefix="kubetune-") as tmp:
        spec_file = Path(tmp) / "spec.yaml"
        spec_file.write_text(spec.to_yaml())
        for step in STAGES[stage]:
            code = subprocess.call(entrypoint_command(step, str(spec_file)), env=os.environ.copy())
            if code != 0:
                print(f"kubetune: {step} failed with exit code {code}", file=sys.stderr)
                return code
    print_summary(spec)
    return 0


def print_summary(spec: JobSpec) -> None:
    """Where the run is and its headline test metrics."""
    store = Store.from_spec(spec.storage)
    layout = RunLayout(spec.name)
    print(f"run:     {store.url(layout.base)}")
    print(f"model:   {store.url(layout.model)}")
    if store.exists(layout.eval_metrics):
        metrics = store.read_json(layout.eval_metrics)
        shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        headline = ["accuracy", "f1_macro", "f1", "exact_match", "bleu", "rougeL", "perplexity", "loss", "num_samples"]
        parts = [f"{k} {shown[k]:.4f}" if isinstance(shown[k], float) else f"{k} {shown[k]}" for k in headline if k in shown]
        print(f"test:    {', '.join(parts) if parts else json.dumps(shown)}")
        print(f"metrics: {store.url(layout.eval_metrics)}")
