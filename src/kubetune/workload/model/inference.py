"""Batched inference loops for batch prediction: forward passes and generation.

Plain loops, one independent process per shard (no process group). Tasks call these from
their `predict_rows`; this module imports no task (nothing of the workload), so the tasks can
depend on it without an import cycle. Batches go to the device the model was placed on
(`devices.place_for_inference`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def _batches(features: datasets.Dataset, collator: Any, batch_size: int,
             device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    from torch.utils.data import DataLoader

    keep = [c for c in features.column_names if c in MODEL_INPUTS]
    loader = DataLoader(features.select_columns(keep), batch_size=batch_size, shuffle=False, collate_fn=collator)
    for batch in loader:
        yield {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}


def forward_batches(model: PreTrainedModel, features: datasets.Dataset, collator: Any, batch_size: int) -> list[Any]:
    """The model's logits for each feature, in order, as float32 numpy arrays; per-token
    logits are cut to the feature's own length (padding dropped)."""
    outputs: list[Any] = []
    with torch.inference_mode():
        for batch in _batches(features, collator, batch_size, model.device):
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


def generate_batches(model: PreTrainedModel, features: datasets.Dataset, collator: Any, batch_size: int, tokenizer: PreTrainedTokenizerBase,
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
        for batch in _batches(features, collator, batch_size, model.device):
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
