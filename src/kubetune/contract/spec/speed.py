"""The speed and scale settings of `train:` (issue 16): attention kernel, gradient
checkpointing, torch.compile, TF32, data loader workers, FSDP and 4-bit (QLoRA) base weights.

Split from `kubetune.contract.spec.job` (which uses these in `TrainSpec`) to keep modules small.
Every default keeps a run as it was before these settings existed, and a default is left out of
the resolved YAML (`exclude_if`), so specs that set none of them render byte-identical manifests.

`check_structure` refuses combinations no machine can run (the launcher's `validate`/`render`
and the pod alike); what depends on the machine (CUDA, the `flash_attn` or `bitsandbytes`
package) is checked in the pod before the model loads (`kubetune.workload.model.speed`).
pydantic only: the launcher imports it on a laptop.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from kubetune.contract.spec.kubernetes import Strict

Attention = Literal["sdpa", "flash_attention_2", "eager"]
# The attention a spec gets when it names none: PyTorch's scaled-dot-product attention where the
# architecture has it (transformers picks it, else eager, as it did before this setting existed).
DEFAULT_ATTENTION = "sdpa"
FLASH_ATTENTION = "flash_attention_2"
QUANTIZATION_4BIT = "4bit"
# The one task QLoRA-style 4-bit training supports (a frozen 4-bit decoder under LoRA adapters).
QUANTIZATION_TASK = "causal-lm"


class FsdpSpec(Strict):
    """Fully Sharded Data Parallel through the Trainer's accelerate integration: parameters,
    gradients and optimizer state sharded across GPUs, for models larger than one GPU."""

    strategy: Literal["full_shard", "hybrid_shard"] = Field(
        default="full_shard",
        description="full_shard: across every GPU of the job; hybrid_shard: within each node, replicated across nodes",
    )
    auto_wrap: bool = Field(
        default=True, description="wrap each transformer block (the model's _no_split_modules class) as one FSDP unit"
    )
    cpu_offload: bool = Field(default=False, description="keep parameters in CPU memory between uses (slower, less GPU memory)")


def check_structure(spec: Any) -> None:
    """Combinations of speed settings that cannot run on any machine: one ValueError naming
    the field (the spec's validator turns it into one `error:` line). `spec` is a JobSpec
    (not imported: `spec` imports this module)."""
    t = spec.train
    if t.quantization == QUANTIZATION_4BIT:
        if spec.task != QUANTIZATION_TASK:
            raise ValueError(f"train.quantization: 4bit is for task {QUANTIZATION_TASK} only (task is {spec.task})")
        if t.lora is None:
            raise ValueError("train.quantization: 4bit needs train.lora (only LoRA adapters train on 4-bit weights)")
    if t.fsdp is not None:
        gpus = spec.resources.max_nodes * spec.resources.gpus_per_node
        if gpus < 2:
            raise ValueError(
                f"train.fsdp: needs at least 2 GPUs in all (resources.nodes * resources.gpus_per_node is {gpus}); "
                "one GPU trains without it"
            )
        if t.fsdp.strategy == "hybrid_shard" and spec.resources.max_nodes < 2:
            raise ValueError("train.fsdp.strategy: hybrid_shard shards within a node and replicates across nodes: "
                             "needs resources.nodes >= 2 (use full_shard on one node)")
        if t.quantization is not None:
            raise ValueError("train.quantization: not combinable with train.fsdp")
        if t.lora is not None and t.lora.merge:
            raise ValueError("train.lora.merge: not combinable with train.fsdp (a sharded model is not merged "
                             "in place); the run saves the adapter, which predict and evaluate load with its base")
