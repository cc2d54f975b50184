"""`kubetune validate / render / run`: a job spec checked, rendered into Kubernetes objects, or run
on this machine (`run --local`: the rendered pods as child processes, exactly as a pod would run)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from kubetune.cli.arguments import (
    STAGE_HELP, add_container_args, add_engine_arg, add_predict_args, add_spec_args, check_container_args,
    engine_overrides, warn_dropped_settings,
)
from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_BAD_INPUT
from kubetune.contract.model_ref import check_model_stage
from kubetune.contract.spec.checks import check_writable_uri
from kubetune.contract.spec.credentials import credentials_problem
from kubetune.contract.spec.job import JobSpec, SpecError, load_spec

# After the headline metrics, the summary's `test:` line shows how many samples they were scored on.
SAMPLES_METRIC = "num_samples"


def cmd_validate(args: argparse.Namespace) -> int:
    spec = load_spec(args.job, args.overrides)
    problem = credentials_problem(spec.storage.root, spec.kubernetes)  # what a cluster's pods would lack
    if problem:
        raise SpecError(f"{args.job}: {problem}")
    print(spec.to_yaml(), end="")
    print_public_https(spec)
    if not args.data:
        print(f"ok: {args.job}: the spec is valid (add --data to check the data files and the model source)",
              file=sys.stderr)
        return 0
    from kubetune.launch.preflight import check_data

    code, line = check_data(spec)
    print(line if code == 0 else f"error: {line}", file=sys.stderr)
    return code


# The condition `kubectl wait` waits for, per engine (the kind's own name for success).
WAIT_CONDITION = {kn.ENGINE_JOB: "complete", kn.ENGINE_JOBSET: "Completed", kn.ENGINE_TRAINJOB: "Complete"}


def cmd_render(args: argparse.Namespace) -> int:
    from kubetune.launch.render import names, render_objects, to_yaml_stream
    from kubetune.storage import has_scheme

    spec = load_spec(args.job, engine_overrides(args))
    objs = render_objects(spec, stage=args.stage, k8s_version=args.k8s_version, schedule=args.schedule,
                          predict=predict_args(args), model=evaluate_model(args))
    print(to_yaml_stream(objs), end="")
    warn_dropped_settings(spec)
    if not has_scheme(spec.storage.root):
        print(
            f"kubetune: warning: storage.root {spec.storage.root!r} is a folder inside the pod and vanishes with it; "
            "use --set storage.root=s3://bucket/prefix",
            file=sys.stderr,
        )
    print_public_https(spec)
    if args.stage == kn.STAGE_ALL and args.schedule is None:
        n = names(spec)
        print(
            f"kubetune: {n.evaluate} is parked (suspend: true) until training completes: "
            f"kubectl wait --for=condition={WAIT_CONDITION[spec.kubernetes.engine]} --timeout=-1s "
            f"{spec.kubernetes.engine}/{n.train} && "
            f"kubetune render {args.job} --stage evaluate | kubectl apply -f -",
            file=sys.stderr,
        )
    return 0


def print_public_https(spec: JobSpec) -> None:
    """With `kubernetes.egress`, say when and why the NetworkPolicy allows HTTPS to public
    addresses (launch/render/network), so a restricted policy's opening is never a surprise."""
    from kubetune.launch.render.network import needs_public_https, public_destinations

    if spec.kubernetes.network_policy and needs_public_https(spec):
        why = "; ".join(public_destinations(spec)) or "kubernetes.public_https: true"
        print(f"kubetune: egress: HTTPS (TCP 443) to public addresses allowed for {why}"
              + ("" if spec.kubernetes.public_https else "; kubernetes.public_https: false leaves it out"),
              file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from kubetune.launch.local.pods import local_predict_args, run_local
    from kubetune.launch.predict_output import check_output, mark_output
    from kubetune.storage import Store

    spec = load_spec(args.job, args.overrides)
    check_container_args(args, "run")
    if not args.local:
        print(_run_without_local(spec, args), file=sys.stderr)
        return EXIT_BAD_INPUT
    predict = local_predict_args(_local_output(predict_args(args), args.output_in_store))
    if predict:
        check_output(spec, predict["output"], args.overwrite, shown=args.output)
    started = time.monotonic()
    if args.container:
        from kubetune.launch.local.container import run_in_containers

        code = run_in_containers(spec, args.image, stage=args.stage, predict=predict, model=evaluate_model(args))
    else:
        code = run_local(spec, stage=args.stage, predict=predict, model=evaluate_model(args))
    if code != 0:
        return code
    if args.stage == kn.STAGE_PREDICT and predict:
        mark_output(spec, predict["output"])
        print(f"predictions: {Store.from_spec(spec.storage).resolve(predict['output'])}")
    else:
        print_summary(spec, time.monotonic() - started, evaluate_model(args))
    return 0


def _local_output(predict: dict[str, str] | None, in_store: bool) -> dict[str, str] | None:
    """`run --local --output x/`: a relative path is relative to the current folder, as for any
    command line tool; a URI, or `--output-in-store`, writes under storage.root instead."""
    from kubetune.storage import has_scheme, is_explicit_local

    if not predict or in_store or has_scheme(predict["output"]) or is_explicit_local(predict["output"]):
        return predict
    return {**predict, "output": f"./{predict['output']}"}


def _run_without_local(spec: JobSpec, args: argparse.Namespace) -> str:
    """What `run` without `--local` would mean, and the commands that do it: not a crash, a
    pointer (the spec is valid; only where to run it is missing)."""
    from kubetune.launch.render import names

    n = names(spec)
    return (
        f"kubetune run: say where: `kubetune run {args.job} --local` runs it on this machine; "
        f"on a cluster, `kubetune submit {args.job}` creates Job {n.train} "
        f"({spec.resources.max_nodes} node(s)), then {n.evaluate} "
        f"(`kubetune render {args.job}` prints those objects without submitting)"
    )


def print_summary(spec: JobSpec, wall_seconds: float | None = None, model: str | None = None) -> None:
    """Where a local run put its run folder and model, its best validation metric and step (and
    which data picked it), the headline metrics of the test data this spec evaluates (the file
    its evaluation wrote: `eval/` for the run's own test data, `eval/<name>/` for other data,
    `RunLayout.eval_files`) with that data's path, and the wall time of this command. A score
    on the data that also picked the best checkpoint says so: it is not a held-out score."""
    from kubetune.contract.layout import RunLayout
    from kubetune.launch.runs import describe_run, trained_test
    from kubetune.storage import Store

    store = Store.from_spec(spec.storage)
    layout = RunLayout(spec.name)
    row = describe_run(store, spec.name)
    print(f"run:     {store.url(layout.base)} ({row['state']}, step {row['step']}/{row['max_steps']})")
    print(f"model:   {store.url(layout.model)}")
    if row["best"]:
        best = row["best"]
        print(f"best:    {best['metric']} {best['value']:.4f} at step {best['step']} "
              f"(validation: {_picked_by(spec, store)})")
    if wall_seconds is not None:
        print(f"wall:    {wall_seconds:.1f} s")
    # `--model REF` scores land in eval/ (they say whose model); other test data in eval/<name>/.
    trained = trained_test(store, layout, spec.data.test)
    metrics_path = layout.eval_metrics if model else layout.eval_files(spec.data.test, trained)[0]
    if store.exists(metrics_path):
        metrics = store.read_json(metrics_path)
        print(f"test:    {_test_numbers(metrics)}")
        if metrics.get("data"):
            print(f"data:    {metrics['data']} ({_scored_split(spec, metrics)})")
        print(f"metrics: {store.url(metrics_path)}")
    origin = _training_data_origin(store, layout)
    if origin:
        print(f"origin:  {origin}")


def _test_numbers(metrics: dict[str, Any]) -> str:
    """The headline metrics, then how many samples they were scored on (every number when
    none is a headline metric)."""
    from kubetune.launch.runs import headline_metrics

    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    shown = headline_metrics(numbers)
    if SAMPLES_METRIC in numbers:
        shown[SAMPLES_METRIC] = numbers[SAMPLES_METRIC]
    parts = [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()]
    return ", ".join(parts) if parts else json.dumps(numbers)


def _picked_by(spec: JobSpec, store: Any) -> str:
    """Which data picked the best checkpoint: data.validation, or the share of train held out."""
    d = spec.data
    if d.validation:
        return f"data.validation, {store.resolve(d.validation)}"
    return f"{d.validation_split:.0%} of data.train held out, seed {d.split_seed}"


def _training_data_origin(store: Any, layout: Any) -> str | None:
    """Where the run's training data came from, as its lineage copied their provenance file:
    synthetic data say that the accuracy shows the mechanics only; real data name their source
    and licence. None when the data carry no provenance."""
    if not store.exists(layout.lineage):
        return None
    found = (store.read_json(layout.lineage).get("provenance") or {}).get("data.train")
    if not isinstance(found, dict):
        return None
    if found.get("synthetic"):
        return f"data.train: {found.get('note') or 'synthetic data: the accuracy shows the mechanics, not quality'}"
    return f"data.train: {found.get('source')} (licence: {found.get('licence')})"


def _scored_split(spec: JobSpec, metrics: dict[str, Any]) -> str:
    """The spec field of the scored data, and a warning when that data also picked the best
    checkpoint (data.test unset or equal to data.validation)."""
    split = str(metrics.get("split") or "data.test")
    d = spec.data
    if d.validation and (split == "data.validation" or d.test == d.validation):
        return f"{split}: it also picked the best checkpoint, so this is not a held-out score"
    return split


def evaluate_model(args: argparse.Namespace) -> str | None:
    """`--model` for the evaluate stage (predict carries it in `predict_args`); refused with
    any stage that trains, which makes its own model."""
    check_model_stage(args.stage, args.model)
    return args.model if args.stage == kn.STAGE_EVALUATE else None


def predict_args(args: argparse.Namespace) -> dict[str, str] | None:
    """--input/--output/--format for the predict stage; both URIs are required with it."""
    if args.stage != kn.STAGE_PREDICT:
        if args.input or args.output:
            raise SpecError("--input/--output belong to --stage predict")
        return None
    if not args.input or not args.output:
        raise SpecError("--stage predict needs --input URI and --output URI")
    try:
        check_writable_uri(args.output)
    except ValueError as exc:
        raise SpecError(f"--output: {exc}") from None
    return {"input": args.input, "output": args.output, **({"format": args.format} if args.format else {}),
            **({"model": args.model} if args.model is not None else {})}


def register(subparsers: Any) -> None:
    """Add validate, render and run to `kubetune`'s subcommands."""
    p = subparsers.add_parser("validate", help="check a job spec and print it resolved (all defaults filled in)")
    add_spec_args(p)
    p.add_argument("--data", action="store_true",
                   help="also check every data file (exists, mapped columns, labels) and that the model "
                        "source has a config and a tokenizer (no weights are loaded); needs the train extra")
    p.set_defaults(func=cmd_validate)

    p = subparsers.add_parser("render", help="print the Kubernetes objects of a job (for kubectl apply -f -)")
    add_spec_args(p)
    p.add_argument("--stage", choices=kn.RENDER_STAGES, default=kn.STAGE_ALL,
                   help=f"{STAGE_HELP}; all (default): training, and evaluation parked until training "
                        "completes; predict: batch prediction with the trained model (--input, --output)")
    add_predict_args(p)
    add_engine_arg(p)
    p.add_argument("--k8s-version", default=None, metavar="X.Y",
                   help="Kubernetes version to validate against (default: the oldest supported, 1.29)")
    p.add_argument("--schedule", default=None, metavar="CRON",
                   help='retrain on a schedule: a CronJob, e.g. "0 3 * * 0" (UTC)')
    p.set_defaults(func=cmd_render)

    p = subparsers.add_parser("run", help="run a job: train, then evaluate (--local: on this machine)")
    add_spec_args(p)
    p.add_argument("--local", action="store_true", help="run as local processes with a local or S3 store")
    add_container_args(p)
    p.add_argument("--stage", choices=kn.RENDER_STAGES, default=kn.STAGE_ALL,
                   help=f"{STAGE_HELP}; all (default): train, then evaluate; "
                        "predict: batch prediction with the trained model (--input, --output)")
    add_predict_args(p)
    p.add_argument("--output-in-store", action="store_true",
                   help="--stage predict: a relative --output is under storage.root (default: the current folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="--stage predict: replace an output folder that holds another job's predictions")
    p.set_defaults(func=cmd_run)
