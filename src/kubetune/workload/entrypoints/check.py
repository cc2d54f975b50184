"""Check stage: a job's data files and model folder, as `train` checks them, without weights.

`python -m <names.CHECK_MODULE> --spec FILE [--set KEY.PATH=VALUE ...]`; run by
`kubetune validate --data`. Prints one verdict line. Exit codes: 0 usable, 2 a user error.
"""

from __future__ import annotations

import logging
import sys

from kubetune.contract.names import CHECK_MODULE
from kubetune.workload.entrypoints.arguments import load_spec_from, spec_parser
from kubetune.workload.entrypoints.exits import entrypoint
from kubetune.workload.stages.preflight import check_job


@entrypoint
def main(argv: list[str] | None = None) -> int:
    args = spec_parser(CHECK_MODULE, __doc__).parse_args(argv)
    print(check_job(load_spec_from(args)), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
