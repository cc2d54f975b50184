"""Sweeps: a hyperparameter search run as a batch of ordinary runs (docs/sweeps.md).

`study` keeps the Optuna study in the store and turns the `sweep:` section into Optuna's
sampler, pruner and distributions; `trials` makes a trial's spec and reads its metrics;
`controller` is the loop (ask, start, watch, prune, tell) over a runner: `local` (trials as
local processes) or `cluster` (trials as Jobs in the job's Kueue queue); `results` writes
`trials.jsonl` and `summary.json` and reads them back for `kubetune sweep status`.
"""
