"""Trainer callbacks: visible progress, and the metrics in storage while the job runs (the
checkpoint callback is checkpointing's: `checkpointing.upload_callback`); in a Kubeflow Trainer
TrainJob, the progress in the TrainJob's `status.trainerStatus` too (`TrainJobStatusCallback`);
under the Job and JobSet engines, in the job's progress ConfigMap (`ConfigMapProgressCallback`).

Only the main process (rank 0) writes to the store; every rank trains.
"""

from __future__ import annotations

import json
import logging
import ssl
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.integrations.integration_utils import KubeflowCallback

from kubetune.contract import names
from kubetune.contract.layout import RunLayout
from kubetune.contract.progress import format_progress
from kubetune.storage import Store
from kubetune.workload.checkpointing.uploader import Uploader

log = logging.getLogger("kubetune.train")


class ProgressCallback(TrainerCallback):
    """One line per logging step (step, epoch, loss, lr, samples/s, ETA), and the same fields as
    one JSON line in `metrics/train.jsonl`, uploaded after each log so progress is visible in
    the store while the job runs."""

    def __init__(self, store: Store, layout: RunLayout, local_file: Path, samples_per_step: int,
                 uploader: Uploader | None = None):
        self.store = store
        self.layout = layout
        self.local_file = local_file
        self.samples_per_step = samples_per_step
        self.uploader = uploader
        self.pace = Pace()
        if uploader is not None:  # every checkpoint takes the log up to its step (never lags LATEST)
            uploader.carry(local_file, layout.train_metrics)

    def on_train_begin(self, args, state, control, **kwargs):
        self.pace.begin(time.monotonic(), state.global_step)
        if state.is_world_process_zero:
            kept = self._continue_log(state.global_step)
            if state.global_step > 0:
                print(resumed_progress(kept, state.global_step, state.epoch, state.max_steps), flush=True,
                      file=sys.stdout)

    def _continue_log(self, step: int) -> list[dict[str, Any]]:
        """A fresh start begins an empty log; a resumed run continues the store's log up to
        the resume step (a new pod has no local copy, and the steps after the checkpoint
        are trained again). Returns the records kept."""
        lines: list[str] = []
        if step > 0 and self.store.exists(self.layout.train_metrics):
            for line in self.store.read_text(self.layout.train_metrics).splitlines():
                if line.strip() and json.loads(line).get("step", 0) <= step:
                    lines.append(line)
        self.local_file.parent.mkdir(parents=True, exist_ok=True)
        self.local_file.write_text("".join(line + "\n" for line in lines))
        return [json.loads(line) for line in lines]

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        seconds_per_step = self.pace.seconds_per_step(time.monotonic(), state.global_step)
        rate = self.samples_per_step / seconds_per_step if seconds_per_step else None
        record: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key, value in logs.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                record[key] = value
        if rate:
            record["samples_per_second"] = round(rate, 2)
            remaining = max(state.max_steps - state.global_step, 0)
            record["eta_seconds"] = round(remaining * self.samples_per_step / rate, 1)
        with self.local_file.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.uploader is not None:
            self.uploader.submit_file(self.local_file, self.layout.train_metrics)
        else:
            self.store.upload_file(self.local_file, self.layout.train_metrics)
        print(format_progress(record, state.max_steps), flush=True, file=sys.stdout)


def resumed_progress(kept: list[dict[str, Any]], step: int, epoch: float | None, max_steps: int) -> str:
    """The progress line a resumed run prints before its first step: the resume step and the
    last loss logged up to it, so the launcher's bar starts where training stands, with the
    loss, instead of appearing only at the next logging step (issue 28). Not written to
    `metrics/train.jsonl`: nothing new was computed. No samples/s or ETA: none measured yet."""
    record: dict[str, Any] = {"step": step, "epoch": round(epoch or 0.0, 4)}
    loss = next((r["loss"] for r in reversed(kept) if isinstance(r.get("loss"), (int, float))), None)
    if loss is not None:
        record["loss"] = loss
    return format_progress(record, max_steps)


class Pace:
    """Seconds per step for the ETA and samples/s: the average over every step since the first
    logged one (the first line: since training began).

    Why not the last interval: an interval that holds an evaluation or a checkpoint upload is
    many times slower than one that does not, so the ETA jumped by multiples from line to line
    (0:04:23, 0:26:49, 1:00:44). The running average includes those pauses at their real share
    and moves smoothly; the first step (warm-up, first batch) counts only on the first line."""

    def __init__(self) -> None:
        self._begin: tuple[float, int] | None = None
        self._first: tuple[float, int] | None = None

    def begin(self, now: float, step: int) -> None:
        self._begin, self._first = (now, step), None

    def seconds_per_step(self, now: float, step: int) -> float | None:
        if self._first is None:
            start = self._begin or (now, step)
            self._first = (now, step)
        else:
            start = self._first
        steps = step - start[1]
        return (now - start[0]) / steps if steps > 0 and now > start[0] else None


class TrainJobStatusCallback(KubeflowCallback):
    """Progress, ETA and the latest metrics into the TrainJob's `status.trainerStatus`, through
    Kubeflow Trainer's status endpoint (names.ENV_KUBEFLOW_STATUS_URL, with the CA and token
    files the controller injects), so `kubectl get trainjob` shows them.

    transformers' own `KubeflowCallback` does the work (rank 0 only, at most one request per 5
    seconds, the token re-read as it rotates, failures swallowed so training goes on); kubetune
    trains with `report_to="none"`, so it is added here, and says once, as a warning line, that
    reporting failed (the library only logs at debug level): a refusing or absent endpoint
    costs that one line, never the run."""

    def __init__(self) -> None:
        super().__init__()
        self._warned = False

    def _update_status(self, *args: Any, **kwargs: Any) -> bool:
        before = self._last_update_time
        try:
            sent = super()._update_status(*args, **kwargs)
        except Exception:  # the library catches its own errors; this is belt and braces
            sent = False
        if not sent and self._last_update_time != before and not self._warned:  # tried, not throttled
            self._warned = True
            print("kubetune: warning: could not report progress to the TrainJob status endpoint; "
                  "training goes on", file=sys.stderr, flush=True)
        return sent


class ConfigMapReporter:
    """PATCHes the job's progress ConfigMap (Job and JobSet engines; `launch.render.progress`)
    on the API server with the pod's projected token, as an `application/merge-patch+json`.

    Hand-written with urllib: one kind of request, and the `kubernetes` client's in-cluster
    loader reads its own fixed token path and the environment, where this pod's credentials
    lie in their own folder (names.PROGRESS_CREDENTIALS_DIR). The token and namespace are read
    again for every request, as the kubelet rotates the token."""

    TIMEOUT_S = 5.0

    def __init__(self, server: str, credentials: Path, name: str):
        self.server, self.credentials, self.name = server.rstrip("/"), credentials, name

    def patch(self, body: dict[str, Any]) -> None:
        """One merge patch; raises OSError (urllib's errors included) when it is not applied."""
        token = (self.credentials / names.TOKEN_FILE).read_text().strip()
        namespace = (self.credentials / names.NAMESPACE_FILE).read_text().strip()
        context = ssl.create_default_context(cafile=str(self.credentials / names.CA_FILE))
        request = urllib.request.Request(
            f"{self.server}/api/v1/namespaces/{namespace}/configmaps/{self.name}", method="PATCH",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json",
                     "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self.TIMEOUT_S, context=context) as answer:
            answer.read()


class ConfigMapProgressCallback(TrainerCallback):
    """Rank 0's progress into the job's progress ConfigMap, so `kubectl get configmap -L
    names.PROGRESS_LABEL,...` shows it: percent done, step and estimated seconds left as labels,
    the latest metrics (loss, learning rate, epoch, samples/s) as JSON in its data.

    At most one request per `interval` seconds, plus one at the start and one at the end. A
    failure (no API server, 403, timeout) costs one warning line, never the run; after each
    failure in a row the interval doubles (up to MAX_BACKOFF_S), so an unreachable server
    does not slow training."""

    INTERVAL_S = 30.0
    MAX_BACKOFF_S = 600.0

    def __init__(self, reporter: ConfigMapReporter, samples_per_step: int, interval: float = INTERVAL_S):
        self.reporter = reporter
        self.samples_per_step = samples_per_step
        self.interval = interval
        self.pace = Pace()
        self.metrics: dict[str, Any] = {}
        self._last: float | None = None
        self._failures = 0
        self._warned = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.pace.begin(time.monotonic(), state.global_step)
        self._report(state, force=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            if isinstance(value, (int, float)) and key in ("loss", "learning_rate", "grad_norm", "eval_loss"):
                self.metrics[key] = value
        self._report(state, force=False)

    def on_train_end(self, args, state, control, **kwargs):
        self._report(state, force=True)

    def _report(self, state, force: bool) -> None:
        if not state.is_world_process_zero:
            return
        now = time.monotonic()
        wait = min(self.interval * 2 ** self._failures, self.MAX_BACKOFF_S)
        if not force and self._last is not None and now - self._last < wait:
            return
        self._last = now
        try:
            self.reporter.patch(self._patch(state, now))
            self._failures = 0
        except Exception as exc:  # noqa: BLE001 - reporting must never fail training
            self._failures += 1
            if not self._warned:
                self._warned = True
                print(f"kubetune: warning: could not report progress to ConfigMap {self.reporter.name} "
                      f"({type(exc).__name__}); training goes on", file=sys.stderr, flush=True)

    def _patch(self, state, now: float) -> dict[str, Any]:
        """The merge patch: labels (valid label values: digits) and the metrics' JSON."""
        step, total = state.global_step, max(state.max_steps, 1)
        seconds_per_step = self.pace.seconds_per_step(now, step) if step else None
        record: dict[str, Any] = {"step": step, "max_steps": state.max_steps, "epoch": round(state.epoch or 0.0, 4),
                                  **self.metrics}
        eta: int | None = 0 if step >= total else None
        if seconds_per_step:
            record["samples_per_second"] = round(self.samples_per_step / seconds_per_step, 2)
            eta = round(max(total - step, 0) * seconds_per_step)
        record["eta_seconds"] = eta
        labels = {names.PROGRESS_LABEL: str(min(100, step * 100 // total)), names.STEP_LABEL: str(step),
                  names.ETA_LABEL: None if eta is None else str(eta)}  # None removes the label
        return {"metadata": {"labels": labels}, "data": {names.PROGRESS_METRICS_KEY: json.dumps(record)}}
