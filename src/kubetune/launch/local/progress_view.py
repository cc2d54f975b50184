"""`kubetune run --local`: the pods' progress lines as one live progress bar per stage.

The pods print a progress line per logging step (`kubetune.contract.progress`); the launcher
reads their stdout line by line (`local_gang`) and hands each line to a `ProgressView`:

* On a terminal, the progress lines become one tqdm bar (step/total, percent, epoch, loss,
  samples/s, ETA from the pod's own numbers), redrawn in place; every other line is printed
  above it. tqdm is a base dependency (small, pure Python, no torch), so the launcher keeps
  starting without the `train` extra.
* Elsewhere (CI logs, a pipe, a file), the lines stay plain text, throttled: a progress line
  is printed when PLAIN_INTERVAL_S passed since the last one printed, when it is the first
  after any other output (a resume, a warning), and when it is the stage's last step, so a
  log holds where the run started, where it went, and where it ended, without one line per
  step. A held-back line is printed when the stage ends, so the last known step is shown.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import time
from typing import Any, Callable, TextIO

from kubetune.contract.names import ENV_PROGRESS_INTERVAL
from kubetune.contract.progress import parse_progress, progress_parts

# Seconds between two plain progress lines when the output is not a terminal (the user's
# names.ENV_PROGRESS_INTERVAL overrides it: 0 keeps every line, for log collectors and tests).
PLAIN_INTERVAL_S = 5.0


def plain_interval_s() -> float:
    """PLAIN_INTERVAL_S, or the user's names.ENV_PROGRESS_INTERVAL when it is a number >= 0."""
    try:
        value = float(os.environ.get(ENV_PROGRESS_INTERVAL, ""))
    except ValueError:
        return PLAIN_INTERVAL_S
    return value if math.isfinite(value) and value >= 0 else PLAIN_INTERVAL_S
# A gang's lines carry their pod's name: "[job-train-0] kubetune: step ...".
_POD_PREFIX = re.compile(r"^\[[^\]\s]+\] ")


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def bar_postfix(p: dict[str, Any]) -> str:
    """The bar's text after step/total: epoch, loss, samples/s and ETA, as the pod reported them."""
    parts = [*progress_parts(p), f"eta {_eta(p['eta_seconds'])}"]
    return " | ".join(parts)


class ProgressView:
    """Where one stage's output goes: a live bar on a terminal, throttled plain lines elsewhere.
    `feed` is called from the pods' reader threads, so it holds a lock."""

    def __init__(self, label: str, out: TextIO | None = None, tty: bool | None = None,
                 interval_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.out = out if out is not None else sys.stdout
        self.tty = _isatty(self.out) if tty is None else tty
        self.interval_s = plain_interval_s() if interval_s is None else interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._bar: Any = None
        self._printed_at: float | None = None  # when the last plain progress line was printed
        self._held: str | None = None  # a throttled progress line not printed yet

    def feed(self, line: str) -> None:
        """One line of a pod's output (with or without its newline)."""
        text = line if line.endswith("\n") else line + "\n"
        progress = parse_progress(_POD_PREFIX.sub("", text))
        with self._lock:
            if progress is None:
                self._other(text)
            elif self.tty:
                self._draw(progress)
            else:
                self._plain(text, progress)

    def close(self) -> None:
        """The stage ended: the held-back line is printed, the bar is left on its last state."""
        with self._lock:
            if self._held is not None:
                self._write(self._held)
                self._held = None
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def _other(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text.rstrip("\n"), file=self.out)
        else:
            self._write(text)
        self._printed_at = None  # the next progress line shows where training stands after it

    def _plain(self, text: str, p: dict[str, Any]) -> None:
        now = self._clock()
        due = self._printed_at is None or now - self._printed_at >= self.interval_s or p["step"] >= p["max_steps"]
        if due:
            self._write(text)
            self._printed_at, self._held = now, None
        else:
            self._held = text

    def _draw(self, p: dict[str, Any]) -> None:
        from tqdm import tqdm

        # The pod's numbers go into the format itself: tqdm's {postfix} would add its own ", ".
        text = bar_postfix(p).replace("{", "{{").replace("}", "}}")
        bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n}/{total} | " + text
        if self._bar is None:
            # Its first frame already at the pod's step, with its loss: a resumed run's bar starts
            # at the resume step, it does not flash 0/total first (issue 28).
            self._bar = tqdm(total=p["max_steps"], initial=p["step"], desc=self.label, file=self.out,
                             dynamic_ncols=True, bar_format=bar_format)
            return
        self._bar.bar_format = bar_format
        self._bar.total = p["max_steps"]
        self._bar.n = p["step"]
        self._bar.refresh()

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
