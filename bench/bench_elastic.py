"""An elastic gang's reaction times (issue 24): how long a 2-node local run (`resources.nodes:
{min: 1, max: 2}`) trains nothing after it loses a node, and after the node comes back.

  lost -> survivors   from SIGKILL to node 1's pod (its torchrun agent and worker) to the first
                      training step logged by the one-node gang (progress lines `world size 1`)
  back -> full size   from the replacement pod's start to the first step logged at world size 2

Each round runs `kubetune run JOB --local --stage train` on a tiny randomly initialised BERT (as
tests/e2e/test_elastic_gang.py: SST-2 rows from ../shared/data, a checkpoint every 16 steps) with
names.ENV_LOCAL_REPLACE_SECONDS 0, kills node 1 after the first committed checkpoint, holds the
replacement the launcher starts (SIGSTOP, as a pod still starting) until the one-node gang has
logged a step, then lets it go (SIGCONT) and stops the run (SIGTERM) after the first step at full
size. The hold makes the two phases apart on any machine: a replacement back within the
survivors' re-rendezvous would rejoin it, and the gang would never train on one node. Prints
each round, the medians and the load average before and after; `--json` writes them too.

    python bench/bench_elastic.py [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from kubetune.contract import names as kn  # noqa: E402

SHARED = Path(os.environ.get("KUBETUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


def prepare(root: Path) -> Path:
    from tiny_models import tiny_classifier

    train = (SHARED / "sst2" / "train.tsv").read_text().splitlines()
    dev = (SHARED / "sst2" / "dev.tsv").read_text().splitlines()
    (root / "train.tsv").write_text("\n".join(train[:1025]) + "\n")
    (root / "validation.tsv").write_text("\n".join(dev[:65]) + "\n")
    model = tiny_classifier(root / "model", [line.split("\t")[0] for line in train[1:4000]])
    spec = {
        "name": "elastic-bench", "model": {"source": str(model)},
        "data": {"train": str(root / "train.tsv"), "validation": str(root / "validation.tsv"),
                 "columns": {"text": "sentence"}},
        "train": {"max_seq_length": 64, "batch_size": 8, "epochs": 20, "checkpoint_every": 16, "logging_steps": 1,
                  "seed": 7, "precision": "fp32", "dropout": 0.0},
        "resources": {"nodes": {"min": 1, "max": 2}},
        "storage": {"root": str(root / "store")},
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class Run:
    def __init__(self, spec: Path, cache: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO / "src"), kn.ENV_CACHE: str(cache),
               kn.ENV_PROGRESS_INTERVAL: "0", kn.ENV_LOCAL_REPLACE_SECONDS: "0"}
        self.proc = subprocess.Popen([sys.executable, "-m", "kubetune.cli.main", "run", str(spec), "--local",
                                      "--stage", "train"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, pattern: str, after: float = 0.0, timeout: float = 600) -> float:
        regex, deadline, seen = re.compile(pattern), time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            for when, text in self.lines[seen:]:
                seen += 1
                if when >= after and regex.search(text):
                    return when
            if self.proc.poll() is not None and seen >= len(self.lines):
                raise RuntimeError("the run ended early:\n" + "\n".join(t for _, t in self.lines[-40:]))
            time.sleep(0.02)
        raise RuntimeError(f"no {pattern!r} in {timeout}s")

    def pod(self, index: int) -> psutil.Process:
        for _ in range(1000):
            for child in psutil.Process(self.proc.pid).children():
                try:
                    if child.environ().get(kn.ENV_COMPLETION_INDEX) == str(index) and child.status() != "zombie":
                        return child
                except psutil.Error:
                    pass
            time.sleep(0.01)
        raise RuntimeError(f"no pod {index}")


def one_round(spec: Path, cache: Path) -> dict[str, float]:
    run = Run(spec, cache)
    try:
        run.wait_for(r"checkpoint committed: .*step-000016")
        lost = run.pod(1)
        os.killpg(lost.pid, signal.SIGKILL)
        killed = time.monotonic()
        run.wait_for(r"starting a replacement", after=killed)
        replacement = run.pod(1)
        replacement.suspend()
        shrunk = run.wait_for(r"kubetune: step \d+/\d+ .*\| world size 1", after=killed)
        replacement.resume()
        back = time.monotonic()
        grown = run.wait_for(r"kubetune: step \d+/\d+ .*\| world size 2", after=back)
        return {"lost_to_next_step_s": round(shrunk - killed, 1), "back_to_full_size_s": round(grown - back, 1)}
    finally:
        run.proc.send_signal(signal.SIGTERM)
        try:
            run.proc.wait(120)
        except subprocess.TimeoutExpired:
            run.proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-elastic-") as tmp:
        spec = prepare(Path(tmp))
        for number in range(args.rounds):
            result = one_round(spec, Path(tmp) / "cache")
            print(f"round {number + 1}: {result}", flush=True)
            rounds.append(result)
            for folder in (Path(tmp) / "store" / "runs").glob("*"):
                subprocess.run(["rm", "-rf", str(folder)], check=True)
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    out = {"rounds": rounds, "medians": medians, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "cores": len(os.sched_getaffinity(0))}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
