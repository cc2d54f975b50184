"""Training curves as a picture: loss, learning rate and every validation metric against step,
one line per run. Used by the workload (each finished run leaves `metrics/curves.png`) and by
`kubetune plot` (several runs overlaid), so both draw the same figure.

matplotlib only, imported when a figure is drawn and with the Agg backend (no display, safe in
a pod and on CI). It comes with the `train` extra and the `plot` extra (a launcher-only install
that wants `kubetune plot`); nothing else of kubetune needs it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# Logged values that are bookkeeping, not curves worth a panel.
SKIPPED = {"epoch", "step", "eta_seconds", "samples_per_second", "total_flos", "max_steps"}


def panels(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The keys to draw, in order: training loss, learning rate, then each validation metric
    (the `eval_*` keys, without runtimes and throughputs)."""
    keys: set[str] = set()
    for records in runs.values():
        for record in records:
            keys.update(k for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    evals = sorted(k for k in keys if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second")))
    return [k for k in ("loss", "learning_rate") if k in keys] + evals


def series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one key; a step logged twice (a resumed run) keeps its last value."""
    points: dict[int, float] = {}
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            points[int(record["step"])] = float(value)
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def plot_curves(runs: dict[str, list[dict[str, Any]]], path: str | Path, title: str | None = None) -> list[str]:
    """Draw every run's curves into one PNG at `path`; returns the panels drawn (an empty list
    draws nothing: a run with no logged step yet has no curve)."""
    keys = panels(runs)
    if not keys:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, records in runs.items():
            steps, values = series(records, key)
            if steps:
                ax.plot(steps, values, marker="o" if len(steps) < 4 else None, markersize=3, label=name)
        ax.set_title(key.replace("eval_", "validation ").replace("_", " "))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
    return keys
