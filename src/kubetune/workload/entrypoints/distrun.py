"""torchrun, keeping the workers' exit codes: `python -m <names.DISTRUN_MODULE> …`.

torchrun exits 1 whenever a worker fails, which hides the codes the Job's podFailurePolicy acts
on (kubetune.contract.exitcodes): a bad config would be retried `backoffLimit` times and a checkpoint
saved on SIGTERM would spend a retry. This wrapper takes exactly torchrun's arguments and exits
with:

* EXIT_RETRY_AFTER_CHECKPOINT if any worker exited with it (the gang resumes from LATEST);
* EXIT_BAD_INPUT if every worker that exited by itself exited with it (the others were
  stopped by torchrun);
* when torchrun itself was signalled (SIGTERM on preemption): EXIT_RETRY_AFTER_CHECKPOINT if a
  worker committed its checkpoint and said so through the ENV_RETRY_FLAG file, else 128 + signal;
* otherwise torchrun's own result.

Runs inside the container (it imports torch); the launcher only names it in commands.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from kubetune.contract.exitcodes import EXIT_BAD_INPUT, EXIT_RETRY_AFTER_CHECKPOINT
from kubetune.contract.names import DISTRUN_MODULE, ENV_RETRY_FLAG


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
    if all(c == EXIT_BAD_INPUT for c in codes):
        return EXIT_BAD_INPUT
    return 1


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    flag = Path(tempfile.mkdtemp(prefix="kubetune-distrun-")) / "retry-after-checkpoint"
    os.environ[ENV_RETRY_FLAG] = str(flag)  # inherited by the workers
    try:
        run(args)
    except ChildFailedError as exc:
        code = merge_exit_codes(failure.exitcode for failure in exc.failures.values())
        failed = ", ".join(f"rank {rank}: {f.exitcode}" for rank, f in sorted(exc.failures.items()))
        print(f"{DISTRUN_MODULE}: workers failed ({failed}); exit {code}", file=sys.stderr)
        return code
    except SignalException as exc:
        return EXIT_RETRY_AFTER_CHECKPOINT if flag.exists() else 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
