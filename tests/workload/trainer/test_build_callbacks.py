"""`build_trainer` hands the Trainer every callback at construction, fully configured, and sets
nothing on it afterwards (issue 21): a real Run (`training.setup`, a local store with the
pretrained MiniLM and real SST-2 rows), the real Trainer, watched by a subclass that records
what the Trainer's constructor left."""

from __future__ import annotations

from pathlib import Path

import yaml
from transformers import DefaultFlowCallback, EarlyStoppingCallback, PrinterCallback

from kubetune.contract.names import ENV_WORKDIR
from kubetune.contract.spec.job import load_spec
from kubetune.workload.checkpointing.checkpointer import Checkpointer
from kubetune.workload.checkpointing.preemption import Preemption, PreemptionCallback
from kubetune.workload.checkpointing.upload_callback import CheckpointUploadCallback
from kubetune.workload.entrypoints.arguments import pod_env
from kubetune.workload.stages.training import setup
from kubetune.workload.trainer import build
from kubetune.workload.trainer.callbacks import ProgressCallback


def _run(local_store: Path, shared_data: Path, tmp_path: Path):
    data = local_store / "data"
    data.mkdir()
    lines = (shared_data / "sst2" / "train.tsv").read_text().splitlines()
    (data / "train.tsv").write_text("\n".join(lines[:17]) + "\n")
    (data / "validation.tsv").write_text("\n".join(lines[:1] + lines[17:25]) + "\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "built",
        "model": {"source": "models/all-MiniLM-L6-v2"},
        "data": {"train": "data/train.tsv", "validation": "data/validation.tsv", "columns": {"text": "sentence"}},
        "train": {"max_steps": 2, "batch_size": 4, "max_seq_length": 32,
                  "early_stopping": {"metric": "accuracy", "patience": 2}},
        "tracking": {"tensorboard": True},
        "storage": {"root": str(local_store)},
    }))
    return setup(load_spec(spec), pod_env())


def test_the_trainer_is_complete_when_built(local_store, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_WORKDIR, str(tmp_path / "work"))
    run = _run(local_store, shared_data, tmp_path)
    at_construction: dict = {}
    real_class = build.trainer_class

    def watched_class(task):
        class Watched(real_class(task)):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                at_construction.update(callbacks=list(self.callback_handler.callbacks), attributes=dict(vars(self)),
                                       args=self.args.to_dict())

        return Watched

    monkeypatch.setattr(build, "trainer_class", watched_class)
    checkpointer = Checkpointer(run, Preemption())
    built = build.build_trainer(run, checkpointer)
    trainer = built.trainer

    # Nothing was added, removed or set after the constructor returned.
    assert trainer.callback_handler.callbacks == at_construction["callbacks"]
    assert vars(trainer).keys() == at_construction["attributes"].keys()
    assert all(vars(trainer)[k] is v for k, v in at_construction["attributes"].items())
    assert trainer.args.to_dict() == at_construction["args"]

    # Every callback, in order: the Trainer's flow, progress, checkpointing's three (uploads,
    # SIGTERM, a stop once nothing more may be written), a sweep's PRUNE marker, early stopping,
    # status, TensorBoard and its sync to the store; no PrinterCallback.
    callbacks = trainer.callback_handler.callbacks
    names = [type(c).__name__ for c in callbacks]
    assert names == ["DefaultFlowCallback", "ProgressCallback", "CheckpointUploadCallback", "PreemptionCallback",
                     "StopOnFatal", "PruneCallback", "EarlyStoppingCallback", "StatusCallback", "TensorBoardCallback",
                     "TensorBoardSync"], names
    assert isinstance(callbacks[0], DefaultFlowCallback) and isinstance(callbacks[6], EarlyStoppingCallback)
    assert not any(isinstance(c, PrinterCallback) for c in callbacks)
    progress, upload, stop = callbacks[1:4]
    assert isinstance(progress, ProgressCallback) and progress.uploader is checkpointer.uploader is not None
    assert isinstance(upload, CheckpointUploadCallback) and upload.uploader is checkpointer.uploader
    assert upload.position == checkpointer.data_position  # configured at construction, not patched in
    assert isinstance(stop, PreemptionCallback) and stop.preemption is checkpointer.preemption

    # What the Trainer subclass reads came through its constructor; what finish() needs, in the result.
    assert trainer.resume is checkpointer.state and trainer.resume.sampler is not None  # group_by_length
    assert trainer.args.output_dir == str(checkpointer.local_dir)
    from kubetune.workload.model.devices import precision

    assert built.speed_settings["precision"] == precision("auto").name  # issue 30: bf16 on a CPU with bf16 units
    assert trainer.args.bf16 is (precision("auto").name == "bf16") and built.prepared.train is trainer.train_dataset
    assert not hasattr(trainer, "speed_settings") and not hasattr(trainer, "resume_state")
    assert checkpointer.drain()
