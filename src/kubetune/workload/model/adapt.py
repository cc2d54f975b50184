"""Which weights train: layer freezing (and, for LoRA, adapters) applied to a loaded model.

Works across architectures by finding the model's stack of transformer layers as the
ModuleList whose length equals `config.num_hidden_layers`, instead of hard-coding
`bert.encoder.layer`, `distilbert.transformer.layer`, `model.layers`, ...
"""

from __future__ import annotations

import logging
from typing import Any, TYPE_CHECKING

from kubetune.contract.spec.job import FreezeSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PretrainedConfig

log = logging.getLogger(__name__)


def layer_stack(model: PreTrainedModel) -> Any | None:
    """The encoder/decoder's ModuleList of layers, or None when none can be identified."""
    import torch.nn as nn

    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "num_layers", None)
    base = getattr(model, "base_model", model)
    for _, module in base.named_modules():
        if isinstance(module, nn.ModuleList) and n and len(module) == n:
            return module
    return None


def embeddings_module(model: PreTrainedModel) -> Any | None:
    base = getattr(model, "base_model", model)
    for name in ("embeddings", "embed_tokens", "shared", "wte"):
        if hasattr(base, name):
            return getattr(base, name)
    return model.get_input_embeddings()


def apply_freezing(model: PreTrainedModel, freeze: FreezeSpec) -> None:
    """Freeze in place. `encoder` freezes the whole pretrained body (the head trains alone);
    for an encoder-decoder language model (seq2seq), whose head is tied to the shared
    embeddings, it freezes the encoder stack and the decoder trains."""
    if freeze.encoder and is_seq2seq_lm(model):
        shared = {id(p) for p in model.get_input_embeddings().parameters()}
        for p in model.get_encoder().parameters():
            if id(p) not in shared:
                p.requires_grad = False
        return
    if freeze.encoder:
        for p in model.base_model.parameters():
            p.requires_grad = False
        return
    if freeze.embeddings:
        module = embeddings_module(model)
        if module is not None:
            for p in module.parameters():
                p.requires_grad = False
    if freeze.lower_layers:
        layers = layer_stack(model)
        if layers is None:
            from kubetune.workload.errors import DataError

            raise DataError("train.freeze.lower_layers: cannot find this model's layer stack")
        if freeze.lower_layers > len(layers):
            from kubetune.workload.errors import DataError

            raise DataError(f"train.freeze.lower_layers: the model has only {len(layers)} layers")
        for layer in list(layers)[: freeze.lower_layers]:
            for p in layer.parameters():
                p.requires_grad = False


def is_seq2seq_lm(model: PreTrainedModel) -> bool:
    """An encoder-decoder model with a language-model head (T5, BART, Marian for generation)."""
    return bool(getattr(model.config, "is_encoder_decoder", False)) and hasattr(model, "get_encoder") \
        and model.get_output_embeddings() is not None


def parameter_counts(model: PreTrainedModel) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def set_dropout(config: PretrainedConfig, dropout: float) -> None:
    """Override dropout under whichever names this architecture uses."""
    for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                 "hidden_dropout", "dropout_rate", "resid_pdrop", "embd_pdrop", "attn_pdrop", "classifier_dropout"):
        if hasattr(config, attr):
            setattr(config, attr, dropout)
