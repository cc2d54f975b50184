"""The launcher: a job spec rendered into Kubernetes objects, submitted and followed on a cluster, or run
as local processes; and the runs of a store read back. No torch, no workload: it installs and starts
on a laptop."""
