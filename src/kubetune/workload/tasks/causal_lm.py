"""causal-lm: instruction and dialogue tuning of decoder-only models (GPT-2, Llama, Qwen, ...).

Two data shapes:

* prompt/response rows (`data.columns.prompt`, `data.columns.response`), or
* chat rows: `data.columns.messages` names a column holding a list of
  `{"role": "system"|"user"|"assistant", "content": "..."}` turns.

A prompt/response row is the conversation `[user: prompt, assistant: response]`, so both shapes
go through one path: the conversation is rendered with the tokenizer's chat template (or, when
it has none, kubetune's plain one: `<|user|>\\n…\\n<|assistant|>\\n…</s>\\n`), and the loss is
computed on the assistant turns only: every other token (system, user, role headers) gets the
label -100. The assistant spans are found by rendering the conversation up to each assistant
turn with and without it and mapping the characters in between to tokens (offsets), so any
chat template works, not only those with generation markers.

`train.packing: true` packs the short training samples, whole, one after another into
sequences of up to `train.max_seq_length` tokens (far less padding). Labels keep the
response-only mask, the first token of each sample is never a target of the sample before it,
and `position_ids` restart at 0 for each sample; batches of packed rows carry no attention
mask, so transformers' packed-sequence detection (masking_utils) keeps the samples from
attending to each other. Validation and test samples are never packed.

Metrics: `loss` (mean NLL per response token, exact over the whole split) and `perplexity`
= exp(loss). Batch prediction generates the assistant's reply to each row's prompt (or to its
messages, without a trailing assistant turn).
"""

from __future__ import annotations

import math
from typing import Any, TYPE_CHECKING

import datasets
import numpy as np

from kubetune.workload.errors import DataError
from kubetune.workload.tasks.base import Evaluation, Prepared, Task, apply_generation_settings

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedModel, PreTrainedTokenizerBase
    from transformers.trainer_utils import PredictionOutput

    from kubetune.workload.data.tables import Splits

IGNORE = -100
ROLES = ("system", "user", "assistant")
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
EXAMPLES_IN_REPORT = 3


class CausalLM(Task):
    name = "causal-lm"
    default_metric = "loss"
    greater_is_better = False
    metric_names = ("loss", "perplexity")
    uses_preprocess_logits = True

    # -- columns ---------------------------------------------------------------------------------
    @property
    def chat(self) -> bool:
        return self.spec.column("messages") is not None

    def columns(self) -> dict[str, str | None]:
        if self.chat:
            return {"messages": self.spec.column("messages")}
        return {"prompt": self.spec.column("prompt"), "response": self.spec.column("response")}

    def input_columns(self) -> dict[str, str | None]:
        if self.chat:
            return {"messages": self.spec.column("messages")}
        return {"prompt": self.spec.column("prompt")}

    def check_spec(self) -> None:
        super().check_spec()
        from kubetune.contract.spec.job import SpecError

        if self.spec.train.freeze.encoder:
            raise SpecError(
                "train.freeze.encoder: a decoder-only model has no separate encoder or task head; "
                "use train.freeze.lower_layers or train.lora"
            )

    # -- data ------------------------------------------------------------------------------------
    def check_data(self, splits: Splits) -> None:
        for ds, field in ((splits.train, "data.train"), (splits.validation, "data.validation"), (splits.test, "data.test")):
            if ds is not None:
                self._check_rows(ds, field, need_response=True)

    def _check_rows(self, ds: datasets.Dataset, field: str, need_response: bool) -> None:
        if not self.chat:
            for role, column in self.columns().items():
                if column in ds.column_names and ds.features[column].dtype not in ("string", "large_string"):
                    raise DataError(f"{field}: data.columns.{role}: column {column!r} must hold text")
            return
        column = self.spec.column("messages")
        for i, messages in enumerate(ds[column]):
            where = f"{field}: row {i}: data.columns.messages ({column!r})"
            if not isinstance(messages, list) or not messages:
                raise DataError(f"{where}: must be a non-empty list of {{role, content}} turns")
            for turn in messages:
                if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
                    raise DataError(f"{where}: each turn needs a role ({', '.join(ROLES)}) and text content, got {turn!r}")
            if need_response and not any(t["role"] == "assistant" for t in messages):
                raise DataError(f"{where}: no assistant turn to learn from")

    def conversation(self, row: dict[str, Any], with_response: bool = True) -> list[dict[str, str]]:
        if self.chat:
            messages = [{"role": t["role"], "content": t["content"]} for t in row[self.spec.column("messages")]]
            if not with_response:
                while messages and messages[-1]["role"] == "assistant":
                    messages.pop()
            return messages
        messages = [{"role": "user", "content": row[self.spec.column("prompt")] or ""}]
        if with_response:
            messages.append({"role": "assistant", "content": row[self.spec.column("response")] or ""})
        return messages

    @staticmethod
    def template(tokenizer: PreTrainedTokenizerBase) -> str:
        return getattr(tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE

    def render(self, tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                             chat_template=self.template(tokenizer))

    def response_spans(self, tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]]:
        """Character spans of the assistant turns in the rendered `text` (with their end token)."""
        spans = []
        for i, turn in enumerate(messages):
            if turn["role"] != "assistant":
                continue
            before = self.render(tokenizer, messages[:i], generation_prompt=True)
            upto = self.render(tokenizer, messages[: i + 1])
            if upto.startswith(before) and text.startswith(upto):
                end = len(upto)
                while end > len(before) and upto[end - 1].isspace():  # the turn's separator is not the reply
                    end -= 1
                spans.append((len(before), end))
            else:  # a template that renders history differently: find the content itself
                start = text.find(turn["content"], spans[-1][1] if spans else 0)
                if start >= 0:
                    spans.append((start, start + len(turn["content"])))
        return spans

    def encode_conversation(self, tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], max_length: int) -> dict[str, list[int]]:
        text = self.render(tokenizer, messages)
        spans = self.response_spans(tokenizer, messages, text)
        enc = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length,
                        return_offsets_mapping=True)
        labels = []
        for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
            inside = end > start and any(start < s_end and end > s_start for s_start, s_end in spans)
            labels.append(token if inside else IGNORE)
        return {"input_ids": list(enc["input_ids"]), "labels": labels}

    def _max_length(self, tokenizer: PreTrainedTokenizerBase) -> int:
        return min(self.spec.train.max_seq_length, tokenizer.model_max_length)

    def _encode(self, ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, field: str, drop_empty: bool) -> datasets.Dataset:
        max_length = self._max_length(tokenizer)

        def encode(row: dict[str, Any]) -> dict[str, Any]:
            out = self.encode_conversation(tokenizer, self.conversation(row), max_length)
            out["length"] = len(out["input_ids"])
            return out

        encoded = ds.map(encode, remove_columns=ds.column_names)
        if drop_empty:  # truncation cut the whole response: nothing to learn from
            encoded = encoded.filter(lambda row: any(label != IGNORE for label in row["labels"]))
            if len(encoded) == 0:
                raise DataError(f"{field}: no response tokens within train.max_seq_length={max_length}")
        return encoded

    def prepare(self, splits: Splits, tokenizer: PreTrainedTokenizerBase) -> Prepared:
        self._ensure_pad(tokenizer)
        train = self._encode(splits.train, tokenizer, "data.train", drop_empty=True)
        if self.spec.train.packing:
            train = pack(train, self._max_length(tokenizer))
        validation = self._encode(splits.validation, tokenizer, "data.validation", drop_empty=True)
        return Prepared(train=train, validation=validation)

    def prepare_test(self, test: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> datasets.Dataset:
        self._ensure_pad(tokenizer)
        field = "data.test" if self.spec.data.test else "data.validation"
        self._check_rows(test, field, need_response=True)
        return self._encode(test, tokenizer, field, drop_empty=False)

    @staticmethod
    def _ensure_pad(tokenizer: PreTrainedTokenizerBase) -> None:
        if tokenizer.pad_token_id is None:  # GPT-2 and Llama ship without one; padding is masked anyway
            tokenizer.pad_token = tokenizer.eos_token

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        self._ensure_pad(tokenizer)
        return CausalCollator(tokenizer.pad_token_id)

    # -- model -----------------------------------------------------------------------------------
    def auto_model_class(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def configure_model(self, model: PreTrainedModel) -> None:
        apply_generation_settings(model, self.spec.generation)
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = model.config.eos_token_id
        # No KV cache in training forward passes: it is not needed, and without one packed rows
        # are recognised from their position_ids (generate() turns the cache back on).
        model.config.use_cache = False

    # -- metrics ---------------------------------------------------------------------------------
    def preprocess_logits(self, logits: Any, labels: Any) -> Any:
        """[batch, seq, vocab] logits → [batch, 2]: summed NLL of the response tokens and their count."""
        import torch

        if isinstance(logits, tuple):
            logits = logits[0]
        shift_logits = logits[:, :-1, :].float()
        shift_labels = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
            ignore_index=IGNORE, reduction="none",
        ).view(shift_labels.shape)
        counted = (shift_labels != IGNORE)
        return torch.stack([(nll * counted).sum(-1), counted.sum(-1).float()], dim=-1)

    @staticmethod
    def _perplexity(sums: Any) -> dict[str, float]:
        sums = np.asarray(sums, dtype=np.float64).reshape(-1, 2)
        tokens = float(sums[:, 1].sum())
        loss = float(sums[:, 0].sum() / tokens) if tokens else float("nan")
        return {"loss": loss, "perplexity": float(math.exp(min(loss, 700))) if tokens else float("nan"),
                "tokens": int(tokens)}

    def compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        metrics = self._perplexity(eval_pred.predictions)
        return {"perplexity": metrics["perplexity"], "response_tokens": metrics["tokens"]}

    def score(self, output: PredictionOutput, raw: datasets.Dataset, features: datasets.Dataset, labels: list[str] | None) -> Evaluation:
        metrics = self._perplexity(output.predictions)
        result = {"loss": metrics["loss"], "perplexity": metrics["perplexity"], "response_tokens": metrics["tokens"],
                  "num_samples": int(len(features))}
        report = "\n".join(f"{k:>16} {v:.4f}" if isinstance(v, float) else f"{k:>16} {v}" for k, v in result.items())
        return Evaluation(metrics=result, report=report + "\n")

    # -- batch prediction ------------------------------------------------------------------------
    def prepare_inputs(self, rows: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None) -> datasets.Dataset:
        self._ensure_pad(tokenizer)
        self._check_rows(rows, "--input", need_response=False)
        max_length = self._max_length(tokenizer)

        def encode(row: dict[str, Any]) -> dict[str, Any]:
            prompt = self.render(tokenizer, self.conversation(row, with_response=False), generation_prompt=True)
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][-max_length:]  # keep the prompt's end
            return {"input_ids": ids, "attention_mask": [1] * len(ids)}

        return rows.map(encode, remove_columns=rows.column_names)

    def predict_rows(self, rows: datasets.Dataset, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, labels: list[str] | None,
                     batch_size: int) -> list[dict[str, Any]]:
        """The assistant's reply per row; `score` is the mean log-probability per generated token."""
        from transformers import DataCollatorWithPadding

        from kubetune.workload.model.inference import generate_batches

        features = self.prepare_inputs(rows, tokenizer, labels)
        tokenizer.padding_side = "left"  # generation continues from the prompt's last token
        gen = self.spec.generation
        results = generate_batches(model, features, DataCollatorWithPadding(tokenizer), batch_size, tokenizer,
                                   gen.max_new_tokens, gen.num_beams)
        return [{"prediction": text, "score": score, "generated_tokens": n} for text, score, n in results]


def pack(ds: datasets.Dataset, max_length: int) -> datasets.Dataset:
    """Whole samples, in order, into rows of at most `max_length` tokens (see the module doc)."""
    rows: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": [], "length": []}
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []

    def flush() -> None:
        if ids:
            rows["input_ids"].append(list(ids))
            rows["labels"].append(list(labels))
            rows["position_ids"].append(list(positions))
            rows["length"].append(len(ids))
            ids.clear(), labels.clear(), positions.clear()

    for sample_ids, sample_labels in zip(ds["input_ids"], ds["labels"]):
        if ids and len(ids) + len(sample_ids) > max_length:
            flush()
        ids.extend(sample_ids)
        labels.extend([IGNORE] + list(sample_labels[1:]))
        positions.extend(range(len(sample_ids)))
    flush()
    return datasets.Dataset.from_dict(rows)


class CausalCollator:
    """Right-pads input_ids (pad id) and labels (-100). Unpacked batches get an attention mask;
    packed ones (with position_ids) get none, so each sample attends only to itself."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        width = -(-width // 8) * 8  # multiple of 8: friendlier to tensor cores
        batch: dict[str, list] = {"input_ids": [], "labels": []}
        packed = "position_ids" in features[0]
        if packed:
            batch["position_ids"] = []
        else:
            batch["attention_mask"] = []
        for f in features:
            n = len(f["input_ids"])
            pad = width - n
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["labels"].append(list(f.get("labels", [IGNORE] * n)) + [IGNORE] * pad)
            if packed:
                batch["position_ids"].append(list(f["position_ids"]) + list(range(pad)))
            else:
                batch["attention_mask"].append([1] * n + [0] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
