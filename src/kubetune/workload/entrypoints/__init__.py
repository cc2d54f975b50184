"""The pod's commands, `python -m <module>` with the modules named in `kubetune.contract.names`
(TRAIN_MODULE, EVALUATE_MODULE, PREDICT_MODULE, RETRAIN_MODULE, DISTRUN_MODULE): one thin
module each (parse the arguments, call the workload, map errors to exit codes). None imports
another; the work itself lives in the workload (`training`, `evaluation`, `prediction`)."""
