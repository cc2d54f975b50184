"""MLflow, from the spec's `tracking.mlflow`: one MLflow run per kubetune run, across resumes.

The Hugging Face Trainer's `MLflowCallback` logs the metrics of every logging step and
evaluation. kubetune opens the MLflow run itself, before the callback does, for two reasons:
it must know the run id (stored with the first checkpoint at `RunLayout.tracker_runs`, so a
resumed pod reopens that run instead of opening a new one, and the evaluate stage logs the test
metrics into it), and the params must be screened for secrets (the callback would log every
`TrainingArguments` and model-config value; it is told to log none, and kubetune logs the
spec's fields, screened by `tracker_runs.spec_params`). Rank 0 only talks to the server.

A sweep's trial's run is tagged with the sweep and the trial (`run_ids.sweep_of`): the trials
sit in the job's experiment, and `tags."kubetune.sweep" = '<job>'` finds them all (why not
MLflow's parent and child runs: a parent run would have to be opened by the sweep's controller,
on the launcher's side, which talks to no tracker).
"""

from __future__ import annotations

import os
import time
from typing import Any

from kubetune.contract.layout import RunLayout
from kubetune.contract.errors import UserError
from kubetune.contract.spec.job import JobSpec
from kubetune.storage import Store, StoreUnavailableError
from kubetune.workload.stages.run import Run
from kubetune.workload.tracking.run_ids import remember_run_id, spec_params, stored_run_ids, sweep_of

# The tag holding the committed model's store URI (`s3://bucket/runs/<job>/model`).
MODEL_URI_TAG = "kubetune.model_uri"


class TrackerUnavailableError(StoreUnavailableError):
    """The tracking server did not answer (connection refused, a timeout, HTTP 5xx or 429)
    after MLflow's own retries: the entrypoint exits EXIT_STORE_UNAVAILABLE, as for a store
    that is down, and the Job retries the pod."""


def _transient(exc: BaseException | None) -> bool:
    """Whether a failed call may succeed later: read the whole cause chain, as
    `storage.is_transient` does for the store."""
    import requests

    while exc is not None:
        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
        status = exc.get_http_status_code() if hasattr(exc, "get_http_status_code") else None
        if isinstance(status, int) and (status >= 500 or status == 429):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def check_mlflow(spec: JobSpec) -> None:
    """Before the model loads: the tracking server answers. Down: TrackerUnavailableError
    (retried); refusing us (401, 403, a bad URI): one `UserError` line, exit 2."""
    uri = spec.tracking.mlflow.tracking_uri
    try:
        _client(spec).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - MLflow wraps every failure in MlflowException
        first = _first_line(exc)
        if _transient(exc):
            raise TrackerUnavailableError(f"tracking.mlflow: {uri} is unavailable: {first}") from None
        raise UserError(f"tracking.mlflow: {uri}: {first}") from None


def _client(spec: JobSpec) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=spec.tracking.mlflow.tracking_uri)


def open_mlflow_run(run: Run) -> str:
    """Start (or, resumed, reopen) the run's MLflow run as the active one; its id. A new run is
    named after the run, tagged with its sweep when it is a trial, and given the spec's params."""
    import mlflow

    config = run.spec.tracking.mlflow
    mlflow.set_tracking_uri(config.tracking_uri)
    run_id = stored_run_ids(run.store, run.layout).get("mlflow")
    if run_id:  # a resumed run: the same MLflow run, its params and tags already logged
        mlflow.start_run(run_id=run_id)
        print(f"kubetune: mlflow: continuing run {run_id}", flush=True)
        return run_id
    mlflow.set_experiment(config.experiment)
    run_id = mlflow.start_run(run_name=run.spec.name, tags=sweep_of(run.env)).info.run_id
    mlflow.log_params(spec_params(run.spec, mlflow.utils.validation.MAX_PARAM_VAL_LENGTH))
    print(f"kubetune: mlflow: run {run_id} in experiment {config.experiment!r}", flush=True)
    return run_id


def mlflow_callbacks(run: Run) -> list[Any]:
    """Open (or reopen) the MLflow run and return the Trainer callbacks that log into it."""
    import mlflow
    from transformers import TrainerCallback
    from transformers.integrations import MLflowCallback

    run_id = open_mlflow_run(run)
    os.environ["MLFLOW_MAX_LOG_PARAMS"] = "0"  # the callback's params are unscreened: none
    os.environ.pop("MLFLOW_RUN_ID", None)  # the callback logs into the run opened here
    store, layout = run.store, run.layout

    class MlflowRunKeeper(TrainerCallback):
        """Stores the run id with the first checkpoint; flushes metrics at each save; ends the
        MLflow run when training ends (a resumed pod reopens it)."""

        def on_save(self, args, state, control, **kwargs):
            mlflow.flush_async_logging()
            remember_run_id(store, layout, "mlflow", run_id)

        def on_train_end(self, args, state, control, **kwargs):
            mlflow.flush_async_logging()
            mlflow.end_run()
            remember_run_id(store, layout, "mlflow", run_id)  # a run that never saved a checkpoint

    return [MLflowCallback(), MlflowRunKeeper()]


def tag_model(spec: JobSpec, store: Store, layout: RunLayout) -> None:
    """After the model is committed: its store URI as a tag of the MLflow run."""
    run_id = stored_run_ids(store, layout).get("mlflow")
    if spec.tracking is None or spec.tracking.mlflow is None or not run_id:
        return
    try:
        _client(spec).set_tag(run_id, MODEL_URI_TAG, store.url(layout.model))
    except Exception as exc:  # noqa: BLE001 - the model is committed: a tracker never fails the run now
        print(f"kubetune: warning: mlflow: model tag not set on run {run_id}: {_first_line(exc)}", flush=True)


def log_test_metrics(spec: JobSpec, store: Store, layout: RunLayout, metrics: dict[str, Any]) -> None:
    """The evaluate stage's numeric metrics as `test_<name>` in the run's MLflow run."""
    if spec.tracking is None or spec.tracking.mlflow is None:
        return
    run_id = stored_run_ids(store, layout).get("mlflow")
    if not run_id:
        print("kubetune: warning: no MLflow run stored for this run; test metrics not sent", flush=True)
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    numbers = [Metric(f"test_{k}", float(v), now, 0) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    try:
        _client(spec).log_batch(run_id, metrics=numbers)
    except Exception as exc:  # noqa: BLE001 - eval/metrics.json is written: a tracker never fails the stage
        print(f"kubetune: warning: mlflow: test metrics not sent to run {run_id}: {_first_line(exc)}", flush=True)
        return
    print(f"kubetune: mlflow: test metrics logged to run {run_id}", flush=True)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
