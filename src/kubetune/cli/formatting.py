"""How the command line prints tables, numbers and durations, in one place for every verb family
(`runs`, `show`, `status`, `list`), so two tables of kubetune never pad or round differently."""

from __future__ import annotations

from typing import Any


def table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, as kubectl prints them; the first row is the header.

    Why by hand: one line per row at any terminal width (so `| grep` and `| sort` work); rich's
    tables fit themselves to the terminal and wrap or cut cells when piped."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def number(value: Any) -> str:
    """A metric or a count as a cell: floats to four decimals, None as `-`."""
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def elapsed(seconds: float | None) -> str:
    """A run's duration or ETA: `1h05m` or `4m07s`; `-` when unknown. (A Job's age in `status`
    and `list` is kubectl's format, `launch.cluster.state.duration`.)"""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
