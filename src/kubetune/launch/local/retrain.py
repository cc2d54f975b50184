"""`kubetune retrain JOB --local`: one scheduled run, now, on this machine.

Renders the same CronJob `kubetune render --schedule` prints and runs one Job of its
jobTemplate as local processes (`local.plan_stage`), named as the CronJob controller names
its Jobs (`<cronjob>-<scheduled time>`), so the pod's run folder, `runs/<that name>/`, and
its command are the scheduled pod's: the retrain entrypoint (names.RETRAIN_MODULE).
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.local.pods import plan_stage, run_processes

# Any valid schedule: only the rendered jobTemplate is used.
LOCAL_SCHEDULE = "@daily"


def scheduled_job(objs: list[dict[str, Any]], scheduled: int) -> list[dict[str, Any]]:
    """The objects with the CronJob replaced by the Job it would create at `scheduled`
    (seconds since the epoch; the controller uses minutes, a local run may start twice a minute)."""
    out = []
    for obj in objs:
        if obj["kind"] != "CronJob":
            out.append(obj)
            continue
        template = copy.deepcopy(obj["spec"]["jobTemplate"])
        meta = {**template.get("metadata", {}), "name": f"{obj['metadata']['name']}-{scheduled}",
                "namespace": obj["metadata"].get("namespace", "default")}
        out.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": template["spec"]})
    return out


def retrain_local(spec: JobSpec) -> tuple[int, str]:
    """Run one retrain Job locally; its exit code and its run name."""
    from kubetune.launch.render import render_objects

    objs = scheduled_job(render_objects(spec, stage=kn.STAGE_TRAIN, schedule=LOCAL_SCHEDULE), int(time.time()))
    job = next(o for o in objs if o["kind"] == "Job")
    with tempfile.TemporaryDirectory(prefix="kubetune-retrain-") as tmp:
        code = run_processes(plan_stage(objs, kn.STAGE_TRAIN, Path(tmp)))
    if code != 0:
        print(f"kubetune: retrain failed with exit code {code}", file=sys.stderr)
    return code, job["metadata"]["name"]
