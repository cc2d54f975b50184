"""The stages a pod runs: training, evaluation, prediction, retraining and the preflight check, over the typed `Run`/`Trained` they pass on."""
