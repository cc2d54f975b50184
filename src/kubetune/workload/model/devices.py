"""Where and how the workload computes: device, DDP backend, precision.

Shared by training, evaluation and batch prediction so all three place and run a model the
same way; torch only, no other part of the workload. Where the answer depends on the process's
place in the gang (world size, local rank), the caller passes it (from the entrypoint's `PodEnv`).
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def precision_flags(precision: str) -> dict[str, bool]:
    """auto: bf16 where the GPU supports it, else fp32 (CPU bf16 is slower than fp32 on most
    CPUs and changes results)."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def ddp_backend(world_size: int) -> str | None:
    """gloo for multi-process CPU runs (the local executor, CPU nodes); NCCL is the default on GPUs."""
    if world_size > 1 and not torch.cuda.is_available():
        return "gloo"
    return None


def inference_device(local_rank: int) -> torch.device:
    """This process's GPU (its local rank's under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def place_for_inference(model: PreTrainedModel, local_rank: int) -> Any:
    """On the inference device, in bf16 where `evaluate` uses it too (bf16_full_eval)."""
    model = model.to(inference_device(local_rank))
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        model = model.to(torch.bfloat16)
    return model.eval()


# Tensor cores run matmuls fastest on dimensions that are multiples of 8 (fp16/bf16).
GPU_PAD_MULTIPLE = 8


def pad_multiple() -> int | None:
    """What batches are padded to a multiple of: 8 on a GPU (tensor cores), none on a CPU,
    where it only adds tokens (12% more on length-grouped SST-2 batches, issue 16)."""
    return GPU_PAD_MULTIPLE if torch.cuda.is_available() else None
