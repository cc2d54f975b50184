"""The controllers of the JobSet and Kubeflow Trainer engines, played on a `FakeKubeAPI`, as
`script_job` plays the Job controller: what a test needs to see a gang submitted, followed,
restarted and cancelled through the real client.

* JobSet: creates the Job of each replicated job (`<jobset>-<name>-<index>`, owned by the
  JobSet, with the template's labels), a replicated job only once those it `dependsOn` have
  completed; when a Job fails, the first failurePolicy rule whose `onJobFailureReasons` holds
  the Job's reason (or is empty) decides: `FailJobSet`, or `RestartJobSet` (every Job deleted
  and recreated, `status.restarts` + 1) until `maxRestarts`; `Completed` once the
  successPolicy's replicated jobs completed.
* TrainJob: creates the JobSet named after it from the ClusterTrainingRuntime given to
  `attach` (the TrainJob's trainer fields and runtime patch applied), owned by it, and mirrors
  the JobSet's end as its `Complete` or `Failed` condition.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from fakes.k8s_fake_server import FakeKubeAPI, now

POLL_S = 0.02
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"


def attach(api: FakeKubeAPI, runtime: dict[str, Any] | None = None) -> None:
    """Play the JobSet controller, and the Trainer controller on `runtime`, on `api`."""
    def hook(api: FakeKubeAPI, plural: str, ns: str, obj: dict[str, Any]) -> None:
        if plural == "jobsets":
            _start(api, _run_jobset, ns, obj)
        elif plural == "trainjobs" and runtime is not None:
            _start(api, _run_trainjob, ns, obj, runtime)
    api.create_hooks.append(hook)


def _start(api: FakeKubeAPI, target: Any, *args: Any) -> None:
    thread = threading.Thread(target=target, args=(api, *args), daemon=True)
    api._threads.append(thread)
    thread.start()


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True}


def _set_condition(api: FakeKubeAPI, plural: str, ns: str, name: str, kind: str, reason: str = "", **status: Any) -> None:
    with api.lock:
        obj = api.objects.get((plural, ns, name))
        if obj is None:
            return
        obj.setdefault("status", {}).update(status)
        if kind:
            obj["status"].setdefault("conditions", []).append(
                {"type": kind, "status": "True", "reason": reason or kind, "message": "",
                 "lastTransitionTime": now()})
        api._emit("MODIFIED", plural, ns, obj)


def _job_end(api: FakeKubeAPI, ns: str, name: str) -> tuple[str, str] | None:
    """("Complete", "") or ("Failed", reason) once Job `name` ended."""
    job = api.get("jobs", name, ns) or {}
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return condition["type"], condition.get("reason") or ""
    return None


def _create_jobs(api: FakeKubeAPI, ns: str, jobset: dict[str, Any], replicated: dict[str, Any]) -> list[str]:
    names = []
    for index in range(replicated.get("replicas", 1)):
        template = copy.deepcopy(replicated["template"])
        name = f"{jobset['metadata']['name']}-{replicated['name']}-{index}"
        labels = {**template.get("metadata", {}).get("labels", {}), JOBSET_NAME_LABEL: jobset["metadata"]["name"]}
        api.create("jobs", ns, {"apiVersion": "batch/v1", "kind": "Job", "spec": template["spec"],
                                "metadata": {"name": name, "labels": labels, "ownerReferences": [_owner(jobset)]}}, False)
        names.append(name)
    return names


def _run_jobset(api: FakeKubeAPI, ns: str, jobset: dict[str, Any]) -> None:
    name, spec = jobset["metadata"]["name"], jobset["spec"]
    policy = spec.get("failurePolicy") or {}
    targets = (spec.get("successPolicy") or {}).get("targetReplicatedJobs") or [r["name"] for r in spec["replicatedJobs"]]
    restarts = 0
    _set_condition(api, "jobsets", ns, name, "", restarts=0)
    while True:
        jobs: dict[str, list[str]] = {}
        pending = list(spec["replicatedJobs"])
        outcome = None
        while outcome is None:
            if api.closing or api.get("jobsets", name, ns) is None:
                return
            for replicated in list(pending):
                deps = replicated.get("dependsOn") or []
                if all(all(_job_end(api, ns, j) == ("Complete", "") for j in jobs.get(d["name"], [None])) for d in deps):
                    jobs[replicated["name"]] = _create_jobs(api, ns, jobset, replicated)
                    pending.remove(replicated)
            ends = {j: _job_end(api, ns, j) for names in jobs.values() for j in names}
            failed = [end for end in ends.values() if end and end[0] == "Failed"]
            if failed:
                outcome = failed[0]
            elif not pending and all(ends[j] == ("Complete", "") for t in targets for j in jobs[t]):
                outcome = ("Complete", "")
            else:
                time.sleep(POLL_S)
        if outcome[0] == "Complete":
            return _set_condition(api, "jobsets", ns, name, "Completed", restarts=restarts)
        action = next((r["action"] for r in policy.get("rules", [])
                       if not r.get("onJobFailureReasons") or outcome[1] in r["onJobFailureReasons"]), "RestartJobSet")
        if action != "RestartJobSet" or restarts >= policy.get("maxRestarts", 0):
            return _set_condition(api, "jobsets", ns, name, "Failed", outcome[1], restarts=restarts)
        restarts += 1
        for job in [j for names in jobs.values() for j in names]:
            api.delete("jobs", ns, job, False, {})
        _set_condition(api, "jobsets", ns, name, "", restarts=restarts)


def _trainer_jobset(trainjob: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    """The JobSet Kubeflow Trainer builds: the runtime's template, the trainer fields and the
    runtime patch applied to its `node` replicated job."""
    spec = copy.deepcopy(runtime["spec"]["template"]["spec"])
    trainer = trainjob["spec"]["trainer"]
    patches = {r["name"]: r for p in trainjob["spec"].get("runtimePatches", [])
               for r in p["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]}
    for replicated in spec["replicatedJobs"]:
        template = replicated["template"]
        patch = patches.get(replicated["name"], {}).get("template", {})
        template.setdefault("metadata", {}).setdefault("labels", {}).update(patch.get("metadata", {}).get("labels", {}))
        pod, pod_patch = template["spec"]["template"], patch.get("spec", {}).get("template", {})
        for key in ("labels", "annotations"):
            pod.setdefault("metadata", {}).setdefault(key, {}).update(pod_patch.get("metadata", {}).get(key, {}))
        for key, value in pod_patch.get("spec", {}).items():
            if key != "containers":
                pod["spec"][key] = value
        for container in pod["spec"]["containers"]:
            for patched in pod_patch.get("spec", {}).get("containers", []):
                if patched["name"] == container["name"]:
                    container.update({k: v for k, v in patched.items() if k != "name"})
            if replicated["name"] == "node":
                container.update(image=trainer["image"], command=trainer["command"], env=trainer.get("env", []),
                                 resources=trainer.get("resourcesPerNode", {}))
        if replicated["name"] == "node":
            nodes = trainer.get("numNodes", 1)
            template["spec"].update(completions=nodes, parallelism=nodes, **({"completionMode": "Indexed"} if nodes > 1 else {}))
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": trainjob["metadata"]["name"], "ownerReferences": [_owner(trainjob)]}, "spec": spec}


def _run_trainjob(api: FakeKubeAPI, ns: str, trainjob: dict[str, Any], runtime: dict[str, Any]) -> None:
    name = trainjob["metadata"]["name"]
    api.create("jobsets", ns, _trainer_jobset(trainjob, runtime), False)
    _set_condition(api, "trainjobs", ns, name, "")
    while not api.closing and api.get("trainjobs", name, ns) is not None:
        jobset = api.get("jobsets", name, ns) or {}
        for condition in (jobset.get("status") or {}).get("conditions") or []:
            if condition["type"] in ("Completed", "Failed"):
                kind = "Complete" if condition["type"] == "Completed" else "Failed"
                return _set_condition(api, "trainjobs", ns, name, kind, condition.get("reason", ""),
                                      restarts=jobset["status"].get("restarts", 0))
        time.sleep(POLL_S)
