"""The logs of a job's pods as an iterator of lines, each prefixed with its rank (the pod's
completion index), and the following of Jobs to their end.

Pods are picked up as they start through a watch on the Jobs' pods (a retry after a failure
too); each started pod's log is streamed by its own thread into one queue, which the iterator
drains. Nothing here prints: the CLI writes each `Note` to stdout (log lines) or stderr
(`err`: notes about the following itself).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterator

from kubetune.contract import names as kn
from kubetune.launch.cluster import api
from kubetune.launch.cluster.api import Cluster, ClusterError
from kubetune.launch.cluster.state import (
    JobState,
    gang_pods_job,
    gangs_of,
    job_stage,
    job_state,
    job_states,
    jobs_of,
    no_such_job,
    pod_index,
    pod_started,
    pod_waiting_reason,
    pods_of,
    pods_selector,
)

# Seconds a finished Job's log streams get to drain once the Job ended.
DRAIN_S = 10.0


@dataclass(frozen=True)
class Note:
    """One line for the user: a pod's log line, or (`err`) a note about waiting or failing."""

    text: str
    err: bool = False


def prefix(stage: str | None, index: int) -> str:
    return f"[{stage} rank {index}]" if stage else f"[rank {index}]"


class LogFollower:
    """Follow the logs of every pod of some Jobs as the pods start, one thread per pod, each
    line prefixed with its rank and handed to `sink`."""

    def __init__(self, cluster: Cluster, jobs: list[str], sink: Callable[[Note], None],
                 rank: int | None = None, stage_prefix: bool = False):
        self.cluster = cluster
        self.jobs = jobs
        self.sink = sink
        self.rank = rank
        self.stage_prefix = stage_prefix
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._stages: dict[str, str] = {}
        self._told: set[str] = set()

    def start(self) -> None:
        threading.Thread(target=self._watch_loop, daemon=True).start()

    def _watch_loop(self) -> None:
        """Pick up pods as they change; after an API error, say it once and watch again."""
        errors: set[str] = set()
        while not self._stop.is_set():
            try:
                for _, pod in self.cluster.watch("Pod", selector=pods_selector(self.jobs)):
                    if self._stop.is_set():
                        return
                    self.consider(pod)
            except ClusterError as exc:  # the waiting side reports fatal errors itself
                if str(exc) not in errors:
                    errors.add(str(exc))
                    self.sink(Note(f"logs: {exc}", err=True))
            self._stop.wait(api.POLL_SECONDS)

    def consider(self, pod: Any) -> None:
        """Start following `pod` if it has started (once); note once that it is waiting."""
        index, name = pod_index(pod), pod.metadata.name
        job_name = (pod.metadata.labels or {}).get(kn.JOB_NAME_LABEL, self.jobs[0])
        if self.rank is not None and index != self.rank:
            return
        with self._lock:
            if name in self._threads:
                return
            if not pod_started(pod):
                note = f"waiting for rank {index} ({name}) to start: {pod_waiting_reason(pod)}"
                if note not in self._told:
                    self._told.add(note)
                    self.sink(Note(note, err=True))
                return
            thread = threading.Thread(target=self._follow, args=(pod, prefix(self._stage(job_name), index)), daemon=True)
            self._threads[name] = thread
        thread.start()

    def _stage(self, job_name: str) -> str | None:
        if not self.stage_prefix:
            return None
        if job_name not in self._stages:
            self._stages[job_name] = job_stage(self.cluster.read_job(job_name))
        return self._stages[job_name]

    def _follow(self, pod: Any, tag: str) -> None:
        try:
            for line in self.cluster.pod_log_lines(pod):
                self.sink(Note(f"{tag} {line}"))
        except ClusterError as exc:
            if exc.status != 404:  # a pod deleted meanwhile has nothing more to say
                self.sink(Note(f"logs: {exc}", err=True))

    def stop(self, timeout: float = DRAIN_S) -> None:
        """Stop watching, pick up the pods that started since the last event, and let the
        streams of finished pods drain."""
        self._stop.set()
        try:
            for job_name in self.jobs:
                for pod in pods_of(self.cluster, job_name):
                    self.consider(pod)
        except ClusterError:
            pass
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def follow(cluster: Cluster, job_names: list[str], rank: int | None = None,
           stage_prefix: bool = False, gang: tuple[str, str] | None = None) -> Iterator[Note | JobState]:
    """Log lines of the Jobs' pods as they come, and each Job's state at every change, until
    every Job ended (in order) and its streams drained. With `gang` (kind, name), the states
    followed are the gang's (a JobSet or TrainJob), whose engine creates the Jobs later. API
    errors of the waiting side end the iteration with a ClusterError."""
    items: queue.Queue[Note | JobState | ClusterError | None] = queue.Queue()
    follower = LogFollower(cluster, job_names, items.put, rank=rank, stage_prefix=stage_prefix)
    follower.start()

    waits = [(gang[1], gang[0])] if gang else [(name, "Job") for name in job_names]

    def wait() -> None:
        try:
            for name, kind in waits:
                for state in job_states(cluster, name, kind):
                    items.put(state)
            items.put(None)
        except ClusterError as exc:
            items.put(exc)

    threading.Thread(target=wait, daemon=True).start()
    finished = False
    try:
        while True:
            try:
                item = items.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            if item is None:
                finished = True
                break
            if isinstance(item, ClusterError):
                raise item
            yield item
    finally:
        follower.stop(timeout=DRAIN_S if finished else 0.5)
    while not items.empty():
        item = items.get()
        if isinstance(item, Note):
            yield item


def logs(cluster: Cluster, job: str, follow_: bool = False, rank: int | None = None) -> Iterator[Note]:
    """Every rank's log of the job's Jobs (train, then evaluate), each line prefixed with its
    rank (and stage, when there are several Jobs); waits for pods that have not started.
    `follow_`: stream until the Jobs end."""
    jobs = jobs_of(cluster, job)
    gangs = gangs_of(cluster, job)
    if not jobs and gangs and follow_:  # the engine has not created the gang's Job yet
        gang = gangs[0]
        for item in follow(cluster, [gang_pods_job(gang.metadata.name)], rank=rank, gang=(gang.kind, gang.metadata.name)):
            if isinstance(item, Note):
                yield item
        return
    if not jobs:
        raise no_such_job(cluster, job)
    several = len(jobs) > 1
    if rank is not None:
        jobs = [j for j in jobs if 0 <= rank < job_state(j).completions]
        if not jobs:
            raise ClusterError(f"--rank {rank}: job {job} has no such rank (ranks are 0 to nodes - 1)")
    if follow_:
        for item in follow(cluster, [j.metadata.name for j in jobs], rank=rank, stage_prefix=several):
            if isinstance(item, Note):
                yield item
        return
    for j in jobs:
        state = job_state(j)
        for index in [rank] if rank is not None else list(range(state.completions)):
            pod = yield from _wait_for_pod(cluster, j.metadata.name, index)
            if pod is not None:
                tag = prefix(state.stage if several else None, index)
                for line in cluster.pod_log(pod):
                    yield Note(f"{tag} {line}")


def _wait_for_pod(cluster: Cluster, job_name: str, index: int) -> Generator[Note, None, Any | None]:
    """The newest started pod of a completion index (the generator's return value); waits
    while it is pending. None when the Job finished without one (or its pods were cleaned up).
    Polls, since it waits on two objects at once: the pods and their Job."""
    told = ""
    while True:
        pods = [p for p in pods_of(cluster, job_name) if pod_index(p) == index]
        started = [p for p in pods if pod_started(p)]
        if started:
            return started[-1]
        state = job_state(cluster.read_job(job_name))
        if state.done:
            yield Note(f"{job_name}: no logs for rank {index} (the Job is {state.phase.lower()} and has no pod for it)", err=True)
            return None
        why = pod_waiting_reason(pods[-1]) if pods else ("queued" if state.phase == "Queued" else "no pod yet")
        note = f"waiting for rank {index} of {job_name} to start: {why}"
        if note != told:
            yield Note(note, err=True)
            told = note
        time.sleep(api.POLL_SECONDS)
