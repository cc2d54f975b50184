"""The speed and scale settings of `train:` (contract.spec_speed) on this machine: what the
machine must have (refused before the model loads), what `from_pretrained` and the Trainer's
`TrainingArguments` receive, and what a run records it actually used (`metrics/summary.json`,
key `speed_settings`).

Everything goes through the Hugging Face integrations (attn_implementation, the Trainer's
activation checkpointing, torch_compile, tf32, accelerate FSDP, bitsandbytes + peft), never a
hand-written loop. torch is imported only where a setting needs the machine's answer, so the
preflight (`check`) of a spec that sets none of these loads nothing.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from kubetune.contract.spec.job import JobSpec, SpecError
from kubetune.contract.spec.speed import FLASH_ATTENTION, QUANTIZATION_4BIT

# Data loader workers per rank when `train.dataloader_workers` is null: one CPU is the rank's
# own (it drives the GPU); more than this many workers only add memory for tokenized batches.
MAX_AUTO_WORKERS = 8
# accelerate's FSDP auto-wrap policies (accelerate.utils.constants.FSDP_AUTO_WRAP_POLICY).
WRAP_BY_BLOCK, WRAP_BY_SIZE, NO_WRAP = "TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"
# Size-based wrapping for a model class that names no transformer block: units of 100M params.
WRAP_MIN_PARAMS = 100_000_000
# Checkpoints under FSDP: every rank writes its own shard (no gather of a 7B model on rank 0).
FSDP_STATE_DICT = "SHARDED_STATE_DICT"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def has_package(name: str) -> bool:
    """Whether `name` is installed, without importing it (flash_attn imports CUDA kernels)."""
    return importlib.util.find_spec(name) is not None


def check_speed_support(spec: JobSpec) -> None:
    """Refuse, with one line naming the field, a setting this machine cannot run: before the
    store, the model folder or the data are touched (the pod's setup and `validate --data`
    both run this first). torch is imported only when such a setting is asked for."""
    t = spec.train
    if t.attention == FLASH_ATTENTION:
        if not cuda_available():
            raise SpecError(f"train.attention: {FLASH_ATTENTION} needs a CUDA GPU and this machine has none; use sdpa")
        if not has_package("flash_attn"):
            raise SpecError(f"train.attention: {FLASH_ATTENTION} needs the flash_attn package, which is not "
                            "installed in this image; use sdpa")
    if t.fsdp is not None and not cuda_available():
        raise SpecError("train.fsdp: needs CUDA GPUs (accelerate runs FSDP only on GPUs) and this machine has none")
    if t.quantization == QUANTIZATION_4BIT:
        if not cuda_available():
            raise SpecError("train.quantization: 4bit needs a CUDA GPU (bitsandbytes) and this machine has none")
        if not has_package("bitsandbytes"):
            raise SpecError("train.quantization: 4bit needs the bitsandbytes package, which is not installed "
                            "in this image")


def model_load_kwargs(spec: JobSpec, local_rank: int) -> dict[str, Any]:
    """Extra `from_pretrained` arguments. The default attention (sdpa) passes nothing, so
    transformers picks sdpa where the architecture has it and eager where not, as before this
    setting existed; what it picked is recorded (`speed_settings`). A 4-bit model loads onto
    the GPU of this rank (`local_rank`)."""
    t = spec.train
    kwargs: dict[str, Any] = {}
    if t.attention != "sdpa":
        kwargs["attn_implementation"] = t.attention
    if t.quantization == QUANTIZATION_4BIT:  # QLoRA: NF4 base weights, bf16 compute
        import torch
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": local_rank}  # each rank its own GPU
    return kwargs


def prepare_quantized(model: Any, spec: JobSpec) -> Any:
    """A 4-bit model before its LoRA adapters (peft's prepare_model_for_kbit_training: norms in
    fp32, input gradients on for checkpointing); any other model unchanged."""
    if spec.train.quantization != QUANTIZATION_4BIT:
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.train.gradient_checkpointing)


def tf32_setting(requested: bool | None) -> bool | None:
    """The Trainer's `tf32`: on where the GPU has it (Ampere or newer) unless the spec says
    false; None (left alone) where the machine has none, since the Trainer refuses `tf32=True`
    there; a spec's `true` on such a machine falls back to off, and the run records it."""
    from transformers.utils.import_utils import is_torch_tf32_available

    if not is_torch_tf32_available():
        return None
    return True if requested is None else requested


def cpu_count(spec: JobSpec) -> float:
    """CPUs this pod may use: the CPUs it may run on (os.sched_getaffinity), at most the spec's
    `resources.cpu` (per node; a Kubernetes quantity such as 4 or 500m)."""
    cpus: float = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quantity = spec.resources.cpu
    if quantity:
        requested = float(quantity[:-1]) / 1000 if quantity.endswith("m") else _plain_number(quantity)
        if requested:
            cpus = min(cpus, requested)
    return cpus


def _plain_number(quantity: str) -> float | None:
    try:
        return float(quantity)
    except ValueError:  # a suffixed quantity (2k): not a CPU count anyone sets; ignored
        return None


def dataloader_workers(spec: JobSpec, cuda: bool, ranks_here: int) -> int:
    """`train.dataloader_workers`, or when null: on a GPU, the node's CPUs shared by its
    `ranks_here` ranks (torchrun's local world size), one left to each rank, at most
    MAX_AUTO_WORKERS; on a CPU 0 (the batches are already tokenized, and worker processes would
    take cores from the training itself)."""
    requested = spec.train.dataloader_workers
    if requested is not None:
        return requested
    if not cuda:
        return 0
    return max(0, min(MAX_AUTO_WORKERS, int(cpu_count(spec) // ranks_here) - 1))


def wrap_classes(model: Any) -> list[str]:
    """The model's transformer block classes (`_no_split_modules`), under any peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sorted(set(getattr(base, "_no_split_modules", None) or ()))


def fsdp_arguments(spec: JobSpec, model: Any) -> dict[str, Any]:
    """`train.fsdp` as the Trainer's `fsdp`/`fsdp_config` (FSDP2 through accelerate): full
    shard re-shards after forward; hybrid shard is a 2-D mesh (shard within a node, replicate
    across nodes: accelerate's ParallelismConfig); blocks wrapped by class; sharded state-dict
    checkpoints. Gradient checkpointing goes into fsdp_config (FSDP's own), not the Trainer's
    flag, which would add an all-gather to every backward pass."""
    f = spec.train.fsdp
    if f is None:
        return {}
    config: dict[str, Any] = {
        "version": 2,
        "reshard_after_forward": True,
        "cpu_offload": f.cpu_offload,
        "state_dict_type": FSDP_STATE_DICT,
        "activation_checkpointing": spec.train.gradient_checkpointing,
    }
    blocks = wrap_classes(model) if f.auto_wrap else []
    if not f.auto_wrap:
        config["auto_wrap_policy"] = NO_WRAP
    elif blocks:
        config.update(auto_wrap_policy=WRAP_BY_BLOCK, transformer_layer_cls_to_wrap=blocks)
    else:  # a model class that names no block: wrap by size instead
        config.update(auto_wrap_policy=WRAP_BY_SIZE, min_num_params=WRAP_MIN_PARAMS)
    arguments: dict[str, Any] = {"fsdp": True, "fsdp_config": config}
    if f.strategy == "hybrid_shard":
        from accelerate.parallelism_config import ParallelismConfig

        arguments["parallelism_config"] = ParallelismConfig(
            dp_replicate_size=spec.resources.max_nodes, dp_shard_size=spec.resources.gpus_per_node
        )
    return arguments


def speed_arguments(spec: JobSpec, model: Any = None, *, ranks_here: int) -> dict[str, Any]:
    """The TrainingArguments these settings set (training_arguments adds them); `ranks_here`:
    the ranks on this node (they share its CPUs). `model` is needed only for FSDP's auto-wrap
    classes."""
    t = spec.train
    cuda = cuda_available()
    return {
        "activation_checkpointing": t.gradient_checkpointing and t.fsdp is None,
        "torch_compile": t.compile,
        "tf32": tf32_setting(t.tf32),
        "dataloader_num_workers": dataloader_workers(spec, cuda, ranks_here),
        "dataloader_pin_memory": cuda,  # pinned host memory only speeds copies to a GPU
        **fsdp_arguments(spec, model),
    }


def speed_settings(spec: JobSpec, args: Any, model: Any, collator: Any) -> dict[str, Any]:
    """What a run actually used, after every fallback: the attention kernel the loaded model
    runs, the Trainer's resolved arguments, the collator's padding. `metrics/summary.json`
    keeps it under `speed_settings`."""
    from kubetune.workload.model.devices import precision  # torch: the run has loaded it by now

    config = getattr(model, "config", None)
    fsdp_config = args.fsdp_config or {}
    return {
        "device": "cuda" if cuda_available() else "cpu",
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "precision_reason": precision(spec.train.precision).reason,
        "attention": getattr(config, "_attn_implementation", None),
        "gradient_checkpointing": bool(args.activation_checkpointing or fsdp_config.get("activation_checkpointing")),
        "compile": bool(args.torch_compile),
        "tf32": bool(args.tf32),
        "dataloader_workers": args.dataloader_num_workers,
        "pin_memory": bool(args.dataloader_pin_memory),
        "pad_to_multiple_of": getattr(collator, "pad_to_multiple_of", None),
        "fsdp": spec.train.fsdp.strategy if args.fsdp and spec.train.fsdp else None,
        "quantization": spec.train.quantization,
    }
