"""Threads sized to the cores (issue 28, point 1): the quickstart's throughput before and after,
side by side, on idle or on busy cores.

  before  the thread variables at torch's own default, one thread per core the run may use
          (what `kubetune run --local` gave a single process before the sizing)
  after   none of yours: the local run sizes them (the cores its affinity allows, less what
          other work keeps busy, divided by its processes: docs/speed-and-memory.md#threads)

`--load idle` runs nothing else; `--load busy` starts one busy-loop process per core the script
may use (`os.sched_getaffinity`) before the first round and stops them after the last, so every
round of both variants shares the cores with the same load. A machine that other work already
keeps busy is neither: measure on a machine with nothing else running.

Each round runs `kubetune prepare-quickstart` into a fresh store and then `kubetune run
jobs/quickstart.yaml --local` with `storage.root` there and a fresh cache (names.ENV_CACHE), the
variants alternating (before, after, before, ...), and reads the Trainer's samples/s over the
whole training (`train_samples_per_second` in the run's `metrics/train.jsonl`) and the command's
wall time (the summary's `wall:`). Prints each round, the medians and after/before; `--json`
writes them too.

    python bench/bench_threads.py --load idle [--rounds 3] [--json out.json]
    python bench/bench_threads.py --load busy [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from kubetune.contract import names as kn  # noqa: E402
from kubetune.contract.layout import RunLayout  # noqa: E402

JOB = REPO / "jobs" / "quickstart.yaml"
VARIANTS = ("before", "after")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any thread variable, with `extra` added."""
    env = {k: v for k, v in os.environ.items() if k not in kn.THREAD_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return {**env, **(extra or {})}


def torch_default_threads() -> int:
    """torch's intra-op threads in a process with no thread variable set."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, check=True, env=child_env())
    return int(out.stdout.strip())


def start_load(cores: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]


def stop_load(load: list[subprocess.Popen]) -> None:
    for proc in load:
        proc.kill()
    for proc in load:
        proc.wait()


def one_round(variant: str, default_threads: int, tmp: Path) -> dict[str, object]:
    """One `prepare-quickstart` and `run --local` in `tmp`: the Trainer's samples/s and the wall."""
    store, cache = tmp / "store", tmp / "cache"
    cli = [sys.executable, "-m", "kubetune.cli.main"]
    extra = {kn.ENV_CACHE: str(cache)}
    if variant == "before":
        extra.update({name: str(default_threads) for name in (kn.ENV_OMP_THREADS, kn.ENV_MKL_THREADS,
                                                              kn.ENV_RAYON_THREADS)})
    subprocess.run([*cli, "prepare-quickstart", "--root", str(store)], check=True, capture_output=True,
                   env=child_env(extra), cwd=REPO)
    started = time.monotonic()
    run = subprocess.run([*cli, "run", str(JOB), "--local", "--set", f"storage.root={store}"],
                         capture_output=True, text=True, env=child_env(extra), cwd=REPO)
    elapsed = time.monotonic() - started
    if run.returncode != 0:
        raise SystemExit(f"{variant}: kubetune run exited {run.returncode}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    wall = re.search(r"^wall:\s+([0-9.]+) s", run.stdout, re.MULTILINE)
    records = [json.loads(line) for line in (store / RunLayout("quickstart").train_metrics).read_text().splitlines()
               if line.strip()]
    rate = next((r["train_samples_per_second"] for r in reversed(records) if "train_samples_per_second" in r), None)
    return {"variant": variant, "samples_per_second": rate, "wall_s": float(wall.group(1)) if wall else round(elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", choices=("idle", "busy"), required=True)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each variant (default 3)")
    parser.add_argument("--json", type=Path, help="also write the rounds and medians here")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    default_threads = torch_default_threads()
    print(f"cores the run may use: {cores}; torch's default threads: {default_threads}; load: {args.load}; "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    load = start_load(cores) if args.load == "busy" else []
    rows = []
    try:
        time.sleep(1.0 if load else 0)
        for index in range(args.rounds):
            for variant in VARIANTS:
                with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
                    row = one_round(variant, default_threads, Path(tmp))
                rows.append({"round": index + 1, **row})
                print(f"round {index + 1} {variant:6} {row['samples_per_second']:7.2f} samples/s  "
                      f"wall {row['wall_s']:6.1f} s", flush=True)
    finally:
        stop_load(load)
    medians = {v: {"samples_per_second": statistics.median(r["samples_per_second"] for r in rows if r["variant"] == v),
                   "wall_s": statistics.median(r["wall_s"] for r in rows if r["variant"] == v)} for v in VARIANTS}
    ratio = medians["after"]["samples_per_second"] / medians["before"]["samples_per_second"]
    for variant in VARIANTS:
        print(f"median {variant:6} {medians[variant]['samples_per_second']:7.2f} samples/s  "
              f"wall {medians[variant]['wall_s']:6.1f} s")
    print(f"after/before: {ratio:.2f}x samples/s")
    if args.json:
        args.json.write_text(json.dumps({"load": args.load, "cores": cores, "torch_default_threads": default_threads,
                                         "rounds": rows, "medians": medians, "ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
