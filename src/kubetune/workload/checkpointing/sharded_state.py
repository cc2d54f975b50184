"""Sharded (FSDP) training state when ranks sit on different nodes: which files of a checkpoint
folder one rank wrote, and the consolidated weights of the final model.

Under FSDP with sharded state dicts, accelerate has every rank write its own shard into its own
checkpoint folder (`pytorch_model_fsdp_0/__<rank>_0.distcp`, `optimizer_0/__<rank>_0.distcp`,
beside the Trainer's `rng_state_<rank>.pth`); only rank 0 writes `.metadata`. Ranks on rank 0's
node share its disk, so rank 0's upload of its folder carries their shards; a rank on another
node must put its own files into the store (`CheckpointUploadCallback`). And
`Trainer.save_model` saves no weights at all for a sharded model, so the final `model/` folder
is gathered here with torch's own `get_model_state_dict`, which is what accelerate's
`get_state_dict` runs for FSDP2 (called directly so it also runs, and is tested, with torch's
`fully_shard` on CPU, where accelerate refuses FSDP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# What one rank writes into a checkpoint folder: the Trainer's RNG state, torch.distributed
# checkpoint shards (`__<rank>_<n>.distcp`), accelerate's per-rank files without DCP.
_RANK_FILE_PATTERNS = ("rng_state_{rank}.pth", "__{rank}_*.distcp", "*_rank{rank}.bin")


def rank_files(folder: Path, rank: int) -> list[str]:
    """The files of a checkpoint folder that `rank` wrote, as paths relative to the folder."""
    names = {
        path.relative_to(folder).as_posix()
        for pattern in _RANK_FILE_PATTERNS
        for path in folder.rglob(pattern.format(rank=rank))
        if path.is_file()
    }
    return sorted(names)


def shares_rank0_disk(process_index: int, local_process_index: int) -> bool:
    """Whether a rank runs on rank 0's node (torchrun numbers node 0's ranks 0..n-1, so there
    the global and the local rank agree): its files are in rank 0's checkpoint folder."""
    return process_index == local_process_index


def save_consolidated(model: Any, folder: Path, is_main: bool) -> None:
    """Gather a sharded model's full weights (on CPU, on rank 0; the other ranks get none) and
    save them on rank 0 as a normal HF folder (a PEFT model saves its adapter from the gathered
    weights). Collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if is_main:
        model.save_pretrained(str(folder), state_dict=state)
