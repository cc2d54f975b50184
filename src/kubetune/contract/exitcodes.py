"""Exit codes shared by the container entrypoints and the rendered podFailurePolicy.

Kept in a module with no imports so the launcher can render them without loading the workload.
"""

# Bad spec, data or model folder: retrying cannot help, so the Job fails at once.
EXIT_BAD_INPUT = 2

# SIGTERM (preemption, eviction, node drain) arrived and a checkpoint was committed: the Job
# should start the pod again without spending its backoffLimit (EX_TEMPFAIL from sysexits.h).
EXIT_RETRY_AFTER_CHECKPOINT = 75

# The object store stayed unreachable (connection refused, timeouts, 5xx, throttling) for
# storage.startup_timeout_seconds at the start of a pod: not the spec's fault, so the Job
# retries the pod (counted against backoffLimit; EX_UNAVAILABLE from sysexits.h).
EXIT_STORE_UNAVAILABLE = 69

# A sweep's controller stopped this trial early (the run folder's PRUNE marker, contract.layout):
# the run left at its next checkpoint. Not a failure and not to be retried: the trial Job's
# podFailurePolicy ends the Job at once, and the controller records the trial as pruned. Not a
# sysexits.h code (none means this); unused by Python and by shells (126-165).
EXIT_PRUNED = 79
