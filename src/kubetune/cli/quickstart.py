"""`kubetune prepare-quickstart`: the offline model and a small labelled dataset (SST-2 from the
Hugging Face Hub where it is reachable, else synthetic sentences) put into a local store
(`kubetune.launch.quickstart` does the work)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_prepare_quickstart(args: argparse.Namespace) -> int:
    from kubetune.launch.quickstart import prepare

    prepare(args.root, hub=not args.offline)
    return 0


def register(subparsers: Any) -> None:
    """Add prepare-quickstart to `kubetune`'s subcommands."""
    p = subparsers.add_parser(
        "prepare-quickstart",
        help="put the offline MiniLM model and a small labelled dataset into a local store "
             "(SST-2 from the Hugging Face Hub where it is reachable, else synthetic sentences)",
    )
    p.add_argument("--offline", action="store_true",
                   help="do not ask the Hub: use the bundled synthetic sentences (the accuracy then shows "
                        "the mechanics, not quality)")
    p.add_argument("--root", default=".kubetune", help="storage root to fill (default: .kubetune)")
    p.set_defaults(func=cmd_prepare_quickstart)
