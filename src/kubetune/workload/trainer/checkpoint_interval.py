"""`train.checkpoint_every: auto`: the checkpoint interval chosen from measured costs by the
Young/Daly optimum, and re-chosen after every save (docs/elastic.md#checkpoint_every-auto).

Frequent checkpoints cost time; rare ones lose more work to each interruption. With C the cost
of one checkpoint and M the mean time between interruptions (3600 / the spec's
`resources.interruptions_per_hour`), Young's optimum interval is sqrt(2 C M); Daly's refinement,
used here, is sqrt(2 C M) * [1 + sqrt(C / 2M) / 3 + (C / 2M) / 9] - C while C < 2M, else M.

C is measured, not guessed: the seconds the training loop stands still for a checkpoint (from
the end of the step that asks for it to the end of the Trainer's save: the evaluation that
picks the best model, which comes with every checkpoint here, the local save, the snapshot for
the upload and, on other nodes than rank 0's, their files' upload) plus the seconds of the most
recent upload that finished (rank 0's `Uploader`, in the background). The whole upload counts,
not only what blocks: a checkpoint protects work only once it is committed, so an upload delays
the point a restart resumes from by its length, and an interval shorter than the upload makes
the next save supersede a checkpoint still on its way (the uploader then skips it). The
interval is converted to steps with the measured seconds per step (training time between two
saves over its steps) and bounded by MIN_INTERVAL_S and MAX_INTERVAL_S; with no interruptions
expected (M infinite) it is MAX_INTERVAL_S. Until the first save has been measured the interval
is MIN_INTERVAL_S, so the cost is known early.

Why the Trainer's own schedule is not changed: `save_steps` is a period (a save whenever
`global_step % save_steps == 0`), so a new value would put the next save at a multiple of the
new period, not one interval after the last save. The callback raises the evaluate and save
flags itself, and `build` sets the Trainer's period beyond any run (NEVER_BY_PERIOD). Every
rank must save at the same step (a save gathers from every rank): rank 0 measures and chooses,
and its choice is broadcast at steps every rank reaches (the probe's last step, each save).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from transformers import TrainerCallback

# The bounds of the chosen interval, in seconds of training (documented in docs/elastic.md).
MIN_INTERVAL_S = 60.0
MAX_INTERVAL_S = 3600.0
# Steps timed before the first save is planned (the first steps include warm-up).
PROBE_STEPS = 5
# `save_steps`/`eval_steps` under auto: a period no run reaches, so only the callback saves
# (and the Trainer's save at the last step).
NEVER_BY_PERIOD = 2**31 - 1


def mtbi_seconds(interruptions_per_hour: float) -> float:
    """The mean time between interruptions: 3600 / rate, infinite when none are expected."""
    return 3600.0 / interruptions_per_hour if interruptions_per_hour > 0 else math.inf


def young_daly_seconds(save_cost_s: float, mtbi_s: float) -> float:
    """Daly's optimum checkpoint interval (J. T. Daly, 2006, eq. 37) for a checkpoint costing
    `save_cost_s` and a mean time between interruptions `mtbi_s`: sqrt(2 C M) (Young, 1974)
    refined by [1 + sqrt(C/2M)/3 + (C/2M)/9] - C while C < 2M; M otherwise. Hand-written: a
    formula of one line, no library states it."""
    if math.isinf(mtbi_s):
        return math.inf
    if save_cost_s >= 2 * mtbi_s:
        return mtbi_s
    ratio = save_cost_s / (2 * mtbi_s)
    return math.sqrt(2 * save_cost_s * mtbi_s) * (1 + math.sqrt(ratio) / 3 + ratio / 9) - save_cost_s


@dataclass
class IntervalChoice:
    """One choice of the interval and what it was made from (`metrics/summary.json`)."""

    step: int  # the global step it was made at
    steps: int
    seconds: float
    step_s: float
    mtbi_s: float
    save_cost_s: float | None = None  # None: not measured yet (the first interval is the minimum)
    blocked_s: float | None = None
    upload_s: float | None = None

    def line(self) -> str:
        """The progress log's line."""
        mtbi = "none expected" if math.isinf(self.mtbi_s) else f"{self.mtbi_s:.0f} s"
        if self.save_cost_s is None:
            why = f"first save after the minimum {self.seconds:.0f} s, to measure its cost"
        else:
            upload = "none finished yet" if self.upload_s is None else f"{self.upload_s:.1f} s"
            why = f"save {self.save_cost_s:.1f} s (blocked {self.blocked_s:.1f} s, upload {upload})"
        return f"kubetune: checkpoint every {self.steps} steps (auto: {why}, MTBI {mtbi}, step {self.step_s:.3f} s)"

    def record(self) -> dict[str, Any]:
        record = asdict(self)
        record["mtbi_s"] = None if math.isinf(self.mtbi_s) else self.mtbi_s  # JSON has no infinity
        return record


def choose_interval(step: int, step_s: float, mtbi_s: float, blocked_s: float | None = None,
                    upload_s: float | None = None) -> IntervalChoice:
    """The interval after a save that blocked `blocked_s` and an upload of `upload_s` (None:
    none measured yet), bounded by MIN_INTERVAL_S and MAX_INTERVAL_S, in whole steps (at least 1)."""
    cost = None if blocked_s is None else blocked_s + (upload_s or 0.0)
    seconds = MIN_INTERVAL_S if cost is None else min(max(young_daly_seconds(cost, mtbi_s), MIN_INTERVAL_S),
                                                       MAX_INTERVAL_S)
    steps = max(1, round(seconds / step_s)) if step_s > 0 else 1
    return IntervalChoice(step, steps, seconds, step_s, mtbi_s, cost, blocked_s, upload_s)


class AutoCheckpointCallback(TrainerCallback):
    """Saves (and evaluates) one chosen interval after the last save; see the module docstring.
    `upload_seconds`: rank 0's seconds of the most recent finished upload (None: none yet);
    `clock`: the time source (a test passes its own)."""

    def __init__(self, interruptions_per_hour: float, upload_seconds: Callable[[], float | None] | None = None,
                 is_main: bool = True, clock: Callable[[], float] = time.monotonic):
        self.mtbi_s = mtbi_seconds(interruptions_per_hour)
        self.upload_seconds = upload_seconds or (lambda: None)
        self.is_main = is_main
        self.clock = clock
        self.history: list[IntervalChoice] = []
        self._window: tuple[float, int] | None = None  # (time, step) training resumed at
        self._next: int | None = None
        self._block: tuple[float, float] | None = None  # (when the save step ended, its step time)

    def on_train_begin(self, args, state, control, **kwargs):
        self._window, self._next, self._block = None, None, None

    def on_step_begin(self, args, state, control, **kwargs):
        if self._window is None:
            self._window = (self.clock(), state.global_step)

    def _step_s(self, now: float, step: int) -> float:
        began, first = self._window or (now, step)
        return (now - began) / max(step - first, 1)

    def on_step_end(self, args, state, control, **kwargs):
        now = self.clock()
        if self._next is None and self._window is not None and state.global_step - self._window[1] >= PROBE_STEPS:
            self._choose(args, choose_interval(state.global_step, self._step_s(now, state.global_step), self.mtbi_s),
                         since=self._window[1])
        if self._next is not None and state.global_step >= self._next and not control.should_training_stop:
            control.should_evaluate = True
            control.should_save = True
        if control.should_save:  # ours, the last step's, a SIGTERM's (which evaluates nothing): each is measured
            self._block = (now, self._step_s(now, state.global_step))

    def on_save(self, args, state, control, **kwargs):
        if self._block is None:
            return
        ended, step_s = self._block
        choice = choose_interval(state.global_step, step_s, self.mtbi_s, self.clock() - ended, self.upload_seconds())
        self._choose(args, choice, since=state.global_step)
        self._block, self._window = None, None  # the next window starts with the next step

    def _choose(self, args, choice: IntervalChoice, since: int) -> None:
        choice = _from_rank0(args, choice)
        self._next = since + choice.steps
        self.history.append(choice)
        if self.is_main:
            print(choice.line(), flush=True)

    def summary(self) -> dict[str, Any]:
        """`metrics/summary.json`'s `checkpoint_interval`: the last choice, and every choice."""
        if not self.history:
            return {}
        last = self.history[-1].record()
        return {"checkpoint_interval": {key: last[key] for key in ("steps", "seconds", "save_cost_s", "mtbi_s", "step_s")}
                | {"history": [choice.record() for choice in self.history]}}


def _from_rank0(args: Any, choice: IntervalChoice) -> IntervalChoice:
    """Rank 0's choice on every rank (each measured its own clock; they must save together)."""
    if int(getattr(args, "world_size", 1) or 1) <= 1:
        return choice
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return choice
    box = [choice]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def interval_summary(callbacks: list[Any]) -> dict[str, Any]:
    """The `checkpoint_interval` entry of `metrics/summary.json` when the run chose its interval."""
    auto = next((c for c in callbacks if isinstance(c, AutoCheckpointCallback)), None)
    return auto.summary() if auto is not None else {}
