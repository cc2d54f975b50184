"""A retrain run: resolve the data, train a candidate if anything is new, score it and the
current version on the same gate data, promote it only if it is better (docs/retraining.md).

What the CronJob pod runs and what `kubetune retrain --local` runs, through the same
entrypoint. Order matters for safety: every check that can fail cheaply (store, spec, gate
metric names, a glob that matches nothing, gate labels) runs before training, and CURRENT
moves only in the registry's last step, so any failure leaves the previous CURRENT in use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kubetune.contract.layout import RunLayout, run_layout
from kubetune.contract.spec.job import JobSpec
from kubetune.contract.spec.retrain import PromotionSpec, RetrainSpec
from kubetune.registry import Registry
from kubetune.registry.gate import GateError, decide
from kubetune.storage import Store
from kubetune.workload.data.tables import (PinnedData, check_split, limit, read_table, split_files, strip_html,
                                           text_columns)
from kubetune.workload.errors import DataError
from kubetune.workload.stages.evaluation import load_trained, score_model
from kubetune.workload.data.lineage import data_fingerprint, data_records, resolve_data
from kubetune.workload.stages.preflight import GATE_FIELD, check_gate_labels_known, model_labels
from kubetune.workload.stages.run import PodEnv
from kubetune.workload.tasks import Evaluation, Task, get_task
from kubetune.workload.stages.training import run_training


def gate_uri(spec: JobSpec, promotion: PromotionSpec) -> str:
    uri = promotion.gate_data or spec.data.test
    if not uri:
        raise DataError(f"{GATE_FIELD}: no gate data: set promotion.gate_data or data.test")
    return uri


def check_gate_metrics(task: Task, promotion: PromotionSpec) -> None:
    """Every metric the gate compares must be one the task scores (before any training)."""
    names = set(task.metric_names) | set(getattr(task, "score_metric_names", ()))
    prefix = getattr(task, "per_class_prefix", None)
    wanted = [("promotion.metric", promotion.metric), *((f"promotion.min.{m}", m) for m in promotion.min),
              *(("promotion.guards", g.metric) for g in promotion.guards)]
    for field, metric in wanted:
        if metric not in names and not (prefix and metric.startswith(prefix)):
            choices = sorted(names) + ([f"{prefix}<label>"] if prefix else [])
            raise GateError(f"{field}: task {task.name} does not produce metric {metric!r} (choose: {', '.join(choices)})")


def load_gate(spec: JobSpec, store: Store, task: Task, uri: str, pinned: PinnedData) -> Any:
    """The gate split (its `pinned` files), read and checked like a test split (limit, HTML stripping)."""
    columns = task.columns()
    ds = read_table(store, uri, spec.data.format, GATE_FIELD, pinned)
    check_split(ds, columns, GATE_FIELD, store.resolve(uri))
    ds = limit(ds, spec.data.max_test_samples)
    return strip_html(ds, text_columns(ds, columns)) if spec.data.strip_html else ds


def check_gate_labels(spec: JobSpec, gate: Any, labels: list[str] | None, whose: str) -> None:
    """A gate set must hold every label the model knows, or its per-class numbers mean nothing."""
    column = spec.column("label")
    if not labels or column is None or column not in gate.column_names:
        return
    present = {str(v) for v in gate[column]}
    missing = [label for label in labels if label not in present]
    if missing:
        raise DataError(f"{GATE_FIELD}: gate data has no rows labelled {', '.join(map(repr, missing))}, "
                        f"which {whose} knows; score on data with every label")


def score_run(ctx: "GateContext", layout: RunLayout, whose: str) -> Evaluation:
    folder, labels = load_trained(ctx.store, layout, ctx.env.cache_root)
    check_gate_labels(ctx.spec, ctx.data, labels, whose)
    return score_model(ctx.spec, ctx.task, folder, labels, ctx.data, ctx.env)


@dataclass
class GateContext:
    """What both a retrain run and a manual promotion check before anything expensive."""

    spec: JobSpec
    store: Store
    registry: Registry
    task: Task
    promotion: PromotionSpec
    uri: str
    pinned: PinnedData  # the gate set's files and, for a retrain run, the training data's
    data: Any
    env: PodEnv


def prepare(spec: JobSpec, with_training_data: bool, env: PodEnv) -> GateContext:
    """Store reachable, gate metrics known, data resolved (and pinned), gate data read and
    checked: every cheap check, in the order a user would fix them."""
    promotion = spec.promotion or PromotionSpec()
    store = Store.from_spec(spec.storage)
    store.check_reachable(spec.storage.startup_timeout_seconds)  # transient: retried, then a retriable exit
    task = get_task(spec)
    task.check_spec()
    check_gate_metrics(task, promotion)
    uri = gate_uri(spec, promotion)
    if with_training_data:
        pinned = resolve_data(spec, store, {GATE_FIELD: uri})
    else:
        pinned = PinnedData()
        pinned.pin(GATE_FIELD, split_files(store, uri, GATE_FIELD))
    data = load_gate(spec, store, task, uri, pinned)
    check_gate_labels(spec, data, spec.data.labels, "data.labels")
    if with_training_data:  # the labels the candidate will know, from data.labels or its train files' label column
        check_gate_labels_known(data, model_labels(spec, store, task, pinned), spec.column("label"), GATE_FIELD,
                                store.resolve(uri))
    return GateContext(spec, store, Registry(store, spec.name), task, promotion, uri, pinned, data, env)


def gate_and_promote(ctx: GateContext, run: str, base: dict[str, Any] | None, fingerprint: str | None,
          force: bool = False) -> dict[str, Any]:
    """Score `run` and the current version on the gate data, decide, move CURRENT (or not),
    write `runs/<run>/promotion.json` and print the one-line verdict."""
    layout = RunLayout(run)
    scored = score_run(ctx, layout, "the candidate")
    candidate = scored.metrics
    # The run's own test metrics too, as a scheduled run always wrote them.
    ctx.store.write_json(layout.eval_metrics, {**candidate, "split": GATE_FIELD, "data": ctx.store.resolve(ctx.uri)})
    ctx.store.write_text(layout.eval_report, scored.report)
    current = score_run(ctx, RunLayout(base["run"]), base["version"]).metrics if base else None
    decision = decide(ctx.promotion, candidate, current, base["version"] if base else None)
    decision.update({"run": run, "gate_data": ctx.pinned.files[GATE_FIELD].uris, "data_fingerprint": fingerprint,
                     "forced": force and not decision["promote"]})
    if force and not decision["promote"]:
        decision.update({"promote": True, "reason": f"forced by hand; the gate said: {decision['reason']}"})
    if decision["promote"]:  # CURRENT moves here, last, or not at all
        outcome = ctx.registry.promote(run, decision, base, action="manual" if force else "promote")
        decision.update({"promote": outcome.promoted, "version": outcome.version, "reason": outcome.reason})
    else:
        ctx.registry.reject(run, decision)
    ctx.store.write_json(layout.promotion, decision)
    verdict = f"promoted {decision.get('version')}" if decision["promote"] else "not promoted"
    print(f"kubetune: promotion: {verdict}: {decision['reason']} ({ctx.store.url(layout.promotion)})", flush=True)
    return decision


def run_retrain(spec: JobSpec, env: PodEnv) -> int:
    """Check, then skip or train a candidate in `env.run_folder`, then gate and promote it. 0 for "nothing
    new", promoted or not."""
    retrain = spec.retrain or RetrainSpec()
    layout = run_layout(spec.name, env.run_folder)
    ctx = prepare(spec, with_training_data=True, env=env)
    fingerprint = data_fingerprint(data_records(ctx.pinned))
    base = ctx.registry.current()
    if base is not None and retrain.when == "changed":
        seen = (ctx.registry.version(base["version"]).get("lineage") or {}).get("data_fingerprint")
        if seen == fingerprint:
            print(f"kubetune: nothing new: the data is unchanged since {base['version']} (run {base['run']}); "
                  "not training", flush=True)
            return 0
    train_spec, parent = spec, None
    if retrain.init == "current" and base is not None:
        warm = ctx.store.url(RunLayout(base["run"]).model)
        train_spec = spec.model_copy(update={"model": spec.model.model_copy(update={"source": warm, "revision": None})})
        parent = base["version"]
    code = run_training(train_spec, env, parent, ctx.pinned)  # trains on exactly the files resolved here
    if code != 0:
        return code
    gate_and_promote(ctx, layout.job, base, fingerprint)
    return 0


def promote_run(spec: JobSpec, env: PodEnv, run: str, force: bool = False) -> int:
    """`kubetune models promote`: gate a finished run as a retrain run would have."""
    ctx = prepare(spec, with_training_data=False, env=env)
    layout = RunLayout(run)
    lineage = ctx.store.read_json(layout.lineage) if ctx.store.exists(layout.lineage) else {}
    gate_and_promote(ctx, run, ctx.registry.current(), lineage.get("data_fingerprint"), force=force)
    return 0


def default_run_name(spec: JobSpec) -> str:
    """A fresh run folder per retrain when no Job name gives one (a local process)."""
    return f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
