"""The pod side: what runs inside the container. `entrypoints` (one per pod command) call `stages`
(training, evaluation, prediction, retraining, preflight), which build on `trainer`, `checkpointing`,
`data`, `model`, `tracking` and the `tasks`. It never imports the launcher."""
