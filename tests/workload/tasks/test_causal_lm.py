"""causal-lm: response-only labels (prompt/response and chat rows, kubetune's template and a
model's own), packing that keeps samples apart, exact perplexity, data errors, and the
acceptance run — the shipped chat-sft job (packing) with `kubetune run --local` on a
chat-formatted dataset written here from real Multi30k pairs, with a tiny random GPT-2:
training loss falls, perplexity is written, and the predict stage with two local ranks
answers every conversation exactly once."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import datasets
import pytest
import torch

from helpers import run_cli
from kubetune.contract.spec.job import SpecError, validate_spec
from kubetune.launch.predict_output import OWNER_FILE
from kubetune.workload.data.tables import Splits
from kubetune.workload.errors import DataError
from kubetune.workload.tasks import get_task
from kubetune.workload.tasks.causal_lm import IGNORE, CausalCollator, pack
from tiny_models import build_tokenizer, causal_config, tiny_causal_lm

REPO = Path(__file__).resolve().parents[3]
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def lm_spec(columns=None, **train):
    return validate_spec({
        "name": "lm",
        "task": "causal-lm",
        "model": {"source": "models/m"},
        "data": {"train": "t.jsonl", "columns": columns or {}},
        "train": {"max_seq_length": 128, **train},
    })


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Translate to German: A dog runs.", "Ein Hund rennt.", "Two men talk.", "Zwei Männer reden.",
             "<|user|>\n<|assistant|>\n<|system|>\n", "You are helpful."] * 30
    return build_tokenizer(texts, vocab_size=300)


def labelled_text(tokenizer, encoded) -> str:
    return tokenizer.decode([t for t, label in zip(encoded["input_ids"], encoded["labels"]) if label != IGNORE])


def test_prompt_response_rows_learn_the_response_only(tokenizer):
    task = get_task(lm_spec())
    row = {"prompt": "Translate to German: A dog runs.", "response": "Ein Hund rennt."}
    encoded = task.encode_conversation(tokenizer, task.conversation(row), 128)
    assert tokenizer.decode(encoded["input_ids"]).startswith("<|user|>\nTranslate to German: A dog runs.")
    assert labelled_text(tokenizer, encoded) == "Ein Hund rennt.</s>"  # the reply and its end, nothing else
    targets = [label for label in encoded["labels"] if label != IGNORE]
    assert encoded["labels"][0] == IGNORE and targets[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("template", [None, CHATML], ids=["kubetune-template", "model-template"])
def test_chat_rows_learn_every_assistant_turn_only(tokenizer, template, monkeypatch):
    monkeypatch.setattr(tokenizer, "chat_template", template)
    task = get_task(lm_spec({"messages": "messages"}, max_seq_length=512))
    messages = [{"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "A dog runs."}, {"role": "assistant", "content": "Ein Hund rennt."},
                {"role": "user", "content": "Two men talk."}, {"role": "assistant", "content": "Zwei Männer reden."}]
    encoded = task.encode_conversation(tokenizer, task.conversation({"messages": messages}), 512)
    expected = "Ein Hund rennt.</s>Zwei Männer reden.</s>" if template is None else \
        "Ein Hund rennt.<|im_end|>Zwei Männer reden.<|im_end|>"
    assert labelled_text(tokenizer, encoded) == expected
    assert "You are helpful." not in labelled_text(tokenizer, encoded)


def test_prediction_prompt_ends_with_the_assistant_header(tokenizer):
    task = get_task(lm_spec({"messages": "messages"}))
    rows = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "A dog runs."},
                                                     {"role": "assistant", "content": "Ein Hund rennt."}]}])
    features = task.prepare_inputs(rows, tokenizer, None)
    assert tokenizer.decode(features[0]["input_ids"]) == "<|user|>\nA dog runs.\n<|assistant|>\n"


def test_packing_keeps_samples_whole_and_apart(tokenizer):
    from transformers import AutoModelForCausalLM

    samples = datasets.Dataset.from_dict({
        "input_ids": [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16]],
        "labels": [[IGNORE, IGNORE, 7, 8, 9], [10, 11, 12], [IGNORE, 14, 15, 16]],
    })
    packed = pack(samples, 8)
    assert packed["input_ids"] == [[5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16]]
    assert packed["labels"] == [[IGNORE, IGNORE, 7, 8, 9, IGNORE, 11, 12], [IGNORE, 14, 15, 16]]  # no cross-sample target
    assert packed["position_ids"] == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3]]
    batch = CausalCollator(tokenizer.pad_token_id)(list(packed))
    assert "attention_mask" not in batch and batch["input_ids"].shape == (2, 8)
    assert batch["labels"][1].tolist() == [IGNORE, 14, 15, 16] + [IGNORE] * 4

    for arch in ("gpt2", "llama"):  # a packed sample's logits equal the sample's logits alone
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(causal_config(arch, tokenizer)).eval()
        get_task(lm_spec()).configure_model(model)
        with torch.no_grad():
            together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
            alone = model(input_ids=torch.tensor([[10, 11, 12]])).logits
        torch.testing.assert_close(together[0, 5:8], alone[0], atol=1e-4, rtol=1e-4)


def test_perplexity_is_exact_over_response_tokens(tokenizer):
    from transformers import AutoModelForCausalLM

    task = get_task(lm_spec())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(causal_config("gpt2", tokenizer)).eval()
    rows = [{"prompt": "Translate to German: A dog runs.", "response": "Ein Hund rennt."},
            {"prompt": "Two men talk.", "response": "Zwei Männer reden und reden."}]
    features = [task.encode_conversation(tokenizer, task.conversation(r), 128) for r in rows]
    batch = CausalCollator(tokenizer.pad_token_id)(features)
    with torch.no_grad():
        sums = task.preprocess_logits(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"])
        per_sample = [(model(input_ids=torch.tensor([f["input_ids"]]), labels=torch.tensor([f["labels"]])).loss,
                       sum(label != IGNORE for label in f["labels"][1:])) for f in features]
    total = sum(float(loss) * n for loss, n in per_sample) / sum(n for _, n in per_sample)
    metrics = task.compute_metrics(type("EvalPrediction", (), {"predictions": sums.numpy(), "label_ids": None}))
    assert metrics["response_tokens"] == sum(n for _, n in per_sample)
    assert metrics["perplexity"] == pytest.approx(math.exp(total), rel=1e-4)


def test_chat_data_errors_name_the_column():
    task = get_task(lm_spec({"messages": "messages"}))
    no_reply = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match=r"^data.train: row 0: data.columns.messages \('messages'\): no assistant turn"):
        task.check_data(Splits(train=no_reply, validation=no_reply, test=None))
    bad_role = datasets.Dataset.from_list([{"messages": [{"role": "robot", "content": "hi"}]}])
    with pytest.raises(DataError, match="each turn needs a role"):
        task.check_data(Splits(train=bad_role, validation=bad_role, test=None))
    with pytest.raises(SpecError, match="^train.freeze.encoder: a decoder-only model has no separate encoder"):
        get_task(lm_spec(freeze={"encoder": True})).check_spec()


# -- acceptance: the shipped chat-sft job ----------------------------------------------------------


def conversations(pairs: list[dict]) -> list[dict]:
    """Two-turn translation chats (system, user, assistant, user, assistant) from Multi30k pairs."""
    out = []
    for a, b in zip(pairs[::2], pairs[1::2]):
        out.append({"messages": [
            {"role": "system", "content": "You translate English image captions into German."},
            {"role": "user", "content": a["en"]}, {"role": "assistant", "content": a["de"]},
            {"role": "user", "content": b["en"]}, {"role": "assistant", "content": b["de"]},
        ]})
    return out


@pytest.mark.slow
def test_chat_sft_job_trains_with_packing_evaluates_and_predicts_on_two_ranks(tmp_path, shared_data):
    store = tmp_path / "store"
    pairs = [json.loads(line) for line in (shared_data / "multi30k" / "train.jsonl").read_text().splitlines()[:480]]
    chats = conversations(pairs)
    data = store / "datasets" / "chat"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chats[:200]))
    (data / "test.jsonl").write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chats[200:]))
    texts = [p["en"] for p in pairs] + [p["de"] for p in pairs] + ["<|system|>\n<|user|>\n<|assistant|>\n"] * 20
    tiny_causal_lm(store / "models" / "tiny-gpt2", texts, "gpt2", 600)
    env = {"KUBETUNE_WORKDIR": str(tmp_path / "work"), "KUBETUNE_CACHE": str(tmp_path / "cache")}
    overrides = [f"storage.root={store}", "resources.profile=cpu", "model.source=models/tiny-gpt2",
                 "train.epochs=3", "train.batch_size=4", "train.gradient_accumulation_steps=1",
                 "train.learning_rate=3e-3", "train.max_seq_length=512", "train.logging_steps=3",
                 # LoRA on a randomly initialised model learns too slowly to show in 60 steps:
                 # full fine-tuning here; LoRA for this task: test_lora_adapts_generative_models.
                 "train.lora=null",
                 "generation.max_new_tokens=12"]
    sets = [a for o in overrides for a in ("--set", o)]
    started = time.monotonic()
    result = run_cli("run", str(REPO / "jobs" / "chat-sft.yaml"), "--local", *sets, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    trained = time.monotonic()

    run = store / "runs" / "chat-sft"
    losses = [r["loss"] for r in map(json.loads, (run / "metrics" / "train.jsonl").read_text().splitlines()) if "loss" in r]
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    summary = next(line for line in result.stdout.splitlines() if "trainable params" in line)
    print(f"chat-sft: {trained - started:.0f}s, {summary.split('|')[3].strip()}, loss {losses[0]:.3f} -> "
          f"{losses[-1]:.3f}, test perplexity {metrics['perplexity']:.1f} over {metrics['response_tokens']} tokens")
    assert int(re.search(r"train (\d+) /", summary).group(1)) < 180  # packed: fewer rows than conversations
    assert len(losses) >= 4 and losses[-1] < losses[0] - 0.2
    assert metrics["num_samples"] == 40 and metrics["response_tokens"] > 40 * 2 * 5
    assert math.isfinite(metrics["perplexity"]) and metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert metrics["perplexity"] < 600  # below the uniform guess over the 600-token vocabulary

    out = tmp_path / "predictions"
    result = run_cli("run", str(REPO / "jobs" / "chat-sft.yaml"), "--local", "--stage", "predict",
                     "--input", "datasets/chat/test.jsonl", "--output", str(out), *sets,
                     "--set", "resources.nodes=2", env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    print(f"chat-sft: predict with 2 ranks {time.monotonic() - trained:.0f}s")
    # the parts, and the launcher's record of which job wrote them
    assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE, "part-00000.jsonl", "part-00001.jsonl"]
    records = [json.loads(line) for part in sorted(out.glob("part-*")) for line in part.read_text().splitlines()]
    assert [r["row"] for r in records] == list(range(40))
    assert [r["messages"] for r in records] == [c["messages"] for c in chats[200:]]
    assert all(isinstance(r["prediction"], str) and 1 <= r["generated_tokens"] <= 12 and r["score"] <= 0 for r in records)


@pytest.mark.parametrize("task_name,arch", [("causal-lm", "gpt2"), ("causal-lm", "llama"), ("seq2seq", "t5")])
def test_lora_adapts_generative_models(tmp_path, tokenizer, task_name, arch):
    """train.lora for the generative tasks: peft's CAUSAL_LM / SEQ_2_SEQ_LM model, adapters
    only trainable, a few steps fit a batch, and the saved adapter loads back for inference
    (as evaluate and predict load it) with the same outputs."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from kubetune.workload.model.lora import apply_lora, load_adapter_model, save_lora
    from tiny_models import seq2seq_config

    auto = AutoModelForCausalLM if task_name == "causal-lm" else AutoModelForSeq2SeqLM
    config = causal_config(arch, tokenizer) if task_name == "causal-lm" else seq2seq_config(arch, tokenizer)
    base_dir = tmp_path / "base"
    torch.manual_seed(0)
    auto.from_config(config).save_pretrained(str(base_dir))
    tokenizer.save_pretrained(str(base_dir))
    spec = validate_spec({"name": "lora", "task": task_name, "model": {"source": str(base_dir)},
                          "data": {"train": "t.jsonl"}, "train": {"lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
                          "storage": {"root": str(tmp_path / "store")}})
    model = apply_lora(auto.from_pretrained(str(base_dir)), spec.train.lora, task_name)
    expected = "PeftModelForCausalLM" if task_name == "causal-lm" else "PeftModelForSeq2SeqLM"
    assert type(model).__name__ == expected
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    ids = torch.tensor([tokenizer("Translate to German: A dog runs. Ein Hund rennt.")["input_ids"]])
    batch = {"input_ids": ids, "labels": ids} if task_name == "causal-lm" else \
        {"input_ids": ids, "labels": torch.tensor([tokenizer("Ein Hund rennt.")["input_ids"]])}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    model.train()
    losses = []
    for _ in range(25):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.25

    folder = tmp_path / "model"
    model.save_pretrained(str(folder))
    (folder / "spec.yaml").write_text(spec.to_yaml())
    save_lora(model, folder, spec)
    model.eval()
    loaded = load_adapter_model(auto, folder, tmp_path / "cache").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=1e-4, rtol=1e-4)
