"""`kubetune plot`: the training curves of one or more runs of a store, overlaid in one PNG
(`kubetune.figures.curves` draws the figure the pod also writes as `metrics/curves.png`)."""

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


def register(subparsers: Any) -> None:
    """Add plot to `kubetune`'s subcommands."""
    p = subparsers.add_parser("plot", help="training loss, learning rate and validation metrics against step, runs overlaid")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run names (folders under runs/)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.png", help="the PNG to write")
    p.add_argument("--job", default=None, help="a job spec whose storage.root to read (or --store)")
    add_store_args(p)
    p.set_defaults(func=cmd_plot)
