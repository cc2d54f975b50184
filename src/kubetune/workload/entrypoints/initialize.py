"""Initialize stage: the model and tokenized data fetched once into the shared cache volume.

`python -m <names.INITIALIZE_MODULE> --spec FILE [--set KEY.PATH=VALUE ...]`; run first, by the
JobSet and TrainJob engines' initializer job or by every train pod's init container (`--engine
job`). Prints one line. Exit codes: 0 done, 2 a user error, 69 a store fault that may pass.
"""

from __future__ import annotations

import logging
import sys

from kubetune.contract.names import INITIALIZE_MODULE
from kubetune.workload.entrypoints.arguments import load_spec_from, pod_env, spec_parser
from kubetune.workload.entrypoints.exits import entrypoint
from kubetune.workload.stages.initialization import prefetch


@entrypoint
def main(argv: list[str] | None = None) -> int:
    args = spec_parser(INITIALIZE_MODULE, __doc__).parse_args(argv)
    print(prefetch(load_spec_from(args), pod_env()), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
