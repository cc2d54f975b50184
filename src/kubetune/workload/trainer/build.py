"""Spec → a ready HF Trainer: tokenizer, model (with freezing/dropout), arguments, callbacks.

The Trainer does the training loop, mixed precision, DDP and checkpoint contents; kubetune adds
what it lacks: object-store checkpoints with commit markers (the `Checkpointer`'s callbacks),
progress and status in the store, the trackers, and the spec → arguments mapping in one place.
The Trainer comes out complete: every callback is given to its constructor, nothing is added
to it or set on it afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (AutoConfig, AutoTokenizer, EarlyStoppingCallback, PreTrainedModel,
                          PreTrainedTokenizerBase, TrainerCallback, TrainingArguments)

from kubetune.workload.checkpointing.checkpointer import Checkpointer
from kubetune.workload.data.streaming import StreamingTrainData, steps_for_epochs
from kubetune.workload.data.token_cache import prepare_data
from kubetune.workload.model.adapt import apply_freezing, parameter_counts, set_dropout
from kubetune.workload.model.devices import ddp_backend, precision, precision_flags
from kubetune.workload.model.hub import hub_faults
from kubetune.workload.model.lora import apply_lora
from kubetune.workload.model.source import local_model_dir
from kubetune.workload.model.speed import model_load_kwargs, prepare_quantized, speed_arguments, speed_settings
from kubetune.workload.stages.run import Run
from kubetune.workload.tasks import Prepared, Task
from kubetune.workload.tracking.status import status_callback
from kubetune.workload.tracking.trackers import tracking_callbacks
from kubetune.workload.trainer.callbacks import (ConfigMapProgressCallback, ConfigMapReporter, ProgressCallback,
                                                 TrainJobStatusCallback)
from kubetune.workload.trainer.checkpoint_interval import NEVER_BY_PERIOD, AutoCheckpointCallback
from kubetune.workload.trainer.elastic import SampleLog
from kubetune.workload.trainer.pruning import PruneCallback
from kubetune.workload.trainer.kubetune_trainer import KubetuneTrainer, trainer_class

log = logging.getLogger("kubetune.train")
SAMPLES_FILE = "samples.jsonl"  # the local sample log, in the run's work folder
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()


def training_arguments(run: Run, output_dir: Path, model: Any = None,
                       stream: StreamingTrainData | None = None) -> TrainingArguments:
    """The spec as the Trainer's arguments; `model` (the loaded one) names FSDP's wrap classes;
    a streamed training split (`stream`) sets the length and skips to its position by itself."""
    t = run.spec.train
    metric, greater = run.task.best_metric()
    per_steps = t.checkpoint_every is not None
    every = NEVER_BY_PERIOD if t.checkpoint_every == "auto" else t.checkpoint_every  # auto: the callback saves
    stream_steps = -1
    if stream is not None and not t.max_steps:  # train.epochs over the stream's rows
        stream_steps = steps_for_epochs(stream, t.epochs, run.accumulation)
    return arguments_class(run.task)(
        **generation_arguments(run),
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or stream_steps,
        ignore_data_skip=stream is not None,  # the stream skips to its position without reading
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size * 2,
        gradient_accumulation_steps=run.accumulation,  # an elastic gang: what splits the global batch over these ranks
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup if t.warmup < 1 else int(t.warmup),
        lr_scheduler_type=t.scheduler,
        # Fused AdamW (the Trainer's own default on torch >= 2.8): the whole update in one fused
        # kernel per parameter group instead of foreach's chain of multi-tensor ops; one step
        # over MiniLM took 19.6 ms against foreach's 77.5 ms on 2 idle CPU cores (bench/RESULTS.md).
        optim="adamw_torch_fused" if t.optimizer == "adamw" else "sgd",
        seed=t.seed,
        data_seed=t.seed,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        eval_strategy="steps" if per_steps else "epoch",
        save_strategy="steps" if per_steps else "epoch",
        eval_steps=every,
        save_steps=every,
        save_total_limit=t.keep_checkpoints,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        include_for_metrics=list(getattr(run.task, "include_for_metrics", ())),  # e.g. QA: inputs
        greater_is_better=greater,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        logging_first_step=True,  # a first progress line at step 1, seconds after training starts
        report_to="none",
        disable_tqdm=True,
        ddp_backend=ddp_backend(run.env.world_size),
        ddp_find_unused_parameters=False,
        # A rank whose peer is gone stops waiting after this long (the default is 30 minutes),
        # so torchrun's agents can restart the gang from LATEST.
        ddp_timeout=t.collective_timeout_seconds,
        # transformers 5 multiplies the loss by the world size when this is on, expecting the
        # model to divide by the global token count; classification, QA and T5 losses are
        # plain means, so on 2 ranks the loss (and gradient) came out doubled. Each rank's own
        # mean, averaged by DDP, is right for every task.
        average_tokens_across_devices=False,
        use_cpu=not torch.cuda.is_available(),
        **precision_flags(t.precision),
        **speed_arguments(run.spec, model, ranks_here=run.env.local_world_size),  # workers, pinning, ..., FSDP
    )


def arguments_class(task: Task) -> type[TrainingArguments]:
    """Generative tasks (seq2seq) evaluate by generating text: Seq2SeqTrainingArguments."""
    return transformers.Seq2SeqTrainingArguments if task.generative else TrainingArguments


def generation_arguments(run: Run) -> dict[str, Any]:
    """predict_with_generate for generative tasks: validation metrics (BLEU, ROUGE) score
    generated text; the length comes from the model's generation config (configure_model)."""
    if not run.task.generative:
        return {}
    return {"predict_with_generate": True, "generation_num_beams": run.spec.generation.num_beams}


def load_tokenizer(run: Run) -> PreTrainedTokenizerBase:
    field = "model.tokenizer" if run.spec.model.tokenizer else "model.source"
    with hub_faults(field, run.tokenizer_uri):  # a Hub that fails while loading: one line, exit 69
        return AutoTokenizer.from_pretrained(
            local_model_dir(run.store, run.tokenizer_uri, run.env.cache_root), revision=run.spec.model.revision
        )


def load_model(run: Run, prepared: Prepared) -> PreTrainedModel:
    source = local_model_dir(run.store, run.model_uri, run.env.cache_root)
    with hub_faults("model.source", run.model_uri):  # a Hub that fails while loading: one line, exit 69
        config = AutoConfig.from_pretrained(source, revision=run.spec.model.revision, **run.task.model_kwargs(prepared))
        if run.spec.train.dropout is not None:
            set_dropout(config, run.spec.train.dropout)
        model = run.task.auto_model_class().from_pretrained(
            source, config=config, revision=run.spec.model.revision, **model_load_kwargs(run.spec, run.env.local_rank)  # attention, 4-bit
        )
    model = prepare_quantized(model, run.spec)  # 4-bit: peft's preparation before the adapters
    apply_freezing(model, run.spec.train.freeze)
    run.task.configure_model(model)
    if run.spec.train.lora is not None:  # any task: peft task type from the spec's task
        model = apply_lora(model, run.spec.train.lora, run.spec.task)
    return model


@dataclass
class BuiltTrainer:
    """What `build_trainer` made: the complete Trainer, the data it trains on, and the speed
    settings it resolved (`metrics/summary.json` records them as used)."""

    trainer: KubetuneTrainer
    prepared: Prepared
    speed_settings: dict[str, Any]


def build_trainer(run: Run, checkpointer: Checkpointer) -> BuiltTrainer:
    """Tokenizer, data, model, arguments, and the Trainer with every callback: progress,
    checkpointing's (`checkpointer.callbacks`), early stopping, status and the trackers (rank 0),
    built after the model loaded (a model that fails to load opens no tracker run)."""
    transformers.set_seed(run.spec.train.seed)
    tokenizer = load_tokenizer(run)
    prepared = prepare_data(run, tokenizer)  # task.prepare via the tokenization cache, or a stream
    model = load_model(run, prepared)
    t = run.spec.train
    resume = checkpointer.track_data(prepared)  # the data order checkpoints record and a resume restores
    args = training_arguments(run, checkpointer.local_dir, model, resume.stream)

    sample_log = None
    if resume.in_global_batches:  # an elastic gang: each step's sample ids (`metrics/samples.jsonl`)
        sample_log = SampleLog(run.store, run.layout, run.workdir / SAMPLES_FILE, checkpointer.uploader)
    callbacks: list[TrainerCallback] = [
        *([sample_log] if sample_log is not None else []),  # its step line is written before the step's checkpoint carries it
        ProgressCallback(run.store, run.layout, run.workdir / "train.jsonl", run.samples_per_step,
                         checkpointer.uploader),
        *checkpointer.callbacks(),  # publish each checkpoint; SIGTERM: save and stop at the end of the step
        PruneCallback(run.store, run.layout, run.env.sweep_verdict_s),  # a sweep prunes: save this step and stop
    ]
    if t.checkpoint_every == "auto":  # the interval from measured costs (Young/Daly)
        upload_s = (lambda: checkpointer.uploader.last_upload_seconds) if checkpointer.uploader is not None else None
        callbacks.append(AutoCheckpointCallback(run.spec.resources.interruptions_per_hour, upload_s, run.is_main))
    if t.early_stopping:
        callbacks.append(EarlyStoppingCallback(t.early_stopping.patience, t.early_stopping.threshold))
    if run.is_main:
        callbacks.append(status_callback(run.store, run.layout))  # status.json: running
    callbacks += tracking_callbacks(run)  # MLflow, W&B, TensorBoard (rank 0)
    if run.env.kubeflow_status and run.is_main:  # a TrainJob's status.trainerStatus
        callbacks.append(TrainJobStatusCallback())
    e = run.env
    if e.progress_configmap and e.progress_credentials and e.kubernetes_server and run.is_main:
        reporter = ConfigMapReporter(e.kubernetes_server, e.progress_credentials, e.progress_configmap)
        callbacks.append(ConfigMapProgressCallback(reporter, run.samples_per_step))  # Job, JobSet

    trainer = trainer_class(run.task)(
        model=model,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.validation,
        processing_class=tokenizer,
        data_collator=run.task.collator(tokenizer),
        compute_metrics=run.task.compute_metrics,
        preprocess_logits_for_metrics=run.task.preprocess_logits if run.task.uses_preprocess_logits else None,
        callbacks=callbacks,
        resume=resume,
        sample_log=sample_log,
    )
    if run.is_main:
        _print_run_line(run, model, prepared)
    return BuiltTrainer(trainer, prepared, speed_settings(run.spec, args, model, trainer.data_collator))


def _print_run_line(run: Run, model: Any, prepared: Prepared) -> None:
    trainable, total = parameter_counts(model)
    steps_per_epoch = -(-len(prepared.train) // run.samples_per_step)
    if run.global_batch:  # global batches: an incomplete last one is left out
        steps_per_epoch = len(prepared.train) // run.global_batch
    print(
        f"kubetune: job {run.spec.name} | task {run.spec.task} | world size {run.world_size} | "
        f"train {len(prepared.train)} / validation {len(prepared.validation)} samples | "
        f"{steps_per_epoch} steps/epoch | batch {run.samples_per_step} | "
        f"trainable params {trainable:,} of {total:,} ({100 * trainable / total:.1f}%)",
        flush=True,
    )
    chosen = precision(run.spec.train.precision)
    print(f"kubetune: precision {chosen.name} ({chosen.reason})", flush=True)
