"""`kubetune sweep JOB.yaml [--local] [--promote]`: the job's `sweep:` section run as trials
(locally as processes, else as Jobs in the job's Kueue queue), and `kubetune sweep status
NAME`: its trials in a table, best first (`launch.sweep` does the work; docs/sweeps.md).

A family of its own, like every verb family, in a folder of its own because `cli/` holds the
ten modules a room may have."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kubetune.cli.arguments import add_spec_args, add_store_args, open_store
from kubetune.cli.cluster import _connect, _one_line_errors, add_cluster_args
from kubetune.cli.formatting import elapsed, number, table
from kubetune.contract import names as kn
from kubetune.contract.errors import SpecError, UserError
from kubetune.contract.spec.job import JobSpec, load_spec

STATUS_WORD = "status"
COLUMNS = ["trial", "parameters", "objective", "steps", "state", "wall"]


def _require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError("kubetune sweep needs optuna: pip install 'kubetune[sweep]'") from None


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.job == STATUS_WORD:
        return cmd_sweep_status(args)
    if args.name is not None:
        raise SpecError(f"kubetune sweep {args.job} {args.name}: one job spec (or `kubetune sweep status NAME`)")
    return _run_sweep(args)


@_one_line_errors
def _run_sweep(args: argparse.Namespace) -> int:
    spec = load_spec(args.job, args.overrides)
    if spec.sweep is None:
        raise SpecError(f"{args.job}: sweep: no such section; a sweep needs one (docs/sweeps.md)")
    _require_optuna()
    from kubetune.launch.sweep.controller import Controller
    from kubetune.storage import Store

    from kubetune.launch.sweep.trials import verdict_wait

    store = Store.from_spec(spec.storage)
    if store.protocol != "file":
        store.check_reachable()
    if args.local:
        from kubetune.launch.sweep.local import LocalTrials

        runner: Any = LocalTrials(spec.name, verdict_wait(spec))
    else:
        from kubetune.launch.sweep.cluster import ClusterTrials

        runner = ClusterTrials(_connect(args, spec.kubernetes.namespace), store, spec.name,
                               verdict_s=verdict_wait(spec))
    summary = Controller(spec, store, runner).run()
    _print_summary(spec, store, summary)
    _draw(spec, store)
    if (args.promote or spec.sweep.promote) and summary["best_trial"] is not None:
        return _promote(spec, summary["best_run"].rpartition("/")[2])
    return 0


def _print_summary(spec: JobSpec, store: Any, summary: dict[str, Any]) -> None:
    from kubetune.contract.layout import SweepLayout

    layout = SweepLayout(spec.name)
    counts = ", ".join(f"{n} {state}" for state, n in summary["trials"].items() if n)
    print(f"sweep:   {store.url(layout.base)} ({counts})")
    if summary["best_trial"] is not None:
        print(f"best:    trial {summary['best_trial']}: {summary['objective']['metric']} "
              f"{number(summary['best_value'])} with {_params(summary['best_params'])}")
        print(f"run:     {store.url(summary['best_run'])}")


def _draw(spec: JobSpec, store: Any) -> None:
    """The sweep's picture into the store (`sweeps/<job>/sweep.png`) when matplotlib is there."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    from kubetune.cli.plot import write_sweep_plot

    url = write_sweep_plot(store, spec.name, None)
    if url:
        print(f"plot:    {url}")


def _promote(spec: JobSpec, run: str) -> int:
    """The best trial's model through the job's promotion gate, exactly as `kubetune models
    promote` (and a retrain candidate) goes: the promote entrypoint, scored against CURRENT."""
    from kubetune.launch.entrypoint_process import run_entrypoint

    job_spec = spec.model_copy(update={"sweep": None})
    return run_entrypoint(kn.PROMOTE_MODULE, job_spec, ["--run", run]).returncode


def _params(params: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (params or {}).items())


def cmd_sweep_status(args: argparse.Namespace) -> int:
    from kubetune.launch.sweep.results import ranked, read_results

    if not args.name:
        raise SpecError("kubetune sweep status NAME: name the sweep (its job's name)")
    records, summary = read_results(open_store(argparse.Namespace(**{**vars(args), "job": None})), args.name)
    direction = (summary.get("objective") or {}).get("direction", "maximize")
    rows = ranked(records, direction)
    if args.json:
        print(json.dumps({"summary": summary, "trials": rows}, indent=2, sort_keys=True))
        return 0
    metric = (summary.get("objective") or {}).get("metric", "objective")
    header = [c if c != "objective" else metric for c in COLUMNS]
    print(table([header, *([str(r["number"]), _params(r["params"]) or "-", number(r["objective"]),
                             number(r["steps"]), r["state"], elapsed(r["wall_seconds"])] for r in rows)]))
    return 0


def register(subparsers: Any) -> None:
    """Add sweep (and `sweep status`) to `kubetune`'s subcommands."""
    p = subparsers.add_parser(
        "sweep", help="search hyperparameters: the spec's sweep: section as trials; `sweep status NAME`: the table",
        description="kubetune sweep JOB.yaml [--local] [--promote]: run the sweep; "
                    "kubetune sweep status NAME [--json]: its trials, best first.")
    add_spec_args(p)
    p.add_argument("name", nargs="?", default=None, help="with `status`: the sweep's name (its job's name)")
    p.add_argument("--local", action="store_true", help="trials as local processes (else Jobs on the cluster)")
    p.add_argument("--promote", action="store_true",
                   help="gate the best trial's model against CURRENT and promote it if it passes (as sweep.promote)")
    add_cluster_args(p)
    add_store_args(p)
    p.set_defaults(func=cmd_sweep)
