"""A sweep's trial waits at each evaluation for the controller's verdict on that step
(`workload.trainer.pruning`), so a pruned trial stops at the step it was judged at, however
slowly the controller answers. A real store (a local folder), a real Controller thread answering
through it, and the callback driven by the Trainer's own state and control objects."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from transformers import TrainerControl, TrainerState

from kubetune.contract.layout import RunLayout
from kubetune.storage import Store
from kubetune.workload.trainer.pruning import PruneCallback

ARGS = SimpleNamespace(world_size=1, device="cpu")


def _evaluate(callback: PruneCallback, step: int, loss: float) -> TrainerControl:
    state, control = TrainerState(), TrainerControl()
    state.global_step = step
    callback.on_evaluate(ARGS, state, control, metrics={"eval_loss": loss, "epoch": 0.5})
    return control


def _answer_later(store: Store, layout: RunLayout, answers: dict[int, str], delay_s: float) -> threading.Thread:
    """A slow controller: it reads each reported step and answers it `delay_s` later."""
    def loop() -> None:
        verdicts: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(verdicts) < len(answers) and time.monotonic() < deadline:
            reported = store.read_json(layout.sweep_evaluations) if store.exists(layout.sweep_evaluations) else {}
            for step in reported:
                if step not in verdicts and int(step) in answers:
                    time.sleep(delay_s)
                    verdicts[step] = answers[int(step)]
                    store.write_json(layout.sweep_verdicts, verdicts)
            time.sleep(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_a_trial_waits_for_each_verdict_and_stops_at_the_judged_step(tmp_path):
    store, layout = Store(str(tmp_path)), RunLayout("qs-t002")
    callback = PruneCallback(store, layout, verdict_s=20)
    controller = _answer_later(store, layout, {2: "continue", 4: "prune"}, delay_s=1.0)
    started = time.monotonic()
    going_on = _evaluate(callback, 2, 0.9)
    assert time.monotonic() - started >= 1.0  # it waited for the slow answer
    assert not going_on.should_training_stop and callback.pruned_at is None
    stopped = _evaluate(callback, 4, 0.8)
    assert stopped.should_training_stop and stopped.should_save and callback.pruned_at == 4
    controller.join(5)
    # What the controller judged: every evaluation's metrics, reported before any verdict.
    assert store.read_json(layout.sweep_evaluations) == {"2": {"eval_loss": 0.9, "epoch": 0.5},
                                                         "4": {"eval_loss": 0.8, "epoch": 0.5}}


def test_an_unanswered_evaluation_goes_on_after_the_bounded_wait(tmp_path, capsys):
    store, layout = Store(str(tmp_path)), RunLayout("qs-t000")
    callback = PruneCallback(store, layout, verdict_s=0.5)
    started = time.monotonic()
    control = _evaluate(callback, 2, 0.9)
    assert 0.5 <= time.monotonic() - started < 5
    assert not control.should_training_stop and callback.pruned_at is None
    assert "no verdict from the sweep on step 2 within 0.5 s: going on" in capsys.readouterr().out


def test_a_resumed_trial_keeps_its_earlier_reports(tmp_path):
    store, layout = Store(str(tmp_path)), RunLayout("qs-t001")
    store.write_json(layout.sweep_evaluations, {"2": {"eval_loss": 1.0}})
    store.write_json(layout.sweep_verdicts, {"2": "continue", "4": "continue"})
    assert not _evaluate(PruneCallback(store, layout, verdict_s=5), 4, 0.7).should_training_stop
    assert store.read_json(layout.sweep_evaluations) == {"2": {"eval_loss": 1.0}, "4": {"eval_loss": 0.7, "epoch": 0.5}}


def test_outside_a_pruning_sweep_only_the_marker_counts_and_nothing_waits(tmp_path):
    store, layout = Store(str(tmp_path)), RunLayout("plain")
    callback = PruneCallback(store, layout)
    assert not _evaluate(callback, 2, 0.9).should_training_stop
    assert not store.exists(layout.sweep_evaluations)
    store.write_text(layout.prune_marker, "stopped by hand\n")
    assert _evaluate(callback, 4, 0.9).should_training_stop and callback.pruned_at == 4


def test_a_store_that_fails_never_prunes(tmp_path):
    class Broken(Store):
        def write_text(self, rel: str, text: str) -> None:
            raise OSError("store down")

    store = Broken(str(tmp_path))
    callback = PruneCallback(store, RunLayout("qs-t003"), verdict_s=5)
    assert not _evaluate(callback, 2, 0.9).should_training_stop and callback.pruned_at is None
