"""`run --local --container` (issue 22): the rendered pods in the image.

Planning is checked without an engine: each pod's `podman run` carries the rendered
securityContext, limits, volumes and environment, with secrets handed over by name only.
The slow tests build the CPU image (docker/build-image.sh; on a machine that reaches no image
registry its base is made from Debian's packages) and run the quickstart's pods in it against
the moto S3 server: train, stopped by SIGTERM after a checkpoint and resumed to the same
final step, then evaluate and predict; a 2-node train, one container per pod, to one model;
one scheduled retrain run to the registry's first version; and a probe in the same container
settings shows the pod's user and its read-only root filesystem. CI sets KUBETUNE_REQUIRE_CONTAINER=1, so a
missing engine fails there instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import s3fs

from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_RETRY_AFTER_CHECKPOINT
from kubetune.contract.spec.job import load_spec
from kubetune.launch.local.container import (
    ContainerError, cpu_quantity, find_engine, memory_quantity, plan_container_stage, pod_address,
)
from kubetune.launch.render import render_objects

from helpers import REPO, run_cli, succeeded
from helpers_resume import LineProcess

IMAGE = "localhost/kubetune-test:cpu"
SECRET = "do-not-print-this-secret"


def _plan(tmp_path: Path, job: str, stage: str = kn.STAGE_TRAIN, offline: bool = True, **sets):
    overrides = [f"{k}={v}" for k, v in sets.items()]
    (tmp_path / "store").mkdir(exist_ok=True)
    objs = render_objects(load_spec(REPO / "jobs" / job, overrides), stage=stage)
    environ = {"PATH": os.environ["PATH"], "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": "key-id",
               "AZURE_STORAGE_CONNECTION_STRING": f"AccountKey={SECRET}", kn.ENV_CACHE: str(tmp_path / "cache")}
    return plan_container_stage(objs, stage, tmp_path, IMAGE, "/usr/bin/podman", environ=environ,
                                mounts=[str(tmp_path / "store")], offline=offline)


def _flag(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == name]


def test_a_pod_runs_with_its_security_context_limits_and_volumes(tmp_path):
    (proc,) = _plan(tmp_path, "quickstart.yaml")
    argv = proc.argv
    assert argv[:3] == ["/usr/bin/podman", "run", "--rm"]
    assert _flag(argv, "--user") == ["10001:10001"]
    assert "--read-only" in argv and _flag(argv, "--cap-drop") == ["ALL"]
    assert _flag(argv, "--security-opt") == ["no-new-privileges"]
    assert _flag(argv, "--network") == ["none"]  # local store and model: nothing to reach
    assert float(_flag(argv, "--cpus")[0]) <= (os.cpu_count() or 1)
    assert _flag(argv, "--memory") == [f"{16 * 2**30}b"]
    volumes = _flag(argv, "-v")
    assert any(v.endswith(f":{kn.SPEC_DIR}:ro") for v in volumes), volumes
    assert any(v.endswith(":/tmp:U") for v in volumes) and any(v.endswith(f":{kn.CACHE_DIR}:U") for v in volumes)
    assert f"{tmp_path / 'store'}:{tmp_path / 'store'}:U" in volumes
    spec_file = next(Path(v.split(":")[0]) for v in volumes if v.endswith(f":{kn.SPEC_DIR}:ro"))
    assert load_spec(spec_file / "spec.yaml").name == "quickstart"
    # The image, then the rendered command, unchanged.
    assert argv[argv.index(IMAGE) + 1:][:3] == ["python", "-m", kn.TRAIN_MODULE]


def test_secrets_are_handed_over_by_name_never_by_value(tmp_path):
    (proc,) = _plan(tmp_path, "sst2-minilm.yaml", offline=False)
    env_args = _flag(proc.argv, "-e")
    assert "AWS_SECRET_ACCESS_KEY" in env_args and "AWS_ACCESS_KEY_ID" in env_args
    assert "AZURE_STORAGE_CONNECTION_STRING" in env_args  # an az:// store's credential, by name too
    assert not any(SECRET in arg for arg in proc.argv)
    assert f"{kn.ENV_POD_NAME}={proc.name}" in env_args  # a fieldRef, resolved
    assert _flag(proc.argv, "--network") == ["host"]


def test_each_node_is_a_container_meeting_at_the_rendered_rendezvous_host(tmp_path):
    """Each pod has its own host name and loopback address, as on a cluster: torchrun's agents
    tell the gang's nodes apart by name (their PIDs are all 1), and pod 0's name is the
    rendezvous endpoint."""
    procs = _plan(tmp_path, "imdb-bert-multinode.yaml", offline=False)
    assert len(procs) >= 2
    hosts = [[a.split("=", 1)[1] for a in p.argv if a.startswith("--add-host=")] for p in procs]
    endpoints = {a for p in procs for a in p.argv if a.startswith("--rdzv-endpoint=")}
    assert len(endpoints) == 1  # one rendezvous for the gang
    host = endpoints.pop().split("=", 1)[1].rsplit(":", 1)[0]
    for index, proc in enumerate(procs):
        assert _flag(proc.argv, "--network") == ["host"]
        assert [a.split("=", 1)[1] for a in proc.argv if a.startswith("--hostname=")] == [proc.name]
        # every pod's name resolves to that pod's address, the same in every container
        assert hosts[index][:len(procs)] == [f"{p.name}.{host.split('.', 1)[1]}:{pod_address(i)}"
                                           for i, p in enumerate(procs)]
        assert hosts[index][len(procs):] == [f"{proc.name}:{pod_address(index)}"]  # its own short name
    assert f"{host}:{pod_address(0)}" in hosts[1]
    assert len({pod_address(i) for i in range(len(procs))}) == len(procs)
    assert all(pod_address(i).startswith("127.") for i in range(len(procs)))  # loopback: this machine
    assert len({p.argv[p.argv.index("--name") + 1] for p in procs}) == len(procs)
    assert all("--nproc-per-node=1" in p.argv for p in procs)  # no GPU is passed into a container


def test_quantities():
    assert cpu_quantity("500m") == 0.5 and cpu_quantity("4") == 4
    assert memory_quantity("16Gi") == 16 * 2**30 and memory_quantity("512M") == 512 * 10**6


def test_no_engine_is_one_line_and_exit_2(tmp_path):
    with pytest.raises(ContainerError, match="neither podman nor docker"):
        find_engine({"PATH": str(tmp_path)})
    result = run_cli("run", "jobs/quickstart.yaml", "--local", "--container", env={"PATH": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == ["error: --container: neither podman nor docker is installed "
                                                  "(install one, or drop --container)"]


def test_container_needs_local(tmp_path):
    result = run_cli("run", "jobs/quickstart.yaml", "--container")
    assert result.returncode == 2
    assert "--container" in result.stderr and "--local" in result.stderr


# --- in the image ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> str:
    """The CPU image, built once for this module (docker/build-image.sh)."""
    engine = shutil.which("podman") or shutil.which("docker")
    if engine is None:
        if os.environ.get("KUBETUNE_REQUIRE_CONTAINER"):
            pytest.fail("KUBETUNE_REQUIRE_CONTAINER is set but neither podman nor docker is installed")
        pytest.skip("no container engine (podman or docker) installed")
    env = dict(os.environ)
    if shutil.which("mmdebstrap") and "BASE_IMAGE" not in env:
        env["DEBIAN_BASE"] = "1"  # no registry needed: the base from Debian's packages
    wheels = env.get("PIP_FIND_LINKS", "")
    if wheels and list(Path(wheels).glob("torch-*.whl")):
        env["TORCH_INDEX_URL"] = ""  # the local CPU wheel, not the PyTorch index
    build = subprocess.run(["bash", str(REPO / "docker" / "build-image.sh"), "cpu", IMAGE], env=env,
                           capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


PROBE = """
import os
def writable(path):
    try:
        with open(os.path.join(path, "probe"), "w") as handle:
            handle.write("x")
        return True
    except OSError:
        return False
print("uid", os.getuid(), "gid", os.getgid(), "root-writable", writable("/opt/kubetune"), writable("/"),
      "tmp-writable", writable("/tmp"), "cache-writable", writable("/cache"))
"""


@pytest.mark.slow
def test_the_pod_runs_as_10001_on_a_read_only_root(image, tmp_path):
    (proc,) = _plan(tmp_path, "quickstart.yaml")
    argv = proc.argv[: proc.argv.index(IMAGE) + 1] + ["python", "-c", PROBE]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["uid", "10001", "gid", "10001", "root-writable", "False", "False",
                                     "tmp-writable", "True", "cache-writable", "True"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kubetune.cli.main", *args]


@pytest.mark.slow
def test_the_quickstart_pods_run_in_the_image(image, s3_bucket, tmp_path):
    """Train (SIGTERM after a checkpoint: exit 75; the same command resumes to the final step
    an uninterrupted run reaches), evaluate and predict, each pod in the image, on moto S3."""
    from kubetune.launch.quickstart import prepare

    endpoint, bucket = s3_bucket
    root = f"s3://{bucket}/container"
    prepare(root, endpoint)
    sets = ["--set", f"storage.root={root}", "--set", f"storage.endpoint_url={endpoint}",
            "--set", "train.epochs=2", "--set", "train.checkpoint_every=4"]
    run = ["run", "jobs/quickstart.yaml", "--local", "--container", "--image", image, *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    first = LineProcess(_cli(*run, "--stage", "train"), env)
    first.wait_for(r"checkpoint committed: .*step-(\d+)", timeout=900)
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait(timeout=600) == EXIT_RETRY_AFTER_CHECKPOINT, first.output
    assert "interrupted; its checkpoint is saved" in first.output

    second = LineProcess(_cli(*run, "--stage", "train"), env)
    assert second.wait(timeout=900) == 0, second.output
    resumed = int(second.wait_for(r"resuming from .*step-(\d+)", timeout=5).group(1))
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    summary = json.loads(fs.cat(f"{bucket}/container/runs/quickstart/metrics/summary.json"))
    # 360 rows / 16 a batch: 23 steps an epoch. Two epochs, so that the SIGTERM sent at the first
    # committed checkpoint (uploads are asynchronous) lands before the loop's end on a busy machine
    # (with one epoch, CI once saw it land after step 23, and the resume had nothing left to train).
    assert 0 < resumed < summary["global_step"] == 46
    assert fs.exists(f"{bucket}/container/runs/quickstart/model/COMMITTED")

    evaluate = succeeded(subprocess.run(_cli(*run, "--stage", "evaluate"), env=env, capture_output=True,
                                        text=True, timeout=900, cwd=REPO))
    metrics = json.loads(fs.cat(f"{bucket}/container/runs/quickstart/eval/metrics.json"))
    assert metrics["accuracy"] > 0.9, (metrics, evaluate.stdout[-2000:])

    output = f"s3://{bucket}/container/predictions"
    succeeded(subprocess.run(_cli(*run, "--stage", "predict", "--input", f"{root}/datasets/quickstart/test.tsv",
                                  "--output", output), env=env, capture_output=True, text=True, timeout=900, cwd=REPO))
    rows = [json.loads(line) for part in fs.glob(f"{bucket}/container/predictions/*.jsonl")
            for line in fs.cat(part).decode().splitlines()]
    assert len(rows) == 100


def test_a_retrain_run_is_planned_as_the_scheduled_pod_in_the_image(tmp_path):
    """`retrain --local --container`: the CronJob's pod (the retrain entrypoint) in the image."""
    from kubetune.launch.local.retrain import LOCAL_SCHEDULE, scheduled_job

    spec = load_spec(REPO / "jobs" / "quickstart.yaml")
    objs = scheduled_job(render_objects(spec, stage=kn.STAGE_TRAIN, schedule=LOCAL_SCHEDULE), 1_700_000_000)
    (proc,) = plan_container_stage(objs, kn.STAGE_TRAIN, tmp_path, IMAGE, "/usr/bin/podman",
                                   environ={"PATH": os.environ["PATH"], kn.ENV_CACHE: str(tmp_path / "c")})
    command = proc.argv[proc.argv.index(IMAGE) + 1:]
    assert command[:3] == ["python", "-m", kn.RETRAIN_MODULE]
    assert _flag(proc.argv, "--user") == ["10001:10001"] and "--read-only" in proc.argv


def test_retrain_without_an_engine_is_one_line_and_exit_2(tmp_path):
    result = run_cli("retrain", "jobs/quickstart.yaml", "--local", "--container", env={"PATH": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == ["error: --container: neither podman nor docker is installed "
                                                  "(install one, or drop --container)"]


@pytest.mark.slow
def test_a_two_node_gang_trains_in_containers(image, tmp_path):
    """`--set resources.nodes=2`: one container per pod, their torchrun agents meeting at the
    rendered c10d rendezvous (pod 0's name), gloo between the two containers; one model."""
    from kubetune.launch.quickstart import prepare

    store = tmp_path / "store"
    prepare(str(store))
    started = time.monotonic()
    result = succeeded(subprocess.run(
        _cli("run", "jobs/quickstart.yaml", "--local", "--container", "--image", image, "--stage", "train",
             "--set", "resources.nodes=2", "--set", f"storage.root={store}", "--set", "train.epochs=1"),
        env={**os.environ, "OMP_NUM_THREADS": "1", kn.ENV_CACHE: str(tmp_path / "cache")},
        capture_output=True, text=True, timeout=900, cwd=REPO))
    print(f"2-node train in containers: {time.monotonic() - started:.1f} s wall")
    assert "[quickstart-train-0]" in result.stdout
    assert "world size 2" in result.stdout  # both pods' processes joined one process group
    run = store / "runs" / "quickstart"
    summary = json.loads((run / "metrics" / "summary.json").read_text())
    assert summary["global_step"] == 12  # 360 rows / (16 a process x 2): one process would take 23
    assert (run / "model" / "COMMITTED").exists() and (run / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_a_retrain_run_in_the_image_promotes_its_model(image, tmp_path):
    """`retrain --local --container`: the scheduled pod (the retrain entrypoint) in the image
    trains a candidate, evaluates it and promotes it as the registry's first version."""
    from kubetune.launch.quickstart import prepare

    store = tmp_path / "store"
    prepare(str(store))
    result = succeeded(subprocess.run(
        _cli("retrain", "jobs/quickstart.yaml", "--local", "--container", "--image", image,
             "--set", f"storage.root={store}", "--set", "train.max_steps=4"),
        env={**os.environ, "OMP_NUM_THREADS": "1", kn.ENV_CACHE: str(tmp_path / "cache")},
        capture_output=True, text=True, timeout=900, cwd=REPO))
    run = [line.split()[-1] for line in result.stdout.splitlines() if line.startswith("run:")][-1]
    assert run.startswith("quickstart-train-")  # named as the CronJob controller names its Jobs
    assert "promotion: promoted v0001" in result.stdout, result.stdout[-3000:]
    assert (store / "runs" / run / "model" / "COMMITTED").exists()
    assert json.loads((store / "runs" / run / "eval" / "metrics.json").read_text())["num_samples"] == 100
    assert json.loads((store / "registry" / "quickstart" / "CURRENT").read_text())["version"] == "v0001"
