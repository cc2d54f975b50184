"""train.collective_timeout_seconds reaches the Trainer's process-group timeout (issue 11): ranks
whose peer is gone stop waiting after minutes, not the Trainer's default 30, so torchrun's
agents can restart the gang."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from kubetune.contract.spec.job import validate_spec
from kubetune.workload.stages.run import PodEnv
from kubetune.workload.tasks import get_task
from kubetune.workload.trainer.build import training_arguments


def _arguments(tmp_path, **train):
    spec = validate_spec({"name": "demo", "model": {"source": "m"}, "data": {"train": "t.tsv"}, "train": train})
    run = SimpleNamespace(spec=spec, task=get_task(spec), env=PodEnv(), accumulation=spec.train.gradient_accumulation_steps)
    return training_arguments(run, tmp_path)  # type: ignore[arg-type]


def test_collective_timeout_reaches_the_process_group(tmp_path):
    assert _arguments(tmp_path).ddp_timeout == 300  # the default: minutes, not the Trainer's 1800
    args = _arguments(tmp_path, collective_timeout_seconds=90)
    assert args.ddp_timeout == 90
    assert args.ddp_timeout_delta == timedelta(seconds=90)  # what init_process_group is given
