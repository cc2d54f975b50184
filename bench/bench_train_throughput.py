"""Training throughput: the kubetune path against the HF Trainer as an experienced user tunes it,
in fp32 and in bf16, and against the classic tutorial loop, side by side.

Same model, same data, same number of samples, same batch size, in one process:

  kubetune            the real train path (spec -> setup -> build_trainer -> Trainer.train): dynamic
                      padding, length-grouped batches, `train.precision: auto` (bf16 autocast on a
                      CPU with bf16 units, issue 30)
  tuned-trainer       a plain HF Trainer as an experienced user sets it up: DataCollatorWithPadding,
                      train_sampling_strategy="group_by_length", fused AdamW, no evaluation, saving
                      or reporting; fp32
  tuned-trainer-bf16  the same Trainer with bf16=True (autocast, on the CPU too)
  pad-512             a plain PyTorch loop that pads every sequence to 512 tokens (the tutorial loop)
  pad-128             the same loop padding to 128 (for reference)

Models: `minilm` (the pretrained all-MiniLM-L6-v2, 22.7M parameters) or `bert-base` (a BERT-base
-size model, 109M parameters, randomly initialised from `BertConfig()`: no pretrained BERT-base
can be fetched offline, and the speed of a step does not depend on the weights' values). The
padded loops are far too slow for a full epoch, so every variant trains on the same fixed number
of samples, timed from the end of the first optimizer step. Prints samples/s for each and the
ratios of kubetune to each Trainer.

    python bench/bench_train_throughput.py [--model minilm] [--samples 480] [--batch-size 16]
        [--variants kubetune,tuned-trainer,tuned-trainer-bf16] [--rounds 3]
    python bench/bench_train_throughput.py --model bert-base --data ../shared/data/imdb/train.tsv \
        --text-column Text --label-column Sentiment --max-length 256 --samples 96 --batch-size 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def kubetune_rate(model_dir: Path, data: Path, samples: int, batch: int, columns: tuple[str, str],
                  max_length: int) -> float:
    from kubetune.contract.spec.job import load_spec
    from kubetune.contract.names import ENV_WORKDIR
    from kubetune.workload.entrypoints.arguments import pod_env
    from kubetune.workload.stages.training import setup
    from kubetune.workload.checkpointing.checkpointer import Checkpointer
    from kubetune.workload.trainer.build import build_trainer

    tmp = Path(tempfile.mkdtemp(prefix="bench-kt-"))
    root = tmp / "store"
    shutil.copytree(model_dir, root / "models" / "m")
    (root / "datasets").mkdir(parents=True)
    # The same rows the other variants train on (the file's first `samples`), and a validation
    # file of its own: without one kubetune would carve it from a shuffled train split and then
    # train on other rows, with other lengths, than the Trainer it is compared with.
    lines = data.read_text().splitlines(keepends=True)
    (root / "datasets" / "train.tsv").write_text("".join(lines[: samples + 1]))
    (root / "datasets" / "validation.tsv").write_text("".join(lines[:1] + lines[samples + 1: samples + 9]))
    text, label = columns
    spec_file = tmp / "job.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "bench",
        "model": {"source": "models/m"},
        "data": {"train": "datasets/train.tsv", "validation": "datasets/validation.tsv",
                 "columns": {"text": text, "label": label}},
        "train": {"max_steps": samples // batch, "batch_size": batch, "max_seq_length": max_length,
                  "logging_steps": 1000, "checkpoint_every": 100000},
        "storage": {"root": str(root)},
    }))
    os.environ[ENV_WORKDIR] = str(tmp / "work")
    run = setup(load_spec(spec_file), pod_env())
    checkpointer = Checkpointer(run)
    trainer = build_trainer(run, checkpointer).trainer
    trainer.callback_handler.callbacks = [c for c in trainer.callback_handler.callbacks
                                          if type(c).__name__ != "CheckpointUploadCallback"]
    trainer.args.save_strategy = "no"
    trainer.args.eval_strategy = "no"
    trainer.args.load_best_model_at_end = False
    clock = StepClock.make()
    trainer.add_callback(clock)
    trainer.train()
    checkpointer.drain()  # metrics uploads still queued would retry into the removed store for minutes
    shutil.rmtree(tmp, ignore_errors=True)
    # Timed from the end of the first step: setup and the first step's warm-up are excluded.
    return (len(clock.times) - 1) * batch / (clock.times[-1] - clock.times[0])


class StepClock:
    """Wall time at the end of every optimizer step (a TrainerCallback, built lazily so that
    importing this file does not import transformers)."""

    @staticmethod
    def make():
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            def __init__(self):
                self.times: list[float] = []

            def on_step_end(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()  # a GPU step ends when its kernels do
                self.times.append(time.perf_counter())

        return _Clock()


def _labelled_frame(data: Path, samples: int, columns: tuple[str, str]):
    """The first `samples` rows as (text, integer label), whatever the file calls them."""
    import pandas as pd

    text, label = columns
    frame = pd.read_csv(data, sep="\t").head(samples)
    names = sorted(frame[label].astype(str).unique())
    return pd.DataFrame({"text": frame[text].astype(str), "labels": frame[label].astype(str).map(names.index)})


def tuned_trainer_rate(model_dir: Path, data: Path, samples: int, batch: int, columns: tuple[str, str],
                       max_length: int, bf16: bool = False) -> float:
    """The baseline kubetune must not fall behind: the HF Trainer, tuned as the docs suggest
    for variable-length text on CPU (pad per batch, group batches by length, fused AdamW),
    in fp32 or with bf16 autocast."""
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    tmp = Path(tempfile.mkdtemp(prefix="bench-hf-"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    dataset = Dataset.from_pandas(_labelled_frame(data, samples, columns)).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True, remove_columns=["text"]
    )
    args = TrainingArguments(
        output_dir=str(tmp), per_device_train_batch_size=batch, max_steps=samples // batch, learning_rate=5e-5,
        train_sampling_strategy="group_by_length", save_strategy="no", eval_strategy="no", report_to=[],
        logging_steps=1000, disable_tqdm=True, seed=42, optim="adamw_torch_fused", use_cpu=not torch.cuda.is_available(),
        bf16=bf16,
    )
    clock = StepClock.make()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=DataCollatorWithPadding(tokenizer),
                      callbacks=[clock])
    trainer.train()
    shutil.rmtree(tmp, ignore_errors=True)
    return (len(clock.times) - 1) * batch / (clock.times[-1] - clock.times[0])


def bert_base_folder(minilm_dir: Path, folder: Path) -> Path:
    """A BERT-base-size classifier (BertConfig's defaults: 12 layers, hidden 768) with MiniLM's
    tokenizer (the same uncased BERT vocabulary), randomly initialised, saved as a model folder."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(num_labels=2)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(folder)
    return folder


def padded_loop_rate(model_dir: Path, data: Path, samples: int, batch: int, columns: tuple[str, str],
                     pad_to: int) -> float:
    """The tutorial loop: tokenize with padding='max_length', shuffle, AdamW, no grouping."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    frame = _labelled_frame(data, samples, columns)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    enc = tokenizer(list(frame["text"]), padding="max_length", truncation=True, max_length=pad_to, return_tensors="pt")
    labels = torch.tensor(frame["labels"].values)
    dataset = torch.utils.data.TensorDataset(enc["input_ids"], enc["attention_mask"], labels)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    times = []
    for input_ids, mask, y in loader:
        loss = model(input_ids=input_ids, attention_mask=mask, labels=y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter())
    # Timed from the end of the first step, as the kubetune path.
    return (len(times) - 1) * batch / (times[-1] - times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("minilm", "bert-base"), default="minilm")
    parser.add_argument("--samples", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512, help="tokens per input (longer ones are cut)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "sst2" / "train.tsv")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--variants", default="kubetune,tuned-trainer,tuned-trainer-bf16,pad-128,pad-512",
                        help="comma-separated; the padded loops take minutes at 480 samples")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the variants this many times, alternating, and report each one's median "
                             "(a 30-step run on 2 shared cores varies by up to 25%% from one run to the next)")
    args = parser.parse_args()
    from kubetune.launch.quickstart import copy_model
    from kubetune.workload.model.devices import precision

    work = Path(tempfile.mkdtemp(prefix="bench-model-"))
    model_dir = copy_model(work / "minilm")
    if args.model == "bert-base":
        model_dir = bert_base_folder(model_dir, work / "bert-base")
    chosen = precision("auto")
    print(f"{args.model} | torch threads {torch.get_num_threads()} | {args.samples} samples | batch {args.batch_size} | "
          f"max length {args.max_length} | {args.data} | kubetune precision {chosen.name} ({chosen.reason})")
    columns = (args.text_column, args.label_column)
    common = (model_dir, args.data, args.samples, args.batch_size, columns)
    variants = {
        "kubetune": lambda: kubetune_rate(*common, args.max_length),
        "tuned-trainer": lambda: tuned_trainer_rate(*common, args.max_length),
        "tuned-trainer-bf16": lambda: tuned_trainer_rate(*common, args.max_length, bf16=True),
        "pad-128": lambda: padded_loop_rate(*common, 128),
        "pad-512": lambda: padded_loop_rate(*common, 512),
    }
    names = args.variants.split(",")
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        for name in names if round_number % 2 == 0 else reversed(names):  # alternate who goes first
            per_round[name].append(variants[name]())
        if args.rounds > 1:
            print(f"round {round_number + 1}: " + ", ".join(f"{n} {per_round[n][-1]:.2f}" for n in names))
    rates = {name: statistics.median(values) for name, values in per_round.items()}
    for name, rate in rates.items():
        vs = f"   {rate / rates['pad-512']:7.1f}x pad-512" if "pad-512" in rates else ""
        print(f"{name:>18}: {rate:8.2f} samples/s{vs}")
    for baseline in ("tuned-trainer", "tuned-trainer-bf16", "pad-512"):
        if {"kubetune", baseline} <= set(rates):
            print(f"kubetune / {baseline} = {rates['kubetune'] / rates[baseline]:.3f}")
    if args.rounds > 1:  # the ratio round by round: robust to the machine's drift
        for baseline in ("tuned-trainer", "tuned-trainer-bf16"):
            if {"kubetune", baseline} <= set(rates):
                pairs = [k / b for k, b in zip(per_round["kubetune"], per_round[baseline])]
                print(f"kubetune / {baseline} per round: " + ", ".join(f"{r:.3f}" for r in pairs)
                      + f" (median {statistics.median(pairs):.3f})")


if __name__ == "__main__":
    main()
