"""`kubetune runs` and `kubetune show`: the runs in a store, read from the store alone
(`kubetune.launch.runs` gathers, this module prints). No torch, no cluster."""

from __future__ import annotations

import argparse
import json
from typing import Any

from kubetune.contract.errors import UserError
from kubetune.contract.progress import progress_parts

DEFAULT_STORE = ".kubetune"
COLUMNS = ["name", "task", "model", "state", "steps", "best validation", "test", "started", "duration"]


def _store(args: argparse.Namespace) -> Any:
    """The store named by --store, or by a job spec's storage section, else ./.kubetune (the
    embedded default the quickstart uses)."""
    from kubetune.contract.spec.job import load_spec
    from kubetune.storage import Store

    job = getattr(args, "job", None)
    if job and args.store:
        raise UserError("give either --store URI or a JOB.yaml, not both")
    store = Store.from_spec(load_spec(job).storage) if job else Store(args.store or DEFAULT_STORE, args.endpoint_url)
    if store.protocol != "file":  # one probe: an unreachable endpoint is one line, not a traceback
        store.check_reachable()
    return store


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def table_row(run: dict[str, Any]) -> list[str]:
    best, test = run["best"], run["test"]
    steps = f"{_number(run['step'])}/{_number(run['max_steps'])}"
    return [
        run["name"],
        run["task"] or "-",
        run["model"] or "-",
        run["state"],
        steps,
        f"{best['metric']} {_number(best['value'])} @{best['step']}" if best else "-",
        f"{test['metric']} {_number(test['value'])}" if test else "-",
        (run["started"] or "-").replace("+00:00", "Z"),
        _duration(run["duration_seconds"]),
    ]


def format_table(rows: list[list[str]], header: list[str]) -> str:
    """Why by hand: one line per run at any terminal width (so `| grep` and `| sort` work);
    rich's tables fit themselves to the terminal and wrap or cut cells when piped."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def cmd_runs(args: argparse.Namespace) -> int:
    from kubetune.launch.runs import list_runs

    store = _store(args)
    runs = list_runs(store)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print(f"no runs in {store.url('runs')}")
        return 0
    print(format_table([table_row(r) for r in runs], COLUMNS))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from kubetune.launch.runs import show_run

    run = show_run(_store(args), args.run)
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
        lines.append("summary:     " + ", ".join(f"{k} {_number(v)}" for k, v in shown.items()))
        if isinstance(run["summary"].get("speed_settings"), dict):  # what the run used (issue 16)
            lines.append("speed:       " + ", ".join(f"{k} {_number(v)}" for k, v in run["summary"]["speed_settings"].items()))
    if run["test_metrics"]:
        shown = {k: v for k, v in run["test_metrics"].items() if isinstance(v, (int, float))}
        lines.append("test:        " + ", ".join(f"{k} {_number(v)}" for k, v in shown.items()))
    if run["report"]:
        lines += ["per-class report:", *("  " + line for line in run["report"].rstrip().splitlines())]
    if run["checkpoints"]:
        marks = [f"step-{c['step']}{'' if c['committed'] else ' (not committed)'}" for c in run["checkpoints"]]
        lines.append(f"checkpoints: {', '.join(marks)}; LATEST {_number(run['latest_checkpoint'])}")
    if run["lineage"]:
        lines += ["lineage:", *("  " + line for line in json.dumps(run["lineage"], indent=2).splitlines())]
    if run["curves"]:
        lines.append(f"curves:      {run['curves']}")
    return lines


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
    store = _store(args)
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


def format_progress(p: dict[str, Any]) -> str:
    """One line: step/total (percent), epoch, loss, samples/s, ETA, and when it was written."""
    parts = [f"step {p['step']}/{_number(p['max_steps'])}" + (f" ({p['percent']:.0f}%)" if p["percent"] is not None else "")]
    parts += progress_parts(p)
    if p["eta_seconds"] is not None:
        parts.append(f"eta {_duration(p['eta_seconds'])}")
    if p["updated"]:
        parts.append(f"logged {p['updated'].replace('+00:00', 'Z')}")
    return " | ".join(parts)


def is_spec_file(name: str) -> bool:
    """`kubetune status JOB.yaml`: an argument naming a YAML file is a job spec, not a job name
    (a job name is a DNS-1123 label, which never ends in `.yaml`)."""
    return name.endswith((".yaml", ".yml"))


def status_target(name: str, store_uri: str | None, endpoint_url: str | None) -> tuple[str, Any, str | None]:
    """What `kubetune status NAME|JOB.yaml` reads: the job name, the store whose
    `metrics/train.jsonl` holds its progress (--store, else a spec's `storage:` section, else
    none), and a spec's namespace. A spec file is read like `run` reads it, so a missing or bad
    file is one `error:` line; --store, when given, wins over the spec's storage root."""
    from kubetune.contract.spec.job import load_spec
    from kubetune.storage import Store

    if not is_spec_file(name):
        return name, Store(store_uri, endpoint_url) if store_uri else None, None
    spec = load_spec(name)
    store = Store(store_uri, endpoint_url) if store_uri else Store.from_spec(spec.storage)
    return spec.name, store, spec.kubernetes.namespace


def progress_lines(name: str, store: Any) -> list[str]:
    """`kubetune status`'s progress line, read from the run's metrics/train.jsonl, or why none."""
    from kubetune.launch.runs import progress

    if store is None:
        return []
    p = progress(store, name)
    return [f"progress: {format_progress(p)}" if p else f"progress: nothing logged yet in {store.url('runs', name)}"]


def add_runs_commands(sub: Any) -> None:
    """The parsers of `runs` and `show`, added to the CLI's subcommands."""
    p = sub.add_parser("runs", help="a table of every run in a store, newest first (--json for scripts)")
    p.add_argument("job", nargs="?", default=None, help="a job spec whose storage.root to read (or --store)")
    _add_store_args(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="one run: spec summary, metrics, per-class report, checkpoints, lineage")
    p.add_argument("run", help="the run's name (its folder under runs/)")
    p.add_argument("--job", default=None, help="a job spec whose storage.root to read (or --store)")
    _add_store_args(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("plot", help="training loss, learning rate and validation metrics against step, runs overlaid")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run names (folders under runs/)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.png", help="the PNG to write")
    p.add_argument("--job", default=None, help="a job spec whose storage.root to read (or --store)")
    _add_store_args(p)
    p.set_defaults(func=cmd_plot)


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, metavar="URI",
                   help=f"storage root: a folder or s3://bucket/prefix (default: {DEFAULT_STORE})")
    p.add_argument("--endpoint-url", default=None, metavar="URL",
                   help="S3 endpoint for --store (default: $AWS_ENDPOINT_URL)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
