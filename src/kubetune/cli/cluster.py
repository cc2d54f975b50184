"""`kubetune submit / status / logs / cancel / list`: the cluster verbs of the command line.

Kept apart from the local verbs so the cluster code (and the `kubernetes` client) loads only when
a cluster verb runs. The cluster code returns data and iterators of notes; this module prints
them. API failures print one line on stderr and exit 1; a bad spec exits 2 (the SpecError
reaches `cli.main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable, Generator, Iterator

from kubetune.cli.arguments import (DEFAULT_STORE, STAGE_HELP, add_engine_arg, add_json_arg, add_model_arg, add_spec_args,
                                    engine_overrides, warn_dropped_settings)
from kubetune.cli.formatting import elapsed, number, table
from kubetune.contract import names as kn
from kubetune.contract.errors import UserError
from kubetune.contract.model_ref import check_model_stage
from kubetune.contract.progress import format_world_sizes, progress_parts

EXIT_CLUSTER_ERROR = 1


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    """Which cluster and namespace: the cluster verbs' own arguments."""
    group = parser.add_argument_group("cluster")
    group.add_argument("-n", "--namespace", help="namespace (default: the spec's kubernetes.namespace, else the kubeconfig context's)")
    group.add_argument("--context", help="kubeconfig context (default: the current context)")
    group.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config; in a pod: its service account)")


def _connect(args: argparse.Namespace, namespace: str | None = None) -> Any:
    from kubetune.launch.cluster import connect

    return connect(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace or namespace)


def _one_line_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        from kubetune.launch.cluster import ClusterError

        try:
            return func(args)
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CLUSTER_ERROR

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def print_notes(notes: Generator[Any, None, Any] | Iterator[Any]) -> int:
    """Print what the cluster code reports, as it comes (log lines on stdout, notes about
    waiting and failures on stderr); the exit code is the iterator's return value (0 if none)."""
    while True:
        try:
            note = next(notes)
        except StopIteration as stop:
            return stop.value or 0
        print(note.text, file=sys.stderr if note.err else sys.stdout, flush=True)


def submit(cluster: Any, job: str, stages: list[list[dict[str, Any]]], source: str = "<job.yaml>", **options: Any) -> int:
    """Plan the submission, show the plan when it is a dry run, then apply it."""
    from kubetune.launch.cluster.submit import apply, plan_submit

    plan = plan_submit(cluster, job, stages, source=source, **options)
    if plan.dry_run:
        print(f"plan for {job} in namespace {plan.namespace} (server dry run):")
        print("\n".join(f"  {line}" for line in plan.lines()), flush=True)
    try:
        return print_notes(apply(cluster, plan))
    except KeyboardInterrupt:
        print(f"stopped following {job}; it keeps running on the cluster "
              f"(`kubetune status {job}`, `kubetune cancel {job}`)", file=sys.stderr)
        raise


@_one_line_errors
def cmd_submit(args: argparse.Namespace) -> int:
    from kubetune.contract.spec.job import load_spec
    from kubetune.launch.render import render_objects

    spec = load_spec(args.job, engine_overrides(args))
    warn_dropped_settings(spec)
    check_model_stage(args.stage, args.model)
    if args.schedule:
        if args.wait:
            raise UserError("--wait follows one run; a --schedule submits a CronJob")
        stages = [render_objects(spec, stage=kn.STAGE_TRAIN, schedule=args.schedule)]
    elif args.stage == kn.STAGE_ALL:
        stages = [render_objects(spec, stage=kn.STAGE_TRAIN), render_objects(spec, stage=kn.STAGE_EVALUATE)]
    else:
        stages = [render_objects(spec, stage=args.stage, model=args.model)]
    cluster = _connect(args, spec.kubernetes.namespace)
    # Evaluating a trained job reuses the ConfigMap, Service and NetworkPolicy of its training; a
    # workload identity's ServiceAccount is shared by every job that names it.
    reuse = ("ConfigMap", "Service", "NetworkPolicy") if args.stage == kn.STAGE_EVALUATE else ()
    if spec.kubernetes.workload_identity is not None:
        reuse += ("ServiceAccount",)
    return submit(cluster, spec.name, stages, replace=args.replace, dry_run=args.dry_run, wait=args.wait,
                  reuse=reuse, source=args.job)


@_one_line_errors
def cmd_status(args: argparse.Namespace) -> int:
    from kubetune.launch.cluster.state import job_status

    name, store, namespace = status_target(args.name, args.store, args.endpoint_url)  # NAME or JOB.yaml
    if args.local or (store is not None and store.protocol == "file"):
        local_store = store if store is not None else _default_store(args)
        lines = local_status_lines(name, local_store)  # refuses a run the store does not hold
        if args.json:
            from kubetune.launch.runs import describe_run

            print(as_json({**describe_run(local_store, name), "progress": progress_record(name, local_store)}))
        else:
            print("\n".join(lines))
        return 0
    status = job_status(_connect(args, namespace), name)
    if args.json:
        print(as_json({**dataclasses.asdict(status), "progress": progress_record(name, store)}))
        return 0
    print(format_status(status))
    for line in progress_lines(name, store):  # from metrics/train.jsonl
        print(line)
    return 0


@_one_line_errors
def cmd_logs(args: argparse.Namespace) -> int:
    from kubetune.launch.cluster.logs import logs

    return print_notes(logs(_connect(args), args.name, follow_=args.follow, rank=args.rank))


@_one_line_errors
def cmd_cancel(args: argparse.Namespace) -> int:
    from kubetune.launch.cluster.submit import cancel

    cluster = _connect(args)
    print_notes(cancel(cluster, args.name, wait=args.wait))
    print(f"cancelled {args.name} in namespace {cluster.namespace}")
    return 0


@_one_line_errors
def cmd_list(args: argparse.Namespace) -> int:
    from kubetune.launch.cluster.state import duration, list_jobs

    cluster = _connect(args)
    rows = list_jobs(cluster)
    if args.json:
        print(as_json({"namespace": cluster.namespace, "jobs": [dataclasses.asdict(r) for r in rows]}))
        return 0
    if not rows:
        print(f"no kubetune jobs in namespace {cluster.namespace}")
        return 0
    lines = [["NAME", "TRAIN", "EVALUATE", "SCHEDULE", "AGE"]]
    lines += [[r.name, r.train, r.evaluate, r.schedule, duration(r.created)] for r in rows]
    print(table(lines))
    return 0


def as_json(data: Any) -> str:
    """`--json` of the cluster verbs: their dataclasses as JSON, times in ISO 8601."""
    return json.dumps(data, indent=2, default=lambda value: value.isoformat())


def format_status(status: Any) -> str:
    """`kubetune status`: the Jobs' phases, then each Job's pods per completion index."""
    from kubetune.launch.cluster.state import duration

    lines = [f"job {status.job} in namespace {status.namespace}"]
    if status.jobs:
        rows = [["STAGE", "JOB", "PHASE", "COMPLETIONS", "ELAPSED", "REASON"]]
        for s in status.jobs:
            rows.append([s.stage, s.name, s.phase, f"{s.succeeded}/{s.completions}", duration(s.started, s.finished),
                         s.reason or "-"])
        lines += ["", table(rows)]
    for s in status.jobs:
        pods = status.pods.get(s.name) or []
        lines += ["", f"{s.stage} pods ({s.name}):"]
        if not pods:
            lines.append("  (no pods yet)" if not s.done else "  (no pods left)")
            continue
        rows = [["INDEX", "POD", "PHASE", "PODS", "RESTARTS", "ELAPSED", "LAST LINE"]]
        for p in pods:
            rows.append([str(p.index), p.pod, p.phase, str(p.attempts), str(p.restarts), duration(p.started, p.finished),
                         p.last_line or "-"])
        lines.append(table(rows))
    if status.other:
        lines += ["", "other objects: " + ", ".join(status.other)]
    return "\n".join(lines)


def format_progress(p: dict[str, Any]) -> str:
    """One line: step/total (percent), epoch, loss, samples/s, ETA, and when it was written."""
    parts = [f"step {p['step']}/{number(p['max_steps'])}" + (f" ({p['percent']:.0f}%)" if p["percent"] is not None else "")]
    parts += progress_parts(p)
    if p["eta_seconds"] is not None:
        parts.append(f"eta {elapsed(p['eta_seconds'])}")
    changes = format_world_sizes(p.get("world_sizes"))  # an elastic gang that changed size
    if changes:
        parts.append(changes)
    if p["updated"]:
        parts.append(f"logged {p['updated'].replace('+00:00', 'Z')}")
    return " | ".join(parts)


def is_spec_file(name: str) -> bool:
    """`kubetune status JOB.yaml`: an argument naming a YAML file is a job spec, not a job name
    (a job name is a DNS-1123 label, which never ends in `.yaml`)."""
    return name.endswith((".yaml", ".yml"))


def status_target(name: str, store_uri: str | None, endpoint_url: str | None) -> tuple[str, Any, str | None]:
    """What `kubetune status NAME|JOB.yaml` reads: the job name, the store whose
    `metrics/train.jsonl` holds its progress (--store, else a spec's `storage:` section, else
    none), and a spec's namespace. A spec file is read like `run` reads it, so a missing or bad
    file is one `error:` line; --store, when given, wins over the spec's storage root."""
    from kubetune.contract.spec.job import load_spec
    from kubetune.storage import Store

    if not is_spec_file(name):
        return name, Store(store_uri, endpoint_url) if store_uri else None, None
    spec = load_spec(name)
    store = Store(store_uri, endpoint_url) if store_uri else Store.from_spec(spec.storage)
    return spec.name, store, spec.kubernetes.namespace


def _default_store(args: argparse.Namespace) -> Any:
    from kubetune.storage import Store

    return Store(DEFAULT_STORE, args.endpoint_url)


def local_status_lines(name: str, store: Any) -> list[str]:
    """`kubetune status` of a local run (`run --local`), read from the store as `kubetune runs`
    reads it, with no cluster asked: for a JOB.yaml whose storage.root is a local folder (a pod's
    folder vanishes with the pod, so a run there ran on this machine), or with --local."""
    from kubetune.launch.runs import describe_run

    base = f"runs/{name}"
    if not store.exists(base):
        known = ", ".join(store.list_dirs("runs")) or "none"
        raise UserError(f"run {name!r}: no {store.url(base)} (runs in this store: {known})")
    run = describe_run(store, name)
    lines = [f"run {name} in {store.url(base)} (local: read from the store; no cluster asked)",
             f"state:    {run['state']}, step {number(run['step'])}/{number(run['max_steps'])}"]
    if run["best"]:
        lines.append(f"best:     {run['best']['metric']} {number(run['best']['value'])} at step {run['best']['step']} (validation)")
    if run["test"]:
        lines.append(f"test:     {run['test']['metric']} {number(run['test']['value'])}")
    return lines + progress_lines(name, store)


def progress_record(name: str, store: Any) -> dict[str, Any] | None:
    """`kubetune status --json`'s progress: the record `progress_lines` prints, or None."""
    from kubetune.launch.runs import progress

    return progress(store, name) if store is not None else None


def progress_lines(name: str, store: Any) -> list[str]:
    """`kubetune status`'s progress line, read from the run's metrics/train.jsonl, or why none."""
    from kubetune.launch.runs import progress

    if store is None:
        return []
    p = progress(store, name)
    return [f"progress: {format_progress(p)}" if p else f"progress: nothing logged yet in {store.url('runs', name)}"]


def register(subparsers: Any) -> None:
    """Add the cluster verbs to `kubetune`'s subcommands."""
    p = subparsers.add_parser(
        "submit",
        help="create a job's objects on a cluster (--wait: follow training, then evaluation)",
        description="Render the job and create its objects. Training starts at once; with --wait, "
        "kubetune follows the train Job, then submits and follows evaluation, and exits 0 only when "
        "both succeeded. Without --wait, start evaluation later with --stage evaluate.",
    )
    add_spec_args(p)
    p.add_argument("--stage", choices=kn.SUBMIT_STAGES, default=kn.STAGE_ALL,
                   help=f"{STAGE_HELP}; all (default): train, and with --wait evaluate once training succeeded")
    p.add_argument("--wait", action="store_true", help="follow the Jobs to their end, streaming their logs")
    p.add_argument("--replace", action="store_true", help="delete the job's existing objects first")
    p.add_argument("--dry-run", action="store_true", help="print the plan, then send it with the server-side dry-run flag; create nothing")
    p.add_argument("--schedule", metavar="CRON", help='submit scheduled retraining: a CronJob, e.g. "0 3 * * 0"')
    add_engine_arg(p)
    add_model_arg(p, with_predict=False)
    add_cluster_args(p)
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("status", help="a job's phase, pods per completion index, restarts, elapsed time, last log line")
    p.add_argument("name", help="job name (the spec's `name`), or a JOB.yaml: its name, namespace and store")
    p.add_argument("--store", default=None, metavar="URI",
                   help="show training progress read from the run's metrics/train.jsonl in this store "
                   "(default with a JOB.yaml: its storage.root)")
    p.add_argument("--endpoint-url", default=None, metavar="URL", help="S3 endpoint for --store")
    p.add_argument("--local", action="store_true",
                   help="a run of `kubetune run --local`: read the store only (--store, the spec's, or "
                   "./.kubetune), no cluster; implied by a JOB.yaml whose storage.root is a local folder")
    add_json_arg(p)
    add_cluster_args(p)
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("logs", help="the logs of every rank of a job, each line prefixed [rank N]")
    p.add_argument("name", help="job name (the spec's `name`)")
    p.add_argument("-f", "--follow", action="store_true", help="stream until the job's Jobs end")
    p.add_argument("--rank", type=int, metavar="N", help="only completion index (node rank) N")
    add_cluster_args(p)
    p.set_defaults(func=cmd_logs)

    p = subparsers.add_parser("cancel", help="delete everything a job created (Jobs, pods, Service, ConfigMap, ...)")
    p.add_argument("name", help="job name (the spec's `name`)")
    p.add_argument("--wait", action="store_true", help="wait until the objects and their pods are gone")
    add_cluster_args(p)
    p.set_defaults(func=cmd_cancel)

    p = subparsers.add_parser("list", help="the kubetune jobs in a namespace")
    add_json_arg(p)
    add_cluster_args(p)
    p.set_defaults(func=cmd_list)
