"""Benchmark for issue 26 (not a test): what the sweep's controller costs per trial.

    python bench/bench_sweep_overhead.py [--trials 3] [--steps 6]

The same trials twice, on the quickstart job (real MiniLM, a few steps, train stage only):

(a) by hand: `kubetune run JOB --local --stage train --set name=... --set train.learning_rate=...`
    once per learning rate, one after the other;
(b) as a sweep: `kubetune sweep JOB --local` over the same learning rates (grid sampler over
    the same choices, no pruning, one trial at a time), which adds the study in the store, the
    trial specs, the polling of each trial's metrics and trials.jsonl/summary.json/sweep.png;
(c) the same sweep with the median pruner armed but unable to prune (`pruner_startup_trials`
    = the trial count), so each evaluation of each trial waits for the controller's verdict on
    its step (`workload.trainer.pruning`) and nothing else changes: (c) - (b) is that wait.

Prints both wall times, the controller's overhead per trial ((b - a) / trials) and the ratio
b / a, with the load average before and after (the numbers depend on the machine's load;
compare ratios measured side by side). A warm-up run fills the token cache first, so neither
side tokenizes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "kubetune.cli.main", *args], env=env, cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"kubetune {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    from kubetune.launch.quickstart import prepare

    rates = [round(1e-5 * 3**i, 8) for i in range(args.trials)]
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(tmp) / "store"
        prepare(str(root))
        spec = {
            "name": "qs",
            "model": {"source": "models/all-MiniLM-L6-v2"},
            "data": {"train": "datasets/quickstart/train.tsv", "test": "datasets/quickstart/test.tsv"},
            "train": {"max_steps": args.steps, "batch_size": 8, "max_seq_length": 32, "logging_steps": 2,
                      "checkpoint_every": 2, "metric": "loss"},
            "storage": {"root": str(root)},
        }
        plain = Path(tmp) / "qs.yaml"
        plain.write_text(yaml.safe_dump(spec))
        swept = Path(tmp) / "qs-sweep.yaml"
        del spec["train"]["metric"]  # a trial sets it to the objective, as the runs by hand do
        spec["sweep"] = {"parameters": {"train.learning_rate": {"type": "categorical", "choices": rates}},
                         "objective": {"metric": "loss", "direction": "minimize"}, "trials": args.trials,
                         "sampler": "grid", "pruner": "none", "parallel": 1}
        swept.write_text(yaml.safe_dump(spec))
        waiting = Path(tmp) / "qs-sweep-verdicts.yaml"
        spec["name"] = "qv"
        spec["sweep"] = {**spec["sweep"], "pruner": "median", "pruner_startup_trials": args.trials}
        waiting.write_text(yaml.safe_dump(spec))
        env = {**os.environ, "KUBETUNE_CACHE": str(Path(tmp) / "cache")}
        load_before = os.getloadavg()
        cli("run", str(plain), "--local", "--stage", "train", "--set", "name=warmup", env=env)
        by_hand = sum(cli("run", str(plain), "--local", "--stage", "train", "--set", f"name=hand-{i}",
                          "--set", f"train.learning_rate={lr}", env=env) for i, lr in enumerate(rates))
        sweep = cli("sweep", str(swept), "--local", env=env)
        verdicts = cli("sweep", str(waiting), "--local", env=env)
        load_after = os.getloadavg()
    print(f"trials: {args.trials} x {args.steps} steps (quickstart, MiniLM, train stage), CPU count {os.cpu_count()}")
    print(f"load average (1/5/15 min): before {load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, "
          f"after {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f}")
    print(f"by hand (kubetune run --stage train, one per trial): {by_hand:.1f} s ({by_hand / args.trials:.1f} s per trial)")
    print(f"sweep (kubetune sweep --local):                      {sweep:.1f} s ({sweep / args.trials:.1f} s per trial)")
    print(f"sweep, each evaluation waiting for its verdict:       {verdicts:.1f} s ({verdicts / args.trials:.1f} s per trial)")
    print(f"controller overhead per trial: {(sweep - by_hand) / args.trials:+.1f} s; sweep / by hand = {sweep / by_hand:.2f}")
    evaluations = args.trials * (args.steps // 2)
    print(f"verdict wait: {(verdicts - sweep) / evaluations:+.2f} s per evaluation ({evaluations} evaluations); "
          f"with verdicts / without = {verdicts / sweep:.2f}")


if __name__ == "__main__":
    main()
