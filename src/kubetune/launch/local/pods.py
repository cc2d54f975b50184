"""The embedded default: run the rendered pods' containers as local processes.

`kubetune run JOB --local` renders the same objects `kubetune render` prints and runs each
Job's pod as one local process per completion index, with the container's command and
environment, so a local run proves the manifest's command. Train stage first, then evaluate
(as `kubetune submit` does on a cluster).

How a pod becomes a process:
* `python` in the command is this interpreter; `$(VAR)` references are expanded from the
  container's environment as the kubelet does, `$(ENV_COMPLETION_INDEX)` included (the Job
  controller's injected variable for Indexed Jobs).
* ConfigMap volumes become files in a temporary folder; emptyDirs (scratch, /dev/shm) become
  temporary folders; paths under their mount points in the command and environment are
  rewritten to those folders.
* The cache volume (models and tokenized data the entrypoints keep) becomes one folder kept
  across runs: the cache variable (names.ENV_CACHE) of your environment if you set it, else
  `$XDG_CACHE_HOME/kubetune` (`~/.cache/kubetune`). The variables that point libraries into
  the pod's cache (HF_HOME, XDG_CACHE_HOME, TRITON_CACHE_DIR) are left out, as is HOME: your
  own Hugging Face/pip caches apply.
* Not materialised, on purpose: Secret volumes and secret references (credentials come from
  your own environment: AWS_* variables, ~/.aws). Variables that point into them are left out.
* Rendezvous: the pods' DNS names `<job>-<i>.<service>` resolve to 127.0.0.1 and the fixed
  rendezvous port becomes a free local port (in `--rdzv-endpoint`, and `--master-addr/-port`).
* GPUs: the processes share the machine's GPUs (counted with `nvidia-smi`, never torch), split
  between the pods; with none, each pod runs one CPU process (torch.distributed uses gloo).
* Threads: each process gets its share of the cores the run may use (its CPU affinity, less
  what other work keeps busy: `kubetune.launch.local.cores`) divided by the stage's local
  processes (pods times torchrun's workers), at least 1, in the thread variables
  (names.THREAD_ENV), as a pod gets its share of its CPU limit. `resources.threads_per_process`
  and the spec's `kubernetes.env` keep the rendered values; your own environment's variables
  win over everything, and your OMP_NUM_THREADS sizes the others too (`share_cores`).
* The working directory is yours: a relative `storage.root` means what it does to `validate`.
* Recovery is the pods' own: with several nodes, torchrun's agents restart the gang from LATEST
  when a worker fails (up to `train.max_restarts`), as on a cluster. A pod process that exits
  non-zero stops its gang and the run; the Job's pod retries are not imitated, except for an
  elastic gang (`resources.nodes: {min, max}`, torchrun's `--nnodes=MIN:MAX`): a pod lost to a
  signal is started again after names.ENV_LOCAL_REPLACE_SECONDS (`local_replacement`), as the
  Job controller replaces a lost pod, while the others train on.
  (`kubetune.launch.local.gang` runs the processes: recoveries, signals, no orphans.)
"""

from __future__ import annotations

import functools
import os
import re
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.spec.job import JobSpec
from kubetune.contract.profiles import threads_per_process
from kubetune.launch.local.cores import local_gpu_count, split_gpus, usable_cores
from kubetune.launch.local.gang import STOPPED, LocalProcess, local_replacement, run_processes
from kubetune.launch.render.pod import thread_env

__all__ = ["STAGES", "LocalProcess", "local_gpu_count", "local_predict_args", "plan_stage", "run_local", "run_processes", "share_cores"]

# Objects of one stage, the stage, a temporary folder -> the processes that run its pods.
Planner = Callable[[list[dict[str, Any]], str, Path], list[LocalProcess]]

# The rendered stage(s) each `--stage` runs, in order.
STAGES = {
    kn.STAGE_TRAIN: [kn.STAGE_TRAIN],
    kn.STAGE_EVALUATE: [kn.STAGE_EVALUATE],
    kn.STAGE_ALL: [kn.STAGE_TRAIN, kn.STAGE_EVALUATE],
    kn.STAGE_PREDICT: [kn.STAGE_PREDICT],
}

# Container variables a local run never sets: your machine's own home and library caches.
KEEP_LOCAL = {kn.ENV_HOME, kn.ENV_HF_HOME, "XDG_CACHE_HOME", "TRITON_CACHE_DIR"}
# Container variables that name something on the user's side, never a path in the pod: taken as
# they are, even where they look like one under a mount (a spec given as /tmp/job.yaml lies
# under the pod's /tmp scratch mount, and its error lines must name /tmp/job.yaml, issue 28).
NOT_PATHS = {kn.ENV_SPEC_FILE}


def run_local(spec: JobSpec, stage: str = kn.STAGE_ALL, predict: dict[str, str] | None = None,
              model: str | None = None, plan: Planner | None = None,
              cleanup: Callable[[list[LocalProcess]], None] | None = None) -> int:
    """Render and run the stages in order; stop at the first failure and return its exit code
    (2 for bad input, as the entrypoints return). `predict` URIs are taken as from
    `local_predict_args`; `model` is the evaluate stage's `--model` reference, rendered into its
    command as for a cluster. `plan` turns a stage's objects into processes (`plan_stage`:
    this machine's Python; `launch.container`: the image), `cleanup` runs after each stage.
    Prints nothing but failures: the CLI reports the result."""
    from kubetune.launch.render import render_objects

    for step in STAGES[stage]:
        objs = render_objects(spec, stage=step, predict=predict if step == kn.STAGE_PREDICT else None,
                              model=model if step == kn.STAGE_EVALUATE else None)
        with tempfile.TemporaryDirectory(prefix=f"kubetune-{step}-") as tmp:
            procs = (plan or plan_stage)(objs, step, Path(tmp))
            replace = local_replacement(spec, os.environ) if step == kn.STAGE_TRAIN else None
            try:
                code = run_processes(procs, grace_s=spec.kubernetes.termination_grace_period_seconds,
                                     replacement=replace)
            finally:
                if cleanup is not None:
                    cleanup(procs)
        if code in STOPPED:
            print(f"kubetune: {step} {STOPPED[code]}", file=sys.stderr)
            return code
        if code != 0:
            print(f"kubetune: {step} failed with exit code {code}", file=sys.stderr)
            return code
    return 0


def local_predict_args(predict: dict[str, str] | None) -> dict[str, str] | None:
    """Your local --input/--output paths as file:// URIs, so they are not taken for paths in a
    pod volume (or under storage.root)."""
    from kubetune.storage import is_explicit_local

    if not predict:
        return predict
    return {k: Path(v).expanduser().resolve().as_uri() if k in ("input", "output") and is_explicit_local(v) else v
            for k, v in predict.items()}


# ---------------------------------------------------------------------------------------------
# Planning: objects -> processes (pure apart from creating files under `tmp` and reading how
# busy the cores are, `cores.usable_cores`)


def plan_stage(
    objs: list[dict[str, Any]],
    stage: str,
    tmp: Path,
    environ: dict[str, str] | None = None,
    gpus: int | None = None,
    cores: int | None = None,
) -> list[LocalProcess]:
    """The processes of the stage's Job: one per completion index. `gpus` and `cores` (the
    cores the run may use) are this machine's unless given."""
    environ = dict(os.environ if environ is None else environ)
    gpus = local_gpu_count() if gpus is None else gpus
    jobs = [o for o in objs if o["kind"] == "Job" and o["metadata"]["labels"].get(kn.STAGE_LABEL) == stage]
    if len(jobs) != 1:
        raise ValueError(f"expected one {stage} Job among the objects, found {len(jobs)}")
    job = jobs[0]
    configmaps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    pod_spec = job["spec"]["template"]["spec"]
    completions = job["spec"].get("completions", 1)
    subdomain = pod_spec.get("subdomain")

    # One free port per Service port (the fixed rendezvous port), shared by the gang.
    ports: dict[int, int] = {}
    if subdomain in services:
        for port in services[subdomain]["spec"].get("ports", []):
            ports[port["port"]] = free_port()
    hosts = {f"{job['metadata']['name']}-{i}.{subdomain}" for i in range(completions)} if subdomain else set()
    cache = local_cache_dir(environ)
    resolved = resolved_spec(configmaps)

    gpu_sets = split_gpus(gpus, completions)
    procs = []
    for index in range(completions):
        pod_name, field_values, injected = pod_identity(job, index)
        root = tmp / pod_name
        container = pod_spec["containers"][0]
        paths = _mount_paths(container, pod_spec.get("volumes", []), configmaps, root, cache)
        container_env = _container_env(container, field_values, configmaps, paths, injected)
        env = {**environ, **container_env}
        visible = gpu_sets[index]
        limits = container.get("resources", {}).get("limits", {})
        if int(limits.get("nvidia.com/gpu", 0) or 0) == 0 or visible is None:
            env["CUDA_VISIBLE_DEVICES"] = ""
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in visible)
        argv = [expand_references(a, container_env) for a in container.get("command", []) + container.get("args", [])]
        argv = [_localise_arg(a, paths, hosts, ports, visible) for a in argv]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        procs.append(LocalProcess(pod_name, argv, env, os.getcwd(), [str(root)]))
    _share_cores(procs, resolved, environ, cores)
    return procs


def resolved_spec(configmaps: dict[str, Any]) -> dict[str, Any]:
    """The resolved spec the pods mount (the ConfigMap's names.SPEC_KEY), as plain data."""
    import yaml

    for configmap in configmaps.values():
        text = configmap.get("data", {}).get(kn.SPEC_KEY)
        if text:
            return yaml.safe_load(text) or {}
    return {}


def _share_cores(procs: list[LocalProcess], spec: dict[str, Any], environ: dict[str, str], cores: int | None) -> None:
    """The thread variables of a stage's local processes (names.THREAD_ENV): the cores the run
    may use (`cores.usable_cores`: its affinity, less what other work keeps busy) divided by
    every process the stage starts (each pod's torchrun workers counted), at least 1, instead of
    the pod's share of its CPU limit (`share_cores`, which also says what wins over it)."""
    workers = sum(int(_flag(p.argv, "--nproc-per-node") or 1) for p in procs)
    counted = functools.cache(lambda: cores or usable_cores())  # sampled once, for the whole gang
    for proc in procs:
        proc.env = share_cores(proc.env, spec, environ, counted, workers)


def share_cores(env: dict[str, str], spec: dict[str, Any], environ: dict[str, str], cores: Callable[[], int],
                processes: int) -> dict[str, str]:
    """`env` with its thread variables sized for this machine, highest first: a variable of
    your own environment (`environ`); one the spec's `kubernetes.env` sets; your own
    OMP_NUM_THREADS for the others; `resources.threads_per_process` (`spec`: the resolved spec
    as data), as rendered; else `cores()` // `processes`, at least 1."""
    env = dict(env)
    own = set((spec.get("kubernetes") or {}).get("env") or {})
    mine = environ.get(kn.ENV_OMP_THREADS, "")
    if mine.isdigit() and int(mine) > 0:
        count: int | None = int(mine)
    elif (spec.get("resources") or {}).get("threads_per_process"):
        count = None  # the rendered values stand
    else:
        count = threads_per_process(cores(), processes)
    if count is not None:
        for name in set(kn.THREAD_ENV) - own:
            env.pop(name, None)
        env.update({item["name"]: item["value"] for item in thread_env(count, {name: "" for name in own})})
    env.update({name: environ[name] for name in kn.THREAD_ENV if name in environ})
    return env


def _flag(argv: list[str], name: str) -> str | None:
    """The value of `name=VALUE` in a command line, if there."""
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"{name}=")), None)


def local_cache_dir(environ: dict[str, str]) -> str:
    """The local counterpart of the pod's cache volume, kept across runs as a PVC would be:
    your own cache variable (names.ENV_CACHE) if set, else `$XDG_CACHE_HOME/kubetune`, else
    `~/.cache/kubetune` (the XDG base directory convention)."""
    folder = environ.get(kn.ENV_CACHE)
    if not folder:
        base = environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
        folder = str(Path(base) / "kubetune")
    Path(folder).mkdir(parents=True, exist_ok=True)
    return folder


def pod_identity(job: dict[str, Any], index: int) -> tuple[str, dict[str, str], dict[str, str]]:
    """A pod's name, the values its fieldRefs read (labels and annotations the Job controller
    would add included), and the variables the controller injects (the completion index)."""
    pod = job["spec"]["template"]
    indexed = job["spec"].get("completionMode") == "Indexed"
    pod_name = f"{job['metadata']['name']}-{index}" if indexed else f"{job['metadata']['name']}-local"
    labels = {**pod["metadata"].get("labels", {}), kn.JOB_NAME_LABEL: job["metadata"]["name"]}
    annotations = dict(pod["metadata"].get("annotations", {}))
    injected: dict[str, str] = {}
    if indexed:
        labels[kn.COMPLETION_INDEX_KEY] = str(index)
        annotations[kn.COMPLETION_INDEX_KEY] = str(index)
        injected[kn.ENV_COMPLETION_INDEX] = str(index)
    field_values = {
        "metadata.name": pod_name,
        "metadata.namespace": job["metadata"].get("namespace", "default"),
        **{f"metadata.labels['{k}']": v for k, v in labels.items()},
        **{f"metadata.annotations['{k}']": v for k, v in annotations.items()},
    }
    return pod_name, field_values, injected


def _mount_paths(
    container: dict[str, Any], volumes: list[dict[str, Any]], configmaps: dict[str, Any], root: Path, cache: str
) -> dict[str, str | None]:
    """Mount path -> local folder (None: not materialised). The cache mount is found by its
    path in the contract (names.CACHE_DIR), whatever its volume is called."""
    folders = _materialise_volumes(volumes, configmaps, root)
    paths: dict[str, str | None] = {}
    for mount in container.get("volumeMounts", []):
        paths[mount["mountPath"]] = cache if mount["mountPath"] == kn.CACHE_DIR else folders.get(mount["name"])
    return paths


def _materialise_volumes(volumes: list[dict[str, Any]], configmaps: dict[str, Any], root: Path) -> dict[str, str | None]:
    """Volume name -> local folder for ConfigMaps and emptyDirs (None: Secrets, claims and
    projected API credentials, which a local run does not create: without them the progress
    reporter stays off)."""
    out: dict[str, str | None] = {}
    for volume in volumes:
        name = volume["name"]
        if "secret" in volume or "persistentVolumeClaim" in volume or "projected" in volume:
            out[name] = None
            continue
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]].get("data", {})
            items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                target = folder / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(data[item["key"]])
        out[name] = str(folder)
    return out


def _localise_path(value: str, paths: dict[str, str | None]) -> str | None:
    """A container path as a local path; None if it lies in a volume that is not
    materialised; unchanged if it lies in no volume."""
    for mount in sorted(paths, key=len, reverse=True):
        if value == mount or value.startswith(mount.rstrip("/") + "/"):
            local = paths[mount]
            return None if local is None else local + value[len(mount.rstrip("/")) :]
    return value


def _container_env(
    container: dict[str, Any],
    field_values: dict[str, str],
    configmaps: dict[str, Any],
    paths: dict[str, str | None],
    injected: dict[str, str],
) -> dict[str, str]:
    env: dict[str, str] = dict(injected)
    for item in container.get("env", []):
        name = item["name"]
        if name in KEEP_LOCAL:
            continue
        if "value" in item:
            value: str | None = expand_references(item["value"], env)
        else:
            source = item.get("valueFrom", {})
            if "fieldRef" in source:
                value = field_values.get(source["fieldRef"]["fieldPath"], "")
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = configmaps.get(ref["name"], {}).get("data", {}).get(ref["key"])
            else:  # secretKeyRef, resourceFieldRef: your environment supplies these
                value = None
        if value is None:
            continue
        local = value if name in NOT_PATHS else _localise_path(value, paths)
        if local is None:
            continue
        env[name] = local
    return env


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_references(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` escapes, unknown
    references stay as written."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REF.sub(sub, text)


def _localise_arg(
    arg: str, paths: dict[str, str | None], hosts: set[str], ports: dict[int, int], gpus: list[int] | None
) -> str:
    key, sep, value = arg.partition("=")
    if sep and key == "--master-addr" and value in hosts:
        return f"{key}=127.0.0.1"
    if sep and key == "--master-port" and value.isdigit() and int(value) in ports:
        return f"{key}={ports[int(value)]}"
    if sep and key == "--rdzv-endpoint":
        host, _, port = value.rpartition(":")
        if host in hosts and port.isdigit() and int(port) in ports:
            return f"{key}=127.0.0.1:{ports[int(port)]}"
    if sep and key == "--nproc-per-node":
        return f"{key}={len(gpus) if gpus else 1}"
    if arg.startswith("/"):
        local = _localise_path(arg, paths)
        return arg if local is None else local
    return arg


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
