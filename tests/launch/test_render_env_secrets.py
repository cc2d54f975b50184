"""Environment and Secrets by reference (issue 15, point 5): `kubernetes.env` renders plain
values, `kubernetes.secret_env` renders `valueFrom.secretKeyRef` and never a value, a literal
value for a secret-looking name is refused with one line, `run --local` takes the referenced
variables from the user's environment, and the fake API server stores the pods as rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes.k8s_fake_server import FakeKubeAPI

from kubetune.cli.main import main
from kubetune.cli.cluster import submit
from kubetune.contract import names as kn
from kubetune.contract.errors import SpecError
from kubetune.contract.spec.job import validate_spec
from kubetune.launch.cluster import connect
from kubetune.launch.local.pods import plan_stage
from kubetune.launch.render import render_objects, to_yaml_stream
from kubetune.launch.validate import latest_version, validate_objects

REPO = Path(__file__).resolve().parents[2]
TOKEN_VALUE = "hf_thisMustNeverAppear123"


def make_spec(**kubernetes: Any):
    return validate_spec(
        {
            "name": "demo",
            "model": {"source": "models/m"},
            "data": {"train": "datasets/t.tsv"},
            "storage": {"root": "s3://bucket/prefix"},
            "kubernetes": kubernetes,
        }
    )


def containers(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pods = [o["spec"]["template"]["spec"] for o in objs if o["kind"] == "Job"]
    return [c for pod in pods for c in pod["containers"]]


SECRETS = {"HF_TOKEN": {"secret": "hf", "key": "token"}, "WANDB_API_KEY": {"secret": "wandb", "key": "api-key", "optional": True}}


def test_secret_env_renders_secret_key_refs_and_env_plain_values():
    spec = make_spec(env={"HF_HUB_OFFLINE": 1, "MY_FLAG": True}, secret_env=SECRETS)
    objs = render_objects(spec, stage="all")
    validate_objects(objs, latest_version())  # the Kubernetes OpenAPI schemas
    cs = containers(objs)
    assert len(cs) == 2  # train and evaluate both get them
    for c in cs:
        env = {e["name"]: e for e in c["env"]}
        assert env["HF_HUB_OFFLINE"] == {"name": "HF_HUB_OFFLINE", "value": "1"}
        assert env["MY_FLAG"] == {"name": "MY_FLAG", "value": "true"}
        assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
        assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "wandb", "key": "api-key", "optional": True}
        assert "value" not in env["HF_TOKEN"] and "value" not in env["WANDB_API_KEY"]
        names = [e["name"] for e in c["env"]]
        assert len(names) == len(set(names))


@pytest.mark.parametrize("name", ["HF_TOKEN", "WANDB_API_KEY", "DB_PASSWORD", "my_secret_thing", "AWS_ACCESS_KEY_ID", "TOKEN"])
def test_literal_value_for_a_secret_looking_name_is_refused(name):
    with pytest.raises(SpecError) as err:
        make_spec(env={name: TOKEN_VALUE})
    message = str(err.value)
    assert "\n" not in message
    assert f"kubernetes.env: {name}: looks like a secret" in message
    assert "secret_env" in message
    assert TOKEN_VALUE not in message


@pytest.mark.parametrize(
    "kubernetes, message",
    [
        ({"env": {"KUBETUNE_RUN": "x"}}, "kubernetes.env: KUBETUNE_RUN: set by kubetune itself"),
        ({"env": {"HOME": "/root"}}, "kubernetes.env: HOME: set by kubetune itself"),
        ({"env": {"1BAD": "x"}}, "is not an environment variable name"),
        ({"secret_env": {"HF_TOKEN": {"secret": "Not_A_Name", "key": "token"}}}, "kubernetes.secret_env.HF_TOKEN.secret"),
        ({"secret_env": {"HF_TOKEN": {"secret": "hf"}}}, "kubernetes.secret_env.HF_TOKEN.key: required field is missing"),
        ({"secret_env": {"HF_TOKEN": {"secret": "hf", "key": "t", "value": "x"}}}, "secret_env.HF_TOKEN.value: unknown field"),
        ({"env": {"A": "1"}, "secret_env": {"A": {"secret": "s", "key": "k"}}}, "env and secret_env both set A"),
    ],
)
def test_bad_env_is_one_line_naming_the_field(kubernetes, message):
    with pytest.raises(SpecError) as err:
        make_spec(**kubernetes)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_renderer_sets_only_variables_the_contract_reserves():
    """names.RENDERED_ENV is what the spec refuses in kubernetes.env: it must list every
    variable the renderer sets itself, or a user's variable could silently override one. The
    thread variables (names.THREAD_ENV) are the exception: a user's value replaces kubetune's
    (tests/launch/test_render_threads.py)."""
    spec = validate_spec(yaml.safe_load((REPO / "jobs" / "imdb-bert-multinode.yaml").read_text()))
    spec_gpu0 = make_spec()
    for objs in (render_objects(spec, stage="all"), render_objects(spec_gpu0, stage="all")):
        for c in containers(objs):
            own = {e["name"] for e in c["env"]}
            assert {n for n in own if not n.startswith(kn.ENV_PREFIX)} <= kn.RENDERED_ENV | set(kn.THREAD_ENV)


def test_cli_refuses_a_literal_token_with_exit_2_before_rendering(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    data = yaml.safe_load((REPO / "jobs" / "imdb-bert.yaml").read_text())
    data["kubernetes"]["env"]["HF_TOKEN"] = TOKEN_VALUE
    job.write_text(yaml.safe_dump(data))
    code = main(["render", str(job)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "kubernetes.env: HF_TOKEN" in err
    assert TOKEN_VALUE not in err


def test_shipped_job_renders_the_token_by_reference(capsys):
    assert main(["render", str(REPO / "jobs" / "imdb-bert.yaml")]) == 0
    out = capsys.readouterr().out
    objs = list(yaml.safe_load_all(out))
    for c in containers(objs):
        (token,) = [e for e in c["env"] if e["name"] == "HF_TOKEN"]
        assert token["valueFrom"]["secretKeyRef"]["name"] == "hf"


def test_local_run_takes_secret_env_from_your_environment(tmp_path):
    spec = make_spec(env={"PLAIN": "yes"}, secret_env=SECRETS)
    objs = render_objects(spec, stage="train")
    (proc,) = plan_stage(objs, "train", tmp_path / "with", environ={"HF_TOKEN": TOKEN_VALUE}, gpus=0)
    assert proc.env["HF_TOKEN"] == TOKEN_VALUE
    assert proc.env["PLAIN"] == "yes"
    assert "WANDB_API_KEY" not in proc.env  # not in your environment: not invented
    (bare,) = plan_stage(objs, "train", tmp_path / "without", environ={}, gpus=0)
    assert "HF_TOKEN" not in bare.env


def test_fake_api_server_stores_the_secret_refs_and_no_value(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN_VALUE)  # a local value must not leak into a manifest
    spec = make_spec(namespace="ml", env={"PLAIN": "yes"}, secret_env=SECRETS)
    objs = render_objects(spec, stage="train")
    assert TOKEN_VALUE not in to_yaml_stream(objs)
    with FakeKubeAPI(lifetime_s=30) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", namespace="ml")
        assert submit(connect(str(kubeconfig)), spec.name, [objs]) == 0
        (job_name,) = api.names("jobs")
        stored = api.get("jobs", job_name)
    env = {e["name"]: e for e in stored["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert env["PLAIN"]["value"] == "yes"
    assert TOKEN_VALUE not in repr(stored)
