"""Rendering a job spec into Kubernetes objects: structure, security, scheduling, errors."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from kubetune.cli.main import main
from kubetune.contract import names as kn
from kubetune.contract.exitcodes import (EXIT_BAD_INPUT, EXIT_INTERRUPTED_UNSAVED, EXIT_NO_SPACE,
                                        EXIT_RETRY_AFTER_CHECKPOINT, EXIT_STORE_UNAVAILABLE)
from kubetune.contract.names import SPEC_PATH
from kubetune.launch.render import (
    RenderError,
    names,
    render_objects,
    to_yaml_stream,
    validate_schedule,
)
from kubetune.launch.validate import ValidationError, normalize_version, supported_versions
from kubetune.contract.spec.job import SpecError, validate_spec

BASE: dict[str, Any] = {
    "name": "demo",
    "model": {"source": "models/all-MiniLM-L6-v2"},
    "data": {"train": "datasets/sst2/train.tsv"},
    "storage": {"root": "s3://bucket/prefix"},
}


def make_spec(**sections: Any):
    data = {**BASE}
    for key, value in sections.items():
        data[key] = value
    return validate_spec(data)


def by_kind(objs: list[dict], kind: str, stage: str | None = None) -> list[dict]:
    return [
        o
        for o in objs
        if o["kind"] == kind and (stage is None or o["metadata"]["labels"].get("kubetune.io/stage") == stage)
    ]


def one(objs: list[dict], kind: str, stage: str | None = None) -> dict:
    found = [o for o in by_kind(objs, kind, stage) if not o["metadata"]["name"].endswith("-progress")]
    assert len(found) == 1, [o["kind"] for o in objs]
    return found[0]


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


# -- single node ---------------------------------------------------------------------------------


def test_single_node_objects_and_names():
    objs = render_objects(make_spec())
    assert [o["kind"] for o in objs] == ["ConfigMap", "NetworkPolicy", "ServiceAccount", "ConfigMap", "Role", "RoleBinding", "Job", "Job"]
    n = names(make_spec())
    assert (n.configmap, n.train, n.evaluate, n.service) == ("demo-spec", "demo-train", "demo-evaluate", "demo-workers")
    train = one(objs, "Job", "train")
    assert train["metadata"]["name"] == "demo-train"
    assert "completionMode" not in train["spec"]
    assert train["spec"]["completions"] == train["spec"]["parallelism"] == 1
    assert container(train)["command"] == ["python", "-m", kn.TRAIN_MODULE, "--spec", SPEC_PATH]
    assert not by_kind(objs, "Service")


def test_configmap_carries_the_resolved_spec_mounted_at_spec_path():
    spec = make_spec(resources={"profile": "gpu-1"})
    objs = render_objects(spec)
    cm = one(objs, "ConfigMap")
    embedded = yaml.safe_load(cm["data"]["spec.yaml"])
    assert embedded["resources"]["gpus_per_node"] == 1  # resolved from the profile
    assert validate_spec(embedded) == spec
    pod = one(objs, "Job", "train")["spec"]["template"]["spec"]
    spec_volume = next(v for v in pod["volumes"] if v["name"] == "spec")
    assert spec_volume["configMap"]["name"] == cm["metadata"]["name"]
    mount = next(m for m in container(one(objs, "Job", "train"))["volumeMounts"] if m["name"] == "spec")
    assert SPEC_PATH == f"{mount['mountPath']}/{spec_volume['configMap']['items'][0]['path']}"
    assert mount["readOnly"] is True


def test_labels_on_every_object():
    objs = render_objects(make_spec(kubernetes={"labels": {"team": "nlp"}}))
    for obj in objs:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "kubetune"
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "kubetune"
        assert labels["kubetune.io/job"] == "demo"
        assert labels["team"] == "nlp"
    for job in by_kind(objs, "Job"):
        assert job["spec"]["template"]["metadata"]["labels"]["kubetune.io/job"] == "demo"


def test_evaluate_job_runs_the_evaluate_entrypoint_and_is_parked_in_stage_all():
    spec = make_spec(kubernetes={"queue": "team-a"})
    parked = one(render_objects(spec, stage="all"), "Job", "evaluate")
    assert container(parked)["command"] == ["python", "-m", kn.EVALUATE_MODULE, "--spec", SPEC_PATH]
    assert parked["spec"]["suspend"] is True
    assert "kueue.x-k8s.io/queue-name" not in parked["metadata"]["labels"]  # Kueue would unsuspend it
    released = one(render_objects(spec, stage="evaluate"), "Job", "evaluate")
    assert released["spec"]["suspend"] is False
    assert released["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert released["spec"]["template"] == parked["spec"]["template"]  # apply may only flip suspend


def test_stages_select_objects():
    spec = make_spec(resources={"nodes": 2})
    train = render_objects(spec, stage="train")
    assert [o["kind"] for o in train] == ["ConfigMap", "NetworkPolicy", "ServiceAccount", "ConfigMap", "Role", "RoleBinding", "Service", "Job"]
    evaluate = render_objects(spec, stage="evaluate")
    assert [o["kind"] for o in evaluate] == ["ConfigMap", "NetworkPolicy", "Job"]
    assert one(evaluate, "Job")["spec"]["completions"] == 1


def test_queue_label_on_train_job():
    job = one(render_objects(make_spec(kubernetes={"queue": "team-a"})), "Job", "train")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    no_queue = one(render_objects(make_spec()), "Job", "train")
    assert "kueue.x-k8s.io/queue-name" not in no_queue["metadata"]["labels"]


# -- multi node ----------------------------------------------------------------------------------


def test_multi_node_indexed_job_with_headless_service_and_torchrun():
    spec = make_spec(resources={"profile": "gpu-8x4"}, kubernetes={"rendezvous_port": 29400})
    objs = render_objects(spec, stage="train")
    job = one(objs, "Job", "train")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    svc = one(objs, "Service")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    pod = job["spec"]["template"]
    assert pod["spec"]["subdomain"] == svc["metadata"]["name"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())
    command = container(job)["command"]
    assert command[:3] == ["python", "-m", kn.DISTRUN_MODULE]
    assert "--nnodes=4" in command
    assert "--nproc-per-node=8" in command
    # Whole-gang recovery: torchrun's elastic agents in a c10d rendezvous hosted by rank 0's pod,
    # restarting the gang train.max_restarts times; the Trainer's collectives time out early.
    assert "--rdzv-backend=c10d" in command
    assert f"--rdzv-endpoint=demo-train-0.{svc['metadata']['name']}:29400" in command
    assert "--rdzv-id=demo-train" in command
    assert "--max-restarts=3" in command
    assert not any(a.startswith(("--master-addr", "--node-rank")) for a in command)
    restarts = one(render_objects(make_spec(resources={"nodes": 2}, train={"max_restarts": 7}), stage="train"), "Job", "train")
    assert "--max-restarts=7" in container(restarts)["command"]
    assert command[-4:] == ["-m", kn.TRAIN_MODULE, "--spec", SPEC_PATH]
    assert job["spec"]["backoffLimit"] == 3 * 4  # retries budgeted per gang
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == 8


def test_single_node_multi_gpu_uses_standalone_torchrun():
    job = one(render_objects(make_spec(resources={"profile": "gpu-8"})), "Job", "train")
    command = container(job)["command"]
    assert command[:4] == ["python", "-m", kn.DISTRUN_MODULE, "--standalone"]
    assert "--nproc-per-node=8" in command
    assert "completionMode" not in job["spec"]


def test_cpu_nodes_run_one_process_each():
    job = one(render_objects(make_spec(resources={"nodes": 3})), "Job", "train")
    assert "--nproc-per-node=1" in container(job)["command"]
    assert "nvidia.com/gpu" not in container(job)["resources"]["limits"]


def test_service_name_is_a_dns_1035_label_for_names_starting_with_a_digit():
    spec = make_spec(name="7b-tune", resources={"nodes": 2})
    svc = one(render_objects(spec, stage="train"), "Service")
    assert svc["metadata"]["name"][0].isalpha()


# -- resources and profiles ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "nodes", "gpus", "cpu", "memory"),
    [("cpu", 1, 0, "4", "16Gi"), ("gpu-1", 1, 1, "8", "48Gi"), ("gpu-8", 1, 8, "64", "480Gi"), ("gpu-8x4", 4, 8, "64", "480Gi")],
)
def test_profiles(profile, nodes, gpus, cpu, memory):
    spec = make_spec(resources={"profile": profile})
    assert (spec.resources.nodes, spec.resources.gpus_per_node) == (nodes, gpus)
    job = one(render_objects(spec, stage="train"), "Job", "train")
    res = container(job)["resources"]
    assert res["requests"]["cpu"] == res["limits"]["cpu"] == cpu
    assert res["requests"]["memory"] == res["limits"]["memory"] == memory
    assert res["limits"].get("nvidia.com/gpu", 0) == gpus


def test_profile_fields_are_overridable():
    spec = make_spec(resources={"profile": "gpu-8x4", "nodes": 2, "memory": "900Gi"})
    assert (spec.resources.nodes, spec.resources.gpus_per_node, spec.resources.memory) == (2, 8, "900Gi")
    job = one(render_objects(spec, stage="train"), "Job", "train")
    assert job["spec"]["completions"] == 2
    assert container(job)["resources"]["limits"]["memory"] == "900Gi"


def test_unknown_profile_is_a_one_line_error():
    with pytest.raises(SpecError, match=r"resources\.profile: unknown profile 'gpu-9'"):
        make_spec(resources={"profile": "gpu-9"})


def test_evaluate_uses_one_gpu():
    objs = render_objects(make_spec(resources={"profile": "gpu-8x4"}))
    res = container(one(objs, "Job", "evaluate"))["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 1
    assert res["limits"]["cpu"] == "8"


def test_gpu_pods_tolerate_the_gpu_taint_and_get_a_large_shm():
    job = one(render_objects(make_spec(resources={"profile": "gpu-8"})), "Job", "train")
    pod = job["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in container(job)["volumeMounts"]


# -- pod spec: security, credentials, scheduling -------------------------------------------------


def test_restricted_security_context():
    job = one(render_objects(make_spec()), "Job", "train")
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = container(job)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsUser"] >= 10000
    # every place a library writes is a writable emptyDir
    writable = {m["mountPath"] for m in container(job)["volumeMounts"] if not m.get("readOnly")}
    assert {"/tmp", "/cache", "/dev/shm"} <= writable
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert env["HOME"] == "/tmp" and env["HF_HOME"].startswith("/cache/")


@pytest.mark.parametrize("cache", [{}, {"cache_pvc": "hf-cache"}], ids=["emptyDir", "pvc"])
def test_entrypoint_folders_are_the_cache_and_scratch_volumes(cache):
    """The entrypoints keep models and tokenized data under the cache variable and Trainer output
    under the workdir variable: both must point at the volumes mounted for them, in every pod."""
    spec = make_spec(kubernetes=cache, resources={"nodes": 2})
    objs = render_objects(spec, stage="all") + render_objects(spec, stage="train", schedule="@daily")
    pods = [o["spec"]["template"] if o["kind"] == "Job" else o["spec"]["jobTemplate"]["spec"]["template"]
            for o in objs if o["kind"] in ("Job", "CronJob")]
    assert len(pods) == 3
    for pod in pods:
        c = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert env[kn.ENV_CACHE] == mounts["cache"] == kn.CACHE_DIR
        assert env[kn.ENV_WORKDIR] == mounts["scratch"] == kn.SCRATCH_DIR
        claim = volumes["cache"].get("persistentVolumeClaim", {}).get("claimName")
        assert claim == cache.get("cache_pvc")


def test_credentials_come_from_a_secret_file_never_inline():
    job = one(render_objects(make_spec(kubernetes={"storage_secret": "s3-creds"})), "Job", "train")
    pod = job["spec"]["template"]["spec"]
    secret = next(v for v in pod["volumes"] if "secret" in v)
    assert secret["secret"]["secretName"] == "s3-creds"
    mount = next(m for m in container(job)["volumeMounts"] if m["name"] == secret["name"])
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == f"{mount['mountPath']}/credentials"
    assert mount["readOnly"] is True
    assert not any(e["name"].startswith("AWS_ACCESS") or e["name"].startswith("AWS_SECRET") for e in container(job)["env"])
    assert "envFrom" not in container(job)


def test_credentials_as_env_from_secret_and_none():
    job = one(render_objects(make_spec(kubernetes={"storage_credentials": "env"})), "Job", "train")
    assert container(job)["envFrom"] == [{"secretRef": {"name": "kubetune-storage"}}]
    assert "AWS_SHARED_CREDENTIALS_FILE" not in {e["name"] for e in container(job)["env"]}
    bare = one(render_objects(make_spec(kubernetes={"storage_secret": None})), "Job", "train")
    assert not any("secret" in v for v in bare["spec"]["template"]["spec"]["volumes"])
    assert "envFrom" not in container(bare)


def test_scheduling_fields():
    spec = make_spec(
        kubernetes={
            "namespace": "ml",
            "service_account": "trainer",
            "priority_class": "batch-high",
            "node_selector": {"pool": "a100"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
                    }
                }
            },
            "image_pull_secrets": ["regcred"],
            "image_pull_policy": "IfNotPresent",
            "cache_pvc": "hf-cache",
            "annotations": {"example.com/cost-center": "42"},
        }
    )
    objs = render_objects(spec)
    assert all(o["metadata"]["namespace"] == "ml" for o in objs)
    job = one(objs, "Job", "train")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer"
    assert pod["priorityClassName"] == "batch-high"
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["affinity"]["nodeAffinity"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert container(job)["imagePullPolicy"] == "IfNotPresent"
    cache = next(v for v in pod["volumes"] if v["name"] == "cache")
    assert cache["persistentVolumeClaim"] == {"claimName": "hf-cache"}
    assert job["spec"]["template"]["metadata"]["annotations"]["example.com/cost-center"] == "42"


def test_job_lifecycle_and_pod_failure_policy():
    spec = make_spec(
        kubernetes={
            "active_deadline_seconds": 7200,
            "ttl_seconds_after_finished": 60,
            "termination_grace_period_seconds": 600,
            "backoff_limit": 2,
        }
    )
    job = one(render_objects(spec), "Job", "train")
    body = job["spec"]
    assert body["activeDeadlineSeconds"] == 7200
    assert body["ttlSecondsAfterFinished"] == 60
    assert body["backoffLimit"] == 2
    assert body["template"]["spec"]["terminationGracePeriodSeconds"] == 600
    assert body["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy
    rules = body["podFailurePolicy"]["rules"]
    disruption = [r for r in rules if "onPodConditions" in r]
    assert disruption[0]["action"] == "Ignore"
    assert disruption[0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    by_code = {code: r["action"] for r in rules if "onExitCodes" in r for code in r["onExitCodes"]["values"]}
    # A full store fails the Job like bad input (a retry loops on the same full volume); "interrupted,
    # nothing new saved" and a lost lease are not listed: retried, counted against backoffLimit.
    assert by_code == {EXIT_BAD_INPUT: "FailJob", EXIT_NO_SPACE: "FailJob", EXIT_RETRY_AFTER_CHECKPOINT: "Ignore"}
    assert EXIT_INTERRUPTED_UNSAVED not in by_code and EXIT_STORE_UNAVAILABLE not in by_code
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert int(env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]) < 600  # torchrun lets workers checkpoint


# -- network policy ------------------------------------------------------------------------------


def test_network_policy_ingress_only_from_the_job_and_open_egress_by_default():
    policy = one(render_objects(make_spec()), "NetworkPolicy")["spec"]
    assert policy["podSelector"] == {"matchLabels": {"kubetune.io/job": "demo"}}
    assert policy["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"kubetune.io/job": "demo"}}}]}]
    assert policy["egress"] == [{}]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}


def test_network_policy_restricted_egress():
    spec = make_spec(kubernetes={"egress": [{"cidr": "10.1.2.3/32", "ports": [9000]}, {"cidr": "192.168.0.0/16"}]})
    egress = one(render_objects(spec), "NetworkPolicy")["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"protocol": "TCP", "port": 9000}]} in egress
    assert {"to": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]} in egress
    assert {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]} in egress  # DNS
    assert {"to": [{"podSelector": {"matchLabels": {"kubetune.io/job": "demo"}}}]} in egress
    assert {} not in egress


def test_network_policy_can_be_left_out():
    assert not by_kind(render_objects(make_spec(kubernetes={"network_policy": False})), "NetworkPolicy")


# -- schedule ------------------------------------------------------------------------------------


def test_schedule_renders_a_cronjob_forbidding_overlap():
    spec = make_spec(resources={"nodes": 2}, kubernetes={"queue": "q"})
    objs = render_objects(spec, schedule="0 3 * * 0")
    assert not by_kind(objs, "Job")
    cron = one(objs, "CronJob")
    assert cron["spec"]["schedule"] == "0 3 * * 0"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    template = cron["spec"]["jobTemplate"]
    assert template["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q"
    assert template["spec"]["completionMode"] == "Indexed"
    command = template["spec"]["template"]["spec"]["containers"][0]["command"]
    # the Jobs a CronJob creates get generated names: rank 0 is found through the pod's own Job name
    assert "--rdzv-endpoint=$(KUBETUNE_JOB_NAME)-0.demo-workers:29500" in command
    assert "--rdzv-id=$(KUBETUNE_JOB_NAME)" in command
    assert one(objs, "Service")["metadata"]["name"] == "demo-workers"


@pytest.mark.parametrize("schedule", ["0 3 * * 0", "*/15 * * * *", "0 0 1 jan,jul *", "30 2 * * mon-fri", "@daily"])
def test_valid_schedules(schedule):
    assert validate_schedule(schedule) == schedule


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0 3 * *", "expected 5 fields"),
        ("0 24 * * *", "bad hour field"),
        ("61 * * * *", "bad minute field"),
        ("* * 0 * *", "bad day of month field"),
        ("* * * 13 *", "bad month field"),
        ("* * * * 8", "bad day of week field"),
        ("*/0 * * * *", "bad minute field"),
        ("5-1 * * * *", "bad minute field"),
        ("TZ=UTC 0 3 * * 0", "time zones"),
        ("every sunday", "expected 5 fields"),
    ],
)
def test_bad_schedules(schedule, message):
    with pytest.raises(SpecError, match=message):
        validate_schedule(schedule)


def test_schedule_with_evaluate_stage_is_refused():
    with pytest.raises(RenderError, match="--schedule"):
        render_objects(make_spec(), stage="evaluate", schedule="0 3 * * 0")


# -- versions and schema validation ---------------------------------------------------------------


def test_supported_versions_span_1_29_to_the_newest_shipped():
    from kubernetes_validate.utils import latest_version

    versions = supported_versions()
    assert versions[0] == "1.29"
    assert versions[-1] == ".".join(latest_version().split(".")[:2])
    assert len(versions) >= 9  # 1.29 .. 1.37 with kubernetes-validate 1.37


@pytest.mark.parametrize(("given", "expected"), [("1.31", "1.31"), ("v1.30", "1.30"), ("1.29.7", "1.29")])
def test_version_forms(given, expected):
    assert normalize_version(given) == expected


@pytest.mark.parametrize(("given", "message"), [("1.20", "unsupported"), ("9.99", "unsupported"), ("latest", "MAJOR.MINOR")])
def test_bad_versions(given, message):
    with pytest.raises(SpecError, match=message):
        render_objects(make_spec(), k8s_version=given)


def test_schema_validation_names_the_bad_field():
    spec = make_spec(kubernetes={"tolerations": [{"key": "x", "operater": "Exists"}]})
    with pytest.raises(ValidationError, match=r"Job/demo-train: spec\.template\.spec\.tolerations\.0") as info:
        render_objects(spec)
    assert "\n" not in str(info.value)


def test_yaml_stream_round_trips():
    objs = render_objects(make_spec(resources={"nodes": 2}))
    text = to_yaml_stream(objs)
    assert text.startswith("---\n")
    assert list(yaml.safe_load_all(text)) == objs
    assert "spec.yaml: |" in text  # the embedded spec stays readable


# -- command line ----------------------------------------------------------------------------------


def write_job(tmp_path, **sections):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**BASE, **sections}))
    return path


def test_cli_render_prints_a_stream(tmp_path, capsys):
    job = write_job(tmp_path)
    assert main(["render", str(job), "--stage", "train", "--set", "resources.nodes=2", "--k8s-version", "1.33"]) == 0
    out, err = capsys.readouterr()
    kinds = [o["kind"] for o in yaml.safe_load_all(out)]
    assert kinds == ["ConfigMap", "NetworkPolicy", "ServiceAccount", "ConfigMap", "Role", "RoleBinding", "Service", "Job"]
    assert "warning" not in err  # s3 root: nothing to warn about


def test_cli_render_all_tells_how_evaluation_follows(tmp_path, capsys):
    job = write_job(tmp_path)
    assert main(["render", str(job)]) == 0
    err = capsys.readouterr().err
    assert "kubectl wait --for=condition=complete" in err
    assert "--stage evaluate" in err


def test_cli_render_schedule(tmp_path, capsys):
    job = write_job(tmp_path)
    assert main(["render", str(job), "--schedule", "0 3 * * 0"]) == 0
    assert [o["kind"] for o in yaml.safe_load_all(capsys.readouterr().out)][-1] == "CronJob"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k8s-version", "1.2"], "--k8s-version 1.2: unsupported"),
        (["--schedule", "0 3 * *"], "--schedule '0 3 * *': expected 5 fields"),
        (["--set", "resources.profile=huge"], "--set resources.profile=huge: unknown profile"),
    ],
)
def test_cli_render_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    job = write_job(tmp_path)
    assert main(["render", str(job), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_cli_render_warns_about_a_local_storage_root(tmp_path, capsys):
    job = write_job(tmp_path, storage={"root": ".kubetune"})
    assert main(["render", str(job), "--stage", "train"]) == 0
    assert "storage.root" in capsys.readouterr().err


def test_render_imports_no_torch_and_no_workload(tmp_path):
    job = write_job(tmp_path, resources={"profile": "gpu-8x4"})
    code = (
        "import sys; from kubetune.cli.main import main; rc = main(['render', sys.argv[1]]); "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('kubetune.workload')]; "
        "print('LOADED', bad); sys.exit(rc or bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(job)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-500:] + result.stderr[-2000:]
    assert "LOADED []" in result.stdout


def test_longest_allowed_name_gives_valid_object_and_host_names():
    import re

    name = "a" * 36 + "-9z0"  # 40 characters: the spec's limit
    spec = make_spec(name=name, resources={"nodes": 12})
    objs = render_objects(spec) + render_objects(spec, schedule="@weekly")
    label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    for obj in objs:
        assert label.match(obj["metadata"]["name"]) and len(obj["metadata"]["name"]) <= 63
        assert all(len(v) <= 63 for v in obj["metadata"]["labels"].values())
    n = names(spec)
    assert len(n.pod_hostname(11)) <= 63
    assert len(n.cronjob) <= 52
