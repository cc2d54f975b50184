"""`runs/<run>/metrics/status.json`: the train stage's own account of where its run stands,
so `kubetune runs` and `kubetune show` (launcher side, reading only the store) can tell a run
that is training from one that was preempted and can resume, or one that finished.

Written by rank 0 only, at these moments: training starts (`running`, with the metric that
picks the best checkpoint), SIGTERM with the checkpoint committed (`preempted`), SIGTERM whose
checkpoint did not land in time (`interrupted`: `step` is the last committed one, where a
resume starts, and `stopped_at` where training stopped), a sweep's pruning (`pruned`) and the
model committed (`complete`). A pod killed without warning leaves `running`; the launcher then
judges by how long ago the run last wrote its metrics (`kubetune.launch.runs`).
"""

from __future__ import annotations

import datetime
from typing import Any

from kubetune.contract.exitcodes import EXIT_INTERRUPTED_UNSAVED
from kubetune.contract.layout import RunLayout
from kubetune.storage import Store


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_status(store: Store, layout: RunLayout, state: str, **fields: Any) -> None:
    """Replace the status with `state` and `fields`, keeping when the run first started (a
    resumed run keeps its original start) and the best-metric settings written at start.
    Best effort: a store hiccup here must never fail a training that is otherwise fine."""
    try:
        old = store.read_json(layout.status) if store.exists(layout.status) else {}
    except Exception:  # a torn or unreadable old status: start a fresh one
        old = {}
    status = {
        "started": old.get("started") or now_iso(),
        **{k: old[k] for k in ("metric", "greater_is_better", "max_steps") if k in old},
        **fields,
        "state": state,
        "updated": now_iso(),
    }
    try:
        store.write_json(layout.status, status)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal (see docstring)
        print(f"kubetune: warning: could not write {layout.status}: {exc}", flush=True)


def status_callback(store: Store, layout: RunLayout) -> Any:
    """A Trainer callback writing `running` when training (re)starts, with the step, the
    total steps and the metric that picks the best checkpoint, which only the Trainer knows
    by then. Built here, lazily, so this module imports without transformers."""
    from transformers import TrainerCallback

    class StatusCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                write_status(store, layout, "running", step=state.global_step, max_steps=state.max_steps,
                             metric=args.metric_for_best_model, greater_is_better=bool(args.greater_is_better))

    return StatusCallback()


def write_curves(store: Store, layout: RunLayout, workdir: Any) -> None:
    """`metrics/curves.png` of a finished run, drawn from its `metrics/train.jsonl` with the
    same figure `kubetune plot` draws. Best effort: a run whose model is committed is not
    failed by a picture."""
    import json
    from pathlib import Path

    from kubetune.figures.curves import plot_curves

    try:
        records = [json.loads(line) for line in store.read_text(layout.train_metrics).splitlines() if line.strip()]
        local = Path(workdir) / "curves.png"
        if plot_curves({layout.job: [r for r in records if "step" in r]}, local, title=layout.job):
            store.upload_file(local, layout.curves)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal (see docstring)
        print(f"kubetune: warning: no {layout.curves}: {exc}", flush=True)


def write_stop_status(store: Store, layout: RunLayout, code: int, stopped_at: int, saved_through: int | None,
                      max_steps: int | None) -> None:
    """The status after SIGTERM stopped training at `stopped_at` and the stage leaves with `code`:
    `preempted` at that step when its checkpoint landed (EXIT_RETRY_AFTER_CHECKPOINT), else
    `interrupted` at `saved_through`, the newest committed step, where a resume starts."""
    if code == EXIT_INTERRUPTED_UNSAVED:
        write_status(store, layout, "interrupted", step=saved_through or 0, stopped_at=stopped_at, max_steps=max_steps)
    else:
        write_status(store, layout, "preempted", step=stopped_at, max_steps=max_steps)
