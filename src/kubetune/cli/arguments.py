"""The arguments several verb families take, each stated once: the job spec (`JOB.yaml --set
KEY.PATH=VALUE`), what `--stage` means, `--model`, the predict stage's `--input/--output/--format`,
and the store a verb reads (`--store`, `--endpoint-url`, or a spec's `storage:` section).

Every family module imports these, rather than being handed them by `cli.main`, so a flag reads
the same in every verb that takes it and a family can be read on its own.
"""

from __future__ import annotations

import argparse
from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.errors import UserError

# What `--stage` means, shared by render, run and submit (each adds what `all` does for it).
STAGE_HELP = "which Jobs: train, evaluate (after training completed)"
# The store `runs`, `show` and `plot` read without --store or a spec: the embedded default the
# quickstart fills.
DEFAULT_STORE = ".kubetune"


def add_spec_args(parser: argparse.ArgumentParser) -> None:
    """`JOB.yaml` and repeated `--set KEY.PATH=VALUE`: how every spec-reading verb names its job."""
    parser.add_argument("job", help="job spec YAML file, e.g. jobs/quickstart.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a spec field (repeatable), e.g. --set train.epochs=1",
    )


def add_engine_arg(parser: argparse.ArgumentParser) -> None:
    """`--engine job|jobset|trainjob`: what runs the training gang (render, submit)."""
    parser.add_argument("--engine", choices=kn.ENGINES, default=None,
                        help="run the training as a plain Indexed Job (job), a JobSet (jobset) or a Kubeflow "
                             "Trainer TrainJob (trainjob); default: the spec's kubernetes.engine, else job")


def engine_overrides(args: argparse.Namespace) -> list[str]:
    """The `--set` list with `--engine` folded in, so the stored spec names the engine it ran on."""
    engine = getattr(args, "engine", None)
    return [*args.overrides, f"kubernetes.engine={engine}"] if engine else list(args.overrides)


def warn_dropped_settings(spec: Any) -> None:
    """One warning line per spec setting the spec's engine cannot carry (a TrainJob's pods take
    the runtime's priority class)."""
    import sys

    from kubetune.launch.render.trainjob import dropped_settings

    if spec.kubernetes.engine == kn.ENGINE_TRAINJOB:
        for field in dropped_settings(spec):
            print(f"kubetune: warning: {field} is not carried by a TrainJob; the ClusterTrainingRuntime's applies",
                  file=sys.stderr)


def add_model_arg(parser: argparse.ArgumentParser, with_predict: bool = True) -> None:
    """`--model REF`: whose model the evaluate (and, where the verb has it, predict) stage uses.
    Which stages may take it is checked once, in `contract.model_ref.check_model_stage`."""
    stages = f"{kn.STAGE_EVALUATE}/{kn.STAGE_PREDICT}" if with_predict else kn.STAGE_EVALUATE
    parser.add_argument("--model", default=None, metavar="REF",
                        help=f"--stage {stages}: whose model: current, a registry version vNNNN, or a run name"
                             + (" (default: this run's)" if with_predict else ""))


def add_predict_args(parser: argparse.ArgumentParser) -> None:
    """The predict stage's rows in and predictions out, and `--model`."""
    parser.add_argument("--input", default=None, metavar="URI",
                        help="--stage predict: rows to predict (file, folder or glob; relative: under storage.root)")
    parser.add_argument("--output", default=None, metavar="URI",
                        help="--stage predict: a .jsonl/.parquet file, or a folder of part-NNNNN files (one per rank)")
    parser.add_argument("--format", default=None, choices=["jsonl", "parquet"],
                        help="--stage predict: format of the parts in an output folder (default jsonl)")
    add_model_arg(parser)


def add_store_args(parser: argparse.ArgumentParser) -> None:
    """`--store URI`, its S3 endpoint, and `--json`: the verbs that read runs from a store."""
    parser.add_argument("--store", default=None, metavar="URI",
                        help=f"storage root: a folder or s3://bucket/prefix (default: {DEFAULT_STORE})")
    parser.add_argument("--endpoint-url", default=None, metavar="URL",
                        help="S3 endpoint for --store (default: $AWS_ENDPOINT_URL)")
    add_json_arg(parser)


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    """`--json`: every read verb's machine output (runs, show, status, list, models list/show),
    the same data its table shows, for scripts."""
    parser.add_argument("--json", action="store_true", help="machine-readable output (JSON)")


def open_store(args: argparse.Namespace) -> Any:
    """The store named by --store, or by a job spec's storage section (`args.job`), else
    ./.kubetune; a remote one probed once, so an unreachable endpoint is one line, not a traceback."""
    from kubetune.contract.spec.job import load_spec
    from kubetune.storage import Store

    job = getattr(args, "job", None)
    if job and args.store:
        raise UserError("give either --store URI or a JOB.yaml, not both")
    store = Store.from_spec(load_spec(job).storage) if job else Store(args.store or DEFAULT_STORE, args.endpoint_url)
    if store.protocol != "file":
        store.check_reachable()
    return store


def add_container_args(parser: argparse.ArgumentParser) -> None:
    """`--container [--image IMAGE]`: the local run's pods in the image (`run`, `retrain`)."""
    parser.add_argument("--container", action="store_true",
                        help="with --local: run each pod in the image with podman or docker (docs/container.md)")
    parser.add_argument("--image", default=None, metavar="IMAGE",
                        help="with --container: the image to run (default: the rendered one)")


def check_container_args(args: argparse.Namespace, verb: str) -> None:
    """`--container` and `--image` belong to a local run, and an engine must be installed:
    one line and exit 2 before anything runs."""
    from kubetune.contract.spec.job import SpecError

    if (args.container or args.image) and not args.local:
        raise SpecError(f"--{'container' if args.container else 'image'} runs the pods on this machine: "
                        f"add --local (kubetune {verb} {args.job} --local --container)")
    if args.image and not args.container:
        raise SpecError("--image names the image of --container: add --container")
    if args.container:
        from kubetune.launch.local.container import find_engine

        find_engine()

