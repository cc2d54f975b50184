"""`kubetune prepare-quickstart`: the offline model and a small labelled dataset put into a local
store (`kubetune.launch.quickstart` does the work)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_prepare_quickstart(args: argparse.Namespace) -> int:
    from kubetune.launch.quickstart import prepare

    prepare(args.root)
    return 0


def register(subparsers: Any) -> None:
    """Add prepare-quickstart to `kubetune`'s subcommands."""
    p = subparsers.add_parser(
        "prepare-quickstart",
        help="put the offline MiniLM model and a small labelled dataset into a local store",
    )
    p.add_argument("--root", default=".kubetune", help="storage root to fill (default: .kubetune)")
    p.set_defaults(func=cmd_prepare_quickstart)
