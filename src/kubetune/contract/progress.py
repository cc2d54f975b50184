"""The training progress line a pod prints on its stdout, and how the launcher reads it back.

The pod (rank 0's progress callback) prints one line per logging step:

    kubetune: step 12/23 | epoch 0.52 | loss 0.6931 | lr 1.00e-04 | 48.1 samples/s | eta 0:00:09

`kubetune run --local` reads its pods' output and draws these lines as one live bar per stage;
logs on a cluster keep the plain lines. Both sides use this module, so the line has one format.
Standard library only.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

PROGRESS_PREFIX = "kubetune: step "

_STEP = re.compile(r"^kubetune: step (\d+)/(\d+)")
_FIELDS = {
    "epoch": re.compile(r"\| epoch ([0-9.]+)"),
    "loss": re.compile(r"\| loss ([-+0-9.eE]+|nan|inf)"),
    "samples_per_second": re.compile(r"\| ([0-9.]+) samples/s"),
}
_ETA = re.compile(r"\| eta (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")


def format_progress(record: dict[str, Any], max_steps: int) -> str:
    """One logged record of train.jsonl as the pod's progress line."""
    step = record["step"]
    parts = [f"step {step}/{max_steps}", f"epoch {record.get('epoch', 0):.2f}"]
    if "loss" in record:
        parts.append(f"loss {record['loss']:.4f}")
    if "learning_rate" in record:
        parts.append(f"lr {record['learning_rate']:.2e}")
    for key, value in record.items():
        if key.startswith("eval_") and key not in ("eval_runtime",) and isinstance(value, float) and "per_second" not in key:
            parts.append(f"{key} {value:.4f}")
    if "samples_per_second" in record:
        parts.append(f"{record['samples_per_second']:.1f} samples/s")
    if "world_size" in record:  # an elastic gang (issue 24): the ranks training now
        parts.append(f"world size {int(record['world_size'])}")
    if "eta_seconds" in record:
        parts.append(f"eta {datetime.timedelta(seconds=int(record['eta_seconds']))}")
    return "kubetune: " + " | ".join(parts)


def parse_progress(line: str) -> dict[str, Any] | None:
    """A progress line's step, total, epoch, loss, samples/s and ETA (seconds); None for any
    other line. Fields a line lacks (no loss on an evaluation line) are None."""
    match = _STEP.match(line.strip())
    if match is None:
        return None
    parsed: dict[str, Any] = {"step": int(match.group(1)), "max_steps": int(match.group(2))}
    for name, pattern in _FIELDS.items():
        found = pattern.search(line)
        parsed[name] = float(found.group(1)) if found else None
    eta = _ETA.search(line)
    parsed["eta_seconds"] = (int(eta.group(1) or 0) * 86400 + int(eta.group(2)) * 3600 + int(eta.group(3)) * 60
                             + int(eta.group(4))) if eta else None
    return parsed


def progress_parts(p: dict[str, Any]) -> list[str]:
    """Epoch, loss and samples/s of a parsed progress record, as the launcher's bar and
    `kubetune status` both show them (each only when the pod reported it)."""
    parts = []
    if p.get("epoch") is not None:
        parts.append(f"epoch {p['epoch']:.2f}")
    if p.get("loss") is not None:
        parts.append(f"loss {p['loss']:.4f}")
    if p.get("samples_per_second") is not None:
        parts.append(f"{p['samples_per_second']:.1f} samples/s")
    return parts


def world_size_history(records: list[dict[str, Any]]) -> list[list[int]]:
    """[[step, world_size], ...] of an elastic gang's records (`metrics/samples.jsonl` or
    `train.jsonl`, those with a `world_size`): the first, then each step at which it changed."""
    history: list[list[int]] = []
    for record in sorted((r for r in records if "world_size" in r), key=lambda r: int(r["step"])):
        size = int(record["world_size"])
        if not history or history[-1][1] != size:
            history.append([int(record["step"]), size])
    return history


def format_world_sizes(history: list[list[int]] | None) -> str | None:
    """`world size 2→1→2 (steps 1, 17, 45)`; None without a change to show (a fixed size)."""
    if not history or len(history) < 2:
        return None
    sizes = "→".join(str(size) for _, size in history)
    return f"world size {sizes} (steps {', '.join(str(step) for step, _ in history)})"
