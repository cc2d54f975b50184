"""One training run: `setup` (check everything cheap) → `train` → `finish` (commit the model).

Does not care who launched it (torchrun in an Indexed Job, a local process, a test): the rank
and world size come from the environment. Everything checkable is checked before the model
is loaded: a bad spec, an unreachable store, a missing model folder or bad data end as one
`UserError` (exit code 2 at the entrypoint), with nothing written.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import yaml

from kubetune.contract.layout import RunLayout, run_layout
from kubetune.contract.names import ENV_WORKDIR
from kubetune.contract.spec import JobSpec, SpecError
from kubetune.storage import Store
from kubetune.workload.model_source import check_model_source
from kubetune.workload.run import Run, Trained
from kubetune.workload.run_status import now_iso, status_callback, write_curves, write_status
from kubetune.workload.splits import load_splits
from kubetune.workload.tasks import get_task

log = logging.getLogger("kubetune.train")

# Parts of a spec that define what a run computes; storage, resources and image may change
# between attempts of the same run (e.g. a retried pod on another node pool).
RUN_DEFINING = ("task", "model", "data", "train")


def workdir_for(job: str) -> Path:
    """Local scratch for Trainer output: ENV_WORKDIR (an emptyDir in a pod), else /tmp."""
    root = Path(os.environ.get(ENV_WORKDIR) or Path(tempfile.gettempdir()) / "kubetune-work")
    path = root / job
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_same_run(store: Store, layout: RunLayout, spec: JobSpec) -> None:
    """A run folder belongs to one spec: refuse to mix a different configuration into it."""
    if not store.exists(layout.spec):
        return
    stored = yaml.safe_load(store.read_text(layout.spec)) or {}
    current = spec.model_dump(mode="json")
    changed = [k for k in RUN_DEFINING if stored.get(k) != current.get(k)]
    if changed:
        raise SpecError(
            f"{store.url(layout.spec)}: run {spec.name!r} already exists with a different {', '.join(changed)}; "
            "choose a new name (--set name=...) or remove the old run"
        )


def setup(spec: JobSpec) -> Run | None:
    """Validate everything cheap; returns None when the run already finished."""
    store = Store.from_spec(spec.storage)
    store.check_reachable()
    layout = run_layout(spec.name)
    check_same_run(store, layout, spec)
    if store.is_committed(layout.model):
        print(f"kubetune: run {spec.name} is already complete: {store.url(layout.model)}", flush=True)
        return None
    model_uri = check_model_source(store, spec.model.source)
    tokenizer_uri = check_model_source(store, spec.model.tokenizer, "model.tokenizer") if spec.model.tokenizer else model_uri
    task = get_task(spec)
    task.check_spec()
    splits = load_splits(spec, store, task.columns())  # streamed train: only its head
    task.check_data(splits)
    return Run(
        spec=spec,
        store=store,
        layout=layout,
        task=task,
        splits=splits,
        model_uri=model_uri,
        tokenizer_uri=tokenizer_uri,
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        workdir=workdir_for(layout.job),
    )


def train(run: Run) -> Trained:
    """Build the Trainer, resume from the newest committed checkpoint if any, train."""
    from kubetune.workload.preemption import PREEMPTION
    from kubetune.workload.resume import restore_position
    from kubetune.workload.trainer_setup import build_trainer, resume_point

    PREEMPTION.install()  # SIGTERM: checkpoint at the end of the step, then exit 75
    if run.is_main:
        run.store.write_text(run.layout.spec, run.spec.to_yaml())
    trainer, prepared = build_trainer(run)
    if run.is_main:
        trainer.add_callback(status_callback(run.store, run.layout))  # status.json: running
    resume = resume_point(run)
    restore_position(trainer, resume)  # the sampler's epoch / the stream's position
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return Trained(trainer=trainer, prepared=prepared, result=result, preempted=PREEMPTION.requested)


def finish(run: Run, trained: Trained) -> None:
    """Save the best model with its tokenizer, label map and spec; commit it last."""
    from kubetune.workload.lora import save_lora
    from kubetune.workload.resume import drain

    trainer, result = trained.trainer, trained.result
    drain(trainer)  # checkpoints and metrics queued for upload land before the model commits
    out = run.workdir / "model"
    trainer.save_model(str(out))
    if not run.is_main:
        return
    if run.spec.train.lora is not None:  # adapter (+ config), or merged model with adapter/ inside
        save_lora(trainer.model, out, run.spec)
    trainer.processing_class.save_pretrained(str(out))
    (out / "spec.yaml").write_text(run.spec.to_yaml())
    if trained.prepared.labels is not None:
        (out / "labels.json").write_text(json.dumps(trained.prepared.labels, indent=2) + "\n")
    files = run.store.upload_dir(out, run.layout.model)
    best = trainer.state.best_model_checkpoint
    summary = {
        "global_step": result.global_step,
        "training_loss": result.training_loss,
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": Path(best).name if best else None,
        **{k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
    }
    run.store.write_json(f"{run.layout.base}/metrics/summary.json", summary)
    run.store.commit(run.layout.model, files, global_step=result.global_step)
    print(f"kubetune: model committed: {run.store.url(run.layout.model)}", flush=True)


def run_training(spec: JobSpec) -> int:
    """The train stage: 0 when the model is committed (or already was), EXIT_RETRY_AFTER_CHECKPOINT
    after SIGTERM with the checkpoint committed."""
    run = setup(spec)
    if run is None:
        return 0
    trained = train(run)
    if trained.preempted:
        from kubetune.workload.resume import leave_after_preemption

        code = leave_after_preemption(run, trained)
        if run.is_main:
            state = trained.trainer.state
            write_status(run.store, run.layout, "preempted", step=state.global_step, max_steps=state.max_steps)
        return code
    finish(run, trained)
    if run.is_main:
        state = trained.trainer.state
        write_status(run.store, run.layout, "complete", step=state.global_step, max_steps=state.max_steps,
                     best_metric=state.best_metric, ended=now_iso())
        write_curves(run.store, run.layout, run.workdir)
    return 0
