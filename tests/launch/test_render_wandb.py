"""Weights & Biases by configuration (issue 15): `tracking.wandb` renders the variables the
wandb library reads into every container (validated against the Kubernetes OpenAPI schemas),
its API key only as a Secret reference, and the spec refuses what would bypass that."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.contract import names as kn
from kubetune.contract.errors import SpecError
from kubetune.contract.spec.job import validate_spec
from kubetune.launch.render import render_objects
from kubetune.launch.validate import latest_version, validate_objects

KEY_VALUE = "0123456789abcdef0123456789abcdef01234567"


def make_spec(tracking: dict[str, Any] | None = None, **kubernetes: Any):
    data: dict[str, Any] = {"name": "demo", "model": {"source": "models/m"}, "data": {"train": "datasets/t.tsv"},
                            "storage": {"root": "s3://bucket/prefix"}, "kubernetes": kubernetes}
    if tracking is not None:
        data["tracking"] = tracking
    return validate_spec(data)


def _envs(spec) -> list[dict[str, dict[str, Any]]]:
    objs = render_objects(spec, stage="all")
    validate_objects(objs, latest_version())
    pods = [o["spec"]["template"]["spec"] for o in objs if o["kind"] == "Job"]
    return [{e["name"]: e for e in c["env"]} for pod in pods for c in pod["containers"]]


def test_wandb_renders_project_entity_and_folder_and_the_key_by_reference():
    spec = make_spec({"wandb": {"project": "sentiment", "entity": "ml-team"}},
                     secret_env={kn.ENV_WANDB_API_KEY: {"secret": "wandb", "key": "api-key"}})
    envs = _envs(spec)
    assert len(envs) == 2  # train and evaluate
    for env in envs:
        assert env[kn.ENV_WANDB_PROJECT] == {"name": kn.ENV_WANDB_PROJECT, "value": "sentiment"}
        assert env[kn.ENV_WANDB_ENTITY] == {"name": kn.ENV_WANDB_ENTITY, "value": "ml-team"}
        assert env[kn.ENV_WANDB_DIR]["value"].startswith(kn.CACHE_DIR + "/")  # writable, kept by run --local
        assert env[kn.ENV_WANDB_API_KEY] == {"name": kn.ENV_WANDB_API_KEY,
                                             "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}}}
        assert {kn.ENV_WANDB_PROJECT, kn.ENV_WANDB_ENTITY, kn.ENV_WANDB_DIR} <= kn.RENDERED_ENV


def test_no_wandb_section_renders_no_wandb_variables_and_no_entity_none():
    assert not [n for env in _envs(make_spec()) for n in env if n.startswith("WANDB_")]
    envs = _envs(make_spec({"wandb": {"project": "p"}}))
    assert all(kn.ENV_WANDB_ENTITY not in env for env in envs)


@pytest.mark.parametrize(
    "tracking, kubernetes, message",
    [
        ({"wandb": {"entity": "t"}}, {}, "tracking.wandb.project: required field is missing"),
        ({"wandb": {"project": "p", "api_key": KEY_VALUE}}, {}, "tracking.wandb.api_key"),
        ({"wandb": {"project": "p"}}, {"env": {kn.ENV_WANDB_API_KEY: KEY_VALUE}}, "looks like a secret"),
        ({"wandb": {"project": "p"}}, {"env": {kn.ENV_WANDB_PROJECT: "other"}}, "set by kubetune itself"),
    ],
)
def test_wandb_spec_mistakes_are_one_line_naming_the_field(tracking, kubernetes, message):
    with pytest.raises(SpecError) as err:
        make_spec(tracking, **kubernetes)
    text = str(err.value)
    assert message in text and "\n" not in text and KEY_VALUE not in text
