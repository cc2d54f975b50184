"""`kubetune retrain JOB --local`: one scheduled retrain run now, on this machine: train if the data
changed, promote if better (`kubetune.launch.local.retrain` runs the CronJob's pod locally)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kubetune.cli.arguments import add_container_args, add_spec_args, check_container_args
from kubetune.contract.exitcodes import EXIT_BAD_INPUT
from kubetune.contract.spec.job import load_spec


def cmd_retrain(args: argparse.Namespace) -> int:
    from kubetune.launch.local.retrain import retrain_local

    spec = load_spec(args.job, args.overrides)
    check_container_args(args, "retrain")
    if not args.local:
        print("error: kubetune retrain needs --local (one run on this machine); on a cluster, "
              "`kubetune render JOB --schedule CRON | kubectl apply -f -` runs it on a schedule", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.container:
        from kubetune.launch.local.container import retrain_in_containers

        code, run = retrain_in_containers(spec, args.image)
    else:
        code, run = retrain_local(spec)
    if run_folder_exists(spec, run):  # "nothing new" (or a refusal before training) made none
        print(f"run:     {run}")
    return code


def run_folder_exists(spec: Any, run: str) -> bool:
    """Whether the retrain made `runs/<run>/`: the summary names only a run a user can `show`.
    A store that cannot be read now counts as no folder (the pod's own line said why)."""
    from kubetune.contract.errors import UserError
    from kubetune.contract.layout import RunLayout
    from kubetune.storage import Store

    try:
        return Store.from_spec(spec.storage).exists(RunLayout(run).base)
    except (OSError, UserError):
        return False


def register(subparsers: Any) -> None:
    """Add retrain to `kubetune`'s subcommands."""
    p = subparsers.add_parser("retrain", help="one scheduled retrain run now: train if the data changed, promote if better")
    add_spec_args(p)
    p.add_argument("--local", action="store_true", help="run on this machine with a local or S3 store")
    add_container_args(p)
    p.set_defaults(func=cmd_retrain)
