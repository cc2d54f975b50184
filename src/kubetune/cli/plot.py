"""`kubetune plot`: the training curves of one or more runs of a store, overlaid in one PNG
(`kubetune.figures.curves` draws the figure the pod also writes as `metrics/curves.png`); with
`--sweep NAME`, a sweep's trials instead (`kubetune.figures.sweep`)."""

from __future__ import annotations

import argparse
from typing import Any

from kubetune.cli.arguments import add_store_args, open_store
from kubetune.contract.errors import UserError


def cmd_plot(args: argparse.Namespace) -> int:
    """Why matplotlib is imported here at all: it is the `plot` extra's (or the `train`
    extra's) library, not torch, and only this command needs it."""
    from kubetune.contract.layout import RunLayout
    from kubetune.figures.curves import plot_curves
    from kubetune.launch.runs import read_records

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("kubetune plot needs matplotlib: pip install 'kubetune[plot]'") from None
    store = open_store(args)
    if args.sweep is not None:
        if args.runs:
            raise UserError("kubetune plot: give runs or --sweep NAME, not both")
        url = write_sweep_plot(store, args.sweep, args.output)
        if not url:
            raise UserError(f"sweep {args.sweep!r}: no trial has a value yet")
        print(f"sweep {args.sweep}: {url}")
        return 0
    if not args.runs:
        raise UserError("kubetune plot: name one or more runs, or --sweep NAME")
    if args.output is None:
        raise UserError("kubetune plot RUN...: -o FILE.png is required")
    runs = {}
    for name in args.runs:
        layout = RunLayout(name)
        if not store.exists(layout.base):
            raise UserError(f"run {name!r}: no {store.url(layout.base)}")
        runs[name] = read_records(store, layout)
    if not plot_curves(runs, args.output):
        raise UserError(f"{', '.join(args.runs)}: nothing logged yet (no metrics/train.jsonl records)")
    print(f"curves of {', '.join(args.runs)}: {args.output}")
    return 0


def write_sweep_plot(store: Any, sweep: str, output: str | None) -> str | None:
    """A sweep's picture (`figures.sweep`) from its trials.jsonl, into `output`, else into the
    store (`sweeps/<job>/sweep.png`); where it went, or None when there is nothing to draw."""
    import tempfile
    from pathlib import Path

    from kubetune.contract.layout import SweepLayout
    from kubetune.figures.sweep import plot_sweep
    from kubetune.launch.sweep.results import read_results

    records, summary = read_results(store, sweep)
    objective = summary.get("objective") or {}
    metric, direction = objective.get("metric", "objective"), objective.get("direction", "maximize")
    if output is not None:
        return output if plot_sweep(records, metric, direction, output) else None
    with tempfile.TemporaryDirectory(prefix="kubetune-plot-") as tmp:
        local = Path(tmp) / "sweep.png"
        if not plot_sweep(records, metric, direction, local):
            return None
        store.upload_file(local, SweepLayout(sweep).plot)
    return store.url(SweepLayout(sweep).plot)


def register(subparsers: Any) -> None:
    """Add plot to `kubetune`'s subcommands."""
    p = subparsers.add_parser("plot", help="training loss, learning rate and validation metrics against step, runs overlaid")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run names (folders under runs/)")
    p.add_argument("-o", "--output", default=None, metavar="FILE.png",
                   help="the PNG to write (required for runs; --sweep: default sweeps/NAME/sweep.png in the store)")
    p.add_argument("--sweep", default=None, metavar="NAME",
                   help="a sweep's picture instead: objective per trial over time, and against each parameter")
    p.add_argument("--job", default=None, help="a job spec whose storage.root to read (or --store)")
    add_store_args(p)
    p.set_defaults(func=cmd_plot)
