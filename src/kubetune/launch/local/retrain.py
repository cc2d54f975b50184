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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.local.gang import LocalProcess
from kubetune.launch.local.pods import Planner, plan_stage, run_processes

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


def retrain_local(spec: JobSpec, plan: Planner | None = None,
                  cleanup: Callable[[list[LocalProcess]], None] | None = None) -> tuple[int, str]:
    """Run one retrain Job locally; its exit code and its run name. `plan` and `cleanup` as for
    `pods.run_local` (`launch.local.container`: the pod in the image)."""
    from kubetune.launch.render import render_objects

    objs = scheduled_job(render_objects(spec, stage=kn.STAGE_TRAIN, schedule=LOCAL_SCHEDULE), int(time.time()))
    job = next(o for o in objs if o["kind"] == "Job")
    with tempfile.TemporaryDirectory(prefix="kubetune-retrain-") as tmp:
        procs = (plan or plan_stage)(objs, kn.STAGE_TRAIN, Path(tmp))
        try:
            code = run_processes(procs)
        finally:
            if cleanup is not None:
                cleanup(procs)
    if code != 0:
        print(f"kubetune: retrain failed with exit code {code}", file=sys.stderr)
    return code, job["metadata"]["name"]
