"""`python -m kubetune.distrun …`: torchrun, keeping the workers' exit codes.

torchrun exits 1 whenever a worker fails, which hides the codes the Job's podFailurePolicy acts
on (kubetune.exitcodes): a bad config would be retried `backoffLimit` times and a checkpoint
saved on SIGTERM would spend a retry. This wrapper takes exactly torchrun's arguments and exits
with:

* EXIT_RETRY_AFTER_CHECKPOINT if any worker exited with it (the gang resumes from LATEST);
* EXIT_BAD_INPUT if every failed worker exited with it;
* 128 + signal when torchrun itself was signalled; otherwise torchrun's own result.

Runs inside the container (it imports torch); the launcher only names it in commands.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from kubetune.exitcodes import EXIT_BAD_INPUT, EXIT_RETRY_AFTER_CHECKPOINT


def merge_exit_codes(codes: Iterable[int]) -> int:
    """One exit code for the pod from its failed workers' codes (negative: killed by signal)."""
    codes = [c for c in codes if c != 0]
    if not codes:
        return 0
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
    try:
        run(args)
    except ChildFailedError as exc:
        code = merge_exit_codes(failure.exitcode for failure in exc.failures.values())
        print(f"kubetune.distrun: workers failed ({exc.format_msg().splitlines()[0].strip()}); exit {code}", file=sys.stderr)
        return code
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
