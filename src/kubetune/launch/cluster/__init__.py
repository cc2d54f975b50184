"""The only code that talks to a Kubernetes API server: submit, status, logs, cancel, list.

Split by the question a reader brings: `connect` (which cluster and namespace), `api` (the
client calls and their one-line `ClusterError`s, and the one table of object kinds), `state`
(what a job is doing), `submit` (plan, then apply; cancel), `logs` (log lines and following
Jobs to their end). They return data and iterators of `Note`s; only the CLI prints. Nothing
here imports torch or `kubetune.workload`: the launcher must start fast on a laptop.
"""

from __future__ import annotations

from kubetune.launch.cluster.api import Cluster, ClusterError
from kubetune.launch.cluster.connect import connect

__all__ = ["Cluster", "ClusterError", "connect"]
