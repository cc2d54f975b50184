"""A trained model ready for inference: loading and a Trainer used only for batched predict.

Shared by `evaluate` and batch prediction, so both score exactly the same way (same collator,
same batching, same device handling, gathered across ranks).
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers import AutoTokenizer, Trainer, TrainingArguments

from kubetune.contract.spec import JobSpec
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
    task.configure_model(model)
    model.eval()
    return model, tokenizer


def make_predictor(spec: JobSpec, task: Task, model: Any, tokenizer: Any, output_dir: str) -> Trainer:
    t = spec.train
    common = dict(
        output_dir=output_dir,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size * 2,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=ddp_backend(),
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


# -- batch prediction: plain loops, one independent process per shard (no process group) ------


def inference_device() -> Any:
    """This process's GPU (LOCAL_RANK under torchrun), else the CPU."""
    import os

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def place_for_inference(model: Any) -> Any:
    """On the inference device, in bf16 where `evaluate` uses it too (bf16_full_eval)."""
    model = model.to(inference_device())
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        model = model.to(torch.bfloat16)
    return model.eval()


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def _batches(features: Any, collator: Any, batch_size: int) -> Any:
    from torch.utils.data import DataLoader

    keep = [c for c in features.column_names if c in MODEL_INPUTS]
    loader = DataLoader(features.select_columns(keep), batch_size=batch_size, shuffle=False, collate_fn=collator)
    device = inference_device()
    for batch in loader:
        yield {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}


def forward_batches(model: Any, features: Any, collator: Any, batch_size: int) -> list[Any]:
    """The model's logits for each feature, in order, as float32 numpy arrays; per-token
    logits are cut to the feature's own length (padding dropped)."""
    outputs: list[Any] = []
    with torch.inference_mode():
        for batch in _batches(features, collator, batch_size):
            out = model(**batch)
            if getattr(out, "logits", None) is not None:
                logits = out.logits.float()
            else:  # extractive QA: [batch, seq, 2] = start and end logits per token
                logits = torch.stack([out.start_logits, out.end_logits], dim=-1).float()
            if logits.dim() == 3:
                lengths = batch["attention_mask"].sum(-1).tolist()
                outputs.extend(row[:n].cpu().numpy() for row, n in zip(logits, lengths))
            else:
                outputs.extend(logits.cpu().numpy())
    return outputs


def generate_batches(model: Any, features: Any, collator: Any, batch_size: int, tokenizer: Any,
                     max_new_tokens: int, num_beams: int) -> list[tuple[str, float, int]]:
    """Generated text for each feature: (text, mean log-probability per generated token,
    number of generated tokens). Decoder-only models get left-padded prompts and return
    only the continuation."""
    results: list[tuple[str, float, int]] = []
    decoder_only = not model.config.is_encoder_decoder
    pad_id = tokenizer.pad_token_id
    eos_ids = model.generation_config.eos_token_id
    eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids] if eos_ids is not None else [])
    with torch.inference_mode():
        for batch in _batches(features, collator, batch_size):
            out = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                 return_dict_in_generate=True, output_scores=True, pad_token_id=pad_id)
            sequences = out.sequences
            new = sequences[:, batch["input_ids"].shape[1]:] if decoder_only else sequences
            scores = model.compute_transition_scores(
                sequences, out.scores, getattr(out, "beam_indices", None) if num_beams > 1 else None,
                normalize_logits=num_beams == 1,
            ).float().cpu()
            # Scores cover the generated steps only (the last len(out.scores) tokens).
            steps = new[:, -scores.shape[1]:].cpu() if scores.shape[1] else new[:, :0].cpu()
            for tokens, token_scores in zip(steps.tolist(), scores.tolist()):
                n = len(tokens)
                for i, tok in enumerate(tokens):  # up to and including the first end-of-sequence
                    if tok in eos_ids:
                        n = i + 1
                        break
                kept = [s for s in token_scores[:n] if s != float("-inf")]
                score = sum(kept) / len(kept) if kept else 0.0
                text = tokenizer.decode(tokens[:n], skip_special_tokens=True).strip()
                results.append((text, float(score), n))
    return results
