"""Evaluate stage: score the run's committed model on data.test (else data.validation).

`python -m <names.EVALUATE_MODULE> --spec FILE [--set KEY.PATH=VALUE ...]`; writes
`eval/metrics.json` and `eval/report.txt`. Exit codes: 0 done, 2 a user error.
"""

from __future__ import annotations

import logging
import sys

from kubetune.contract.names import EVALUATE_MODULE
from kubetune.workload.entrypoints.arguments import load_spec_from, pod_env, spec_parser
from kubetune.workload.entrypoints.exits import entrypoint
from kubetune.workload.stages.evaluation import run_evaluation


@entrypoint
def main(argv: list[str] | None = None) -> int:
    parser = spec_parser(EVALUATE_MODULE, __doc__)
    parser.add_argument("--model", default=None, metavar="REF",
                        help="whose model: current, a registry version vNNNN, or a run name (default: this run's)")
    args = parser.parse_args(argv)
    return run_evaluation(load_spec_from(args), pod_env(), args.model)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
