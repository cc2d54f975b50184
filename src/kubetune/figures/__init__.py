"""Pictures of a run that both sides draw: the training-curves figure of `kubetune plot` and of the pod's `metrics/curves.png`. Imports nothing of kubetune."""
