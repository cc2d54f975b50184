"""`kubetune runs` and `kubetune show`: the runs in a store, read from the store alone
(`kubetune.launch.runs` gathers, this module prints). No torch, no cluster."""

from __future__ import annotations

import argparse
import json
from typing import Any

from kubetune.cli.arguments import add_store_args, open_store
from kubetune.cli.formatting import elapsed, number, table
from kubetune.contract.progress import format_world_sizes

COLUMNS = ["name", "task", "model", "state", "steps", "best validation", "test", "started", "duration"]


def table_row(run: dict[str, Any]) -> list[str]:
    """One run's cells under COLUMNS (`launch.runs.describe_run`'s row)."""
    best, test = run["best"], run["test"]
    steps = f"{number(run['step'])}/{number(run['max_steps'])}"
    changes = format_world_sizes(run.get("world_sizes"))  # an elastic gang that changed size
    steps += f", {changes}" if changes else ""
    return [
        run["name"],
        run["task"] or "-",
        run["model"] or "-",
        f"{run['state'] or '-'}" + (f", {len(run['damaged_checkpoints'])} damaged checkpoint(s)" if run.get("damaged_checkpoints") else ""),
        steps,
        f"{best['metric']} {number(best['value'])} @{best['step']}" if best else "-",
        f"{test['metric']} {number(test['value'])}" if test else "-",
        (run["started"] or "-").replace("+00:00", "Z"),
        elapsed(run["duration_seconds"]),
    ]


def cmd_runs(args: argparse.Namespace) -> int:
    from kubetune.launch.runs import list_runs

    store = open_store(args)
    runs = list_runs(store)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print(f"no runs in {store.url('runs')}")
        return 0
    print(table([COLUMNS, *(table_row(r) for r in runs)]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from kubetune.launch.runs import show_run

    run = show_run(open_store(args), args.run)
    if args.json:
        print(json.dumps(run, indent=2))
        return 0
    print("\n".join(show_lines(run)))
    return 0


def show_lines(run: dict[str, Any]) -> list[str]:
    """`kubetune show`: the run's row, then each section that exists."""
    row = dict(zip(COLUMNS, table_row(run)))
    lines = [f"run:         {run['name']}  ({run['url']})"]
    lines += [f"{key + ':':<12} {row[key]}" for key in COLUMNS[1:]]
    if run["model_url"]:
        lines.append(f"model:       {run['model_url']}")
    spec = run["spec"]
    if spec.get("data"):
        data = spec["data"]
        lines.append("data:        " + ", ".join(f"{k} {data[k]}" for k in ("train", "validation", "test") if data.get(k)))
    if spec.get("train"):
        t = spec["train"]
        keys = ("epochs", "max_steps", "batch_size", "learning_rate", "max_seq_length", "seed")
        lines.append("train:       " + ", ".join(f"{k} {t[k]}" for k in keys if t.get(k) is not None))
    if run["summary"]:
        shown = {k: v for k, v in run["summary"].items() if not isinstance(v, dict)}
        lines.append("summary:     " + ", ".join(f"{k} {number(v)}" for k, v in shown.items()))
        if isinstance(run["summary"].get("speed_settings"), dict):  # what the run used (issue 16)
            lines.append("speed:       " + ", ".join(f"{k} {number(v)}" for k, v in run["summary"]["speed_settings"].items()))
    if run["test_metrics"]:
        shown = {k: v for k, v in run["test_metrics"].items() if isinstance(v, (int, float))}
        lines.append("test:        " + ", ".join(f"{k} {number(v)}" for k, v in shown.items()))
    if run["report"]:
        lines += ["per-class report:", *("  " + line for line in run["report"].rstrip().splitlines())]
    if run["checkpoints"]:
        marks = [f"step-{c['step']}{'' if c['committed'] else ' (not committed)'}" for c in run["checkpoints"]]
        lines.append(f"checkpoints: {', '.join(marks)}; LATEST {number(run['latest_checkpoint'])}")
    for damaged in run.get("damaged_checkpoints") or []:
        where = "set aside in damaged/" if damaged["set_aside"] else "still in checkpoints/"
        lines.append(f"damaged:     {damaged['checkpoint']} ({where}): {damaged['reason'] or 'no reason recorded'}")
    if run["lineage"]:
        lines += ["lineage:", *("  " + line for line in json.dumps(run["lineage"], indent=2).splitlines())]
    if run["curves"]:
        lines.append(f"curves:      {run['curves']}")
    return lines


def register(subparsers: Any) -> None:
    """Add runs and show to `kubetune`'s subcommands."""
    p = subparsers.add_parser("runs", help="a table of every run in a store, newest first (--json for scripts)")
    p.add_argument("job", nargs="?", default=None, help="a job spec whose storage.root to read (or --store)")
    add_store_args(p)
    p.set_defaults(func=cmd_runs)

    p = subparsers.add_parser("show", help="one run: spec summary, metrics, per-class report, checkpoints, lineage")
    p.add_argument("run", help="the run's name (its folder under runs/)")
    p.add_argument("--job", default=None, help="a job spec whose storage.root to read (or --store)")
    add_store_args(p)
    p.set_defaults(func=cmd_show)
