"""Named resource profiles: presets for `resources:` in a job spec.

`resources.profile: gpu-8x4` fills every `resources` field the spec leaves out; a field the spec
sets wins (`profile: gpu-8` with `nodes: 2` is two 8-GPU nodes). The resolved values are what
the ConfigMap carries, so the container and `kubetune validate` show the same numbers.

Sizes are per node (one pod per node) and sit below the allocatable CPU and memory of common
GPU machines (8 x A100/H100 nodes have 96-192 cores and 1-2 TiB; 1-GPU nodes 8-16 cores).
"""

from __future__ import annotations

PROFILES: dict[str, dict[str, object]] = {
    "cpu": {"nodes": 1, "gpus_per_node": 0, "cpu": "4", "memory": "16Gi"},
    "gpu-1": {"nodes": 1, "gpus_per_node": 1, "cpu": "8", "memory": "48Gi"},
    "gpu-8": {"nodes": 1, "gpus_per_node": 8, "cpu": "64", "memory": "480Gi"},
    "gpu-8x4": {"nodes": 4, "gpus_per_node": 8, "cpu": "64", "memory": "480Gi"},
}

# Without a profile and without explicit sizes: enough for a small model on CPU, and per GPU
# a share that fits common GPU nodes.
DEFAULT_CPU = "4"
DEFAULT_MEMORY = "16Gi"
CPU_PER_GPU = 8
MEMORY_GIB_PER_GPU = 48


def default_cpu(gpus: int) -> str:
    return str(CPU_PER_GPU * gpus) if gpus else DEFAULT_CPU


def default_memory(gpus: int) -> str:
    return f"{MEMORY_GIB_PER_GPU * gpus}Gi" if gpus else DEFAULT_MEMORY


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity ("4", "500m", "2.5") in CPUs."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def threads_per_process(cpus: float, processes: int) -> int:
    """Each process's share of `cpus`, in whole threads, at least 1: a CPU limit of 4 with 8
    torchrun workers is 1 thread each, not 0 (or the node's core count, torch's default)."""
    return max(1, int(cpus // max(processes, 1)))
