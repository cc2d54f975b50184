"""Container entrypoint for scheduled retraining: `python -m kubetune.workload.retrain --spec FILE`.

A CronJob run trains a new model from the same spec (and whatever data the object store holds
now), then evaluates it, in one process: Python stays PID 1 with the train entrypoint's SIGTERM
handler, so a preempted scheduled run still commits its checkpoint. Each run writes to
`runs/$KUBETUNE_RUN/` (the CronJob sets it to the Kubernetes Job's name).
"""

from __future__ import annotations

import logging
import sys

from kubetune.workload import evaluate, train


def main(argv: list[str] | None = None) -> int:
    code = train.main(argv)
    if code != 0:
        return code
    return evaluate.main(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
