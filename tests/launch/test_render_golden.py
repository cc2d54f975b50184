"""Golden manifests: the exact YAML `kubetune render` prints for one single-node and one
multi-node job. A change to the renderer shows up as a readable diff of these files.

The embedded spec (ConfigMap data and its hash annotation) is replaced by a placeholder: it
changes with every new spec field, and test_render checks that it is the resolved spec.

Regenerate after an intended change:  python -m pytest tests/launch/test_render_golden.py --update-golden
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune.contract.names import SPEC_HASH_ANNOTATION, SPEC_KEY
from kubetune.launch.render import render_objects, to_yaml_stream
from kubetune.contract.spec.job import load_spec

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"

CASES = {
    # golden file: (job file, stage, schedule)
    "sst2-gpu1.k8s.yaml": (GOLDEN / "sst2-gpu1.job.yaml", "all", None),
    "imdb-bert-multinode.k8s.yaml": (REPO / "jobs" / "imdb-bert-multinode.yaml", "all", None),
    "imdb-bert-multinode.cron.k8s.yaml": (REPO / "jobs" / "imdb-bert-multinode.yaml", "train", "0 3 * * 0"),
}


def without_spec(objs: list[dict]) -> list[dict]:
    for obj in objs:
        if obj["kind"] == "ConfigMap":
            obj["data"][SPEC_KEY] = "<the resolved spec>"
        spec = obj.get("spec", {})
        template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
        if template:
            template["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = "<sha256 of the resolved spec>"
    return objs


@pytest.mark.parametrize("golden", sorted(CASES))
def test_golden(golden: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    job, stage, schedule = CASES[golden]
    monkeypatch.chdir(REPO)  # the job file named as a user types it (the pod's spec-file variable)
    spec = load_spec(job.relative_to(REPO))
    text = to_yaml_stream(without_spec(render_objects(spec, stage=stage, schedule=schedule)))
    path = GOLDEN / golden
    if request.config.getoption("--update-golden"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run pytest {__file__} --update-golden"
    assert text == path.read_text(), f"{golden} differs: review, then regenerate with --update-golden"
