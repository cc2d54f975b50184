"""Freezing for every encoder task: `freeze.encoder` trains the head only, `lower_layers`
trains the top layers (and the head); a frozen-encoder run leaves the encoder's weights as
they were."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from kubetune.contract.spec.job import FreezeSpec
from kubetune.workload.model.adapt import apply_freezing, parameter_counts

HIDDEN = 384  # all-MiniLM-L6-v2


def load(task: str, minilm_dir: Path, num_labels: int = 9):
    import transformers

    cls = {
        "text-classification": transformers.AutoModelForSequenceClassification,
        "token-classification": transformers.AutoModelForTokenClassification,
        "question-answering": transformers.AutoModelForQuestionAnswering,
    }[task]
    return cls.from_pretrained(str(minilm_dir), num_labels=num_labels if task != "question-answering" else 2)


@pytest.mark.parametrize(
    ("task", "head_params"),
    [
        ("token-classification", HIDDEN * 9 + 9),  # classifier: 9 tags
        ("question-answering", HIDDEN * 2 + 2),  # qa_outputs: start and end
        ("text-classification", HIDDEN * 9 + 9),  # classifier (the pooler belongs to the encoder)
    ],
)
def test_frozen_encoder_trains_the_head_only(task, head_params, minilm_dir):
    model = load(task, minilm_dir)
    apply_freezing(model, FreezeSpec(encoder=True))
    trainable, total = parameter_counts(model)
    assert trainable == head_params
    assert not any(p.requires_grad for p in model.base_model.parameters())


@pytest.mark.parametrize("task", ["token-classification", "question-answering"])
def test_lower_layers_frozen_top_layers_train(task, minilm_dir):
    model = load(task, minilm_dir)
    apply_freezing(model, FreezeSpec(lower_layers=4, embeddings=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(".embeddings." in n for n in trainable)
    for i in range(6):
        in_layer = {n for n in trainable if f".layer.{i}." in n}
        assert bool(in_layer) == (i >= 4), f"layer {i}"
    assert any(n.startswith(("classifier", "qa_outputs")) for n in trainable)


@pytest.mark.slow
def test_frozen_encoder_run_leaves_encoder_weights_unchanged(tmp_path, local_store, capsys, monkeypatch):
    """A few training steps of NER through the train entrypoint with freeze.encoder: only the
    classifier's 2,310 parameters train; every encoder tensor of the saved model equals the
    pretrained one, and the classifier trained."""
    from safetensors.torch import load_file

    from kubetune.workload.entrypoints import train

    monkeypatch.setenv("KUBETUNE_WORKDIR", str(tmp_path / "work"))
    data = local_store / "datasets" / "ner"
    data.mkdir(parents=True)
    sentences = [
        (["Ada", "Lovelace", "lived", "in", "London", "."], ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]),
        (["Siemens", "opened", "an", "office", "in", "Paris"], ["B-ORG", "O", "O", "O", "O", "B-LOC"]),
        (["Angela", "Merkel", "met", "Reuters", "reporters"], ["B-PER", "I-PER", "O", "B-ORG", "O"]),
        (["The", "Olympics", "start", "in", "Tokyo"], ["O", "B-MISC", "O", "O", "B-LOC"]),
    ] * 8
    (data / "train.jsonl").write_text("".join(json.dumps({"tokens": w, "ner_tags": t}) + "\n" for w, t in sentences))
    spec = tmp_path / "frozen.yaml"
    spec.write_text(f"""
name: frozen-ner
task: token-classification
model: {{source: models/all-MiniLM-L6-v2}}
data: {{train: datasets/ner/train.jsonl, columns: {{tags: ner_tags}}, validation_split: 0.25}}
train: {{max_steps: 4, batch_size: 8, learning_rate: 1.0e-2, max_seq_length: 32, freeze: {{encoder: true}}}}
storage: {{root: {local_store}}}
""")
    assert train.main(["--spec", str(spec)]) == 0
    out = capsys.readouterr().out
    head = HIDDEN * 6 + 6  # O, B-LOC, B-MISC, B-ORG, B-PER, I-PER
    trainable, total = re.search(r"trainable params ([\d,]+) of ([\d,]+)", out).groups()
    assert int(trainable.replace(",", "")) == head

    pretrained = load_file(str(local_store / "models" / "all-MiniLM-L6-v2" / "model.safetensors"))
    # BertForTokenClassification has no pooler: the encoder is the pretrained model minus it
    # (and minus the position_ids buffer, which is no parameter).
    encoder_params = sum(t.numel() for k, t in pretrained.items() if not k.startswith("pooler.") and "position_ids" not in k)
    assert int(total.replace(",", "")) == encoder_params + head
    trained = load_file(str(local_store / "runs" / "frozen-ner" / "model" / "model.safetensors"))
    encoder = {k: v for k, v in trained.items() if k.startswith("bert.")}
    assert len(encoder) > 90
    for name, tensor in encoder.items():
        original = pretrained.get(name.removeprefix("bert."), pretrained.get(name))
        assert original is not None, name
        assert torch.equal(tensor, original), name
    assert trained["classifier.weight"].shape == (6, HIDDEN)
    assert trained["classifier.bias"].abs().max() > 0  # BERT initialises it to zeros: the head trained
