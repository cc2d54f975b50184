"""The ETA of the progress lines: a running average that does not jump by multiples."""

from __future__ import annotations

import pytest

from kubetune.workload.trainer.callbacks import Pace


def etas(pace: Pace, times: list[float], steps: list[int], max_steps: int) -> list[float]:
    out = []
    for now, step in zip(times, steps):
        per_step = pace.seconds_per_step(now, step)
        out.append((max_steps - step) * per_step)
    return out


def test_an_evaluation_pause_moves_the_eta_by_its_share_not_by_a_multiple():
    pace = Pace()
    pace.begin(0.0, 0)
    steps = [1, 10, 20, 30, 40, 50, 60, 70]
    # 1 s/step, except that the interval 50 -> 60 holds a 60 s evaluation (7x a normal interval).
    times = [3.0, 12.0, 22.0, 32.0, 42.0, 52.0, 122.0, 132.0]
    eta = etas(pace, times, steps, 200)
    for before, after in zip(eta[1:], eta[2:]):
        assert after / before < 2.0 and before / after < 2.0, eta
    # The last interval alone (the old estimate) would have jumped 7x at step 60.
    assert (200 - 60) * 7.0 / ((200 - 50) * 1.0) > 5
    # The average since step 1 includes the pause at its real share.
    assert eta[-1] == pytest.approx((200 - 70) * (132.0 - 3.0) / 69)


def test_the_first_line_is_timed_from_the_start_of_training():
    pace = Pace()
    pace.begin(100.0, 0)
    assert pace.seconds_per_step(104.0, 1) == pytest.approx(4.0)
    assert pace.seconds_per_step(109.0, 6) == pytest.approx(1.0)  # since step 1, warm-up left out


def test_a_resumed_run_is_timed_from_its_resume_step():
    pace = Pace()
    pace.begin(0.0, 40)
    assert pace.seconds_per_step(2.0, 41) == pytest.approx(2.0)
    assert pace.seconds_per_step(5.0, 44) == pytest.approx(1.0)


def _begin(tmp_path, step: int, records: list[dict]) -> tuple[str, list[str]]:
    import json

    from transformers import TrainerControl, TrainerState, TrainingArguments

    from kubetune.contract.layout import RunLayout
    from kubetune.storage import Store
    from kubetune.workload.trainer.callbacks import ProgressCallback

    store, layout = Store(str(tmp_path / "store")), RunLayout("demo")
    store.write_text(layout.train_metrics, "".join(json.dumps(r) + "\n" for r in records))
    local = tmp_path / "work" / "train.jsonl"
    state = TrainerState(global_step=step, max_steps=40, epoch=step / 20)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[])
    ProgressCallback(store, layout, local, samples_per_step=8).on_train_begin(args, state, TrainerControl())
    return local.read_text(), [json.loads(line)["step"] for line in local.read_text().splitlines()]


def test_a_resumed_run_prints_its_step_and_last_loss_before_training(tmp_path, capsys):
    """The line the launcher's bar starts from (issue 28): the resume step and the last loss
    logged up to it; the log continues up to that step only."""
    records = [{"step": 10, "epoch": 0.5, "loss": 0.9}, {"step": 20, "epoch": 1.0, "loss": 0.4},
               {"step": 20, "epoch": 1.0, "eval_accuracy": 0.8}, {"step": 30, "epoch": 1.5, "loss": 0.2}]
    _, steps = _begin(tmp_path, 20, records)
    assert steps == [10, 20, 20]
    assert capsys.readouterr().out.splitlines() == ["kubetune: step 20/40 | epoch 1.00 | loss 0.4000"]


def test_a_fresh_run_prints_no_resume_line(tmp_path, capsys):
    _, steps = _begin(tmp_path, 0, [{"step": 10, "epoch": 0.5, "loss": 0.9}])
    assert steps == [] and capsys.readouterr().out == ""
