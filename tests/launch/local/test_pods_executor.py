"""The local executor runs the rendered pods as processes: planning (commands, environment,
volumes, rendezvous), gang behaviour, two real torch.distributed ranks through the rendered
torchrun command, and a 2-node SST-2 run to the end-to-end quality bar."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kubetune.contract import names as kn
from kubetune.launch.local.pods import LocalProcess, expand_references, plan_stage, run_local, run_processes
from kubetune.launch.render import render_objects
from kubetune.contract.spec.job import validate_spec

REPO = Path(__file__).resolve().parents[3]


def make_spec(**sections):
    data = {
        "name": "demo",
        "model": {"source": "models/m"},
        "data": {"train": "datasets/t.tsv"},
        "storage": {"root": "s3://bucket/prefix"},
        **sections,
    }
    return validate_spec(data)


def arg(argv: list[str], key: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(key + "="))


@pytest.mark.parametrize("cache", [{}, {"cache_pvc": "hf-cache"}], ids=["emptyDir", "pvc"])
def test_local_processes_and_pods_agree_on_the_cache(tmp_path, monkeypatch, cache):
    """A pod's cache variable names its mounted cache volume; the local process's names the
    local counterpart of that volume: one real folder, kept across runs and stages (your own
    if you set the variable), never a per-stage temporary folder or a path inside a pod."""
    spec = make_spec(kubernetes=cache)
    monkeypatch.delenv(kn.ENV_CACHE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for stage in ("train", "evaluate"):
        objs = render_objects(spec, stage=stage)
        pod = next(o for o in objs if o["kind"] == "Job")["spec"]["template"]["spec"]
        pod_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        cache_mount = next(m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if m["name"] == "cache")
        assert pod_env[kn.ENV_CACHE] == cache_mount
        (proc,) = plan_stage(objs, stage, tmp_path / stage, gpus=0)
        assert proc.env[kn.ENV_CACHE] == str(tmp_path / "xdg" / "kubetune")
        assert Path(proc.env[kn.ENV_CACHE]).is_dir()
        # Scratch stays a per-pod temporary folder, as the emptyDir it stands for.
        assert proc.env[kn.ENV_WORKDIR].startswith(str(tmp_path / stage))
    monkeypatch.setenv(kn.ENV_CACHE, str(tmp_path / "mine"))
    (proc,) = plan_stage(render_objects(spec, stage="train"), "train", tmp_path / "again", gpus=0)
    assert proc.env[kn.ENV_CACHE] == str(tmp_path / "mine")


def test_two_nodes_become_two_processes_with_a_local_rendezvous(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "mine")
    monkeypatch.delenv("AWS_SHARED_CREDENTIALS_FILE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    spec = make_spec(resources={"nodes": 2})
    procs = plan_stage(render_objects(spec, stage="train"), "train", tmp_path, gpus=0)
    assert [p.name for p in procs] == ["demo-train-0", "demo-train-1"]
    ports = set()
    for index, proc in enumerate(procs):
        argv = proc.argv
        assert argv[:3] == [sys.executable, "-m", kn.DISTRUN_MODULE]
        # The c10d rendezvous of the rendered command, at rank 0's pod, here on this machine.
        assert arg(argv, "--rdzv-backend") == "c10d"
        host, port = arg(argv, "--rdzv-endpoint").split(":")
        assert host == "127.0.0.1" and int(port) != 29500
        assert arg(argv, "--max-restarts") == "3"
        assert arg(argv, "--nproc-per-node") == "1"
        ports.add(port)
        spec_file = Path(argv[-1])
        assert argv[-2] == "--spec" and spec_file.is_file()  # the ConfigMap, materialised
        assert validate_spec(yaml.safe_load(spec_file.read_text())) == spec
        env = proc.env
        assert env["JOB_COMPLETION_INDEX"] == str(index)
        assert env["KUBETUNE_JOB_NAME"] == "demo-train"
        assert env["AWS_ACCESS_KEY_ID"] == "mine"  # credentials: the user's own environment
        assert "AWS_SHARED_CREDENTIALS_FILE" not in env  # the Secret is not materialised
        assert not env.get("HF_HOME", "").startswith("/cache")  # the user's caches apply
        assert Path(env["TMPDIR"]).is_dir() and str(tmp_path) in env["TMPDIR"]
        assert env["CUDA_VISIBLE_DEVICES"] == ""
        assert int(env["OMP_NUM_THREADS"]) >= 1
        assert proc.cwd == str(Path.cwd())
    assert len(ports) == 1  # one shared rendezvous port for the gang


def test_local_gpus_are_split_between_pods(tmp_path):
    objs = render_objects(make_spec(resources={"profile": "gpu-8", "nodes": 2}), stage="train")
    procs = plan_stage(objs, "train", tmp_path, gpus=4)
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in procs] == ["0,1", "2,3"]
    assert [arg(p.argv, "--nproc-per-node") for p in procs] == ["2", "2"]
    cpu_only = plan_stage(objs, "train", tmp_path / "cpu", gpus=0)
    assert [arg(p.argv, "--nproc-per-node") for p in cpu_only] == ["1", "1"]
    assert all(p.env["CUDA_VISIBLE_DEVICES"] == "" for p in cpu_only)


def test_single_node_runs_the_entrypoint_directly(tmp_path):
    spec = make_spec()
    (proc,) = plan_stage(render_objects(spec, stage="evaluate"), "evaluate", tmp_path, gpus=0)
    assert proc.argv[:4] == [sys.executable, "-m", kn.EVALUATE_MODULE, "--spec"]
    assert Path(proc.argv[4]).read_text() == spec.to_yaml()
    assert "JOB_COMPLETION_INDEX" not in proc.env


def test_credentials_file_from_the_users_environment_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/home/me/.aws/credentials")
    (proc,) = plan_stage(render_objects(make_spec(), stage="train"), "train", tmp_path, gpus=0)
    assert proc.env["AWS_SHARED_CREDENTIALS_FILE"] == "/home/me/.aws/credentials"


def test_kubernetes_variable_expansion():
    env = {"A": "1", "B": "two"}
    assert expand_references("--rank=$(A)", env) == "--rank=1"
    assert expand_references("$(B)-$(A)", env) == "two-1"
    assert expand_references("$$(A)", env) == "$(A)"  # escaped
    assert expand_references("$(UNKNOWN)", env) == "$(UNKNOWN)"  # left as written


def test_a_failed_process_stops_its_gang(tmp_path):
    procs = [
        LocalProcess("a", [sys.executable, "-c", "import time; time.sleep(0.5); raise SystemExit(3)"], {}, str(tmp_path)),
        LocalProcess("b", [sys.executable, "-c", "import time; time.sleep(120)"], {}, str(tmp_path)),
    ]
    start = time.monotonic()
    assert run_processes(procs) == 3
    assert time.monotonic() - start < 60


def test_a_gang_that_succeeds_returns_0(tmp_path, capfd):
    procs = [LocalProcess(n, [sys.executable, "-c", f"print('hello from {n}')"], {}, str(tmp_path)) for n in ("p0", "p1")]
    assert run_processes(procs) == 0
    out = capfd.readouterr().out
    assert "[p0] hello from p0" in out and "[p1] hello from p1" in out


FAKE_TRAIN = """
import argparse, json, os, pathlib, yaml
import torch, torch.distributed as dist
parser = argparse.ArgumentParser(); parser.add_argument("--spec"); args = parser.parse_args()
name = yaml.safe_load(open(args.spec))["name"]
dist.init_process_group("gloo")
t = torch.tensor([dist.get_rank() + 1.0]); dist.all_reduce(t)
out = pathlib.Path(os.environ["FAKE_OUT"]) / f"rank{dist.get_rank()}.json"
out.write_text(json.dumps({"name": name, "world": dist.get_world_size(), "sum": t.item(),
                           "node": os.environ["GROUP_RANK"]}))
dist.destroy_process_group()
"""


@pytest.mark.slow  # waits on real processes, timeouts or leases: keeps `-m "not slow"` under 5 minutes
def test_two_ranks_rendezvous_through_the_rendered_torchrun_command(tmp_path, monkeypatch):
    """The real command of a 2-node pod (kubetune.distrun = torchrun), with only the training
    module swapped for a tiny gloo all-reduce."""
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{REPO / 'src'}")
    monkeypatch.setenv("FAKE_OUT", str(tmp_path))
    spec = make_spec(resources={"nodes": 2})
    procs = plan_stage(render_objects(spec, stage="train"), "train", tmp_path / "pods", gpus=0)
    for proc in procs:
        proc.argv = [("fake_train" if a == kn.TRAIN_MODULE else a) for a in proc.argv]
    assert run_processes(procs) == 0
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in results] == [2, 2]
    assert [r["sum"] for r in results] == [3.0, 3.0]  # one all-reduce across both processes
    assert sorted(r["node"] for r in results) == ["0", "1"]
    assert {r["name"] for r in results} == {"demo"}


def test_run_local_stops_at_bad_input_with_exit_code_2(tmp_path, capsys):
    spec = make_spec(storage={"root": str(tmp_path / "store")}, data={"train": str(tmp_path / "missing.tsv")})
    assert run_local(spec, stage="train") == 2
    assert "train failed with exit code 2" in capsys.readouterr().err


def test_cli_run_local_renders_then_runs(tmp_path):
    """`kubetune run --local` goes through the renderer: a schema-invalid spec fails before any
    process starts."""
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "name": "demo",
                "model": {"source": "m"},
                "data": {"train": "t.tsv"},
                "kubernetes": {"tolerations": [{"bogus": 1}]},
            }
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "kubetune.cli.main", "run", str(job), "--local"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "tolerations" in out.stderr


@pytest.mark.parametrize(("code", "said"), [
    (75, "train interrupted; its checkpoint is saved"),
    (76, "train interrupted; nothing new was saved"),
    (73, "train failed with exit code 73: the store is full"),
])
def test_the_launchers_line_follows_the_pods_exit_code(tmp_path, capfd, code, said):
    """Issue 23, point 4: `saved` only when the pod said so (75); a pod that saved nothing new
    (76) or found the store full (73) is reported as such, with its own code."""
    def plan(objs, stage, tmp):
        return [LocalProcess("train", [sys.executable, "-c", f"raise SystemExit({code})"], {}, str(tmp_path))]

    assert run_local(make_spec(), kn.STAGE_TRAIN, plan=plan) == code
    err = capfd.readouterr().err
    assert said in err
    assert (code == 75) == ("saved:" in err or "is saved" in err)


def test_after_a_forwarded_sigterm_the_gang_says_what_its_pods_said():
    from kubetune.launch.local.gang import _after_stop

    assert _after_stop([75, 76], 15) == 75  # rank 0 committed; the others cannot know
    assert _after_stop([76, 76], 15) == 76
    assert _after_stop([73, -15], 15) == 73
    assert _after_stop([-15], 15) == 143


def test_an_elastic_gang_runs_torchrun_with_its_node_range(tmp_path):
    """Issue 24: `resources.nodes: {min, max}` runs `--nnodes=MIN:MAX`, one process per pod of the range's max."""
    spec = make_spec(resources={"nodes": {"min": 1, "max": 2}})
    procs = plan_stage(render_objects(spec, stage="train"), "train", tmp_path, gpus=0)
    assert [arg(p.argv, "--nnodes") for p in procs] == ["1:2", "1:2"]
    fixed = plan_stage(render_objects(make_spec(resources={"nodes": 2}), stage="train"), "train", tmp_path / "f", gpus=0)
    assert [arg(p.argv, "--nnodes") for p in fixed] == ["2", "2"]
