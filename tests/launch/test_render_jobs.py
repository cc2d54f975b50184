"""Every shipped job in jobs/ renders, for every stage and as a CronJob, into objects that the
strict schemas of every supported Kubernetes version accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune.launch.render import RenderError, render_objects
from kubetune.launch.render.jobs import ELASTIC_MIN_K8S
from kubetune.launch.validate import supported_versions, validate_objects
from kubetune.contract.spec.job import load_spec

REPO = Path(__file__).resolve().parents[2]
JOBS = sorted((REPO / "jobs").glob("*.yaml"))


def test_there_are_jobs_to_check():
    names = {p.name for p in JOBS}
    assert "imdb-bert-multinode.yaml" in names
    assert len(names) >= 2


@pytest.mark.parametrize("version", supported_versions())
@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
def test_job_renders_and_validates(job: Path, version: str):
    spec = load_spec(job)
    if spec.resources.elastic and tuple(map(int, version.split("."))) < ELASTIC_MIN_K8S:
        with pytest.raises(RenderError, match="^resources.nodes .*needs Kubernetes"):  # docs/elastic.md
            render_objects(spec, stage="all", k8s_version=version)
        return
    objs = render_objects(spec, stage="all", k8s_version=version)
    kinds = [o["kind"] for o in objs]
    assert kinds.count("Job") == 2
    assert ("Service" in kinds) == (spec.resources.max_nodes > 1)
    for stage in ("train", "evaluate"):
        assert render_objects(spec, stage=stage, k8s_version=version)
    cron = render_objects(spec, k8s_version=version, schedule="0 3 * * 0")
    assert [o["kind"] for o in cron][-1] == "CronJob"
    validate_objects(objs + cron, version)  # explicit: every object, this version, strict
