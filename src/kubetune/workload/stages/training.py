"""One training run: `setup` (check everything cheap) → `train` → `finish` (commit the model).

Does not care who launched it (torchrun in an Indexed Job, a local process, a test): the rank,
world size and local folders come from the entrypoint (`PodEnv`). Everything checkable is
checked before the model is loaded, by the same checks as `validate --data`
(`stages.preflight`): a bad spec, an unreachable store, a missing model folder or bad data end
as one `UserError` (exit code 2 at the entrypoint), with nothing written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kubetune.contract.exitcodes import EXIT_PRUNED
from kubetune.contract.layout import RunLayout, checkpoint_name, run_layout
from kubetune.contract.spec.job import RUN_DEFINING, JobSpec, SpecError, run_defining
from kubetune.integrity import commit_verified
from kubetune.storage import Store, is_space_error
from kubetune.workload.data.lineage import DATA_FIELDS, build_lineage, data_records
from kubetune.workload.data.hub_revisions import commits_of
from kubetune.workload.data.pinning import check_inputs, read_attempts, record_attempt
from kubetune.workload.checkpointing.lease import RunLease, holder_id
from kubetune.workload.data.tables import PinnedData
from kubetune.workload.model.hub import check_hub
from kubetune.workload.stages.preflight import checks, open_store
from kubetune.workload.stages.run import PodEnv, Run, Trained, global_batch
from kubetune.workload.tracking.status import now_iso, write_curves, write_status, write_stop_status
from kubetune.workload.tracking.trackers import check_trackers
from kubetune.workload.tracking.mlflow_run import tag_model

if TYPE_CHECKING:  # the checkpointing stack (transformers) is loaded only once training starts
    from kubetune.workload.checkpointing.checkpointer import Checkpointer

log = logging.getLogger("kubetune.train")


def workdir_for(root: Path, job: str) -> Path:
    """Local scratch for Trainer output, under `root` (`PodEnv.workdir_root`: names.ENV_WORKDIR,
    an emptyDir in a pod, else the temp dir)."""
    path = root / job
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_same_run(store: Store, layout: RunLayout, spec: JobSpec) -> None:
    """A run folder belongs to one spec: refuse to mix a different configuration into it."""
    if not store.exists(layout.spec):
        return
    stored = run_defining(yaml.safe_load(store.read_text(layout.spec)) or {})
    current = run_defining(spec.model_dump(mode="json"))
    changed = [k for k in RUN_DEFINING if stored[k] != current[k]]
    if changed:
        fields = "; ".join(differences(stored, current))
        raise SpecError(
            f"{store.url(layout.spec)}: run {spec.name!r} already exists with a different {', '.join(changed)} "
            f"({fields}); choose a new name (--set name=...) or remove the old run"
        )


def differences(before: Any, now: Any, path: str = "", limit: int = 4) -> list[str]:
    """The first `limit` fields where two run definitions differ, each with both values
    (`train.learning_rate: 0.0001 in the run, 0.001 now`), so the refusal says what to undo."""
    if isinstance(before, dict) and isinstance(now, dict):
        found: list[str] = []
        for key in sorted(set(before) | set(now), key=str):
            found += differences(before.get(key), now.get(key), f"{path}.{key}" if path else str(key), limit)
        return found[:limit]
    if before == now:
        return []

    def shown(value: Any) -> str:
        text = "unset" if value is None else str(value)
        return text if len(text) <= 60 else text[:57] + "..."

    return [f"{path}: {shown(before)} in the run, {shown(now)} now"]


def setup(spec: JobSpec, env: PodEnv, parent: str | None = None, pinned: PinnedData | None = None) -> Run | None:
    """Validate everything cheap: the pre-model checks `validate --data` runs too
    (`preflight.open_store`, `preflight.checks`), with this run's folder checked in between;
    returns None when the run already finished. The splits' files are resolved and pinned once,
    in `checks` (into `pinned` when a retrain run resolved them before), for the whole run and
    its lineage; `parent` is the registry version a warm start began from."""
    global_batch(spec, env.world_size)  # a global batch these ranks cannot split: one line, exit 2, before anything
    store = open_store(spec)
    layout = run_layout(spec.name, env.run_folder)
    check_same_run(store, layout, spec)
    if store.is_committed(layout.model):
        print(f"kubetune: run {spec.name} is already complete: {store.url(layout.model)}", flush=True)
        return None
    pinned = pinned if pinned is not None else PinnedData()
    # A later attempt reads the hf:// commits its run's first attempt pinned, not a branch's newest.
    attempts = read_attempts(store, layout)
    pinned.hub_commits.update({**commits_of(attempts.get("pinned")), **(attempts.get("hub_commits") or {})})
    checked = checks(spec, store, pinned)
    records = data_records(checked.pinned, DATA_FIELDS)
    check_inputs(store, layout, records)  # a resumed attempt trains on the files the run started with
    hub = {"model.source": checked.model_uri}
    if checked.tokenizer_uri != checked.model_uri:
        hub["model.tokenizer"] = checked.tokenizer_uri
    check_hub(hub, spec.model.revision, spec.storage.startup_timeout_seconds)  # before the model loads
    return Run(
        spec=spec,
        store=store,
        layout=layout,
        task=checked.task,
        splits=checked.splits,
        model_uri=checked.model_uri,
        tokenizer_uri=checked.tokenizer_uri,
        rank=env.rank,
        world_size=env.world_size,
        workdir=workdir_for(env.workdir_root, layout.job),
        env=env,
        pinned=checked.pinned,
        parent=parent,
        data_records=records,
    )


def train(run: Run, checkpointer: Checkpointer) -> Trained:
    """Build the complete Trainer, resume from the checkpoint the resume rule picks (if any),
    train."""
    from kubetune.workload.trainer.build import build_trainer
    from kubetune.workload.trainer.pruning import pruned_step

    check_trackers(run)  # before the model loads
    built = build_trainer(run, checkpointer)
    if run.is_main:  # after the model loaded: a model that fails to load leaves no run folder
        run.store.write_text(run.layout.spec, run.spec.to_yaml())
    checkpoint = checkpointer.resume_point()
    if run.is_main:
        record_attempt(run.store, run.layout, run.data_records, checkpointer.state.step, now_iso(),
                       run.pinned.hub_commits)
    checkpointer.restore()  # the sampler's epoch / the stream's position, the best checkpoint, the loss window
    result = built.trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return Trained(trainer=built.trainer, prepared=built.prepared, result=result, preempted=checkpointer.preempted,
                   speed_settings=built.speed_settings, pruned_at=pruned_step(built.trainer))


def finish(run: Run, trained: Trained, checkpointer: Checkpointer) -> None:
    """Save the best model with its tokenizer, label map and spec; commit it last."""
    from kubetune.workload.model.lora import save_lora
    from kubetune.workload.trainer.build import SAMPLES_FILE
    from kubetune.workload.trainer.elastic import local_history

    trainer, result = trained.trainer, trained.result
    checkpointer.drain()  # checkpoints and metrics queued for upload land before the model commits
    out = run.workdir / "model"
    checkpointer.save_model(trainer, out)  # a sharded (FSDP) model: its weights gathered from every rank
    if not run.is_main:
        return
    if run.spec.train.lora is not None:  # adapter (+ config), or merged model with adapter/ inside
        save_lora(trainer.model, out, run.spec)
    trainer.processing_class.save_pretrained(str(out))
    (out / "spec.yaml").write_text(run.spec.to_yaml())
    if trained.prepared.labels is not None:
        (out / "labels.json").write_text(json.dumps(trained.prepared.labels, indent=2) + "\n")
    lineage = run_lineage(run)
    (out / "lineage.json").write_text(json.dumps(lineage, indent=2, sort_keys=True) + "\n")
    run.store.write_json(run.layout.lineage, lineage)
    summary = {**run_summary(trainer, result), "speed_settings": trained.speed_settings}
    history = local_history(run.workdir / SAMPLES_FILE)
    if history is not None:  # an elastic gang: the world size at each change
        summary["world_size_history"] = history
    run.store.write_json(run.layout.summary, summary)  # with the speed settings the run actually used
    _commit_model(run, out, checkpointer, result.global_step)
    print(f"kubetune: model committed: {run.store.url(run.layout.model)}", flush=True)
    tag_model(run.spec, run.store, run.layout)  # tracking.mlflow: the model's URI as a tag
    checkpointer.clear_after_success()  # the store keeps train.keep_checkpoints_after_success


def _commit_model(run: Run, out: Path, checkpointer: Any, step: int) -> None:
    """The model folder into the store, read back and committed (`commit_verified`) only while
    this run still holds its lease (confirmed in the store); a full store says how much the
    model needed."""
    from kubetune.workload.checkpointing.uploader import no_space

    try:
        commit_verified(run.store, run.layout.model, out, guard=lambda: checkpointer.guard("commit of the model"),
                        global_step=step)
    except Exception as exc:
        if is_space_error(exc):
            raise no_space(run.store, "the model", out, exc) from None
        raise


def run_summary(trainer: Any, result: Any) -> dict:
    """`metrics/summary.json`: the step, which metric chose the best checkpoint and its value,
    that checkpoint by its folder name in the store (`step-000023`), and the Trainer's final
    metrics (`train_loss` once: the Trainer's `training_loss` is the same number); under
    `train.checkpoint_every: auto`, the intervals chosen (`checkpoint_interval`)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from kubetune.workload.trainer.checkpoint_interval import interval_summary

    best = trainer.state.best_model_checkpoint
    name = Path(best).name if best else ""
    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    step = int(name[len(prefix):]) if name.startswith(prefix) and name[len(prefix):].isdigit() else None
    metric = trainer.args.metric_for_best_model
    return {
        "global_step": result.global_step,
        "best_metric_name": (metric if metric.startswith("eval_") else f"eval_{metric}") if metric else None,
        "best_metric": trainer.state.best_metric,
        "best_step": step,
        "best_checkpoint": checkpoint_name(step) if step is not None else None,
        **{k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
        **interval_summary(trainer.callback_handler.callbacks),  # checkpoint_every: auto's choices
    }


def run_lineage(run: Run) -> dict:
    """`lineage.json` of this run: the pinned files, rows read, model and tokenizer sources, and
    each attempt (when, resumed from where, its files: `data.pinning`)."""
    rows = {"train": len(run.splits.train), "validation": len(run.splits.validation)}
    if run.splits.test is not None:
        rows["test"] = len(run.splits.test)
    lineage = build_lineage(run.spec, run.store, run.pinned, run.model_uri, run.tokenizer_uri, rows, run.parent,
                            records=run.data_records or None)
    lineage["attempts"] = read_attempts(run.store, run.layout).get("attempts", [])  # what each attempt trained on
    return lineage


def run_training(spec: JobSpec, env: PodEnv, parent: str | None = None, pinned: PinnedData | None = None) -> int:
    """The train stage: 0 when the model is committed (or already was), EXIT_RETRY_AFTER_CHECKPOINT
    after SIGTERM with the checkpoint committed, EXIT_PRUNED when a sweep stopped it early. `env`: the pod's, from the entrypoint;
    `pinned`: the data files a retrain run resolved."""
    run = setup(spec, env, parent, pinned)
    if run is None:
        return 0
    holder = holder_id(run.env.pod_name)
    lease = RunLease(run.store, run.layout, spec.storage.lease_seconds, holder).acquire() if run.is_main else None
    try:
        # Another writer may have finished (or started a different run) while we waited.
        check_same_run(run.store, run.layout, spec)
        if run.store.is_committed(run.layout.model):
            print(f"kubetune: run {spec.name} is already complete: {run.store.url(run.layout.model)}", flush=True)
            return 0
        return _train_and_finish(run, lease)
    finally:
        if lease is not None:
            lease.release()


def _train_and_finish(run: Run, lease: RunLease | None) -> int:
    from kubetune.workload.checkpointing.checkpointer import Checkpointer

    checkpointer = Checkpointer(run, lease=lease)
    # SIGTERM: checkpoint at the end of the step, then exit 75 once committed; the handler is put back after.
    with checkpointer.catch_sigterm():
        trained = train(run, checkpointer)
        state = trained.trainer.state
        if trained.preempted or not checkpointer.drain_final():  # SIGTERM while training, or while uploads drained
            code = checkpointer.leave_after_preemption(state.global_step)
            if run.is_main:
                write_stop_status(run.store, run.layout, code, stopped_at=state.global_step,
                                  saved_through=checkpointer.saved_through(), max_steps=state.max_steps)
            return code
        if trained.pruned_at is not None:  # a sweep stopped this trial: its checkpoint landed, no model is committed
            if run.is_main:
                write_status(run.store, run.layout, "pruned", step=state.global_step, max_steps=state.max_steps,
                             best_metric=state.best_metric, ended=now_iso())
            return EXIT_PRUNED
        finish(run, trained, checkpointer)
        if run.is_main:
            write_status(run.store, run.layout, "complete", step=state.global_step, max_steps=state.max_steps,
                         best_metric=state.best_metric, ended=now_iso())
            write_curves(run.store, run.layout, run.workdir)
        return 0
