"""`run --local --container`: the rendered pods in the image, one container per pod.

The local executor (`launch.local.pods`) proves a manifest's command with this machine's Python;
this one proves the image too: the same rendered pods run in the image with podman or docker
(whichever is installed, podman first), honouring the pod as the kubelet would:

* command and args as rendered; the environment as rendered (`$(VAR)` expanded, fieldRefs
  and ConfigMap references resolved, the completion index injected);
* secrets: a `secretKeyRef` variable, and the store variables botocore, gcsfs and adlfs read
  (`PASSED_BY_NAME`), are handed over by
  name only (`-e NAME`: the engine copies the value from your environment), so no secret ever
  appears on a command line or in a log; the storage Secret's credentials file is your
  `AWS_SHARED_CREDENTIALS_FILE` (or `~/.aws/credentials`), mounted read-only where the pod
  expects it, when you have one;
* volumes: the ConfigMap (the resolved spec) read-only at its mount path, each emptyDir a
  fresh folder, `/dev/shm` as the engine's shm of the rendered size, the cache volume one
  folder kept across runs (`<local cache>/containers`);
* the securityContext: the rendered uid/gid, a read-only root filesystem, every capability
  dropped, no privilege escalation; the rendered CPU and memory limits (CPUs capped at this
  machine's count); the thread variables sized as for a local process (`pods.share_cores`),
  from the CPU limit capped at the cores the run may use (`_container_cores`);
* the store: a local `storage.root` is mounted at its absolute path (the spec the pod reads
  names that path); an S3 store is reached over the host's network (`--network host`), so an
  endpoint on this machine's loopback works; a job with a local store and one pod gets no
  network at all;
* several pods: one container each on the host network, each with its pod's host name
  (`--hostname`, as the Job controller names an Indexed Job's pods) and a loopback address of
  its own (`pod_address`); every pod's rendered DNS name resolves to that pod's address in
  every container (`--add-host`), as the headless Service resolves it on a cluster, and the
  rendezvous port becomes a free one, as in `launch.local.pods`. The own names are what makes
  the gang meet: torchrun's agents tell nodes apart by fully-qualified host name and PID, and
  in containers every agent is PID 1, so agents sharing this machine's name were one node to
  the c10d rendezvous, which then waited for the second until it timed out. The agent of pod 0
  hosts the rendezvous store (distrun's `is_host`); gloo binds to the address of its pod's
  host name, so the collectives need no interface setting. No GPU is passed into a container
  yet: each pod runs one CPU process.

Under rootful podman the writable mounts are handed to the pod's uid (podman's `:U`), since
the folders a root user creates are not writable by uid 10001; rootless podman maps your own
uid to it (`--userns keep-id`). Signals, progress and exit codes are `launch.local.gang`'s:
SIGTERM to the launcher reaches each container's PID 1 through the engine's signal proxy.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.errors import UserError
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.local.cores import usable_cores
from kubetune.launch.local.pods import (Planner, expand_references, pod_identity, free_port, local_cache_dir,
                                        resolved_spec, run_local, share_cores)
from kubetune.launch.local.gang import LocalProcess

ENGINES = ("podman", "docker")
# Variables the engine copies from your environment by name (never by value on a command line).
# The AWS ones botocore reads, the GCS emulator's host gcsfs reads, and the Azure ones adlfs
# reads (store_clouds); a GCS key file (GOOGLE_APPLICATION_CREDENTIALS) is a path, not passed.
PASSED_BY_NAME = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "STORAGE_EMULATOR_HOST",
    "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
)


class ContainerError(UserError):
    """No container engine, or an engine that cannot run the pod: one line, exit 2."""


def find_engine(environ: dict[str, str] | None = None) -> str:
    """podman or docker, whichever is on the PATH (podman first: it runs without a daemon)."""
    path = (os.environ if environ is None else environ).get("PATH")
    for engine in ENGINES:
        found = shutil.which(engine, path=path)
        if found:
            return found
    raise ContainerError("--container: neither podman nor docker is installed (install one, or drop --container)")


def run_in_containers(spec: JobSpec, image: str | None = None, stage: str = kn.STAGE_ALL,
                      predict: dict[str, str] | None = None, model: str | None = None) -> int:
    """`run --local --container`: `launch.local.pods.run_local` with every pod in `image`
    (default: the rendered one)."""
    spec, plan, cleanup = container_planner(spec, image, predict)
    return run_local(spec, stage, predict, model, plan=plan, cleanup=cleanup)


def retrain_in_containers(spec: JobSpec, image: str | None = None) -> tuple[int, str]:
    """`retrain --local --container`: one scheduled retrain run, its pod in `image`."""
    from kubetune.launch.local.retrain import retrain_local

    spec, plan, cleanup = container_planner(spec, image)
    return retrain_local(spec, plan=plan, cleanup=cleanup)


def container_planner(spec: JobSpec, image: str | None, predict: dict[str, str] | None = None
                      ) -> tuple[JobSpec, Planner, Callable[[list[LocalProcess]], None]]:
    """The spec the pods read, the planner that puts each pod in the image, and the clean-up
    after a stage. A local `storage.root` becomes absolute, so the spec the pods read names the
    folder mounted at that path; local prediction input and output are mounted too."""
    from kubetune.storage import has_scheme

    engine = find_engine()
    root = spec.storage.root
    store_root = None if has_scheme(root) and not root.startswith("file://") else str(Path(root.removeprefix("file://")).resolve())
    if store_root is not None:
        Path(store_root).mkdir(parents=True, exist_ok=True)
        spec = spec.model_copy(update={"storage": spec.storage.model_copy(update={"root": store_root})})
    mounts = [store_root] if store_root else []
    # No network for a pod whose store and model are all local folders (as the quickstart's).
    sources = [s for s in (spec.model.source, spec.model.tokenizer) if s]
    offline = store_root is not None and all(
        s.startswith(("/", "file://")) or Path(store_root, s).exists() for s in sources
    )
    for key, uri in (predict or {}).items():
        if uri.startswith("file://") and key in ("input", "output"):
            local = Path(uri.removeprefix("file://"))
            mounts.append(str(local if key == "output" else local.parent))
            Path(mounts[-1]).mkdir(parents=True, exist_ok=True)

    def plan(objs: list[dict[str, Any]], step: str, tmp: Path) -> list[LocalProcess]:
        rendered = next(o for o in objs if o["kind"] == "Job")["spec"]["template"]["spec"]["containers"][0]["image"]
        return plan_container_stage(objs, step, tmp, image or rendered, engine, mounts=mounts, offline=offline)

    return spec, plan, lambda procs: remove_containers(engine, procs)


def is_rootless(engine: str) -> bool:
    """Whether podman runs rootless here (it maps users differently); docker: never."""
    return Path(engine).name == "podman" and os.geteuid() != 0


def plan_container_stage(objs: list[dict[str, Any]], stage: str, tmp: Path, image: str, engine: str,
                         environ: dict[str, str] | None = None, mounts: list[str] | None = None,
                         offline: bool = False) -> list[LocalProcess]:
    """One `<engine> run` process per pod of the stage's Job (see the module docstring);
    `mounts`: host folders (the local store first) mounted writable at their own paths;
    `offline`: a single pod gets no network at all."""
    mounts = mounts or []
    environ = dict(os.environ if environ is None else environ)
    jobs = [o for o in objs if o["kind"] == "Job" and o["metadata"]["labels"].get(kn.STAGE_LABEL) == stage]
    if len(jobs) != 1:
        raise ValueError(f"expected one {stage} Job among the objects, found {len(jobs)}")
    job = jobs[0]
    configmaps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    pod_spec = job["spec"]["template"]["spec"]
    completions = job["spec"].get("completions", 1)
    subdomain = pod_spec.get("subdomain")
    hosts = [f"{job['metadata']['name']}-{i}.{subdomain}" for i in range(completions)] if subdomain else []
    addresses = [pod_address(i) for i in range(len(hosts))]
    port = free_port() if hosts else None
    network = ["--network", "none"] if offline and not hosts else ["--network", "host"]
    cache = Path(local_cache_dir(environ)) / "containers"
    cache.mkdir(parents=True, exist_ok=True)
    spec = resolved_spec(configmaps)
    processes = completions * _nproc(pod_spec["containers"][0])
    container_cores = functools.cache(lambda: _container_cores(pod_spec["containers"][0]))
    procs = []
    for index in range(completions):
        pod_name, field_values, injected = pod_identity(job, index)
        container = pod_spec["containers"][0]
        root = tmp / pod_name
        argv = [engine, "run", "--rm", "--name", f"kubetune-{pod_name}-{os.getpid()}", *network]
        argv += _identity_args(pod_spec, container, engine)
        argv += _volume_args(container, pod_spec.get("volumes", []), configmaps, root, cache, engine, environ)
        if hosts:  # each pod its own name and loopback address, as each has its own on a cluster
            argv += [f"--hostname={pod_name}", *[f"--add-host={h}:{a}" for h, a in zip(hosts, addresses)],
                     f"--add-host={pod_name}:{addresses[index]}"]
        argv += [arg for folder in mounts for arg in ("-v", _mount(folder, folder, engine, writable=True))]
        env = share_cores(_container_env(container, field_values, configmaps, injected), spec, environ,
                          container_cores, processes)
        argv += [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
        argv += [arg for name in _passed_by_name(container, environ) for arg in ("-e", name)]
        argv += [image, *[_rendezvous(expand_references(a, env), hosts, port) for a in container.get("command", []) + container.get("args", [])]]
        procs.append(LocalProcess(pod_name, argv, environ, os.getcwd(), [str(root)]))
    return procs


def _nproc(container: dict[str, Any]) -> int:
    """torchrun's workers per pod in the container's command (1 without torchrun)."""
    flag = [a for a in container.get("command", []) if a.startswith("--nproc-per-node=")]
    return int(flag[0].split("=", 1)[1]) if flag else 1


def _container_cores(container: dict[str, Any]) -> int:
    """The cores a pod's container may use here: its CPU limit (`--cpus`), at most the cores the
    run may use on this machine (`cores.usable_cores`), which size its threads as a local
    process's (`pods.share_cores`)."""
    limit = container.get("resources", {}).get("limits", {}).get("cpu")
    cores = usable_cores()
    return max(1, min(cores, int(cpu_quantity(str(limit))))) if limit else cores


def pod_address(index: int) -> str:
    """The loopback address pod `index` of a gang has (127.1.0.1, 127.1.0.2, ...; all of
    127.0.0.0/8 reaches this machine): its name resolves to it in every container, so each
    pod's torchrun agent has a node address of its own (see the module docstring)."""
    return str(ipaddress.IPv4Address("127.1.0.1") + index)


def _identity_args(pod_spec: dict[str, Any], container: dict[str, Any], engine: str) -> list[str]:
    """The securityContext and resource limits as engine flags."""
    security = {**pod_spec.get("securityContext", {}), **container.get("securityContext", {})}
    args = []
    if "runAsUser" in security:
        args += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"]
        if is_rootless(engine):
            args += ["--userns", f"keep-id:uid={security['runAsUser']},gid={security.get('runAsGroup', security['runAsUser'])}"]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if "ALL" in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", "ALL"]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    limits = container.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        args += ["--cpus", f"{min(cpu_quantity(str(limits['cpu'])), float(os.cpu_count() or 1)):g}"]
    if "memory" in limits:
        args += ["--memory", f"{memory_quantity(str(limits['memory']))}b"]
    return args


def _volume_args(container: dict[str, Any], volumes: list[dict[str, Any]], configmaps: dict[str, Any], root: Path,
                 cache: Path, engine: str, environ: dict[str, str]) -> list[str]:
    """`-v`/`--shm-size` for each mounted volume (see the module docstring)."""
    by_name = {v["name"]: v for v in volumes}
    args: list[str] = []
    for mount in container.get("volumeMounts", []):
        volume, path = by_name[mount["name"]], mount["mountPath"]
        if path == kn.CACHE_DIR:
            args += ["-v", _mount(str(cache), path, engine, writable=True)]
        elif "configMap" in volume:
            folder = root / mount["name"]
            data = configmaps[volume["configMap"]["name"]].get("data", {})
            for item in volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]:
                (folder / item["path"]).parent.mkdir(parents=True, exist_ok=True)
                (folder / item["path"]).write_text(data[item["key"]])
            args += ["-v", f"{folder}:{path}:ro"]
        elif "emptyDir" in volume and volume["emptyDir"].get("medium") == "Memory" and path == "/dev/shm":
            size = volume["emptyDir"].get("sizeLimit")
            args += [f"--shm-size={memory_quantity(str(size))}b"] if size else []
        elif "emptyDir" in volume:
            folder = root / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            args += ["-v", _mount(str(folder), path, engine, writable=True)]
        elif "secret" in volume:
            credentials = _credentials_file(environ)
            if credentials is not None and any(i.get("path") == "credentials" for i in volume["secret"].get("items", [])):
                args += ["-v", f"{credentials}:{path.rstrip('/')}/credentials:ro"]
    return args


def _mount(source: str, target: str, engine: str, writable: bool) -> str:
    """A bind mount; under rootful podman a writable one is handed to the container's user."""
    rootful_podman = Path(engine).name == "podman" and not is_rootless(engine)
    return f"{source}:{target}:U" if writable and rootful_podman else f"{source}:{target}"


def _credentials_file(environ: dict[str, str]) -> str | None:
    path = environ.get(kn.ENV_AWS_CREDENTIALS_FILE) or str(Path("~/.aws/credentials").expanduser())
    return path if Path(path).is_file() else None


def _container_env(container: dict[str, Any], field_values: dict[str, str], configmaps: dict[str, Any],
                   injected: dict[str, str]) -> dict[str, str]:
    """The rendered variables with their values; secret references are left to `_passed_by_name`."""
    env: dict[str, str] = dict(injected)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand_references(item["value"], env)
            continue
        source = item.get("valueFrom", {})
        if "fieldRef" in source:
            env[item["name"]] = field_values.get(source["fieldRef"]["fieldPath"], "")
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = configmaps.get(ref["name"], {}).get("data", {}).get(ref["key"])
            if value is not None:
                env[item["name"]] = value
    return env


def _passed_by_name(container: dict[str, Any], environ: dict[str, str]) -> list[str]:
    """Secret-referencing variables and the AWS ones that are set in your environment."""
    secret_refs = [i["name"] for i in container.get("env", []) if "secretKeyRef" in i.get("valueFrom", {})]
    return [name for name in dict.fromkeys([*secret_refs, *PASSED_BY_NAME]) if environ.get(name)]


def _rendezvous(arg: str, hosts: list[str], port: int | None) -> str:
    """The rendezvous endpoint keeps its rendered host name (resolved by `--add-host`) on a
    free port, so two local jobs never meet on the fixed rendered one; one process a pod."""
    key, sep, value = arg.partition("=")
    if sep and key == "--rdzv-endpoint" and port is not None:
        host, _, _ = value.rpartition(":")
        if host in hosts:
            return f"{key}={host}:{port}"
    if sep and key == "--master-port" and port is not None:
        return f"{key}={port}"
    if sep and key == "--nproc-per-node":
        return f"{key}=1"  # no GPU is passed into the containers: one CPU process a pod
    return arg


def cpu_quantity(text: str) -> float:
    """A Kubernetes CPU quantity ("4", "500m") in CPUs."""
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def memory_quantity(text: str) -> int:
    """A Kubernetes memory quantity ("16Gi", "512M", "1000") in bytes."""
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * _UNITS[unit])
    return int(float(text))


def remove_containers(engine: str, procs: list[LocalProcess]) -> None:
    """Containers a SIGKILLed engine client left behind (`--rm` only runs when it exits)."""
    names = [p.argv[p.argv.index("--name") + 1] for p in procs]
    subprocess.run([engine, "rm", "--force", "--ignore", *names] if Path(engine).name == "podman"
                   else [engine, "rm", "--force", *names], capture_output=True, check=False)
