"""torchrun, keeping the workers' exit codes: `python -m <names.DISTRUN_MODULE> …`.

torchrun exits 1 whenever a worker fails, which hides the codes the Job's podFailurePolicy acts
on (kubetune.contract.exitcodes): a bad config would be retried `backoffLimit` times and a checkpoint
saved on SIGTERM would spend a retry. This wrapper takes exactly torchrun's arguments and exits
with:

* EXIT_RETRY_AFTER_CHECKPOINT if any worker exited with it (the gang resumes from LATEST);
* EXIT_BAD_INPUT, EXIT_STORE_UNAVAILABLE, EXIT_NO_SPACE or EXIT_INTERRUPTED_UNSAVED, if every
  worker that exited by itself exited with it (the others were stopped by torchrun);
* when torchrun itself was signalled (SIGTERM on preemption): EXIT_RETRY_AFTER_CHECKPOINT if a
  worker committed its checkpoint and said so through the ENV_RETRY_FLAG file, else 128 + signal;
  the flag wins too when torchrun ends in a worker failure or an error of its own, since a
  committed checkpoint is what the Job should resume from;
* otherwise torchrun's own result.

Multi-node runs use torchrun's elastic agent (c10d rendezvous, `--max-restarts`): the agent of
the pod with completion index 0 (names.ENV_COMPLETION_INDEX) hosts the rendezvous store, the
others connect to it (`is_host` in `--rdzv-conf`, see `rendezvous_conf`); when a worker dies,
the agents restart the whole gang, which resumes from LATEST. This wrapper then prints one
`recovery.WORKER_FAILED` line (which local rank, which exit code), which `kubetune run --local`
relays; the exit code rules above apply once the agent gives up.

Runs inside the container (it imports torch); the launcher only names it in commands.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from kubetune.contract.exitcodes import (EXIT_BAD_INPUT, EXIT_INTERRUPTED_UNSAVED, EXIT_NO_SPACE,
                                        EXIT_RETRY_AFTER_CHECKPOINT, EXIT_STORE_UNAVAILABLE)
from kubetune.contract.names import (
    DISTRUN_MODULE, ENV_COMPLETION_INDEX, ENV_DIE_WITH_PARENT, ENV_POD_NAME, ENV_RETRY_FLAG,
)
from kubetune.contract.recovery import die_with_parent, worker_failed_line

# torchrun's process-context logger, which reports a failed worker as
# "failed (exitcode: %s) local_rank: %s (pid: %s) of binary: %s".
_WORKER_LOGGER = "torch.distributed.elastic.multiprocessing.api"


class _WorkerFailures(logging.Filter):
    """Turns torchrun's record of a failed worker into our one recovery line (and lets the
    record through): reading the record's arguments, not its text, survives rewording."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if str(record.msg).startswith("failed (exitcode") and len(args) >= 2:
            node = os.environ.get(ENV_POD_NAME) or socket.gethostname()
            print(worker_failed_line(node, int(args[1]), int(args[0])), file=sys.stderr, flush=True)
        return True


def merge_exit_codes(codes: Iterable[int]) -> int:
    """One exit code for the pod from its failed workers' codes (negative: killed by signal).

    When one worker fails, torchrun stops the others with SIGTERM: their signal deaths are a
    consequence, so the codes of workers that exited by themselves decide."""
    codes = [c for c in codes if c != 0]
    if not codes:
        return 0
    exited = [c for c in codes if c > 0]
    if not exited:
        return 1
    codes = exited
    if EXIT_RETRY_AFTER_CHECKPOINT in codes:
        return EXIT_RETRY_AFTER_CHECKPOINT
    for agreed in (EXIT_BAD_INPUT, EXIT_STORE_UNAVAILABLE, EXIT_NO_SPACE, EXIT_INTERRUPTED_UNSAVED):
        if all(c == agreed for c in codes):
            return agreed
    return 1


def rendezvous_conf(backend: str, conf: str, completion_index: str | None) -> str:
    """torchrun's `--rdzv-conf` (comma-separated key=value) with `is_host` added for a c10d
    rendezvous: true in the pod of completion index 0, whose name is the rendered endpoint,
    false in the others. Unchanged for another backend, outside an Indexed Job (no index), or
    when the user set `is_host` already.

    Left to itself, torch guesses (torch 2.13, `c10d_rendezvous_backend._create_tcp_store`): an
    agent hosts the store when the endpoint is a loopback literal or its host name, or resolves
    to one of its own addresses, and falls back to a client when the port is taken. The
    endpoint is pod 0's DNS name, not its host name, so on a cluster the guess needs that DNS
    record to exist when pod 0's agent starts; without it no agent hosts the store and each
    fails to reach it (read from torch, not seen on a cluster). By index, the decision needs
    no DNS."""
    keys = [item.split("=", 1)[0].strip() for item in conf.split(",") if item.strip()]
    if backend != "c10d" or completion_index is None or "is_host" in keys:
        return conf
    is_host = f"is_host={'true' if int(completion_index) == 0 else 'false'}"
    return f"{conf.strip()},{is_host}" if conf.strip() else is_host


# An elastic gang's rendezvous timings (`--nnodes=MIN:MAX`), where `--rdzv-conf` does not set
# them. torch's defaults (a heartbeat every 5 s, a node dead after 3 missed; 30 s of "last call"
# once `min` nodes are there) kept the survivors of a lost node waiting about 45 s before
# they trained on, in which time a replacement had often come back: measured locally, the gang
# never shrank. A node is dead after 6 s here, and a round closes 10 s after `min` nodes joined
# (the pods of a gang start within seconds of each other: all `max` close it at once).
ELASTIC_RENDEZVOUS = {"keep_alive_interval": "2", "keep_alive_max_attempt": "3", "last_call_timeout": "10"}


def elastic_conf(nnodes: str, conf: str) -> str:
    """`--rdzv-conf` with ELASTIC_RENDEZVOUS's timings added for an elastic gang (`nnodes`
    MIN:MAX with MIN < MAX); the user's own keys win; unchanged for a fixed size."""
    low, _, high = nnodes.partition(":")
    if not high or low == high:
        return conf
    keys = {item.split("=", 1)[0].strip() for item in conf.split(",") if item.strip()}
    added = [f"{key}={value}" for key, value in ELASTIC_RENDEZVOUS.items() if key not in keys]
    return ",".join([conf.strip()] * bool(conf.strip()) + added)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import parse_args, run

    if os.environ.get(ENV_DIE_WITH_PARENT):
        # `kubetune run --local`: die with the launcher, and let the workers die with this agent.
        die_with_parent(expected_parent=int(os.environ[ENV_DIE_WITH_PARENT]))
        os.environ[ENV_DIE_WITH_PARENT] = str(os.getpid())
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.standalone:
        args.rdzv_conf = rendezvous_conf(args.rdzv_backend, args.rdzv_conf, os.environ.get(ENV_COMPLETION_INDEX))
        args.rdzv_conf = elastic_conf(str(args.nnodes), args.rdzv_conf)
    logging.getLogger(_WORKER_LOGGER).addFilter(_WorkerFailures())
    flag = Path(tempfile.mkdtemp(prefix="kubetune-distrun-")) / "retry-after-checkpoint"
    os.environ[ENV_RETRY_FLAG] = str(flag)  # inherited by the workers
    try:
        run(args)
    except ChildFailedError as exc:
        code = merge_exit_codes(failure.exitcode for failure in exc.failures.values())
        if flag.exists():
            code = EXIT_RETRY_AFTER_CHECKPOINT
        failed = ", ".join(f"rank {rank}: {f.exitcode}" for rank, f in sorted(exc.failures.items()))
        print(f"{DISTRUN_MODULE}: workers failed ({failed}); exit {code}", file=sys.stderr)
        return code
    except SignalException as exc:
        return EXIT_RETRY_AFTER_CHECKPOINT if flag.exists() else 128 + int(exc.sigval)
    except Exception as exc:
        # Whatever else the agent ended in while it stopped (CI once saw this path exit 1 after a
        # SIGTERM; the cause did not reproduce in 300 tries), a checkpoint a worker committed on
        # SIGTERM is what the Job must act on: resume from LATEST, without spending a retry.
        if not flag.exists():
            raise
        print(f"{DISTRUN_MODULE}: torchrun stopped with {type(exc).__name__}: {exc}; "
              f"a worker committed its checkpoint: exit {EXIT_RETRY_AFTER_CHECKPOINT}", file=sys.stderr)
        return EXIT_RETRY_AFTER_CHECKPOINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
