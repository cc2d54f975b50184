"""`kubetune models list / show / promote / rollback`: a job's model registry from the command line.

`list`, `show` and `rollback` are store operations (`kubetune.registry`, no torch). `promote`
must score the run and the current version on the gate data, which needs the model stack:
it runs the promote entrypoint (names.PROMOTE_MODULE) as a local child process
(`launch.entrypoint_process`, as `validate --data` runs the check entrypoint), rather than
trusting numbers a run wrote about itself; the same entrypoint is the gating step after a
multi-node scheduled run. Its error lines name the user's spec file, as the launcher's own do.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from kubetune.cli.arguments import add_json_arg, add_spec_args
from kubetune.cli.formatting import number, table
from kubetune.contract import names as kn
from kubetune.contract.errors import UserError
from kubetune.contract.spec.job import JobSpec, load_spec

# Gate metrics shown by `models list`, when a version has them.
LIST_METRICS = ("accuracy", "f1_macro", "f1", "exact_match", "rougeL", "perplexity")


def _registry(spec: JobSpec) -> Any:
    from kubetune.registry import Registry
    from kubetune.storage import Store

    store = Store.from_spec(spec.storage)
    store.check_reachable()
    return Registry(store, spec.name)


def _data_size(record: dict[str, Any]) -> int | None:
    lineage = record.get("lineage") or {}
    sizes = [f.get("size") or 0 for field, files in (lineage.get("data") or {}).items()
             if field in ("data.train", "data.validation") for f in files]
    return sum(sizes) if sizes else None


def cmd_models_list(args: argparse.Namespace) -> int:
    spec = load_spec(args.job, args.overrides)
    registry = _registry(spec)
    current = registry.current()
    versions = registry.versions()
    if args.json:
        print(json.dumps({"current": current["version"] if current else None, "versions": versions}, indent=2))
        return 0
    if not versions:
        print(f"no versions in {registry.store.url(registry.layout.base)}")
        return 0
    for record in versions:
        mark = "*" if current and current["version"] == record["version"] else " "
        size = _data_size(record)
        print(f"{mark} {record['version']}  {record['created']}  run {record['run']}  {_gate_scores(record) or '-'}  "
              f"data {size if size is not None else '?'} bytes")
    return 0


def _gate_scores(record: dict[str, Any]) -> str:
    """The version's own gate metrics (`accuracy 0.8300, f1_macro 0.8290`), those of LIST_METRICS it has."""
    scores = (record.get("decision") or {}).get("candidate") or {}
    return ", ".join(f"{m} {scores[m]:.4f}" for m in LIST_METRICS if isinstance(scores.get(m), (int, float)))


def show_lines(record: dict[str, Any], current: str | None) -> list[str]:
    """`kubetune models show`: one version as `kubetune show` prints a run, a label per line,
    the gate's checks as a table, the lineage as indented JSON (it is nested data)."""
    decision = record.get("decision") or {}
    size = _data_size(record)
    lines = [f"version:     {record['version']}" + ("  (current)" if record["version"] == current else ""),
             f"created:     {(record.get('created') or '-').replace('+00:00', 'Z')}",
             f"run:         {record.get('run') or '-'}",
             f"model:       {record.get('model') or '-'}",
             f"parent:      {record.get('parent') or '-'}",
             f"gate:        {_gate_scores(record) or '-'}",
             f"decision:    {decision.get('reason') or '-'}",
             f"data:        {f'{size} bytes' if size is not None else '-'}"]
    checks = decision.get("checks") or []
    if checks:
        rows = [["CHECK", "VALUE", "LIMIT", "OK"]]
        rows += [[c["check"], number(c.get("value")), number(c.get("limit")), "yes" if c.get("ok") else "no"] for c in checks]
        lines += ["checks:", *("  " + line for line in table(rows).splitlines())]
    if record.get("lineage"):
        lines += ["lineage:", *("  " + line for line in json.dumps(record["lineage"], indent=2).splitlines())]
    return lines


def cmd_models_show(args: argparse.Namespace) -> int:
    spec = load_spec(args.job, args.overrides)
    registry = _registry(spec)
    current = registry.current()
    name = args.version
    if name is None:
        if current is None:
            raise UserError(f"{registry.store.url(registry.layout.base)}: no current version yet")
        name = current["version"]
    record = registry.version(name)
    if args.json:
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0
    print("\n".join(show_lines(record, current["version"] if current else None)))
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    spec = load_spec(args.job, args.overrides)
    moved = _registry(spec).rollback(args.to)
    print(f"current: {moved['version']} (was {moved['previous']}; run {moved['run']})")
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from kubetune.launch.entrypoint_process import run_entrypoint

    spec = load_spec(args.job, args.overrides)
    _registry(spec)  # an unreachable store fails here, before the model stack starts
    return run_entrypoint(kn.PROMOTE_MODULE, spec, ["--run", args.run, *(["--force"] if args.force else [])]).returncode


def register(subparsers: Any) -> None:
    """Add `models` and its verbs to `kubetune`'s subcommands."""
    models = subparsers.add_parser("models", help="the job's model registry: list, show, promote, rollback")
    verbs = models.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("list", help="versions with date, run, gate metrics, data size; * marks CURRENT")
    add_spec_args(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_models_list)
    p = verbs.add_parser("show", help="one version (default: the current one): gate metrics, decision, lineage")
    add_spec_args(p)
    p.add_argument("version", nargs="?", default=None, help="vNNNN (default: current)")
    add_json_arg(p)
    p.set_defaults(func=cmd_models_show)
    p = verbs.add_parser("promote", help="score a finished run against CURRENT on the gate data; promote if better")
    add_spec_args(p)
    p.add_argument("run", help="run folder name (runs/RUN/)")
    p.add_argument("--force", action="store_true", help="promote even if the gate says no (recorded as forced)")
    p.set_defaults(func=cmd_models_promote)
    p = verbs.add_parser("rollback", help="point CURRENT back at the previous version (or --to VERSION)")
    add_spec_args(p)
    p.add_argument("--to", default=None, metavar="VERSION", help="vNNNN to make current")
    p.set_defaults(func=cmd_models_rollback)
