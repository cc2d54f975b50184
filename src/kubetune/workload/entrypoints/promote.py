"""Score a finished run against the current version on the gate data; promote it if it passes.

`python -m <names.PROMOTE_MODULE> --spec FILE --run RUN [--force]`: what `kubetune models
promote` runs as a local process, and the follow-up step of a multi-node scheduled run (the
gang trains; this gates). `--force` promotes even when the gate says no; the decision and its
numbers are recorded either way. Exit 0 whether promoted or not; 2 for bad input.
"""

from __future__ import annotations

import logging
import sys

from kubetune.contract.names import PROMOTE_MODULE
from kubetune.workload.entrypoints.arguments import load_spec_from, pod_env, spec_parser
from kubetune.workload.entrypoints.exits import entrypoint
from kubetune.workload.stages.retraining import promote_run


@entrypoint
def main(argv: list[str] | None = None) -> int:
    parser = spec_parser(PROMOTE_MODULE, __doc__)
    parser.add_argument("--run", required=True, help="the run folder whose model to promote (runs/RUN/)")
    parser.add_argument("--force", action="store_true", help="promote even when the gate says no")
    args = parser.parse_args(argv)
    return promote_run(load_spec_from(args), pod_env(), args.run, force=args.force)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
