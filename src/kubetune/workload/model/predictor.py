"""A trained model ready for inference: loading and a Trainer used only for batched predict.

Shared by `evaluate` and batch prediction, so both score exactly the same way (same collator,
same batching, same device handling, gathered across ranks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TYPE_CHECKING

import torch
import transformers
from transformers import AutoTokenizer, Trainer, TrainingArguments

from kubetune.contract.spec.job import JobSpec
from kubetune.workload.model.devices import ddp_backend
from kubetune.workload.tasks import Task

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()


def load_for_inference(task: Task, folder: str, cache: Path) -> tuple[Any, Any]:
    """The model and tokenizer of a local model folder; `cache`: where the base weights of an
    adapter-only folder are downloaded when they live in an object store."""
    from kubetune.workload.model.lora import is_adapter_folder, load_adapter_model

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if is_adapter_folder(folder):  # a LoRA run saved without merge: base weights + adapter
        model = load_adapter_model(task.auto_model_class(), folder, cache)
    else:
        model = task.auto_model_class().from_pretrained(folder)
    task.configure_model(model)
    model.eval()
    return model, tokenizer


def make_predictor(spec: JobSpec, task: Task, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   output_dir: str, world_size: int) -> Trainer:
    """A Trainer that only predicts, over this process's `world_size` ranks."""
    t = spec.train
    common = dict(
        output_dir=output_dir,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size * 2,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=ddp_backend(world_size),
        bf16_full_eval=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    )
    preprocess = task.preprocess_logits if task.uses_preprocess_logits else None
    if task.generative:  # generate text to score it (BLEU, ROUGE), not just the loss
        from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

        gen_args = Seq2SeqTrainingArguments(
            **common, predict_with_generate=True, generation_num_beams=spec.generation.num_beams
        )
        return Seq2SeqTrainer(model=model, args=gen_args, processing_class=tokenizer,
                              data_collator=task.collator(tokenizer), preprocess_logits_for_metrics=preprocess)
    args = TrainingArguments(**common)
    return Trainer(model=model, args=args, processing_class=tokenizer, data_collator=task.collator(tokenizer),
                   preprocess_logits_for_metrics=preprocess)
