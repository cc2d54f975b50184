"""Running a stage's local pods as one gang: start, watch, relay, stop, and never leave orphans.

`kubetune.launch.local.pods` plans the processes (one per pod); this module runs them:

* Every pod's stdout goes through a `progress_view.ProgressView` (a live bar on a terminal,
  throttled plain progress lines elsewhere). Output of a gang (several pods) is prefixed per pod, and each whole-gang recovery that
  torchrun's agents perform (a worker died; they restarted the gang from LATEST) is reported
  as one line: which pod's worker failed, its exit code, the step the gang resumed from
  (`kubetune.contract.recovery` states the two pod lines this joins).
* A pod process that exits non-zero stops the others (SIGTERM, then SIGKILL after
  GANG_GRACE_S): on a cluster the agent has then given up, its restart budget spent.
* An elastic gang (`resources.nodes: {min, max}`) is run as a Job controller would: a pod
  killed by a signal (its node lost) does not stop the others, whose torchrun agents
  re-rendezvous without it and train on; after a delay the pod is started again (`Replacement`)
  and the gang grows back.
* SIGTERM or SIGHUP to the launcher (a closed terminal, a CI cancel, `timeout`) is forwarded as
  SIGTERM to every pod, as the kubelet does; they commit a checkpoint and exit 75. The
  launcher waits up to the grace period (`kubernetes.termination_grace_period_seconds`), kills
  what is left, and only then returns.
* SIGKILL to the launcher cannot be handled, so every pod process is started with
  names.ENV_DIE_WITH_PARENT set to the launcher's pid: the entrypoints (and distrun, the
  torchrun agent, which passes it on to its workers with its own pid) ask the kernel for a
  parent-death signal, and the whole tree dies with the launcher as pods die with their node.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from kubetune.contract import names as kn
from kubetune.contract.exitcodes import EXIT_INTERRUPTED_UNSAVED, EXIT_NO_SPACE, EXIT_RETRY_AFTER_CHECKPOINT
from kubetune.contract.errors import UserError
from kubetune.contract.recovery import parse_resumed, parse_worker_failed
from kubetune.contract.spec.job import JobSpec
from kubetune.launch.local.progress_view import ProgressView

# Grace period for the other processes of a gang when one fails.
GANG_GRACE_S = 30
# Signals the launcher forwards to its pods as SIGTERM.
FORWARDED = (signal.SIGTERM, signal.SIGHUP)

Running = list[tuple["LocalProcess", "subprocess.Popen[bytes]"]]
Starter = Callable[["LocalProcess"], tuple["LocalProcess", "subprocess.Popen[bytes]"]]


@dataclass
class LocalProcess:
    """One pod as a local process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    dirs: list[str] = field(default_factory=list)


class RecoveryRelay:
    """Joins a pod's "worker failed" line and the restarted gang's "resuming" line into one
    recovery line. The first failure of a round is the cause: the other ranks' failures that
    follow it (their collectives broke) are its consequences."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failure: tuple[str, int, int] | None = None
        self.recoveries: list[str] = []

    def feed(self, pod: str, line: str) -> None:
        failed = parse_worker_failed(line)
        resumed = parse_resumed(line)
        with self._lock:
            if failed is not None and self._failure is None:
                _, local_rank, code = failed
                self._failure = (pod, local_rank, code)
            elif resumed is not None and self._failure is not None:
                pod_name, local_rank, code = self._failure
                self._failure = None
                message = (f"kubetune: recovery {len(self.recoveries) + 1}: {pod_name} (local rank {local_rank}) "
                           f"exited with code {_describe(code)}; the gang restarted from step {resumed[0]}")
                self.recoveries.append(message)
                print(message, file=sys.stderr, flush=True)


def _describe(code: int) -> str:
    """torchrun reports a signalled worker as -signal; shown as 128+signal, as a shell does."""
    if code < 0:
        try:
            return f"{128 - code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(128 - code)
    return str(code)


class _Forwarded(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# What the launcher says when a stage ends with one of these codes: the pod's own truth.
STOPPED = {
    EXIT_RETRY_AFTER_CHECKPOINT: "interrupted; its checkpoint is saved: run the same command again to resume",
    EXIT_INTERRUPTED_UNSAVED: "interrupted; nothing new was saved (the pod said which checkpoint a rerun "
                              "resumes from)",
    EXIT_NO_SPACE: f"failed with exit code {EXIT_NO_SPACE}: the store is full (the pod said how much room it "
                   "needed); free room, then run the same command again to resume",
}


def _after_stop(codes: list[int], signum: int) -> int:
    """The gang's exit code after the launcher stopped it: what the pods said, the best news
    first: EXIT_RETRY_AFTER_CHECKPOINT when a pod committed its checkpoint; else a full store
    (EXIT_NO_SPACE) or EXIT_INTERRUPTED_UNSAVED (nothing new saved); else 128 + the signal."""
    for code in (EXIT_RETRY_AFTER_CHECKPOINT, EXIT_NO_SPACE, EXIT_INTERRUPTED_UNSAVED):
        if code in codes:
            return code
    return 128 + signum


@dataclass
class Replacement:
    """An elastic gang's Job controller, locally: a pod lost to a signal (its node gone) is
    started again, same name and command, `after_s` seconds later, at most `limit` times in
    all; the survivors train on meanwhile (their agents re-rendezvous without it)."""

    after_s: float
    limit: int
    done: int = 0


def local_replacement(spec: JobSpec, environ: dict[str, str]) -> Replacement | None:
    """How `run --local` replaces a lost node of an elastic gang: after
    names.ENV_LOCAL_REPLACE_SECONDS (default names.LOCAL_REPLACE_DEFAULT_S; names.LOCAL_REPLACE_NEVER:
    not at all), at most `train.max_restarts` times per run, as a Job's backoff bounds its pod
    replacements. None for a gang of fixed size."""
    if not spec.resources.elastic:
        return None
    text = environ.get(kn.ENV_LOCAL_REPLACE_SECONDS, "").strip()
    if text == kn.LOCAL_REPLACE_NEVER:
        return None
    try:
        seconds = float(text) if text else kn.LOCAL_REPLACE_DEFAULT_S
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise UserError(f"{kn.ENV_LOCAL_REPLACE_SECONDS}: {text!r} is neither a number of seconds >= 0 "
                        f"nor {kn.LOCAL_REPLACE_NEVER!r}")
    return Replacement(after_s=seconds, limit=spec.train.max_restarts)


def run_processes(procs: list[LocalProcess], grace_s: float = GANG_GRACE_S,
                  replacement: Replacement | None = None) -> int:
    """Start every process of a gang; when one fails, stop the others (an elastic gang's pod lost
    to a signal is replaced instead: `replacement`). Returns 0 or the first failure's exit code
    (128 + signal for a signalled process). After a forwarded SIGTERM/SIGHUP: the pods' own word
    (`_after_stop`), else 128 + the signal.

    Why long: starting, signal handling and cleanup share the list of running processes; split,
    each part would need the others' state passed around."""
    prefix = len(procs) > 1
    relay = RecoveryRelay()
    view = ProgressView(_stage_label(procs))  # a live bar on a terminal, throttled lines elsewhere
    running: Running = []
    threads = []
    previous = _install_forwarding()

    def start(proc: LocalProcess) -> tuple[LocalProcess, subprocess.Popen[bytes]]:
        env = {**proc.env, kn.ENV_DIE_WITH_PARENT: str(os.getpid())}
        popen = subprocess.Popen(
            proc.argv,
            env=env,
            cwd=proc.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if prefix else None,
            start_new_session=True,  # a terminal's signals reach the launcher only
        )
        running.append((proc, popen))
        thread = threading.Thread(target=_pump, args=(popen, proc.name if prefix else None, relay, view),
                                  daemon=True)
        thread.start()
        threads.append(thread)
        return proc, popen

    try:
        for proc in procs:
            start(proc)
        return _wait_gang(list(running), start if replacement is not None else None, replacement)
    except _Forwarded as exc:
        name = signal.Signals(exc.signum).name
        print(f"kubetune: {name}: stopping the pods (SIGTERM; up to {grace_s:g}s to commit a checkpoint)",
              file=sys.stderr, flush=True)
        return _after_stop(_stop(running, signal.SIGTERM, grace_s), exc.signum)
    except KeyboardInterrupt:  # Ctrl-C: the pods (own sessions) did not see it; stop them as SIGTERM would
        print(f"kubetune: SIGINT: stopping the pods (SIGTERM; up to {grace_s:g}s to commit a checkpoint)",
              file=sys.stderr, flush=True)
        return _after_stop(_stop(running, signal.SIGTERM, grace_s), signal.SIGINT)
    finally:
        _restore(previous)
        for thread in threads:
            thread.join(timeout=5)
        view.close()


def _install_forwarding() -> dict[int, object]:
    """SIGTERM/SIGHUP raise _Forwarded in the main thread (only it may set handlers; elsewhere,
    as in a library caller's worker thread, the caller's handlers stay)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: FrameType | None) -> None:
        for sig in FORWARDED:  # once: a second signal must not interrupt the stopping
            signal.signal(sig, signal.SIG_IGN)
        raise _Forwarded(signum)

    previous = {}
    for sig in FORWARDED:
        previous[sig] = signal.signal(sig, handler)
    return previous


def _restore(previous: dict[int, object]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)  # type: ignore[arg-type]


def _wait_gang(running: Running, start: Starter | None = None, replacement: Replacement | None = None) -> int:
    """Wait for the gang; the first failure stops the others. With `start` and `replacement`
    (an elastic gang), a pod killed by a signal while others train on is started again after
    `replacement.after_s`, unless the stage ends first (a pod exits 0: training is done)."""
    first_failure = 0
    pending = list(running)
    due: list[tuple[float, LocalProcess]] = []  # replacements: when, which pod
    finished = False
    while pending or due:
        for when, proc in list(due):
            if finished or first_failure:
                due.remove((when, proc))
            elif _now() >= when:
                due.remove((when, proc))
                print(f"kubetune: starting a replacement for {proc.name}", file=sys.stderr, flush=True)
                pending.append(start(proc))  # type: ignore[misc]
        for item in list(pending):
            code = item[1].poll()
            if code is None:
                continue
            pending.remove(item)
            finished = finished or code == 0
            if (code < 0 and pending and not finished and not first_failure and start is not None
                    and replacement is not None and replacement.done < replacement.limit):
                replacement.done += 1
                print(f"kubetune: {item[0].name} lost (signal {-code}); the others train on; a replacement "
                      f"starts in {replacement.after_s:g}s", file=sys.stderr, flush=True)
                due.append((_now() + replacement.after_s, item[0]))
                continue
            if code != 0 and first_failure == 0:
                first_failure = code if code > 0 else 128 - code
                if pending:  # with a single process there are no others to stop
                    print(f"kubetune: {item[0].name} exited with code {first_failure}; stopping the others",
                          file=sys.stderr)
                _stop(pending, signal.SIGTERM, GANG_GRACE_S)
        if pending:
            try:
                pending[0][1].wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        elif due:
            time.sleep(0.2)
    return first_failure


def _stop(running: Running, sig: int, grace_s: float) -> list[int]:
    """Signal every live process group, give them `grace_s` together, SIGKILL the rest; their
    exit codes (128 + signal for a signalled one)."""
    for _, popen in running:
        if popen.poll() is None:
            _killpg(popen.pid, sig)
    deadline = _now() + grace_s
    codes = []
    for _, popen in running:
        try:
            popen.wait(timeout=max(deadline - _now(), 0.1))
        except subprocess.TimeoutExpired:
            _killpg(popen.pid, signal.SIGKILL)
            popen.wait()
        code = popen.returncode
        codes.append(code if code >= 0 else 128 - code)
    return codes


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _now() -> float:
    return time.monotonic()


def _pump(popen: subprocess.Popen[bytes], name: str | None, relay: RecoveryRelay, view: ProgressView) -> None:
    """A pod's stdout, line by line, to the view (prefixed with the pod's name in a gang)."""
    assert popen.stdout is not None
    prefix = f"[{name}] " if name else ""
    for raw in iter(popen.stdout.readline, b""):
        line = raw.decode(errors="replace")
        view.feed(prefix + line)
        if name:
            relay.feed(name, line)


def _stage_label(procs: list[LocalProcess]) -> str:
    """The bar's label: the stage's pod name without its completion index (`quickstart-train`)."""
    return re.sub(r"-\d+$", "", procs[0].name) if procs else "stage"
