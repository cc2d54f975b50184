"""The speed settings of `train:` in the workload (issue 16), on a CPU: what the Trainer receives
(activation checkpointing, FSDP's fsdp/fsdp_config), what the machine refuses, data loader
workers, collator padding, and gradient checkpointing itself (same losses, less activation
memory) on a tiny randomly initialised BERT. Everything here is in-process and takes seconds."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from kubetune.contract.spec.job import SpecError, validate_spec
from kubetune.workload.model import speed
from kubetune.workload.stages.run import PodEnv
from kubetune.workload.tasks import get_task
from kubetune.workload.trainer.build import training_arguments

CUDA = torch.cuda.is_available()


def make_spec(task: str = "text-classification", resources: dict | None = None, **train):
    return validate_spec({"name": "demo", "task": task, "model": {"source": "m"}, "data": {"train": "t.tsv"},
                          "train": train, "resources": resources or {}})


def arguments(tmp_path, spec, model=None):
    run = SimpleNamespace(spec=spec, task=get_task(spec), env=PodEnv(),  # what training_arguments reads of a Run
                          accumulation=spec.train.gradient_accumulation_steps)
    return training_arguments(run, tmp_path, model)  # type: ignore[arg-type]


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


# -- FSDP: the exact arguments the Trainer gets (FSDP itself cannot start on a CPU) ----------------


def test_fsdp_full_shard_reaches_the_trainer_as_fsdp2_wrapping_decoder_layers(tmp_path, monkeypatch):
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # TrainingArguments sets it; restored after
    spec = make_spec("causal-lm", {"nodes": 1, "gpus_per_node": 2}, fsdp={})
    args = arguments(tmp_path, spec, tiny_llama())
    assert args.fsdp is True
    assert args.fsdp_config["version"] == 2
    assert args.fsdp_config["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert args.fsdp_config["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]  # _no_split_modules
    assert args.fsdp_config["state_dict_type"] == "SHARDED_STATE_DICT"
    assert args.fsdp_config["cpu_offload"] is False
    assert args.parallelism_config is None  # full shard: one flat mesh over every GPU
    # What the Trainer hands accelerate's FullyShardedDataParallelPlugin:
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["reshard_after_forward"] is True
    assert plugin["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    assert plugin["state_dict_type"] == "SHARDED_STATE_DICT"
    assert "cpu_offload" not in plugin and plugin.get("activation_checkpointing") is False
    assert not args.activation_checkpointing


def test_fsdp_hybrid_shard_with_offload_and_checkpointing_under_lora(tmp_path, monkeypatch):
    from kubetune.workload.model.lora import apply_lora

    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    spec = make_spec("causal-lm", {"nodes": 2, "gpus_per_node": 4}, lora={},
                     fsdp={"strategy": "hybrid_shard", "cpu_offload": True}, gradient_checkpointing=True)
    model = apply_lora(tiny_llama(), spec.train.lora, spec.task)  # a PeftModel: blocks of its base model
    args = arguments(tmp_path, spec, model)
    assert args.fsdp_config["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert (args.parallelism_config.dp_replicate_size, args.parallelism_config.dp_shard_size) == (2, 4)
    assert args.fsdp_plugin_args["cpu_offload"] is True
    # FSDP's own activation checkpointing; the Trainer refuses both at once.
    assert args.fsdp_plugin_args["activation_checkpointing"] is True
    assert not args.activation_checkpointing


def test_fsdp_without_auto_wrap_and_defaults_without_fsdp(tmp_path, monkeypatch):
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    spec = make_spec("causal-lm", {"nodes": 1, "gpus_per_node": 8}, fsdp={"auto_wrap": False})
    assert arguments(tmp_path, spec, tiny_llama()).fsdp_plugin_args["auto_wrap_policy"] == "NO_WRAP"
    plain = arguments(tmp_path, make_spec())  # no speed setting: today's arguments
    assert not plain.fsdp and plain.fsdp_plugin_args is None
    assert not plain.activation_checkpointing and not plain.torch_compile
    assert plain.dataloader_num_workers == 0
    if not CUDA:
        assert plain.tf32 is None and plain.dataloader_pin_memory is False


# -- refused before anything is loaded -------------------------------------------------------------

GPU_ONLY = [
    ("train.attention", {"attention": "flash_attention_2"}, "text-classification", None),
    ("train.fsdp", {"fsdp": {}}, "causal-lm", {"nodes": 1, "gpus_per_node": 2}),
    ("train.quantization", {"quantization": "4bit", "lora": {}}, "causal-lm", None),
]


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("field,train,task,resources", GPU_ONLY, ids=[g[0] for g in GPU_ONLY])
def test_gpu_only_settings_are_refused_without_cuda(field, train, task, resources):
    with pytest.raises(SpecError) as info:
        speed.check_speed_support(make_spec(task, resources, **train))
    message = str(info.value)
    assert message.startswith(f"{field}: ") and "CUDA" in message and "\n" not in message


@pytest.mark.parametrize("field,package,train,task", [
    ("train.attention", "flash_attn", {"attention": "flash_attention_2"}, "text-classification"),
    ("train.quantization", "bitsandbytes", {"quantization": "4bit", "lora": {}}, "causal-lm"),
])
def test_a_missing_package_is_refused_on_a_gpu_machine(monkeypatch, field, package, train, task):
    if speed.has_package(package):
        pytest.skip(f"{package} is installed here")
    monkeypatch.setattr(speed, "cuda_available", lambda: True)  # a GPU node whose image lacks the package
    with pytest.raises(SpecError, match=f"^{field}: .*{package}"):
        speed.check_speed_support(make_spec(task, **train))


def test_settings_any_machine_runs_pass_the_check():
    speed.check_speed_support(make_spec(attention="eager", gradient_checkpointing=True, compile=True, tf32=True))


# -- data loader workers and padding -------------------------------------------------------------


def test_dataloader_workers_auto_is_sized_from_the_pods_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    auto = {"dataloader_workers": None}

    def workers(spec, cuda=True, ranks_here=2):  # two ranks (GPUs) share the node's CPUs: torchrun's LOCAL_WORLD_SIZE
        return speed.dataloader_workers(spec, cuda=cuda, ranks_here=ranks_here)

    assert workers(make_spec(resources={"cpu": "6"}, **auto)) == 2  # 6/2 - 1
    assert workers(make_spec(resources={"cpu": "6"}, **auto), ranks_here=1) == 5  # one rank: all but its own
    assert workers(make_spec(resources={"cpu": "1500m"}, **auto)) == 0
    assert workers(make_spec(**auto)) == speed.MAX_AUTO_WORKERS  # 32 CPUs: capped
    assert workers(make_spec(**auto), cuda=False) == 0  # a CPU run: workers take its cores
    assert workers(make_spec(resources={"cpu": "6"}, dataloader_workers=3)) == 3


def test_classification_pads_to_a_multiple_of_8_only_on_a_gpu(minilm_dir):
    from transformers import AutoTokenizer

    collator = get_task(make_spec()).collator(AutoTokenizer.from_pretrained(minilm_dir))
    assert collator.pad_to_multiple_of == (8 if CUDA else None)
    batch = collator([{"input_ids": [101, 7592, 102]}, {"input_ids": [101, 7592, 2088, 999, 102]}])
    assert batch["input_ids"].shape[1] == (8 if CUDA else 5)  # the longest row, not 8, on a CPU


# -- gradient checkpointing, for real: same losses, less activation memory -------------------------


class SavedActivations:
    """Bytes autograd keeps for the backward pass during each forward of `model`: the tensors
    packed by torch.autograd.graph.saved_tensors_hooks while the top-level forward runs, one
    count per storage, parameters left out. That is the activation memory gradient
    checkpointing trades for recomputation. (tracemalloc cannot see it: torch allocates tensor
    memory outside Python's allocator.) Inside a checkpointed block autograd saves nothing the
    outer hooks see: reentrant checkpointing runs it without grad, non-reentrant packs with its
    own inner hooks."""

    def __init__(self, model):
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.current: dict[int, int] | None = None
        self.per_forward: list[int] = []
        model.register_forward_pre_hook(lambda module, args: self._start())
        model.register_forward_hook(lambda module, args, out: self._stop())

    def _start(self):
        self.current = {}

    def _stop(self):
        self.per_forward.append(sum(self.current.values()))
        self.current = None

    def pack(self, tensor):
        if self.current is not None:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in self.params:
                self.current[storage.data_ptr()] = storage.nbytes()
        return tensor

    @staticmethod
    def unpack(tensor):
        return tensor


def train_tiny_bert(tmp_path, checkpointing: bool):
    """Three steps of a 4-layer BERT (hidden 64, 32 tokens, dropout off) with the arguments
    training builds for a spec, and a plain Trainer; returns (losses, activation bytes, model)."""
    import datasets
    from transformers import BertConfig, BertForSequenceClassification, Trainer

    spec = make_spec(max_steps=3, batch_size=8, logging_steps=1, checkpoint_every=100, max_seq_length=32,
                     gradient_checkpointing=checkpointing, seed=7)
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=200, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2))
    generator = torch.Generator().manual_seed(1)
    rows = datasets.Dataset.from_dict({
        "input_ids": torch.randint(5, 200, (24, 32), generator=generator).tolist(),
        "attention_mask": [[1] * 32] * 24,
        "labels": torch.randint(0, 2, (24,), generator=generator).tolist(),
    })
    args = arguments(tmp_path / f"gc-{checkpointing}", spec, model)
    accuracy = lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}  # noqa: E731
    trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=rows, compute_metrics=accuracy)
    saved = SavedActivations(model)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, max(saved.per_forward), model


def test_gradient_checkpointing_same_losses_less_activation_memory(tmp_path):
    plain_losses, plain_bytes, plain = train_tiny_bert(tmp_path, checkpointing=False)
    ckpt_losses, ckpt_bytes, checkpointed = train_tiny_bert(tmp_path, checkpointing=True)
    print(f"gradient checkpointing: activations kept for backward {plain_bytes / 1e6:.2f} MB -> "
          f"{ckpt_bytes / 1e6:.2f} MB; losses {plain_losses} vs {ckpt_losses}")
    assert checkpointed.is_activation_checkpointing and not plain.is_activation_checkpointing
    assert len(plain_losses) == 3
    assert ckpt_losses == pytest.approx(plain_losses, rel=1e-4, abs=1e-5)
    assert ckpt_bytes < plain_bytes / 2  # 4 checkpointed layers: their inner activations recomputed
