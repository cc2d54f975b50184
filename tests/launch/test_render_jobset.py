"""`--engine jobset`: the failure policy counts one restart per incident of the whole gang, and
none for an exit code that means a user error.

No JobSet controller runs here, so `IncidentModel` plays the documented rules of the two
controllers on the *rendered* policies: the Job controller's podFailurePolicy (first matching
rule wins; FailJob fails the Job with reason `PodFailurePolicy`; Ignore does not count the pod;
otherwise the pod counts, and the Job fails with `BackoffLimitExceeded` past `backoffLimit`) and
the JobSet controller's failurePolicy (first rule whose `onJobFailureReasons` is empty or holds
the reason; no rule: RestartJobSet; RestartJobSet past `maxRestarts` fails the JobSet). A change
to either rendered policy changes what these tests see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.contract.exitcodes import EXIT_BAD_INPUT, EXIT_NO_SPACE, EXIT_RETRY_AFTER_CHECKPOINT
from kubetune.contract.spec.job import load_spec
from kubetune.launch.render import render_objects
from kubetune.launch.render.progress import VOLUME as PROGRESS_VOLUME

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "imdb-bert-multinode.yaml"


@dataclass
class IncidentModel:
    """One JobSet's gang Job and failure policy, fed pod failures."""

    job: dict[str, Any]  # the gang's Job spec
    policy: dict[str, Any]  # the JobSet's failurePolicy
    restarts: int = 0
    failed: bool = False
    counted: int = 0  # failed pods counted against backoffLimit in the current Job
    actions: list[str] = field(default_factory=list)

    def _job_failure(self, exit_code: int | None, disrupted: bool) -> str | None:
        for rule in self.job["podFailurePolicy"]["rules"]:
            if "onPodConditions" in rule:
                hit = disrupted and any(c["type"] == "DisruptionTarget" for c in rule["onPodConditions"])
            else:
                hit = exit_code in rule["onExitCodes"]["values"]
            if hit and rule["action"] == "FailJob":
                return "PodFailurePolicy"
            if hit and rule["action"] == "Ignore":
                return None
            if hit:
                break
        self.counted += 1
        return "BackoffLimitExceeded" if self.counted > self.job["backoffLimit"] else None

    def _jobset_action(self, reason: str) -> str:
        for rule in self.policy.get("rules", []):
            if not rule.get("onJobFailureReasons") or reason in rule["onJobFailureReasons"]:
                return rule["action"]
        return "RestartJobSet"

    def pods_fail(self, exit_codes: list[int | None], disrupted: bool = False) -> None:
        """Pods of the gang fail together (one incident); None: a pod lost without an exit code."""
        for code in exit_codes:
            if self.failed:
                return
            reason = self._job_failure(code, disrupted)
            if reason is None:
                continue
            action = self._jobset_action(reason)
            self.actions.append(action)
            if action == "RestartJobSet" and self.restarts < self.policy["maxRestarts"]:
                self.restarts += 1
                self.counted = 0  # every Job of the gang recreated: the rest of the incident is gone
                return
            self.failed = True


def _jobset(**settings: Any) -> dict[str, Any]:
    spec = load_spec(JOB)
    for key, value in settings.items():
        setattr(spec.kubernetes, key, value)
    objs = render_objects(spec, stage="train", engine="jobset")
    return next(o for o in objs if o["kind"] == "JobSet")


def _model(jobset: dict[str, Any]) -> IncidentModel:
    (gang,) = [r for r in jobset["spec"]["replicatedJobs"] if r["name"] == "node"]
    return IncidentModel(job=gang["template"]["spec"], policy=jobset["spec"]["failurePolicy"])


def test_user_error_exit_code_does_not_restart_the_gang():
    model = _model(_jobset())
    model.pods_fail([EXIT_BAD_INPUT])
    assert model.failed and model.restarts == 0
    assert model.actions == ["FailJobSet"]


@pytest.mark.parametrize("codes", [[1], [137], [None], [1, 1, 1, 1]], ids=["one-rank", "oom", "lost", "whole-gang"])
def test_any_other_failure_restarts_the_gang_once_per_incident(codes: list[int | None]):
    """One pod failing, or all four at once (rank 0 lost takes the store with it): one restart."""
    model = _model(_jobset())
    model.pods_fail(codes)
    assert not model.failed
    assert model.restarts == 1
    assert model.actions == ["RestartJobSet"]


def test_disruptions_and_checkpointed_exits_cost_no_restart():
    model = _model(_jobset())
    model.pods_fail([None, None], disrupted=True)
    model.pods_fail([EXIT_RETRY_AFTER_CHECKPOINT] * 4)
    assert (model.failed, model.restarts, model.actions) == (False, 0, [])


@pytest.mark.parametrize("backoff_limit", [0, 2])
def test_restarts_are_counted_per_incident_up_to_backoff_limit(backoff_limit: int):
    """`kubernetes.backoff_limit` incidents restart the gang; the next fails the JobSet, however
    many nodes the gang has (an Indexed Job spends its backoffLimit per pod instead)."""
    model = _model(_jobset(backoff_limit=backoff_limit))
    for _ in range(backoff_limit):
        model.pods_fail([1, 1, 1, 1])
    assert (model.failed, model.restarts) == (False, backoff_limit)
    model.pods_fail([1])
    assert model.failed


def test_the_trainjob_runtime_counts_incidents_the_same_way():
    """k8s/trainjob-runtime.yaml carries the same policies (its container is named `node`)."""
    runtime = yaml.safe_load((REPO / "k8s" / "trainjob-runtime.yaml").read_text())
    jobset = runtime["spec"]["template"]
    (gang,) = [r for r in jobset["spec"]["replicatedJobs"] if r["name"] == "node"]
    model = IncidentModel(job=gang["template"]["spec"], policy=jobset["spec"]["failurePolicy"])
    model.pods_fail([EXIT_BAD_INPUT])
    assert model.failed and model.restarts == 0
    model = IncidentModel(job=gang["template"]["spec"], policy=jobset["spec"]["failurePolicy"])
    model.pods_fail([1, 1, 1, 1])
    assert not model.failed and model.restarts == 1


def test_jobset_gang_and_network():
    """One replicated job of `nodes` pods meeting at pod 0's JobSet name; no Service of ours."""
    spec = load_spec(JOB)
    objs = render_objects(spec, stage="train", engine="jobset")
    assert [o["kind"] for o in objs] == ["ConfigMap", "NetworkPolicy", "ServiceAccount", "ConfigMap", "Role", "RoleBinding", "JobSet"]
    jobset = objs[-1]
    (gang,) = [r for r in jobset["spec"]["replicatedJobs"] if r["name"] == "node"]
    assert gang["template"]["spec"]["completions"] == gang["template"]["spec"]["parallelism"] == 4
    assert jobset["spec"]["successPolicy"] == {"operator": "All", "targetReplicatedJobs": ["node"]}
    network = jobset["spec"]["network"]
    command = gang["template"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert f"--rdzv-endpoint=imdb-bert-multinode-train-node-0-0.{network['subdomain']}:29500" in command
    assert "subdomain" not in gang["template"]["spec"]["template"]["spec"]


def test_schedule_stays_a_cronjob_of_jobs():
    from kubetune.launch.render import RenderError

    with pytest.raises(RenderError, match="--engine jobset"):
        render_objects(load_spec(JOB), stage="train", engine="jobset", schedule="0 3 * * 0")


def test_the_initializer_runs_first_with_a_cache_pvc_only():
    """With `kubernetes.cache_pvc` the gang depends on the initializer's completion; the
    initializer is the train pod with the initializer's command, no GPU, on the same volumes."""
    from kubetune.contract import names as kn

    spec = load_spec(JOB)
    jobset = render_objects(spec, stage="train", engine="jobset")[-1]
    initializer, gang = jobset["spec"]["replicatedJobs"]
    assert initializer["name"] == kn.INITIALIZER and gang["dependsOn"] == [{"name": kn.INITIALIZER, "status": "Complete"}]
    pod = initializer["template"]["spec"]["template"]["spec"]
    train_pod = gang["template"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["python", "-m", kn.INITIALIZE_MODULE]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    # the same volumes, less the progress reporter's credentials (train container only)
    assert pod["volumes"] == [v for v in train_pod["volumes"] if v["name"] != PROGRESS_VOLUME]
    assert container["volumeMounts"] == [m for m in train_pod["containers"][0]["volumeMounts"] if m["name"] != PROGRESS_VOLUME]
    assert initializer["template"]["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["values"] == [EXIT_BAD_INPUT, EXIT_NO_SPACE]
    job = next(o for o in render_objects(spec, stage="train") if o["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["initContainers"][0]["command"] == container["command"]
    spec.kubernetes.cache_pvc = None
    assert [r["name"] for r in render_objects(spec, stage="train", engine="jobset")[-1]["spec"]["replicatedJobs"]] == ["node"]
    job = next(o for o in render_objects(spec, stage="train") if o["kind"] == "Job")
    assert "initContainers" not in job["spec"]["template"]["spec"]
