"""An elastic gang's world size over time, as the launcher shows it (issue 24, point 5): the
workload's ProgressCallback writes `metrics/train.jsonl` records with the `world_size` that
`KubetuneTrainer.log` adds (driven here by real `TrainerState`s, without training), and the
progress line, `kubetune runs` and `kubetune status`'s progress read it back from the store."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerControl, TrainerState, TrainingArguments

from kubetune.cli.cluster import format_progress as status_progress
from kubetune.cli.main import main
from kubetune.contract.layout import RunLayout
from kubetune.contract.progress import format_progress, format_world_sizes, world_size_history
from kubetune.launch.runs import describe_run, progress
from kubetune.storage import Store
from kubetune.workload.trainer.callbacks import ProgressCallback

RUN = "elastic"
SIZES = {1: 2, 2: 2, 3: 1, 4: 1, 5: 2, 6: 2}  # step -> world size: 2, lost a node at 3, back at 5


def _log(store: Store, tmp_path: Path) -> list[str]:
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none")
    state, control = TrainerState(), TrainerControl()
    state.max_steps, state.global_step = 6, 0
    callback = ProgressCallback(store, RunLayout(RUN), tmp_path / "train.jsonl", samples_per_step=16)
    callback.on_train_begin(args, state, control)
    for step, size in SIZES.items():
        state.global_step, state.epoch = step, step / 6
        callback.on_log(args, state, control, logs={"loss": 0.5, "world_size": size})
    store.write_text(f"{RunLayout(RUN).base}/spec.yaml", "name: elastic\ntask: text-classification\nmodel: {source: m}\n")
    return [json.dumps(r) for r in store.read_text(RunLayout(RUN).train_metrics).splitlines()]


def test_history_and_its_words():
    records = [{"step": s, "world_size": w} for s, w in SIZES.items()] + [{"step": 7, "eval_loss": 0.1}]
    assert world_size_history(records) == [[1, 2], [3, 1], [5, 2]]
    assert format_world_sizes([[1, 2], [3, 1], [5, 2]]) == "world size 2→1→2 (steps 1, 3, 5)"
    assert format_world_sizes([[1, 2]]) is None and format_world_sizes(None) is None  # no change, nothing shown
    assert format_progress({"step": 3, "epoch": 0.5, "loss": 0.5, "world_size": 1}, 6).endswith("| world size 1")


def test_runs_and_status_show_the_world_size_over_time(tmp_path, capsys):
    store = Store(str(tmp_path / "store"))
    _log(store, tmp_path)
    capsys.readouterr()
    assert progress(store, RUN)["world_sizes"] == [[1, 2], [3, 1], [5, 2]]
    assert "world size 2→1→2 (steps 1, 3, 5)" in status_progress(progress(store, RUN))
    assert main(["runs", "--store", str(tmp_path / "store")]) == 0
    assert "6/-, world size 2→1→2 (steps 1, 3, 5)" in capsys.readouterr().out  # no status.json: total unknown
    # Once the run is done, summary.json's history (from the sample log) is the word.
    store.write_json(RunLayout(RUN).summary, {"global_step": 6, "world_size_history": [[1, 2], [3, 1], [4, 2]]})
    assert describe_run(store, RUN)["world_sizes"] == [[1, 2], [3, 1], [4, 2]]
