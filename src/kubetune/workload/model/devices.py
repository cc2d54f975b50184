"""Where and how the workload computes: device, DDP backend, precision.

Shared by training, evaluation and batch prediction so all three place and run a model the
same way; torch only, no other part of the workload. Where the answer depends on the process's
place in the gang (world size, local rank), the caller passes it (from the entrypoint's `PodEnv`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


# The CPU units that run bf16 matrix products natively (cpuinfo's names, as torch reports them):
# Intel's AMX tiles (Sapphire Rapids and later) and AVX-512 BF16 (Cooper Lake, AMD Zen 4 and
# later). Without one, torch emulates bf16 and a step runs slower than in fp32.
CPU_BF16_UNITS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Precision:
    """The precision a process computes in, and why (the run's first lines and `summary.json`
    say both)."""

    name: str  # "bf16", "fp16" or "fp32"
    reason: str


def cpu_bf16_unit(capabilities: Mapping[str, Any] | None = None) -> str | None:
    """The first of CPU_BF16_UNITS this CPU has, or None; `capabilities`: cpuinfo's flags as
    torch reports them (`torch.backends.cpu` has no public query for these units)."""
    if capabilities is None:
        capabilities = torch._C._cpu._get_cpu_capability()
    return next((unit for unit in CPU_BF16_UNITS if capabilities.get(unit)), None)


def resolve_precision(requested: str, *, cuda: bool, cuda_bf16: bool, cpu_unit: str | None) -> Precision:
    """`train.precision` on a machine with these answers. auto: bf16 on a GPU that supports it
    (as before); on a CPU, bf16 autocast where the CPU has bf16 matrix units (1.35-1.45x the
    fp32 step on MiniLM on an AMD EPYC with AVX-512 BF16, bench/RESULTS.md), fp32 where it would
    only emulate them."""
    if requested != "auto":
        return Precision(requested, "set in the spec (train.precision)")
    if cuda:
        return Precision("bf16", "auto: the GPU supports bf16") if cuda_bf16 else Precision(
            "fp32", "auto: the GPU does not support bf16")
    if cpu_unit:
        return Precision("bf16", f"auto: the CPU has bf16 units ({cpu_unit})")
    return Precision("fp32", "auto: the CPU has no bf16 units (amx_bf16 or avx512_bf16)")


def precision(requested: str) -> Precision:
    """`resolve_precision` with this machine's answers."""
    cuda = torch.cuda.is_available()
    return resolve_precision(requested, cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
                             cpu_unit=None if cuda else cpu_bf16_unit())


def precision_flags(requested: str) -> dict[str, bool]:
    """The TrainingArguments of `train.precision` (`precision`): bf16 is autocast, on a GPU or a
    CPU alike (the weights and optimizer state stay fp32)."""
    name = precision(requested).name
    return {"bf16": name == "bf16", "fp16": name == "fp16"}


@contextmanager
def inference_autocast(requested: str) -> Iterator[None]:
    """Evaluation's and batch prediction's forward passes in the precision training used: bf16
    autocast on a CPU whose `train.precision` resolves to bf16 (a GPU casts the model itself:
    `place_for_inference`, the predictor's bf16_full_eval). A context, not a Trainer flag: the
    Trainer autocasts only a model it prepared for training, so `Trainer.predict` alone would
    run in fp32 whatever its `bf16` says (measured with transformers 5.24)."""
    if not torch.cuda.is_available() and precision(requested).name == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


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
