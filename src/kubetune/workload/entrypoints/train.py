"""Train stage: train a model from the spec and commit it to `runs/<job>/model/`.

`python -m <names.TRAIN_MODULE> --spec FILE [--set KEY.PATH=VALUE ...]`. Exit codes: 0 done,
2 a user error (one `error:` line), 75 SIGTERM with the checkpoint committed (resume me), 79 stopped
early by a sweep (its PRUNE marker; `trainer.pruning`).
"""

from __future__ import annotations

import logging
import sys

from kubetune.contract.names import TRAIN_MODULE
from kubetune.workload.entrypoints.arguments import load_spec_from, pod_env, spec_parser
from kubetune.workload.entrypoints.exits import entrypoint
from kubetune.workload.stages.training import run_training


@entrypoint
def main(argv: list[str] | None = None) -> int:
    args = spec_parser(TRAIN_MODULE, __doc__).parse_args(argv)
    return run_training(load_spec_from(args), pod_env())


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
