"""A sweep as a picture (`kubetune plot --sweep NAME`): the objective of each trial in the
order they ended, with the best so far, and the objective against each parameter (one panel
per parameter, log-scaled where the values span a decade or more), pruned trials at the value
they were stopped with, failed ones left out.

Drawn from `trials.jsonl`'s records alone, so it needs matplotlib and nothing of Optuna
(Optuna's own plots need plotly). Agg backend, as `figures.curves`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

COLORS = {"complete": "tab:blue", "pruned": "tab:orange"}


def _shown_value(record: dict[str, Any], direction: str) -> float | None:
    """The trial's objective, or for a pruned one its best value when it was stopped."""
    if record["state"] == "complete":
        return record["objective"]
    if record["state"] == "pruned" and record.get("intermediate"):
        values = [float(v) for v in record["intermediate"].values()]
        return max(values) if direction == "maximize" else min(values)
    return None


def plot_sweep(records: list[dict[str, Any]], metric: str, direction: str, out: str | Path) -> bool:
    """Write the PNG; False when no trial has a value to show yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(r, v) for r in records if (v := _shown_value(r, direction)) is not None]
    if not shown:
        return False
    shown.sort(key=lambda rv: (rv[0].get("ended") or "", rv[0]["number"]))
    params = sorted({p for r, _ in shown for p in r["params"]})
    fig, axes = plt.subplots(1, 1 + len(params), figsize=(4.5 * (1 + len(params)), 3.8), squeeze=False)
    ax = axes[0][0]
    xs = list(range(1, len(shown) + 1))
    for x, (r, v) in zip(xs, shown):
        ax.scatter(x, v, color=COLORS[r["state"]], zorder=3)
        ax.annotate(str(r["number"]), (x, v), textcoords="offset points", xytext=(4, 4), fontsize=7)
    best, best_line = None, []
    for r, v in shown:
        if r["state"] == "complete":
            best = v if best is None else (max(best, v) if direction == "maximize" else min(best, v))
        best_line.append(best if best is not None else math.nan)
    ax.plot(xs, best_line, color="tab:green", label="best so far")
    ax.set_xlabel("trials, in the order they ended")
    ax.set_ylabel(f"{metric} ({direction})")
    ax.set_title("objective per trial (orange: pruned)")
    ax.legend(fontsize=7)
    for ax, name in zip(axes[0][1:], params):
        points = [(r["params"][name], v, r["state"]) for r, v in shown if name in r["params"]]
        numeric = all(isinstance(p, (int, float)) and not isinstance(p, bool) for p, _, _ in points)
        labels = sorted({str(p) for p, _, _ in points})
        for p, v, state in points:
            ax.scatter(p if numeric else labels.index(str(p)), v, color=COLORS[state], zorder=3)
        if numeric:
            low, high = min(p for p, _, _ in points), max(p for p, _, _ in points)
            if low > 0 and high / low >= 10:
                ax.set_xscale("log")
        else:
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(name)
        ax.set_title(f"{metric} against {name}")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True
