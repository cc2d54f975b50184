"""GPU throughput: the kubetune train path against a plain HF Trainer with default settings,
side by side in one process, for a BERT-base-size encoder (sequence classification) and a
~0.5B-parameter causal LM (Llama architecture), both randomly initialised from their configs so
that nothing is downloaded. Sized to finish in a few minutes on one H100/H200-class GPU.

For each model and variant it prints (and writes as JSON): samples/s, tokens/s, peak GPU memory,
and model FLOPs utilisation (6 x parameters x tokens/s against the GPU's peak bf16 rate,
`--peak-tflops`), with and without gradient checkpointing. FSDP runs when more than one GPU is
present (`torchrun` over them; `--fsdp-only` is that child's entry).

    python bench/bench_gpu.py [--out bench/gpu_results.json] [--peak-tflops 989]
    python bench/bench_gpu.py --smoke   # tiny models on the CPU: checks the plumbing, no numbers

Written by hand because no library compares a training wrapper with its own baseline on the
same data; the timing is a Trainer callback (end of each optimizer step), the first steps are
excluded as warm-up. tokens/s counts real (non-padding) tokens: samples/s times the mean token
count of the synthetic rows, which both variants draw from the same data.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
WARMUP_STEPS = 3
WORDS = [f"w{i}" for i in range(4000)]


@dataclass
class Result:
    model: str
    variant: str
    gradient_checkpointing: bool
    samples_per_s: float
    tokens_per_s: float
    peak_memory_gib: float
    mfu: float | None
    parameters: int


@dataclass
class ModelCase:
    name: str
    task: str
    batch: int
    max_length: int
    steps: int


def cases(smoke: bool) -> list[ModelCase]:
    if smoke:
        return [ModelCase("encoder", "text-classification", 4, 64, 6), ModelCase("causal", "causal-lm", 2, 64, 6)]
    return [ModelCase("encoder", "text-classification", 32, 256, 30), ModelCase("causal", "causal-lm", 8, 512, 20)]


def synthetic_rows(case: ModelCase, n: int, rng: random.Random) -> list[dict]:
    """Texts of varied length, so padding matters: classification texts of an eighth to a half of
    max_length words, prompt and response of a sixteenth to a quarter each (a word is 1-2 tokens)."""
    def text(parts: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(case.max_length // (4 * parts),
                                                                       case.max_length // parts)))

    if case.task == "text-classification":
        return [{"text": text(2), "label": str(rng.randint(0, 1))} for _ in range(n)]
    return [{"prompt": text(4), "response": text(4)} for _ in range(n)]


def build_model(case: ModelCase, folder: Path, texts: list[str], smoke: bool) -> int:
    """A randomly initialised model folder with a byte-level BPE tokenizer trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (AutoModel, AutoModelForCausalLM, BertConfig, LlamaConfig, PreTrainedTokenizerFast)

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=8000, special_tokens=["<pad>", "</s>", "<unk>", "<s>"],
                                                       show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                        bos_token="<s>", model_max_length=4096)
    if case.task == "text-classification":
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                            **({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                "intermediate_size": 64} if smoke else {}))  # BertConfig's defaults: BERT-base
        model = AutoModel.from_config(config)
    else:
        size = ({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4} if smoke
                else {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16})
        config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             max_position_embeddings=4096, **size)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def _rate(clock, batch: int) -> float:
    times = clock.times[WARMUP_STEPS - 1:]
    return (len(times) - 1) * batch / (times[-1] - times[0])


def kubetune_trainer(case: ModelCase, store: Path, gc: bool, fsdp: bool, work: Path):
    """The real train path: spec -> setup -> build_trainer, saving and evaluation off."""
    from kubetune.contract.names import ENV_WORKDIR
    from kubetune.contract.spec.job import load_spec
    from kubetune.workload.checkpointing.checkpointer import Checkpointer
    from kubetune.workload.trainer.build import build_trainer
    from kubetune.workload.stages.training import setup

    columns = {"text": "text"} if case.task == "text-classification" else {"prompt": "prompt", "response": "response"}
    train = {"max_steps": case.steps, "batch_size": case.batch, "max_seq_length": case.max_length,
             "logging_steps": 1000, "checkpoint_every": 100000, "gradient_checkpointing": gc}
    if fsdp:
        train["fsdp"] = {"strategy": "full_shard"}
    spec_file = work / f"{case.name}.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": f"bench-{case.name}", "task": case.task, "model": {"source": "models/m"},
        "data": {"train": "datasets/train.jsonl", "columns": columns, "max_eval_samples": 8},
        "train": train, "storage": {"root": str(store)},
    }))
    os.environ[ENV_WORKDIR] = str(work / "kt")
    run = setup(load_spec(spec_file))
    checkpointer = Checkpointer(run)
    trainer = build_trainer(run, checkpointer).trainer
    trainer.callback_handler.callbacks = [c for c in trainer.callback_handler.callbacks
                                          if type(c).__name__ != "CheckpointUploadCallback"]
    trainer.args.save_strategy = "no"
    trainer.args.eval_strategy = "no"
    trainer.args.load_best_model_at_end = False
    return trainer, checkpointer


def hf_default_trainer(case: ModelCase, store: Path, gc: bool, work: Path):
    """A plain Trainer with default TrainingArguments (fp32, random sampling), the usual collator."""
    from datasets import load_dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorForLanguageModeling, DataCollatorWithPadding, Trainer, TrainingArguments)

    folder = store / "models" / "m"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = load_dataset("json", data_files=str(store / "datasets" / "train.jsonl"), split="train")
    if case.task == "text-classification":
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
        data = rows.map(lambda b: tokenizer(b["text"], truncation=True, max_length=case.max_length), batched=True,
                        remove_columns=["text"]).map(lambda r: {"labels": int(r["label"])}, remove_columns=["label"])
        collator = DataCollatorWithPadding(tokenizer)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
        data = rows.map(lambda b: tokenizer([p + " " + r for p, r in zip(b["prompt"], b["response"])], truncation=True,
                                            max_length=case.max_length), batched=True, remove_columns=rows.column_names)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    args = TrainingArguments(output_dir=str(work / "hf"), per_device_train_batch_size=case.batch, max_steps=case.steps,
                             save_strategy="no", eval_strategy="no", report_to=[], logging_steps=1000,
                             disable_tqdm=True, gradient_checkpointing=gc)
    return Trainer(model=model, args=args, train_dataset=data, data_collator=collator)


def measure(case: ModelCase, variant: str, store: Path, gc: bool, params: int, mean_tokens: float,
            peak_tflops: float, fsdp: bool = False) -> Result:
    import torch

    work = Path(tempfile.mkdtemp(prefix=f"bench-gpu-{variant}-"))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer, checkpointer = (kubetune_trainer(case, store, gc, fsdp, work) if variant.startswith("kubetune")
                             else (hf_default_trainer(case, store, gc, work), None))
    from bench_train_throughput import StepClock

    clock = StepClock.make()
    trainer.add_callback(clock)
    trainer.train()
    if checkpointer is not None:
        checkpointer.drain()
    samples = _rate(clock, case.batch) * (int(os.environ.get("WORLD_SIZE", "1")))
    tokens = samples * mean_tokens
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    gpus = max(1, torch.cuda.device_count()) if fsdp else 1
    mfu = 6 * params * tokens / (peak_tflops * 1e12 * gpus) if torch.cuda.is_available() else None
    del trainer
    shutil.rmtree(work, ignore_errors=True)
    return Result(case.name, variant, gc, round(samples, 2), round(tokens, 1), round(peak, 2),
                  None if mfu is None else round(mfu, 4), params)


def prepare(case: ModelCase, root: Path, smoke: bool) -> tuple[Path, int, float]:
    rng = random.Random(0)
    rows = synthetic_rows(case, case.batch * case.steps * 2, rng)
    store = root / case.name
    (store / "datasets").mkdir(parents=True)
    with open(store / "datasets" / "train.jsonl", "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    texts = [" ".join(v for k, v in r.items() if k != "label") for r in rows]
    params = build_model(case, store / "models" / "m", texts, smoke)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(store / "models" / "m")
    lengths = [min(case.max_length, len(tokenizer(t)["input_ids"])) for t in texts]
    return store, params, sum(lengths) / len(lengths)


def fsdp_results(args: argparse.Namespace) -> list[dict]:
    """FSDP runs in a torchrun child over every GPU; [] on fewer than two GPUs."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus < 2 or args.smoke:
        print(f"fsdp: skipped ({gpus} GPU(s); FSDP shards across two or more)")
        return []
    out = Path(tempfile.mkdtemp(prefix="bench-fsdp-")) / "fsdp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}", __file__,
           "--fsdp-only", "--out", str(out), "--peak-tflops", str(args.peak_tflops)]
    done = subprocess.run(cmd, text=True, capture_output=True)
    if done.returncode != 0:
        print(f"fsdp: failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        return []
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "gpu_results.json")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200 SXM: 989)")
    parser.add_argument("--smoke", action="store_true", help="tiny models, CPU allowed: checks the plumbing only")
    parser.add_argument("--fsdp-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.smoke:
        sys.exit("bench_gpu: no CUDA device (use --smoke to check the plumbing on a CPU)")
    root = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    results: list[dict] = []
    for case in cases(args.smoke):
        store, params, mean_tokens = prepare(case, root, args.smoke)
        if args.fsdp_only:
            results.append(asdict(measure(case, "kubetune-fsdp", store, True, params, mean_tokens, args.peak_tflops,
                                          fsdp=True)))
            continue
        for gc in (False, True):
            for variant in ("kubetune", "hf-default"):
                results.append(asdict(measure(case, variant, store, gc, params, mean_tokens, args.peak_tflops)))
                print(json.dumps(results[-1]), flush=True)
    if not args.fsdp_only:
        results += fsdp_results(args)
    if int(os.environ.get("RANK", "0")) == 0:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                                        "results": results}, indent=2))
        print(f"{'model':8} {'variant':14} {'gc':5} {'samples/s':>10} {'tokens/s':>10} {'peak GiB':>9} {'MFU':>6}")
        for r in results:
            mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
            print(f"{r['model']:8} {r['variant']:14} {str(r['gradient_checkpointing']):5} {r['samples_per_s']:10.1f} "
                  f"{r['tokens_per_s']:10.0f} {r['peak_memory_gib']:9.2f} {mfu:>6}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
