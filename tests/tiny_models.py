"""Small randomly initialised models of real architectures, built offline for tests.

There is no Hub access here, so generative tests cannot download t5-small or gpt2. Instead a
byte-level BPE tokenizer is trained (with `tokenizers`, in well under a second) on the texts the
test uses, and a real architecture (T5, BART, Marian, GPT-2, Llama) is instantiated from a tiny
config (d_model 64, 2 layers) with random weights. The result is an ordinary Hugging Face folder
(config.json, model.safetensors, tokenizer.json, tokenizer_config.json) that `from_pretrained`
and kubetune load exactly like a downloaded model. Byte-level BPE keeps case, umlauts and
spaces, so BLEU/ROUGE are computed on the real text (a lowercasing WordPiece such as MiniLM's
would not round-trip German).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

PAD, EOS, UNK, BOS = "<pad>", "</s>", "<unk>", "<s>"  # ids 0, 1, 2, 3


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1000, append_eos: bool = False):
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a PreTrainedTokenizerFast.
    `append_eos`: every encoded text ends with </s> (T5 style, for seq2seq sources/targets)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, UNK, BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if append_eos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, bos_token=BOS, model_max_length=512
    )


def _ids(tokenizer) -> dict[str, int]:
    return {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.bos_token_id}


def seq2seq_config(arch: str, tokenizer, d_model: int = 64, layers: int = 2):
    from transformers import BartConfig, MarianConfig, T5Config

    vocab = len(tokenizer)
    ids = _ids(tokenizer)
    if arch == "t5":
        return T5Config(vocab_size=vocab, d_model=d_model, d_kv=d_model // 4, d_ff=2 * d_model, num_layers=layers,
                        num_decoder_layers=layers, num_heads=4, decoder_start_token_id=ids["pad_token_id"],
                        pad_token_id=ids["pad_token_id"], eos_token_id=ids["eos_token_id"])
    common = dict(vocab_size=vocab, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=2 * d_model,
                  decoder_ffn_dim=2 * d_model, max_position_embeddings=512, **ids)
    if arch == "bart":
        return BartConfig(decoder_start_token_id=ids["eos_token_id"], forced_eos_token_id=None, **common)
    if arch == "marian":
        return MarianConfig(decoder_start_token_id=ids["pad_token_id"], decoder_vocab_size=vocab, **common)
    raise ValueError(f"unknown seq2seq architecture {arch!r}")


def causal_config(arch: str, tokenizer, d_model: int = 64, layers: int = 2):
    from transformers import GPT2Config, LlamaConfig

    vocab = len(tokenizer)
    ids = _ids(tokenizer)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=d_model, n_layer=layers, n_head=4, n_positions=512, **ids)
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                           num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=512, **ids)
    raise ValueError(f"unknown causal-lm architecture {arch!r}")


def save_tiny_model(target: Path, config, tokenizer, auto_class, seed: int = 0) -> Path:
    """Instantiate `config` with random weights (seeded) and save it with the tokenizer."""
    import torch

    torch.manual_seed(seed)
    model = auto_class.from_config(config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


def tiny_seq2seq(target: Path, texts: Iterable[str], arch: str = "t5", vocab_size: int = 1000) -> Path:
    from transformers import AutoModelForSeq2SeqLM

    tokenizer = build_tokenizer(texts, vocab_size, append_eos=True)
    return save_tiny_model(target, seq2seq_config(arch, tokenizer), tokenizer, AutoModelForSeq2SeqLM)


def tiny_causal_lm(target: Path, texts: Iterable[str], arch: str = "gpt2", vocab_size: int = 1000) -> Path:
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer(texts, vocab_size, append_eos=False)
    return save_tiny_model(target, causal_config(arch, tokenizer), tokenizer, AutoModelForCausalLM)



def tiny_classifier(target: Path, texts: Iterable[str], vocab_size: int = 500, hidden: int = 32,
                    layers: int = 2) -> Path:
    """A small BERT (by default 2 layers of hidden 32) for text classification, randomly
    initialised: training steps of milliseconds and checkpoints of kilobytes, for tests about
    the training loop itself."""
    from transformers import AutoModel, BertConfig

    tokenizer = build_tokenizer(texts, vocab_size)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    return save_tiny_model(target, config, tokenizer, AutoModel)
