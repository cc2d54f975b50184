"""The vendored CRDs are the released files named in launch/crd_yaml/SOURCES.md, and
validation against them is strict: an unknown field anywhere is refused with its path."""

from __future__ import annotations

import copy
import gzip
import hashlib
import re
from pathlib import Path

import pytest

from kubetune.contract.spec.job import load_spec
from kubetune.launch import crds
from kubetune.launch.render import render_objects
from kubetune.launch.validate import ValidationError, validate_object

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "src" / "kubetune" / "launch" / "crd_yaml"


def test_vendored_files_are_the_released_ones_named_in_sources():
    table = (CRD_DIR / "SOURCES.md").read_text()
    for kind, (api_version, file) in crds.CRD_FILES.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{file}`"))
        digest = re.findall(r"\b[0-9a-f]{64}\b", row)[0]
        assert hashlib.sha256(gzip.decompress((CRD_DIR / file).read_bytes())).hexdigest() == digest, file
        doc = crds.crd(kind)
        assert doc["spec"]["names"]["kind"] == kind
        assert f"{doc['spec']['group']}/" in api_version


def _set(obj: dict, path: str, value: object) -> dict:
    out = copy.deepcopy(obj)
    cur = out
    *parents, last = path.split(".")
    for key in parents:
        cur = cur[int(key)] if key.isdigit() else cur[key]
    cur[last] = value
    return out


@pytest.mark.parametrize("engine,path", [
    ("jobset", "spec.failurePolicy.rules.0.onExitCodes"),
    ("jobset", "spec.replicatedJobs.0.template.spec.template.spec.containers.0.bogus"),
    ("jobset", "metadata.bogus"),
    ("trainjob", "spec.trainer.bogus"),
    ("trainjob", "spec.runtimePatches.0.trainingRuntimeSpec.template.spec.replicatedJobs.0.template.spec.template.spec.priorityClassName"),
])
def test_unknown_fields_are_refused_naming_the_field(engine: str, path: str):
    obj = render_objects(load_spec(REPO / "jobs" / "imdb-bert-multinode.yaml"), stage="train", engine=engine)[-1]
    with pytest.raises(ValidationError) as error:
        validate_object(_set(obj, path, 1), "1.29")
    parent = path.rsplit(".", 1)[0]
    assert f"{parent}: Additional properties are not allowed" in str(error.value)
    assert path.rsplit(".", 1)[1] in str(error.value)


def test_wrong_enum_and_kind_are_refused():
    obj = render_objects(load_spec(REPO / "jobs" / "imdb-bert-multinode.yaml"), stage="train", engine="jobset")[-1]
    with pytest.raises(ValidationError, match="spec.failurePolicy.rules.1.action"):
        validate_object(_set(obj, "spec.failurePolicy.rules.1.action", "RestartSometimes"), "1.29")
    assert not crds.is_custom({**obj, "apiVersion": "jobset.x-k8s.io/v1alpha1"})
