"""What a sweep leaves for people: `sweeps/<job>/trials.jsonl` and `summary.json`, written
from the study after every change, and the rows `kubetune sweep status` prints from them.

Both files are derived (the study's journal is the record); they are rewritten whole, atomically,
so a reader sees the old or the new version, never a part.
"""

from __future__ import annotations

import json
from typing import Any

from typing import TYPE_CHECKING

from kubetune.contract.errors import UserError
from kubetune.contract.layout import RunLayout, SweepLayout, trial_run_name
from kubetune.contract.spec.sweep import SweepSpec
from kubetune.launch.sweep.trials import last_step
from kubetune.storage import Store

if TYPE_CHECKING:  # optuna only where a sweep runs: `status` and `plot --sweep` read the files alone
    import optuna
    from optuna.trial import FrozenTrial

# Optuna's trial states (TrialState names) as trials.jsonl writes them.
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def trial_record(store: Store, job: str, trial: FrozenTrial) -> dict[str, Any]:
    """One line of trials.jsonl: number, parameters, state, objective, run folder, steps, times."""
    run = trial_run_name(job, trial.number)
    start, end = trial.datetime_start, trial.datetime_complete
    return {
        "number": trial.number,
        "params": trial.params,
        "state": STATES.get(trial.state.name, trial.state.name.lower()),
        "objective": trial.value if trial.state.name == "COMPLETE" else None,
        "run": RunLayout(run).base,
        "steps": last_step(store, run),
        "pruned_at_step": trial.user_attrs.get("pruned_at_step"),
        "exit_code": trial.user_attrs.get("exit_code"),
        "started": start.isoformat() if start else None,
        "ended": end.isoformat() if end else None,
        "wall_seconds": round((end - start).total_seconds(), 1) if start and end else None,
        "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
    }


def write_results(store: Store, job: str, sweep: SweepSpec, study: optuna.Study,
                  spent: str | None = None) -> dict[str, Any]:
    """Rewrite trials.jsonl and summary.json from the study; returns the summary. `spent`: the
    budget that stopped new trials ("trials" or "timeout_minutes"), None while it lasts."""
    layout = SweepLayout(job)
    trials = study.get_trials(deepcopy=False)
    records = [trial_record(store, job, t) for t in trials]
    store.write_text(layout.trials, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = study.best_trial if complete else None
    summary = {
        "best_trial": best.number if best else None,
        "best_params": best.params if best else None,
        "best_value": best.value if best else None,
        "best_run": RunLayout(trial_run_name(job, best.number)).base if best else None,
        "objective": sweep.objective.model_dump(),
        "trials": {state: sum(1 for r in records if r["state"] == state) for state in STATES.values()},
        "budget": {"trials": sweep.trials, "timeout_minutes": sweep.timeout_minutes, "spent": spent},
    }
    store.write_json(layout.summary, summary)
    return summary


def read_results(store: Store, job: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """trials.jsonl and summary.json of the sweep of `job`; a one-line error when there is none."""
    layout = SweepLayout(job)
    if not store.exists(layout.trials):
        raise UserError(f"{store.url(layout.base)}: no sweep {job!r} in this store")
    records = [json.loads(line) for line in store.read_text(layout.trials).splitlines() if line.strip()]
    for record in records:  # a running trial's steps as its run has them now, not as when it started
        if record["state"] == "running":
            record["steps"] = last_step(store, record["run"].rpartition("/")[2])
    summary = store.read_json(layout.summary) if store.exists(layout.summary) else {}
    return records, summary


def ranked(records: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    """Best first: complete trials by objective, then the running, pruned and failed ones."""
    order = {"complete": 0, "running": 1, "waiting": 1, "pruned": 2, "failed": 3}
    sign = -1 if direction == "maximize" else 1

    def key(r: dict[str, Any]) -> tuple:
        value = r["objective"]
        return (order.get(r["state"], 4), sign * value if value is not None else 0.0, r["number"])

    return sorted(records, key=key)
