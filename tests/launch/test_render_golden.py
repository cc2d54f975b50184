"""Golden manifests: the exact YAML `kubetune render` prints for one single-node and one
multi-node job. A change to the renderer shows up as a readable diff of these files.

The embedded spec (ConfigMap data and its hash annotation) is replaced by a placeholder: it
changes with every new spec field, and test_render checks that it is the resolved spec.

Regenerate after an intended change:  python -m pytest tests/launch/test_render_golden.py --update-golden
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubetune.contract.names import SPEC_HASH_ANNOTATION, SPEC_KEY
from kubetune.launch.render import render_objects, to_yaml_stream
from kubetune.launch.validate import supported_versions, validate_objects
from kubetune.contract.spec.job import load_spec

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"

CASES = {
    # golden file: (job file, stage, schedule, engine)
    "sst2-gpu1.k8s.yaml": (GOLDEN / "sst2-gpu1.job.yaml", "all", None, None),
    "imdb-bert-multinode.k8s.yaml": (REPO / "jobs" / "imdb-bert-multinode.yaml", "all", None, None),
    "imdb-bert-multinode.cron.k8s.yaml": (REPO / "jobs" / "imdb-bert-multinode.yaml", "train", "0 3 * * 0", None),
    "imdb-bert-multinode.jobset.k8s.yaml": (REPO / "jobs" / "imdb-bert-multinode.yaml", "all", None, "jobset"),
    "imdb-bert-multinode.trainjob.k8s.yaml": (REPO / "jobs" / "imdb-bert-multinode.yaml", "all", None, "trainjob"),
    "sst2-elastic.k8s.yaml": (REPO / "jobs" / "sst2-elastic.yaml", "train", None, None),  # issue 24: nodes {min, max}
}
# The three engines' renderings of one job, validated (strictly) for every supported version.
ENGINE_CASES = ["imdb-bert-multinode.k8s.yaml", "imdb-bert-multinode.jobset.k8s.yaml",
                "imdb-bert-multinode.trainjob.k8s.yaml"]


def without_spec(objs: list[dict]) -> list[dict]:
    for obj in objs:
        if obj["kind"] == "ConfigMap" and SPEC_KEY in obj["data"]:
            obj["data"][SPEC_KEY] = "<the resolved spec>"
        for template in _pod_templates(obj):
            template["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = "<sha256 of the resolved spec>"
    return objs


def _pod_templates(obj: dict) -> list[dict]:
    """The pod templates of a Job, CronJob, JobSet or TrainJob (its runtime patch)."""
    spec = obj.get("spec", {})
    if obj["kind"] == "JobSet":
        return [r["template"]["spec"]["template"] for r in spec["replicatedJobs"]]
    if obj["kind"] == "TrainJob":
        patches = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
        return [r["template"]["spec"]["template"] for r in patches]
    template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
    return [template] if template else []


@pytest.mark.parametrize("golden", sorted(CASES))
def test_golden(golden: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    job, stage, schedule, engine = CASES[golden]
    monkeypatch.chdir(REPO)  # the job file named as a user types it (the pod's spec-file variable)
    spec = load_spec(job.relative_to(REPO))
    text = to_yaml_stream(without_spec(render_objects(spec, stage=stage, schedule=schedule, engine=engine)))
    path = GOLDEN / golden
    if request.config.getoption("--update-golden"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run pytest {__file__} --update-golden"
    assert text == path.read_text(), f"{golden} differs: review, then regenerate with --update-golden"


@pytest.mark.parametrize("golden", ENGINE_CASES)
@pytest.mark.parametrize("version", supported_versions())
def test_engine_goldens_validate_strictly(golden: str, version: str):
    """Each engine's golden manifests (as `kubectl apply` reads them) pass strict validation for
    every supported Kubernetes version: built-in kinds against its schemas, JobSet and TrainJob
    against their projects' released CRDs (launch/crd_yaml) with their Job templates too."""
    docs = [d for d in yaml.safe_load_all((GOLDEN / golden).read_text()) if d]
    validate_objects(docs, version)
    kinds = {d["kind"] for d in docs}
    assert {"JobSet", "TrainJob"} & kinds or "Job" in kinds
