"""FSDP's sharded checkpoints and final model across nodes (issue 16), on CPU with torch's own
`fully_shard` and `torch.distributed.checkpoint` over gloo (accelerate runs FSDP only on GPUs).

Two ranks, each with its own checkpoint folder as on two nodes, write their shards the way
accelerate does; the checkpoint callback must put every rank's shard into the store before
the commit marker names them; a fresh gang fetches the committed checkpoint and loads exactly
the shards it wrote; and the consolidated final model loads with `from_pretrained` with the
weights of an unsharded replica trained on the same batch (with LoRA: its adapter)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kubetune.contract.layout import RunLayout
from kubetune.storage import COMMIT_MARKER, Store
from kubetune.workload.checkpointing.sharded_state import rank_files, shares_rank0_disk

WORKER = r'''
import copy, json, pathlib, sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import fully_shard
from transformers import BertConfig, BertForSequenceClassification

from kubetune.contract.layout import RunLayout
from kubetune.storage import COMMIT_MARKER, Store
from kubetune.workload.checkpointing.upload_callback import CheckpointUploadCallback
from kubetune.workload.checkpointing.protocol import fetch_checkpoint
from kubetune.workload.checkpointing.sharded_state import save_consolidated

dist.init_process_group("gloo")
rank = dist.get_rank()
out, store, layout = pathlib.Path(sys.argv[1]), Store(sys.argv[2]), RunLayout("fsdp-run")

def sharded_model(lora=False):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=2)
    model = BertForSequenceClassification(config)
    if lora:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
    reference = copy.deepcopy(model)
    for layer in (model.base_model.model if lora else model).bert.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    return model, reference

def step(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(1)  # the same batch on both ranks: FSDP's mean gradient is the replica's
    batch = torch.randint(0, 100, (4, 8))
    model(input_ids=batch, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    optimizer.step()
    return optimizer

model, reference = sharded_model()
optimizer = step(model)
step(reference)

node = out / f"node{rank}"  # each rank its own disk, as on two nodes
checkpoint = node / "checkpoint-1"
model_state, optimizer_state = get_state_dict(model, optimizer)
dcp.save({"model": model_state}, storage_writer=dcp.FileSystemWriter(str(checkpoint / "pytorch_model_fsdp_0")))
dcp.save({"optimizer": optimizer_state}, storage_writer=dcp.FileSystemWriter(str(checkpoint / "optimizer_0")))
torch.save({"rank": rank}, checkpoint / f"rng_state_{rank}.pth")
args = SimpleNamespace(output_dir=str(node), world_size=2, process_index=rank, local_process_index=0,
                       gradient_accumulation_steps=1, per_device_train_batch_size=4)
state = SimpleNamespace(global_step=1, epoch=0.5, is_world_process_zero=rank == 0, best_global_step=None)
CheckpointUploadCallback(store, layout, keep=2).on_save(args, state, None)
dist.barrier()

# A fresh gang on fresh disks resumes from the store.
fetched = fetch_checkpoint(store, layout, 1, out / f"resume{rank}")
resumed, _ = sharded_model()
resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=1e-2)
loaded_model, loaded_optimizer = get_state_dict(resumed, resumed_optimizer)
dcp.load({"model": loaded_model}, storage_reader=dcp.FileSystemReader(str(fetched / "pytorch_model_fsdp_0")))
dcp.load({"optimizer": loaded_optimizer}, storage_reader=dcp.FileSystemReader(str(fetched / "optimizer_0")))
set_state_dict(resumed, resumed_optimizer, model_state_dict=loaded_model, optim_state_dict=loaded_optimizer)
trained = dict(model.named_parameters())
same_weights = all(torch.equal(p.to_local(), trained[n].to_local()) for n, p in resumed.named_parameters())
exp_avg = {n: s["exp_avg"].to_local() for n, s in get_state_dict(model, optimizer)[1]["state"].items()}
same_moments = all(torch.equal(s["exp_avg"].to_local(), exp_avg[n])
                   for n, s in get_state_dict(resumed, resumed_optimizer)[1]["state"].items())

save_consolidated(model, out / "model", rank == 0)
adapted, adapted_reference = sharded_model(lora=True)
step(adapted)
step(adapted_reference)
save_consolidated(adapted, out / "adapter", rank == 0)
if rank == 0:
    from peft import get_peft_model_state_dict
    torch.save(reference.state_dict(), out / "reference.pt")
    torch.save(get_peft_model_state_dict(adapted_reference), out / "reference-adapter.pt")
(out / f"rank{rank}.json").write_text(json.dumps({"same_weights": same_weights, "same_moments": same_moments,
                                                    "moments": len(exp_avg)}))
dist.destroy_process_group()
'''


def test_rank_files_are_the_rank_s_own(tmp_path):
    for name in ("rng_state_1.pth", "rng_state_10.pth", "pytorch_model_fsdp_0/__1_0.distcp",
                 "pytorch_model_fsdp_0/__10_0.distcp", "pytorch_model_fsdp_0/.metadata",
                 "optimizer_0/__1_0.distcp", "pytorch_model_fsdp_0_rank1.bin", "trainer_state.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert rank_files(tmp_path, 1) == ["optimizer_0/__1_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp",
                                       "pytorch_model_fsdp_0_rank1.bin", "rng_state_1.pth"]
    assert shares_rank0_disk(3, 3) and not shares_rank0_disk(4, 0)


@pytest.mark.slow  # waits on real processes, timeouts or leases: keeps `-m "not slow"` under 5 minutes
def test_every_rank_s_shard_reaches_the_store_and_the_final_model_is_whole(tmp_path):
    import torch
    from transformers import BertForSequenceClassification

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    store_root = tmp_path / "store"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(script), str(tmp_path), str(store_root)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    store, layout = Store(str(store_root)), RunLayout("fsdp-run")
    checkpoint = layout.checkpoint(1)
    assert store.read_text(layout.latest).strip() == checkpoint.rsplit("/", 1)[-1]
    assert store.is_committed(checkpoint)
    listed = set(store.read_json(f"{checkpoint}/{COMMIT_MARKER}").get("files", []))
    for name in ("pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp",
                 "pytorch_model_fsdp_0/.metadata", "optimizer_0/__1_0.distcp", "rng_state_1.pth"):
        assert name in listed, sorted(listed)
        assert store.exists(f"{checkpoint}/{name}"), name
    # rank 1's disk held only its own shards: they came from rank 1, not from rank 0's folder
    assert not (tmp_path / "node0" / "checkpoint-1" / "pytorch_model_fsdp_0" / "__1_0.distcp").exists()

    for rank in (0, 1):
        resumed = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert resumed["same_weights"] and resumed["same_moments"] and resumed["moments"] > 0, (rank, resumed)

    final = BertForSequenceClassification.from_pretrained(tmp_path / "model")
    reference = torch.load(tmp_path / "reference.pt")
    loaded = final.state_dict()
    assert set(reference) <= set(loaded)
    for name, tensor in reference.items():
        assert torch.allclose(loaded[name], tensor, atol=1e-6), name

    # with LoRA: the adapter alone, gathered from the shards, with the replica's trained values
    from safetensors.torch import load_file

    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    expected = torch.load(tmp_path / "reference-adapter.pt")
    assert set(adapter) == set(expected) and any("lora_B" in name for name in adapter)
    for name, tensor in expected.items():
        assert torch.allclose(adapter[name], tensor, atol=1e-6), name
    assert any(tensor.abs().sum() > 0 for name, tensor in adapter.items() if "lora_B" in name)  # it trained
