"""What a run reports while it trains: the trackers of the spec's `tracking:` section (TensorBoard, MLflow, W&B), their run ids in the store, and `metrics/status.json`."""
