"""What the runs in a store look like, read from the store alone (`kubetune runs`, `kubetune
show`, `kubetune status`'s progress): the run layout in `kubetune.contract.layout`, nothing
from the workload, no torch, no cluster access. Returns plain data; the CLI prints it.

A run's state:
* `complete`: its model folder is committed.
* `running`: the train stage says so (`metrics/status.json`) and wrote its metrics within
  ACTIVE_SECONDS. A pod killed without warning cannot say it stopped, so silence for longer
  than that counts as stopped (as experiment trackers judge a run by its heartbeat).
* `preempted-and-resumable`: stopped, with a checkpoint a restart resumes from
  (`contract.layout.resume_step`, the rule the workload resumes by): starting the job again
  resumes from it.
* `pruned`: a sweep stopped this trial early (its status says so; docs/sweeps.md): not a failure,
  and not to be resumed.
* `failed`: stopped with nothing to resume from.
"""

from __future__ import annotations

import datetime
import json
import posixpath
from typing import Any

from kubetune.contract.errors import UserError
from kubetune.contract.layout import RunLayout, checkpoint_step, resume_step
from kubetune.contract.progress import world_size_history
from kubetune.integrity import DamagedError, check_store_sizes, damaged_folders, read_manifest, summary
from kubetune.storage import Store

RUNS_DIR = "runs"
ACTIVE_SECONDS = 600.0
COMPLETE, RUNNING, RESUMABLE, FAILED = "complete", "running", "preempted-and-resumable", "failed"
PRUNED = "pruned"
# A run's headline test metrics, in this order: the `test` column of `kubetune runs` shows the
# first present, the end of `kubetune run --local` every one present.
HEADLINE_METRICS = ("accuracy", "f1_macro", "f1", "exact_match", "bleu", "rougeL", "perplexity", "loss")


def _read_json(store: Store, rel: str) -> Any:
    """A JSON file of the run, or None when absent or torn (a writer that died mid-way must not
    stop the whole table)."""
    try:
        return store.read_json(rel) if store.exists(rel) else None
    except (ValueError, OSError):
        return None


def read_records(store: Store, layout: RunLayout) -> list[dict[str, Any]]:
    """The run's `metrics/train.jsonl`: one record per logging step and evaluation."""
    if not store.exists(layout.train_metrics):
        return []
    records = []
    for line in store.read_text(layout.train_metrics).splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # the last line of a log being uploaded
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def _modified(store: Store, rel: str) -> float | None:
    """When an object was last written (unix seconds): `mtime` on a local disk,
    `LastModified` on S3."""
    try:
        info = store.fs.info(store.path(rel))
    except (FileNotFoundError, OSError):
        return None
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return float(value) if isinstance(value, (int, float)) else None


def _parse_time(text: Any) -> float | None:
    try:
        return datetime.datetime.fromisoformat(str(text)).timestamp() if text else None
    except ValueError:
        return None


def best_validation(records: list[dict[str, Any]], metric: str | None, greater: bool | None) -> dict[str, Any] | None:
    """The best evaluation of the run so far: {metric, value, step}. `metric` is the Trainer's
    metric_for_best_model (from status.json); without it, accuracy, else the loss."""
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    if not evals:
        return None
    name = metric or ("accuracy" if any("eval_accuracy" in r for r in evals) else "loss")
    key = name if name.startswith("eval_") else f"eval_{name}"
    scored = [r for r in evals if isinstance(r.get(key), (int, float))]
    if not scored:
        return None
    higher = greater if greater is not None else not name.endswith("loss")
    best = (max if higher else min)(scored, key=lambda r: r[key])
    return {"metric": key.removeprefix("eval_"), "value": best[key], "step": best["step"]}


def headline_metrics(metrics: dict[str, Any] | None) -> dict[str, int | float]:
    """The headline metrics present among a run's test metrics, in HEADLINE_METRICS order."""
    return {name: metrics[name] for name in HEADLINE_METRICS if metrics and isinstance(metrics.get(name), (int, float))}


def headline_metric(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """{metric, value} of the first headline metric present in the test metrics."""
    first = next(iter(headline_metrics(metrics).items()), None)
    return {"metric": first[0], "value": first[1]} if first else None


def resumable_checkpoint(store: Store, layout: RunLayout) -> int | None:
    """The step a restart resumes from, by the rule the workload resumes by
    (`contract.layout.resume_step`: what LATEST names if committed, else the newest
    committed checkpoint); None when there is none."""
    latest = store.read_text(layout.latest) if store.exists(layout.latest) else None
    named = (checkpoint_step(name) for name in store.list_dirs(layout.checkpoints))
    return resume_step(latest, [s for s in named if s is not None and store.is_committed(layout.checkpoint(s))])


def damaged_checkpoints(store: Store, layout: RunLayout) -> list[dict[str, Any]]:
    """The run's damaged checkpoints, `{checkpoint, set_aside, reason}` each: those a resume
    set aside (`runs/<job>/damaged/`, with the reason it recorded), then committed ones whose
    files are missing or of another size than their marker says (`kubetune.integrity`: one
    listing each; their contents are hashed only when a resume fetches them)."""
    found = [{"checkpoint": d["name"], "set_aside": True, "reason": d["reason"]}
             for d in damaged_folders(store, layout.damaged)]
    for name in store.list_dirs(layout.checkpoints):
        rel = posixpath.join(layout.checkpoints, name)
        if checkpoint_step(name) is None or not store.is_committed(rel):
            continue
        try:
            problems = check_store_sizes(store, rel, read_manifest(store, rel))
        except DamagedError as exc:
            problems = [str(exc)]
        if problems:
            found.append({"checkpoint": name, "set_aside": False, "reason": summary(problems)})
    return found


def run_state(committed: bool, status: dict[str, Any], last_write: float | None, resumable: bool, now: float) -> str:
    if committed:
        return COMPLETE
    if status.get("state") == PRUNED:
        return PRUNED
    active = last_write is not None and now - last_write < ACTIVE_SECONDS
    if status.get("state") == RUNNING and active:
        return RUNNING
    if not status and active:  # a run from before status.json: judge by its metrics alone
        return RUNNING
    return RESUMABLE if resumable else FAILED


def describe_run(store: Store, name: str, now: float | None = None) -> dict[str, Any]:
    """One row of `kubetune runs`: what, where it stands, how well, when.

    Why long: one read of each file of the run, then one dict of what the table shows;
    split, the reads would have to be passed around or repeated."""
    layout = RunLayout(name)
    now = now if now is not None else datetime.datetime.now(datetime.timezone.utc).timestamp()
    spec = _read_spec(store, layout)
    status = _read_json(store, layout.status) or {}
    summary = _read_json(store, layout.summary) or {}
    records = read_records(store, layout)
    committed = store.is_committed(layout.model)
    latest = resumable_checkpoint(store, layout)
    writes = [t for t in (_modified(store, layout.train_metrics), _modified(store, layout.status)) if t]
    last_write = max(writes) if writes else None
    started = _parse_time(status.get("started")) or _modified(store, layout.spec)
    ended = _parse_time(status.get("ended")) if committed else last_write
    steps = [r["step"] for r in records]
    step = summary.get("global_step") if committed else None
    step = step if step is not None else max(steps + [status.get("step") or 0, latest or 0])
    max_steps = status.get("max_steps") or next((r["max_steps"] for r in reversed(records) if "max_steps" in r), None)
    last = records[-1] if records else {}
    return {
        "name": name,
        "task": spec.get("task"),
        "model": (spec.get("model") or {}).get("source"),
        "state": run_state(committed, status, last_write, latest is not None, now),
        "step": step,
        "max_steps": max_steps,
        "epoch": last.get("epoch"),
        "best": best_validation(records, status.get("metric"), status.get("greater_is_better")),
        "test": headline_metric(_read_json(store, layout.eval_metrics)),
        "started": _iso(started),
        "duration_seconds": round(ended - started, 1) if started and ended else None,
        "latest_checkpoint": latest,
        # An elastic gang (issue 24): [[step, world_size], ...] at each change of its size.
        "world_sizes": summary.get("world_size_history") or world_size_history(records) or None,
        "damaged_checkpoints": damaged_checkpoints(store, layout),
        "url": store.url(layout.base),
    }


def _read_spec(store: Store, layout: RunLayout) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(store.read_text(layout.spec)) if store.exists(layout.spec) else None
    except (yaml.YAMLError, OSError):
        data = None
    return data if isinstance(data, dict) else {}


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def list_runs(store: Store) -> list[dict[str, Any]]:
    """Every run folder under `runs/` in the store, newest first."""
    rows = [describe_run(store, name) for name in store.list_dirs(RUNS_DIR)]
    return sorted(rows, key=lambda r: (r["started"] or "", r["name"]), reverse=True)


def show_run(store: Store, name: str) -> dict[str, Any]:
    """Everything `kubetune show` prints about one run: its row, spec summary, summary and test
    metrics, per-class report, checkpoints, lineage and curves where present."""
    layout = RunLayout(name)
    if not store.exists(layout.base):
        known = ", ".join(store.list_dirs(RUNS_DIR)) or "none"
        raise UserError(f"run {name!r}: no {store.url(layout.base)} (runs in this store: {known})")
    spec = _read_spec(store, layout)
    checkpoints = [
        {"step": step, "committed": store.is_committed(layout.checkpoint(step))}
        for step in sorted(s for s in (checkpoint_step(d) for d in store.list_dirs(layout.checkpoints)) if s is not None)
    ]
    report = store.read_text(layout.eval_report) if store.exists(layout.eval_report) else None
    lineage_rel = posixpath.join(layout.base, "lineage.json")
    return {
        **describe_run(store, name),
        "spec": {k: spec.get(k) for k in ("task", "model", "data", "train") if k in spec},
        "summary": _read_json(store, layout.summary),
        "test_metrics": _read_json(store, layout.eval_metrics),
        "report": report,
        "checkpoints": checkpoints,
        "lineage": _read_json(store, lineage_rel),
        "curves": store.url(layout.curves) if store.exists(layout.curves) else None,
        "model_url": store.url(layout.model) if store.is_committed(layout.model) else None,
    }


def progress(store: Store, name: str) -> dict[str, Any] | None:
    """Where training stands, from the newest training record of `metrics/train.jsonl` (what
    `kubetune status --store` shows without log access): step, total, percent, epoch, loss,
    samples/s, ETA. None before the first logged step."""
    layout = RunLayout(name)
    records = read_records(store, layout)
    if not records:
        return None
    last = records[-1]
    loss = next((r["loss"] for r in reversed(records) if isinstance(r.get("loss"), (int, float))), None)
    status = _read_json(store, layout.status) or {}
    total = status.get("max_steps") or last.get("max_steps")
    step = last["step"]
    timed = next((r for r in reversed(records) if "samples_per_second" in r), {})  # not eval/summary lines
    return {
        "step": step,
        "max_steps": total,
        "percent": round(100.0 * step / total, 1) if total else None,
        "epoch": last.get("epoch"),
        "loss": loss,
        "samples_per_second": timed.get("samples_per_second"),
        "eta_seconds": timed.get("eta_seconds") if step < (total or step + 1) else 0,
        "updated": _iso(_modified(store, layout.train_metrics)),
        "world_sizes": world_size_history(records) or None,  # an elastic gang's sizes so far
    }


def trained_test(store: Store, layout: RunLayout, default: str | None) -> str | None:
    """The data.test a run was trained with (its stored spec), `default` when it has none: which
    of `eval/` and `eval/<name>/` an evaluation with another data.test writes to."""
    spec = _read_spec(store, layout)
    data = spec.get("data") if isinstance(spec.get("data"), dict) else None
    return data.get("test") if data is not None else default
