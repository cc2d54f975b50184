"""A trained model ready for inference: loading and a Trainer used only for batched predict.

Shared by `evaluate` and batch prediction, so both score exactly the same way (same collator,
same batching, same device handling, gathered across ranks).
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers import AutoTokenizer, Trainer, TrainingArguments

from kubetune.spec import JobSpec
from kubetune.workload.trainer_setup import ddp_backend
from kubetune.workload.tasks import Task

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()


def load_for_inference(task: Task, folder: str) -> tuple[Any, Any]:
    from kubetune.workload.lora import is_adapter_folder, load_adapter_model

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if is_adapter_folder(folder):  # a LoRA run saved without merge: base weights + adapter
        model = load_adapter_model(task.auto_model_class(), folder)
    else:
        model = task.auto_model_class().from_pretrained(folder)
    model.eval()
    return model, tokenizer


def make_predictor(spec: JobSpec, task: Task, model: Any, tokenizer: Any, output_dir: str) -> Trainer:
    t = spec.train
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size * 2,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=ddp_backend(),
        bf16_full_eval=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    )
    return Trainer(model=model, args=args, processing_class=tokenizer, data_collator=task.collator(tokenizer))
