"""Batch prediction: predict every row of --input with the run's committed model into --output.

`python -m <names.PREDICT_MODULE> --spec FILE --input URI --output URI [--format jsonl|parquet]`.
Ranks split the input (see `kubetune.workload.stages.prediction`). Exit codes: 0 done, 2 a user error.
"""

from __future__ import annotations

import logging
import sys

from kubetune.contract.names import PREDICT_MODULE
from kubetune.workload.entrypoints.arguments import load_spec_from, pod_env, spec_parser
from kubetune.workload.entrypoints.exits import entrypoint
from kubetune.workload.stages.prediction import run_prediction


@entrypoint
def main(argv: list[str] | None = None) -> int:
    parser = spec_parser(PREDICT_MODULE, __doc__)
    parser.add_argument("--input", required=True, help="rows to predict: a file, folder or glob (local or s3://)")
    parser.add_argument("--output", required=True, help="a .jsonl/.parquet file (one rank), or a folder of parts")
    parser.add_argument("--format", choices=["jsonl", "parquet"], default=None,
                        help="format of the parts in an output folder (default jsonl)")
    parser.add_argument("--model", default=None, metavar="REF",
                        help="whose model: current, a registry version vNNNN, or a run name (default: this run's)")
    args = parser.parse_args(argv)
    return run_prediction(load_spec_from(args), pod_env(), args.input, args.output, args.format, args.model)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
