"""Nothing lost when a pod dies: checkpoints saved, uploaded, committed and found again, the position within the data, the SIGTERM save, FSDP's sharded state and the one-writer lease."""
