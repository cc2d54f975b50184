"""LoRA adapters (peft) for every task: wrap a loaded model, save the adapter, load it back.

Training (`train.lora` in the spec): the pretrained weights are frozen and low-rank adapters
(rank `r`, scale `alpha / r`, `dropout`) are added to `target_modules`; unset, they are the
attention projections peft knows for the architecture (BERT/RoBERTa `query`, `value`; T5 `q`,
`v`; Llama-style `q_proj`, `v_proj`; GPT-2 `c_attn`; ...), else the first of a few common
naming schemes found in the model. A freshly initialised task head (classifier, qa_outputs,
...) is trained in full and saved with the adapter (peft `modules_to_save`), and so is the
pooler of BERT-style sequence classifiers (see `pooler_module`); language-model heads are
tied to the embeddings and stay frozen.

Saved model folder (`runs/<job>/model/`):

- `train.lora.merge: false` (default): `adapter_config.json` + `adapter_model.safetensors`
  (adapter and head weights, a few hundred kB to a few MB), `config.json` (the architecture
  with its label map), tokenizer, labels.json, spec.yaml. The adapter's base model is recorded
  as the spec's `model.source` (store-relative or a Hub id), not a local cache path, so the
  folder can be loaded on any machine that reaches the same store.
- `train.lora.merge: true`: the folder holds the merged full model (a plain Hugging Face
  folder anyone can load with `from_pretrained`), and `adapter/` inside it the adapter as
  above.

`load_adapter_model` loads either form back for evaluation and prediction.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, TYPE_CHECKING

from kubetune.contract.spec.job import JobSpec, LoraSpec, SpecError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

# The spec's task → peft's task type (which PeftModel subclass wraps the model).
TASK_TYPES = {
    "text-classification": "SEQ_CLS",
    "token-classification": "TOKEN_CLS",
    "question-answering": "QUESTION_ANS",
    "seq2seq": "SEQ_2_SEQ_LM",
    "causal-lm": "CAUSAL_LM",
}
# Tasks whose head is created for the task (random init): trained in full next to the adapter.
NEW_HEAD_TASKS = ("text-classification", "token-classification", "question-answering")
# Fallbacks for architectures peft has no default for: attention query/value projections.
COMMON_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("q", "v"), ("c_attn",), ("query_key_value",))
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
ADAPTER_DIR = "adapter"
PEFT_HEADS = ("classifier", "score", "qa_outputs")


def head_modules(model: PreTrainedModel) -> list[str]:
    """Names of the model's top-level modules outside its pretrained body (the task head)."""
    prefix = getattr(model, "base_model_prefix", "")
    return [
        name
        for name, module in model.named_children()
        if name != prefix and any(True for _ in module.parameters())
    ]


def pooler_module(model: PreTrainedModel, task: str) -> str | None:
    """BERT-style sequence classifiers read the [CLS] vector through the encoder's pooler
    (dense + tanh, pretrained for next-sentence prediction, and never trained at all in
    sentence-transformers checkpoints such as all-MiniLM-L6-v2). It is the first layer of the
    classification head, so it trains in full like the classifier (RoBERTa-style models have
    the same layer inside their `classifier` head)."""
    if task != "text-classification":
        return None
    pooler = getattr(model.base_model, "pooler", None)
    if pooler is None or not any(True for _ in pooler.parameters()):
        return None
    return "pooler"


def extra_heads(model: PreTrainedModel, task: str) -> list[str] | None:
    """Head modules to train in full that peft does not add by itself (it adds `classifier`,
    `score` and `qa_outputs` for its classification and QA task types)."""
    if task not in NEW_HEAD_TASKS:
        return None
    extra = [name for name in head_modules(model) if name not in PEFT_HEADS]
    pooler = pooler_module(model, task)
    return extra + ([pooler] if pooler else []) or None


def target_modules(model: PreTrainedModel, lora: LoraSpec) -> list[str]:
    """The spec's target modules, checked to exist; else the architecture's attention projections."""
    import torch.nn as nn

    linear_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, (nn.Linear,)) or
                    type(m).__name__ == "Conv1D"}
    if lora.target_modules:
        missing = [t for t in lora.target_modules if t not in linear_names]
        if missing:
            raise SpecError(
                f"train.lora.target_modules: {missing[0]!r} is not a linear layer of this model "
                f"(some are: {', '.join(sorted(linear_names)[:12])})"
            )
        return list(lora.target_modules)
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    known = DEFAULTS.get(getattr(model.config, "model_type", ""))
    if known:
        return list(known)
    for names in COMMON_TARGETS:
        if all(n in linear_names for n in names):
            return list(names)
    raise SpecError(
        f"train.lora.target_modules: no default for model type {getattr(model.config, 'model_type', '?')!r}; "
        f"list the attention projections (linear layers: {', '.join(sorted(linear_names)[:12])})"
    )


def lora_config(model: PreTrainedModel, lora: LoraSpec, task: str, inference: bool = False) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        task_type=TASK_TYPES[task],
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=target_modules(model, lora),
        modules_to_save=extra_heads(model, task),
        # A fully trained pooler gets no adapter (`dense` would otherwise match its layer).
        exclude_modules=r".*\bpooler\b.*" if pooler_module(model, task) else None,
        inference_mode=inference,
    )


def apply_lora(model: PreTrainedModel, lora: LoraSpec, task: str) -> Any:
    """Wrap a loaded model for LoRA training: only adapters (and a new task head) train."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, lora, task))


def save_lora(model: PreTrainedModel, folder: Path, spec: JobSpec) -> None:
    """Complete a folder the Trainer saved the adapter into: point the adapter at the spec's
    model source, add the architecture's config.json, and with `merge` turn the folder into
    the merged full model with the adapter under `adapter/`."""
    config_file = folder / "adapter_config.json"
    if config_file.exists():
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = spec.model.source
        config_file.write_text(json.dumps(config, indent=2) + "\n")
    base = model.get_base_model()
    if not spec.train.lora or not spec.train.lora.merge:
        base.config.save_pretrained(str(folder))
        return
    adapter = folder / ADAPTER_DIR
    adapter.mkdir(exist_ok=True)
    for name in ADAPTER_FILES + ("README.md",):
        if (folder / name).exists():
            shutil.move(str(folder / name), str(adapter / name))
    merged = model.merge_and_unload()
    merged.save_pretrained(str(folder))


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / "adapter_config.json").exists()


def base_model_dir(folder: str | Path, cache: Path) -> str:
    """Where the base weights of an adapter folder are: the model source of the spec saved
    with it, resolved through the same store (local folder, object store or Hub id; an object
    store's folder is downloaded into `cache`)."""
    from kubetune.contract.spec.job import load_spec
    from kubetune.storage import Store
    from kubetune.workload.model.source import check_model_source, local_model_dir

    spec_file = Path(folder) / "spec.yaml"
    if not spec_file.exists():
        config = json.loads((Path(folder) / "adapter_config.json").read_text())
        return config["base_model_name_or_path"]
    spec = load_spec(spec_file)
    store = Store.from_spec(spec.storage)
    return local_model_dir(store, check_model_source(store, spec.model.source, revision=spec.model.revision), cache)


def load_adapter_model(auto_class: Any, folder: str | Path, cache: Path) -> Any:
    """Base weights + the saved adapter (and head), ready for inference (adapters merged in);
    `cache`: where base weights from an object store are downloaded."""
    from peft import PeftModel
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder))  # the trained architecture and label map
    base = auto_class.from_pretrained(base_model_dir(folder, cache), config=config)
    model = PeftModel.from_pretrained(base, str(folder))
    return model.merge_and_unload()
