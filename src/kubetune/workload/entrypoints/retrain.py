"""Scheduled retraining: train a candidate if the data changed, score it against the current
version on the gate data, promote it only if it is better (docs/retraining.md).

`python -m <names.RETRAIN_MODULE> --spec FILE`: what the CronJob pod runs and what `kubetune
retrain --local` runs. Python stays PID 1 with the training SIGTERM handler, so a preempted
scheduled run still commits its checkpoint. Each run writes to `runs/$ENV_RUN/` (the CronJob
sets it to the Kubernetes Job's name; unset, a fresh `<name>-<UTC time>`). Exit codes as for
training; "nothing new" and "not promoted" are successes (0).
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from kubetune.contract.names import RETRAIN_MODULE
from kubetune.workload.entrypoints.arguments import load_spec_from, pod_env, spec_parser
from kubetune.workload.entrypoints.exits import entrypoint
from kubetune.workload.stages.retraining import default_run_name, run_retrain


@entrypoint
def main(argv: list[str] | None = None) -> int:
    spec = load_spec_from(spec_parser(RETRAIN_MODULE, __doc__).parse_args(argv))
    env = pod_env()
    if env.run_folder is None:  # a local process: no Job name gives the run its folder
        env = dataclasses.replace(env, run_folder=default_run_name(spec))
    return run_retrain(spec, env)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
