"""`train.checkpoint_every: auto` (issue 24, point 4): the Young/Daly choice against values worked
out by hand, its bounds and steps, and the callback's schedule on a clock the test drives (the
real TrainerState and TrainerControl); and one light run through the train entrypoint (slow)."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from kubetune.contract.names import ENV_WORKDIR
from kubetune.workload.trainer.checkpoint_interval import (
    MAX_INTERVAL_S, MIN_INTERVAL_S, PROBE_STEPS, AutoCheckpointCallback, choose_interval, interval_summary,
    mtbi_seconds, young_daly_seconds,
)


def test_mean_time_between_interruptions():
    assert mtbi_seconds(1.0) == 3600.0
    assert mtbi_seconds(4.0) == 900.0
    assert mtbi_seconds(0.0) == math.inf  # none expected


@pytest.mark.parametrize("cost, mtbi, expected", [
    # C = 10 s, M = 3600 s: Young sqrt(2*10*3600) = sqrt(72000) = 268.3282; C/2M = 10/7200 = 0.0013889,
    # sqrt(C/2M)/3 = 0.0372678/3 = 0.0124226, (C/2M)/9 = 0.0001543: factor 1.0125769;
    # 268.3282 * 1.0125769 = 271.7029, minus C: 261.7029 s.
    (10.0, 3600.0, 261.7029),
    # C = 30 s, M = 900 s: sqrt(54000) = 232.3790; C/2M = 0.0166667, sqrt/3 = 0.1290994/3 = 0.0430331,
    # /9 = 0.0018519: factor 1.0448850; 232.3790 * 1.0448850 = 242.8093, minus 30: 212.8093 s.
    (30.0, 900.0, 212.8093),
    # C = 120 s, M = 1800 s: sqrt(432000) = 657.2671; C/2M = 0.0333333, sqrt/3 = 0.1825742/3 = 0.0608581,
    # /9 = 0.0037037: factor 1.0645618; 657.2671 * 1.0645618 = 699.7014, minus 120: 579.7014 s.
    (120.0, 1800.0, 579.7014),
    # C = 300 s >= 2M = 200 s: checkpoint every M = 100 s.
    (300.0, 100.0, 100.0),
])
def test_young_daly_against_hand_computed_values(cost, mtbi, expected):
    assert young_daly_seconds(cost, mtbi) == pytest.approx(expected, abs=1e-3)


def test_the_choice_is_bounded_and_in_whole_steps():
    # C = 10 s at 1 interruption per hour: 261.7029 s; at 0.5 s per step, 523.4 -> 523 steps.
    choice = choose_interval(step=100, step_s=0.5, mtbi_s=3600.0, blocked_s=4.0, upload_s=6.0)
    assert (choice.save_cost_s, choice.steps) == (10.0, 523)
    assert choice.seconds == pytest.approx(261.7029, abs=1e-3)
    # C = 0.5 s: Daly's 59.667 s is below the minimum interval.
    assert choose_interval(0, 0.1, 3600.0, 0.5).seconds == MIN_INTERVAL_S
    # No interruptions expected: the longest interval; 3600 s at 2 s per step is 1800 steps.
    idle = choose_interval(0, 2.0, math.inf, 30.0, 10.0)
    assert (idle.seconds, idle.steps) == (MAX_INTERVAL_S, 1800)
    assert idle.record()["mtbi_s"] is None  # JSON has no infinity
    # Before a save was measured: the minimum, so the first cost is known early; at least 1 step.
    first = choose_interval(5, 0.25, 3600.0)
    assert (first.seconds, first.steps, first.save_cost_s) == (MIN_INTERVAL_S, 240, None)
    assert choose_interval(0, 1e6, 3600.0).steps == 1
    assert "first save after the minimum 60 s" in first.line()
    assert choice.line() == ("kubetune: checkpoint every 523 steps (auto: save 10.0 s (blocked 4.0 s, "
                             "upload 6.0 s), MTBI 3600 s, step 0.500 s)")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _step(callback, state, clock, seconds: float) -> TrainerControl:
    """One optimizer step of `seconds`, as the Trainer calls the callback."""
    args = SimpleNamespace(world_size=1)
    control = TrainerControl()
    callback.on_step_begin(args, state, control)
    clock.now += seconds
    state.global_step += 1
    callback.on_step_end(args, state, control)
    return control


def test_the_callback_saves_one_chosen_interval_after_the_last_save_and_re_chooses(capsys):
    clock, uploads = Clock(), []
    callback = AutoCheckpointCallback(2.0, upload_seconds=lambda: uploads[-1] if uploads else None, clock=clock)
    state, args = TrainerState(), SimpleNamespace(world_size=1)
    callback.on_train_begin(args, state, TrainerControl())
    saves = []
    for _ in range(400):
        control = _step(callback, state, clock, 0.5)
        if control.should_save:
            assert control.should_evaluate  # a checkpoint here always comes with its evaluation
            saves.append(state.global_step)
            clock.now += 12.0  # evaluation and save block the loop for 12 s
            callback.on_save(args, state, control)
            uploads.append(8.0)  # its upload finishes in the background, 8 s
    # Probe: 5 steps of 0.5 s; first interval the minimum: 60 s / 0.5 s = 120 steps after step 0.
    assert saves[0] == 120 and PROBE_STEPS == 5
    # After it: C = 12 s blocked, no upload finished yet; M = 1800 s. Daly: sqrt(2*12*1800) = 207.8461,
    # C/2M = 0.0033333 (sqrt/3 = 0.0192450, /9 = 0.0003704): 207.8461 * 1.0196154 - 12 = 199.9231 s
    # -> 399.8 -> 400 steps after step 120.
    second = callback.history[1]
    assert (second.blocked_s, second.upload_s, second.steps) == (12.0, None, 400)
    assert second.seconds == pytest.approx(199.9231, abs=1e-3)
    assert len(saves) == 1  # the next one is at step 520
    for _ in range(400):
        control = _step(callback, state, clock, 0.5)
        if control.should_save:
            saves.append(state.global_step)
            clock.now += 12.0
            callback.on_save(args, state, control)
    assert saves == [120, 520]
    # Now C = 12 + 8 = 20 s: sqrt(72000) = 268.3282, C/2M = 0.0055556 (sqrt/3 = 0.0248452, /9 =
    # 0.0006173): 268.3282 * 1.0254625 - 20 = 255.1606 s -> 510.3 -> 510 steps.
    third = callback.history[2]
    assert (third.save_cost_s, third.steps) == (20.0, 510)
    out = capsys.readouterr().out
    assert out.count("kubetune: checkpoint every") == 3
    assert "kubetune: checkpoint every 510 steps (auto: save 20.0 s (blocked 12.0 s, upload 8.0 s), MTBI 1800 s" in out
    summary = interval_summary([object(), callback])["checkpoint_interval"]
    assert (summary["steps"], summary["save_cost_s"], summary["mtbi_s"], summary["step_s"]) == (510, 20.0, 1800.0, 0.5)
    assert [h["step"] for h in summary["history"]] == [5, 120, 520]
    assert interval_summary([object()]) == {}


def test_a_sigterm_save_is_measured_but_adds_no_evaluation():
    clock = Clock()
    callback = AutoCheckpointCallback(0.0, clock=clock)
    state, args = TrainerState(), SimpleNamespace(world_size=1)
    callback.on_train_begin(args, state, TrainerControl())
    for _ in range(119):
        assert not _step(callback, state, clock, 0.5).should_save
    control = TrainerControl()
    callback.on_step_begin(args, state, control)
    state.global_step += 1
    control.should_save, control.should_evaluate, control.should_training_stop = True, False, True  # SIGTERM's
    callback.on_step_end(args, state, control)
    assert control.should_save and not control.should_evaluate
    clock.now += 3.0
    callback.on_save(args, state, control)
    assert callback.history[-1].blocked_s == 3.0
    assert callback.history[-1].seconds == MAX_INTERVAL_S  # no interruptions expected


@pytest.mark.slow
def test_a_run_with_auto_reports_its_choice(tmp_path, local_store, shared_data, capsys, monkeypatch):
    """A few steps of SST-2 through the train entrypoint with `checkpoint_every: auto`: the
    first interval is planned after the probe, the last step's save is measured, and the
    progress log and `metrics/summary.json` say what was chosen from what."""
    import json

    from kubetune.workload.entrypoints import train

    monkeypatch.setenv(ENV_WORKDIR, str(tmp_path / "work"))
    data = local_store / "datasets" / "sst2"
    data.mkdir(parents=True)
    lines = (shared_data / "sst2" / "train.tsv").read_text().splitlines()
    (data / "train.tsv").write_text("\n".join(lines[:41]) + "\n")
    (data / "dev.tsv").write_text("\n".join(lines[:1] + lines[41:49]) + "\n")
    spec = tmp_path / "auto.yaml"
    spec.write_text(f"""
name: auto-interval
model: {{source: models/all-MiniLM-L6-v2}}
data: {{train: datasets/sst2/train.tsv, validation: datasets/sst2/dev.tsv, columns: {{text: sentence}}}}
train: {{max_steps: 8, batch_size: 4, max_seq_length: 32, checkpoint_every: auto}}
resources: {{interruptions_per_hour: 6}}
storage: {{root: {local_store}}}
""")
    assert train.main(["--spec", str(spec)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"kubetune: checkpoint every \d+ steps \(auto: first save after the minimum 60 s, to measure "
                     r"its cost, MTBI 600 s, step \d+\.\d{3} s\)", out), out
    final = re.search(r"kubetune: checkpoint every (\d+) steps \(auto: save (\d+\.\d) s \(blocked (\d+\.\d) s, "
                      r"upload none finished yet\), MTBI 600 s, step (\d+\.\d{3}) s\)", out)
    assert final, out
    summary = json.loads((local_store / "runs" / "auto-interval" / "metrics" / "summary.json").read_text())
    chosen = summary["checkpoint_interval"]
    assert [h["step"] for h in chosen["history"]] == [PROBE_STEPS, 8]  # the probe's plan, the last step's save
    assert chosen["mtbi_s"] == 600.0 and chosen["save_cost_s"] > 0 and chosen["step_s"] > 0
    expected = min(max(young_daly_seconds(chosen["save_cost_s"], 600.0), MIN_INTERVAL_S), MAX_INTERVAL_S)
    assert chosen["seconds"] == pytest.approx(expected)
    assert chosen["steps"] == max(1, round(chosen["seconds"] / chosen["step_s"])) == int(final.group(1))
    assert summary["global_step"] == 8
    assert (local_store / "runs" / "auto-interval" / "model" / "COMMITTED").exists()
