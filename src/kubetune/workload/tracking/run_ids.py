"""What the experiment trackers share: their run ids, stored with the run's checkpoints, the
spec's fields as params, screened for secrets, and the sweep a trial belongs to.

A tracker's run id is written to `RunLayout.tracker_runs` at the first checkpoint save, so a
pod that resumes from that checkpoint (and the evaluate stage) reopens the same tracker run;
a pod that dies before any checkpoint starts over, and so does its tracker run.
"""

from __future__ import annotations

import json
from typing import Any

from kubetune.contract.layout import RunLayout
from kubetune.contract.spec.job import JobSpec
from kubetune.contract.spec.loading import secret_free
from kubetune.storage import Store
from kubetune.workload.stages.run import PodEnv

# The tags of a sweep's trial's tracker runs: the sweep's job name and the trial's number.
SWEEP_TAG = "kubetune.sweep"
TRIAL_TAG = "kubetune.trial"


def sweep_of(env: PodEnv) -> dict[str, str]:
    """{SWEEP_TAG: job, TRIAL_TAG: number} for a sweep's trial (its pod's names.ENV_SWEEP and
    ENV_TRIAL, set by the sweep's controller), {} for any other run."""
    if not env.sweep:
        return {}
    return {SWEEP_TAG: env.sweep, TRIAL_TAG: "" if env.trial is None else str(env.trial)}


def stored_run_ids(store: Store, layout: RunLayout) -> dict[str, str]:
    """The trackers' run ids stored with this run's checkpoints ({} before the first)."""
    if not store.exists(layout.tracker_runs):
        return {}
    return json.loads(store.read_text(layout.tracker_runs))


def remember_run_id(store: Store, layout: RunLayout, tracker: str, run_id: str) -> None:
    """Store a tracker's run id (once: later saves find it there)."""
    ids = stored_run_ids(store, layout)
    if ids.get(tracker) != run_id:
        store.write_json(layout.tracker_runs, {**ids, tracker: run_id})


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def spec_params(spec: JobSpec, limit: int = 6000) -> dict[str, str]:
    """The spec's fields as tracker params (dotted names, strings of at most `limit` characters),
    secret-screened by `contract.spec_loading.secret_free`, unset ones left out."""
    flat = secret_free(_flatten(spec.model_dump(mode="json")))
    return {k: str(v)[:limit] for k, v in flat.items() if v is not None and v != [] and v != {}}
