"""What the launcher and the pod agree on, stated once: the job spec and its profiles, the run
layout in the store, exit codes, environment variables, in-pod paths, labels, stage names and
entrypoint modules. pydantic and yaml only: the launcher imports it on a laptop without torch.
"""
