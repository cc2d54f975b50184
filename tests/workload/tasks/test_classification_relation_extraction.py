"""Relation extraction as text classification with entity markers (docs/relation-extraction.md):
the shipped job runs with `kubetune run --local` on a generated dataset in which the same
sentence carries different relations depending on which pair is marked."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from helpers import run_cli

REPO = Path(__file__).resolve().parents[3]

PEOPLE = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Marie Curie", "Niels Bohr", "Emmy Noether", "Kurt Godel",
          "Rosalind Franklin", "Max Planck", "Lise Meitner", "Carl Gauss", "Sofia Kovalevskaya"]
TEST_PEOPLE = ["John Smith", "Maria Garcia", "Wei Chen", "Fatima Khan", "Olga Petrova", "Kofi Mensah"]
ORGS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises", "Cyberdyne"]
TEST_ORGS = ["Vandelay Industries", "Soylent", "Tyrell"]
CITIES = ["Paris", "Berlin", "Madrid", "Vienna", "Oslo", "Lisbon", "Prague", "Dublin"]
TEST_CITIES = ["Lima", "Nairobi", "Osaka"]

# (template, {(subject, object): relation}); P person, O organization, C city.
TEMPLATES = [
    ("{P} , who works for {O} , was born in {C} .",
     {("P", "O"): "works_for", ("P", "C"): "born_in", ("O", "C"): "no_relation"}),
    ("{O} , based in {C} , hired {P} last year .",
     {("P", "O"): "works_for", ("O", "C"): "located_in", ("P", "C"): "no_relation"}),
    ("born in {C} , {P} later founded {O} .",
     {("P", "C"): "born_in", ("P", "O"): "founded", ("O", "C"): "no_relation"}),
    ("{P} founded {O} , which is headquartered in {C} .",
     {("P", "O"): "founded", ("O", "C"): "located_in", ("P", "C"): "no_relation"}),
]
TYPES = {"P": "person", "O": "organization", "C": "city"}


def mark(text: str, subj: tuple[int, int], obj: tuple[int, int], subj_type: str | None = None,
         obj_type: str | None = None) -> str:
    """The converter of docs/relation-extraction.md: typed punctuation entity markers."""
    def wrap(span_text, sym, inner, kind):
        typed = f"{inner} {kind} {inner} " if kind else ""
        return f"{sym} {typed}{span_text} {sym}"

    (s0, s1), (o0, o1) = subj, obj
    parts = sorted([(s0, s1, "@", "*", subj_type), (o0, o1, "#", "^", obj_type)])
    out, pos = [], 0
    for start, end, sym, inner, kind in parts:
        out += [text[pos:start], wrap(text[start:end], sym, inner, kind)]
        pos = end
    return "".join(out + [text[pos:]])


def generate(n: int, seed: int, people, orgs, cities) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        template, pairs = rng.choice(TEMPLATES)
        fill = {"P": rng.choice(people), "O": rng.choice(orgs), "C": rng.choice(cities)}
        text = template.format(**fill)
        spans = {}
        for role in "POC":
            start = text.index(fill[role])
            spans[role] = (start, start + len(fill[role]))
        for (subj, obj), relation in pairs.items():
            rows.append({"text": mark(text, spans[subj], spans[obj], TYPES[subj], TYPES[obj]), "relation": relation})
    rng.shuffle(rows)
    return rows


def test_mark_matches_the_documented_example():
    assert mark("Ada Lovelace was born in Paris.", (0, 12), (25, 30), "person", "city") == (
        "@ * person * Ada Lovelace @ was born in # ^ city ^ Paris #."
    )
    # The object may come first in the sentence; untyped markers.
    assert mark("Paris is home to Ada.", (17, 20), (0, 5)) == "# Paris # is home to @ Ada @."
    doc = (REPO / "docs" / "relation-extraction.md").read_text()
    assert "'@ * person * Ada Lovelace @ was born in # ^ city ^ Paris #.'" in doc


def test_relation_job_file_loads():
    from kubetune.contract.spec.job import load_spec

    spec = load_spec(REPO / "jobs" / "relation-extraction.yaml")
    assert spec.task == "text-classification"
    assert spec.model.source == "models/all-MiniLM-L6-v2"
    assert spec.column("label") == "relation" and spec.data.train == "datasets/relations/train.jsonl"


RELATION_ACCURACY_BAR = 0.9


@pytest.mark.slow
def test_relation_extraction_job_runs_locally(tmp_path, local_store, monkeypatch):
    monkeypatch.setenv("KUBETUNE_WORKDIR", str(tmp_path / "work"))
    data = local_store / "datasets" / "relations"
    data.mkdir(parents=True)
    train_rows = generate(100, 1, PEOPLE, ORGS, CITIES)
    test_rows = generate(40, 2, TEST_PEOPLE, TEST_ORGS, TEST_CITIES)  # unseen names
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))

    # A small dataset: more epochs at a higher rate than the job's defaults for real data.
    result = run_cli("run", str(REPO / "jobs" / "relation-extraction.yaml"), "--local",
                     "--set", f"storage.root={local_store}", "--set", "train.epochs=6",
                     "--set", "train.learning_rate=2e-4", timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((local_store / "runs" / "relation-extraction" / "eval" / "metrics.json").read_text())
    report = (local_store / "runs" / "relation-extraction" / "eval" / "report.txt").read_text()
    print(f"relation extraction: {len(train_rows)} pairs (90% train, 10% validation) / {len(test_rows)} test pairs, "
          f"accuracy {metrics['accuracy']:.4f}, f1_macro {metrics['f1_macro']:.4f}")
    assert metrics["num_samples"] == len(test_rows) == 120
    for relation in ("born_in", "founded", "located_in", "no_relation", "works_for"):
        assert re.search(rf"^\s*{relation}\s", report, re.M), relation
    assert metrics["accuracy"] >= RELATION_ACCURACY_BAR
    assert metrics["f1_macro"] >= RELATION_ACCURACY_BAR - 0.05
