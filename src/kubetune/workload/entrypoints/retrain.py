"""Scheduled retraining: train a new model from the spec, then evaluate it, in one process.

`python -m <names.RETRAIN_MODULE> --spec FILE`. A CronJob run trains with whatever data the
object store holds now: Python stays PID 1 with the training SIGTERM handler, so a preempted
scheduled run still commits its checkpoint. Each run writes to `runs/$ENV_RUN/` (the CronJob
sets it to the Kubernetes Job's name). Exit codes as for training.
"""

from __future__ import annotations

import logging
import sys

from kubetune.contract.names import RETRAIN_MODULE
from kubetune.workload.arguments import load_spec_from, spec_parser
from kubetune.workload.errors import entrypoint
from kubetune.workload.evaluation import run_evaluation
from kubetune.workload.training import run_training


@entrypoint
def main(argv: list[str] | None = None) -> int:
    spec = load_spec_from(spec_parser(RETRAIN_MODULE, __doc__).parse_args(argv))
    code = run_training(spec)
    return code if code != 0 else run_evaluation(spec)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
