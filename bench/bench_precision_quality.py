"""Quality held in bf16 (issue 30): the quality tests' real jobs trained in fp32 and in the
automatic precision (bf16 autocast on a CPU with bf16 units), one after the other, with the same
seed, data and budget; prints each run's metric, wall time and the difference in points.

  sst2   jobs/sst2-minilm.yaml: SST-2 train (6,920 sentences, 10% held out to pick the best model), 1 epoch, global batch 32, scored on
         the 872 dev sentences (tests/e2e/test_end_to_end.py's budget, in one process)
  conll  jobs/conll2003-ner.yaml: the first 4,000 CoNLL-2003 sentences, 2 epochs, scored on the
         3,453-sentence test split (tests/workload/tasks/test_token_classification.py's budget)

    python bench/bench_precision_quality.py [--jobs sst2,conll] [--precisions fp32,auto]

Each run is `kubetune run JOB --local` in a fresh local store (train, then evaluate), so the
evaluation runs in the precision the training did.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

JOBS = {
    "sst2": {
        "spec": "jobs/sst2-minilm.yaml", "metric": "accuracy",
        "files": {"datasets/sst2/train.tsv": "sst2/train.tsv", "datasets/sst2/dev.tsv": "sst2/dev.tsv"},
        "sets": ["train.epochs=1", "train.batch_size=32", "train.checkpoint_every=150"],
    },
    "conll": {
        "spec": "jobs/conll2003-ner.yaml", "metric": "f1",
        "files": {"datasets/conll2003/train.jsonl": ("conll2003/train.jsonl", 4000),
                  "datasets/conll2003/test.jsonl": "conll2003/test.jsonl"},
        "sets": ["data.validation=null", "data.validation_split=0.05", "train.epochs=2", "train.learning_rate=1e-4",
                 "train.warmup=0.1", "train.batch_size=16", "train.max_seq_length=96"],
    },
}


def prepare_store(root: Path, files: dict) -> None:
    from kubetune.launch.quickstart import copy_model

    copy_model(root / "models" / "all-MiniLM-L6-v2")
    for target, source in files.items():
        path = root / target
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, tuple):  # the first N lines of a JSON-lines file
            name, lines = source
            path.write_text("".join((DATA / name).read_text().splitlines(keepends=True)[:lines]))
        else:
            shutil.copy(DATA / source, path)


def run_job(name: str, precision: str) -> tuple[float, float, str]:
    """(metric, wall seconds, the precision line the run printed) of one local run."""
    job = JOBS[name]
    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-{precision}-"))
    prepare_store(root, job["files"])
    sets = [f"storage.root={root}", "storage.endpoint_url=null", f"train.precision={precision}", *job["sets"]]
    argv = [sys.executable, "-m", "kubetune.cli.main", "run", job["spec"], "--local",
            *[a for s in sets for a in ("--set", s)]]
    started = time.monotonic()
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - started
    if out.returncode != 0:
        raise SystemExit(f"{name} {precision}: exit {out.returncode}\n{out.stderr[-3000:]}")
    spec_name = next(line.split(":", 1)[1].strip() for line in (REPO / job["spec"]).read_text().splitlines()
                     if line.startswith("name:"))
    metrics = json.loads((root / "runs" / spec_name / "eval" / "metrics.json").read_text())
    said = next((line for line in out.stdout.splitlines() if "kubetune: precision" in line), "")
    shutil.rmtree(root, ignore_errors=True)
    return metrics[job["metric"]], wall, said.split("kubetune: ", 1)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="sst2,conll")
    parser.add_argument("--precisions", default="fp32,auto")
    args = parser.parse_args()
    for name in args.jobs.split(","):
        results = {}
        for precision in args.precisions.split(","):
            metric, wall, said = run_job(name, precision)
            results[precision] = metric
            print(f"{name} {precision:>4}: {JOBS[name]['metric']} {metric:.4f} | wall {wall:.0f} s | {said}", flush=True)
        values = list(results.values())
        if len(values) == 2:
            print(f"{name}: {args.precisions.split(',')[1]} - {args.precisions.split(',')[0]} = "
                  f"{100 * (values[1] - values[0]):+.2f} points", flush=True)


if __name__ == "__main__":
    main()
