"""The command line every entrypoint shares: `--spec FILE` and repeated `--set KEY.PATH=VALUE`."""

from __future__ import annotations

import argparse

from kubetune.contract.spec.job import JobSpec, load_spec


def spec_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser named after the entrypoint module, described by its docstring's first line."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--spec", required=True, help="resolved job spec YAML (the mounted ConfigMap)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    return parser


def load_spec_from(args: argparse.Namespace) -> JobSpec:
    return load_spec(args.spec, args.overrides)
