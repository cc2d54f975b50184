"""`kubetune validate --data`: everything `train` checks before it loads a model, and nothing more.

The same functions the train stage's `setup` runs (store reachable, model and tokenizer folders,
the task's spec checks, every split read and checked for its columns and labels), so a job
that passes here fails later only for reasons that need the model itself. No weights are read:
the model folder must hold a parseable `config.json` with a `model_type`, and a tokenizer file.
"""

from __future__ import annotations

import json

import fsspec

from kubetune.contract.spec import JobSpec
from kubetune.storage import Store, has_scheme
from kubetune.workload.errors import ModelSourceError
from kubetune.workload.model_source import HF_CONFIG, check_model_source
from kubetune.workload.splits import load_splits
from kubetune.workload.tasks import get_task

# Any one of these makes a folder's tokenizer loadable by AutoTokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "vocab.json")


def check_job(spec: JobSpec) -> str:
    """Check the job's data and model source; returns the one-line verdict, raises a UserError."""
    store = Store.from_spec(spec.storage)
    store.check_reachable(spec.storage.startup_timeout_seconds)
    model = _check_model(store, spec.model.source, "model.source", tokenizer=not spec.model.tokenizer)
    if spec.model.tokenizer:
        _check_model(store, spec.model.tokenizer, "model.tokenizer", tokenizer=True, config=False)
    task = get_task(spec)
    task.check_spec()
    splits = load_splits(spec, store, task.columns())
    task.check_data(splits)
    sizes = [f"train {len(splits.train)}", f"validation {len(splits.validation)}"]
    if splits.test is not None:
        sizes.append(f"test {len(splits.test)}")
    return f"ok: {spec.name}: data ({', '.join(sizes)} rows) and model ({model}) look usable"


def _check_model(store: Store, source: str, field: str, tokenizer: bool, config: bool = True) -> str:
    resolved = check_model_source(store, source, field)
    if not (has_scheme(resolved) or resolved.startswith("/")):
        return f"Hub id {resolved}, not checked offline"
    fs, path = fsspec.core.url_to_fs(resolved, **store.options_for(resolved))
    names = {entry.rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)}
    if config:
        try:
            with fs.open(f"{path.rstrip('/')}/{HF_CONFIG}", "r") as handle:
                model_type = json.load(handle).get("model_type")
        except (ValueError, AttributeError) as exc:
            raise ModelSourceError(f"{field}: {resolved}/{HF_CONFIG}: not a JSON object ({exc})") from None
        if not model_type:
            raise ModelSourceError(f"{field}: {resolved}/{HF_CONFIG}: no model_type; not a Hugging Face config")
    if tokenizer and not names & set(TOKENIZER_FILES):
        raise ModelSourceError(f"{field}: {resolved}: no tokenizer file (one of {', '.join(TOKENIZER_FILES)})")
    return resolved
