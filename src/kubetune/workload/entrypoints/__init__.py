"""The pod's entrypoints, `python -m kubetune.contract.names.<STAGE>_MODULE`: one thin module
each (parse the arguments, call the workload, map errors to exit codes). None imports another;
the work itself lives in `kubetune.workload` (training, evaluation, prediction)."""
