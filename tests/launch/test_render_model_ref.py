"""`--model current|vNNNN|RUN` in the rendered evaluate and predict Jobs (issue 14, point 6):
`render`, `submit` and `run --local` carry the reference into the container's arguments the
same way, the manifests validate for every supported Kubernetes version, and a bad reference
is one `error:` line, exit 2, before anything is rendered or submitted. The evaluate entrypoint
itself (what it does with the reference) is tested in tests/e2e/test_model_ref.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fakes.k8s_fake_server import FakeKubeAPI

from helpers import run_cli
from kubetune.cli.main import main
from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_BAD_INPUT
from kubetune.contract.spec.job import validate_spec
from kubetune.launch.local.pods import plan_stage
from kubetune.launch.render import render_objects
from kubetune.launch.validate import supported_versions

PREDICT = {"input": "s3://bucket/in.jsonl", "output": "s3://bucket/out/"}


def _spec(**extra: Any):
    return validate_spec({"name": "reviews", "model": {"source": "models/m"}, "data": {"train": "d/t.tsv"},
                          "storage": {"root": "s3://bucket/prefix"}, **extra})


def _job(objs: list[dict], stage: str) -> dict:
    (job,) = [o for o in objs if o["kind"] == "Job" and o["metadata"]["labels"][kn.STAGE_LABEL] == stage]
    return job


def _command(job: dict) -> list[str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return [*container.get("command", []), *container.get("args", [])]


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("version", supported_versions())
def test_evaluate_and_predict_jobs_carry_the_reference_and_validate(version):
    spec = _spec()
    evaluate = _job(render_objects(spec, stage=kn.STAGE_EVALUATE, k8s_version=version, model="v0003"),
                    kn.STAGE_EVALUATE)
    argv = _command(evaluate)
    assert argv[argv.index(kn.EVALUATE_MODULE) - 1:][:4] == ["-m", kn.EVALUATE_MODULE, "--spec", kn.SPEC_PATH]
    assert _after(argv, "--model") == "v0003" and argv.count("--model") == 1
    predict = _job(render_objects(spec, stage=kn.STAGE_PREDICT, k8s_version=version,
                                  predict={**PREDICT, "model": "current"}), kn.STAGE_PREDICT)
    assert _after(_command(predict), "--model") == "current"
    # Without a reference, the evaluate Job scores its own run's model, as before.
    plain = _job(render_objects(spec, stage=kn.STAGE_EVALUATE, k8s_version=version), kn.STAGE_EVALUATE)
    assert "--model" not in _command(plain)


def test_the_local_process_gets_the_rendered_arguments(tmp_path):
    """`run --local` runs the rendered container command: the reference reaches the entrypoint's
    argv unchanged, also with several GPUs (evaluate stays one process)."""
    for resources in ({}, {"profile": "gpu-8"}):
        objs = render_objects(_spec(resources=resources), stage=kn.STAGE_EVALUATE, model="reviews-7")
        (proc,) = plan_stage(objs, kn.STAGE_EVALUATE, tmp_path / str(len(resources)), gpus=0)
        assert proc.argv[-2:] == ["--model", "reviews-7"]
        assert proc.argv[-2:] == _command(_job(objs, kn.STAGE_EVALUATE))[-2:]


@pytest.mark.parametrize("args, says", [
    (["render", "--stage", "evaluate", "--model", "v12x"], "--model v12x: not a version name"),
    (["render", "--stage", "evaluate", "--model", "v12"], "did you mean v0012?"),
    (["render", "--stage", "evaluate", "--model", "../other"], "--model '../other': not a model reference"),
    (["render", "--stage", "predict", "--input", "s3://b/i.tsv", "--output", "s3://b/o/", "--model", "v1x"],
     "--model v1x"),
    (["render", "--stage", "train", "--model", "v0001"], "--model belongs to --stage evaluate or predict"),
    (["render", "--model", "current"], "--model belongs to --stage evaluate or predict, not all"),
    (["run", "--local", "--stage", "evaluate", "--model", "v12x"], "--model v12x"),
    (["submit", "--stage", "evaluate", "--model", "v12x", "--kubeconfig", "/nonexistent"], "--model v12x"),
    (["submit", "--model", "v0001", "--kubeconfig", "/nonexistent"], "--model belongs to --stage evaluate"),
])
def test_a_bad_reference_is_one_line_exit_2_before_rendering(args, says, tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "reviews", "model": {"source": "models/m"}, "data": {"train": "d/t.tsv"},
                                   "storage": {"root": str(tmp_path / "store")}}))
    code = main([args[0], str(job), *args[1:]])
    out, err = capsys.readouterr()
    assert code == EXIT_BAD_INPUT
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and says in err, err
    assert not (tmp_path / "store").exists()  # nothing ran, nothing was created


def test_submit_sends_the_evaluate_job_with_the_reference(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "reviews", "model": {"source": "models/m"}, "data": {"train": "d/t.tsv"},
                                   "storage": {"root": "s3://bucket/prefix"}}))
    with FakeKubeAPI(lifetime_s=30) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", namespace="ml")
        assert main(["submit", str(job), "--stage", "evaluate", "--model", "current", "--kubeconfig", str(kubeconfig)]) == 0
        stored = api.get("jobs", "reviews-evaluate")
    assert _after(_command(stored), "--model") == "current"
    assert stored["spec"]["suspend"] is False


def test_run_local_hands_the_reference_to_the_evaluate_pod(tmp_path):
    """The whole route as a user runs it: the evaluate pod's process resolves the reference
    against the store's registry, which has no such version (exit 2, one line naming it)."""
    (tmp_path / "store" / "d").mkdir(parents=True)
    (tmp_path / "store" / "d" / "t.tsv").write_text("text\tlabel\ngood\t1\nbad\t0\n")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "reviews", "model": {"source": "models/m"},
                                   "data": {"train": "d/t.tsv", "test": "d/t.tsv"},
                                   "storage": {"root": str(tmp_path / "store")}}))
    out = run_cli("run", str(job), "--local", "--stage", "evaluate", "--model", "v0009",
                  env={kn.ENV_CACHE: str(tmp_path / "cache")}, timeout=300)
    assert out.returncode == EXIT_BAD_INPUT, out.stderr[-2000:]
    assert "no version 'v0009'" in out.stderr
