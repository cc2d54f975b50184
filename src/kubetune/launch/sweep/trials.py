"""A trial as an ordinary run: the job's spec with the trial's values, and what its run wrote.

A trial's spec is the job's spec with each parameter's value written in (as `--set` would),
without the `sweep:` section, named `<job>-tNNN` (`contract.layout.trial_run_name`): that name
is its run folder, its Kubernetes objects' names and its tracker run's name, so it shows the
sweep and the trial everywhere. `train.metric` is the objective, so the model the trial keeps
is the one its objective scored. Tracker runs are grouped by sweep: the MLflow experiment and
the W&B project are the job's own, the trial's name starts with the job's, and its pods carry
the sweep and the trial number (names.ENV_SWEEP, ENV_TRIAL), which the workload's trackers turn
into MLflow tags and the W&B run's group (`workload.tracking.run_ids.sweep_of`).
"""

from __future__ import annotations

import json
from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.layout import RunLayout, trial_run_name
from kubetune.contract.spec.job import JobSpec, validate_spec
from kubetune.contract.spec.sweep import set_field
from kubetune.storage import Store


# How long a trial waits at each evaluation for the controller's verdict (the controller polls
# every few seconds; a controller that is gone costs each evaluation this much, never the run).
VERDICT_WAIT_S = 120.0


def verdict_wait(spec: JobSpec) -> float | None:
    """The verdict wait of the trials of `spec`'s sweep: None when it does not prune."""
    assert spec.sweep is not None
    return None if spec.sweep.pruner == "none" else VERDICT_WAIT_S


def trial_spec(spec: JobSpec, number: int, params: dict[str, Any]) -> JobSpec:
    """The spec trial `number` runs: `spec` with `params` written in, its own name, no sweep."""
    assert spec.sweep is not None
    data = spec.model_dump(mode="json")
    data.pop("sweep", None)
    for path, value in params.items():
        set_field(data, path, value)
    data["name"] = trial_run_name(spec.name, number)
    set_field(data, "train.metric", spec.sweep.objective.metric.removeprefix("eval_"))
    source = f"{spec.spec_file or spec.name} (sweep trial {number})"
    trial = validate_spec(data, source)
    trial._spec_file = spec.spec_file
    return trial


def mark_trial(objs: list[dict[str, Any]], sweep: str, number: int, verdict_s: float | None = None) -> None:
    """A trial's rendered objects, marked in place: every object and pod template carries the
    sweep's labels (names.SWEEP_LABEL, TRIAL_LABEL: a restarted controller finds the trial by
    them), and every container the variables names.ENV_SWEEP and ENV_TRIAL (its trackers group
    the trial's runs by them) and, when the sweep prunes, names.ENV_SWEEP_VERDICT_SECONDS (the
    trial waits that long at each evaluation for the controller's verdict). The same for local
    and cluster trials."""
    labels = {kn.SWEEP_LABEL: sweep, kn.TRIAL_LABEL: str(number)}
    env = [{"name": kn.ENV_SWEEP, "value": sweep}, {"name": kn.ENV_TRIAL, "value": str(number)}]
    if verdict_s is not None:
        env.append({"name": kn.ENV_SWEEP_VERDICT_SECONDS, "value": f"{verdict_s:g}"})
    ours = {e["name"] for e in env}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                for container in node["containers"]:
                    container["env"] = [e for e in container.get("env", [])
                                        if e.get("name") not in ours] + env
            if isinstance(node.get("template"), dict) and isinstance(node["template"].get("metadata"), dict):
                node["template"]["metadata"].setdefault("labels", {}).update(labels)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for obj in objs:
        obj["metadata"].setdefault("labels", {}).update(labels)
        walk(obj.get("spec"))


def evaluations(store: Store, run: str, metric: str) -> dict[int, float]:
    """The validation values of `metric` a run logged so far, by step: what the trial reported
    for its verdicts (`sweep/evaluations.json`, written at once) and what its
    `metrics/train.jsonl` holds (carried to the store in the background; the final word)."""
    layout = RunLayout(run)
    key = f"eval_{metric.removeprefix('eval_')}"
    values: dict[int, float] = {}
    try:
        reported = store.read_json(layout.sweep_evaluations) if store.exists(layout.sweep_evaluations) else {}
    except (OSError, ValueError):  # being replaced right now: read it next time
        reported = {}
    for step, metrics in reported.items() if isinstance(reported, dict) else ():
        if step.isdigit() and isinstance(metrics, dict) and isinstance(metrics.get(key), (int, float)):
            values[int(step)] = float(metrics[key])
    try:
        text = store.read_text(layout.train_metrics) if store.exists(layout.train_metrics) else ""
    except (OSError, ValueError):
        text = ""
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record.get(key), (int, float)) and isinstance(record.get("step"), int):
            values[record["step"]] = float(record[key])
    return values


def read_verdicts(store: Store, run: str) -> dict[str, str]:
    """The controller's answers to a trial's evaluations so far (`sweep/verdicts.json`)."""
    try:
        verdicts = store.read_json(RunLayout(run).sweep_verdicts)
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in verdicts.items()} if isinstance(verdicts, dict) else {}


def last_step(store: Store, run: str) -> int | None:
    """The last step a run logged (its `metrics/train.jsonl`), None before its first log."""
    layout = RunLayout(run)
    if not store.exists(layout.train_metrics):
        return None
    steps = [json.loads(line).get("step") for line in store.read_text(layout.train_metrics).splitlines() if line.strip()]
    steps = [s for s in steps if isinstance(s, int)]
    return max(steps) if steps else None


def objective_value(values: dict[int, float], direction: str) -> float | None:
    """A finished trial's objective: its best validation value (the model it kept, since
    `train.metric` is the objective), None when it never evaluated."""
    if not values:
        return None
    return max(values.values()) if direction == "maximize" else min(values.values())
