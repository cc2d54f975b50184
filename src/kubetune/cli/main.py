"""`kubetune`: the launcher's command line. This module is the parser that registers each verb
family, `--version`, and the mapping from errors to exit codes.

Each family is one module with the same shape, `register(subparsers)` adding its verbs with
their `cmd_*` functions: `run` (validate, render, run), `quickstart` (prepare-quickstart),
`cluster` (submit, status, logs, cancel, list), `runs` (runs, show), `plot`, `retrain`,
`models` (models list/show/promote/rollback). The arguments several families take are in
`cli.arguments`; tables and numbers are printed by `cli.formatting`.

Never imports torch or `kubetune.workload`: it must install and start fast on a laptop. Local
runs start the workload entrypoints as child processes, exactly as a pod would.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Callable

from kubetune.cli import cluster, models, plot, quickstart, retrain, run, runs, sweep
from kubetune.contract.errors import UserError
from kubetune.contract.exitcodes import EXIT_BAD_INPUT

# A user's mistake (bad spec, bad arguments) exits as the entrypoints' bad input does.
EXIT_USER_ERROR = EXIT_BAD_INPUT
# The verb families, in the order `kubetune --help` lists their verbs.
FAMILIES = (run, quickstart, cluster, runs, plot, retrain, models, sweep)


def _version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kubetune")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubetune",
        description="Fine-tune pretrained Hugging Face models as batch jobs on Kubernetes, or locally.",
    )
    parser.add_argument("--version", action="version", version=f"kubetune {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in FAMILIES:
        family.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        code = func(args)
        sys.stdout.flush()  # here, not at exit, so that a reader gone away is caught below
        return code
    except UserError as exc:  # a bad spec, bad arguments, an unreadable store: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return closed_pipe_exit()


def closed_pipe_exit() -> int:
    """`kubetune runs | head`: the reader closed the pipe, which is no error of ours. End quietly
    with a shell's code for a process the pipe stopped (128 + SIGPIPE), as `yes | head` does;
    what is still buffered goes to /dev/null, so the interpreter's own flush at exit does not
    raise again (the recipe of Python's `signal` docs, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
