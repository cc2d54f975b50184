"""Exit codes shared by the container entrypoints and the rendered podFailurePolicy.

Kept in a module with no imports so the launcher can render them without loading the workload.
"""

# Bad spec, data or model folder: retrying cannot help, so the Job fails at once.
EXIT_BAD_INPUT = 2

# SIGTERM (preemption, eviction, node drain) arrived and a checkpoint newer than the last one
# committed before it was committed on the way out (or every checkpoint already was): the Job
# should start the pod again without spending its backoffLimit (EX_TEMPFAIL from sysexits.h).
EXIT_RETRY_AFTER_CHECKPOINT = 75

# The object store stayed unreachable (connection refused, timeouts, 5xx, throttling) for
# storage.startup_timeout_seconds at the start of a pod: not the spec's fault, so the Job
# retries the pod (counted against backoffLimit; EX_UNAVAILABLE from sysexits.h).
EXIT_STORE_UNAVAILABLE = 69

# The store (or the local disk) is full, or over a quota (ENOSPC, EDQUOT, S3 EntityTooLarge or
# a quota error): the run said how much the failed write needed. Not an outage: a retried pod
# writes the same bytes into the same full volume, so the Job fails at once (like exit 2) and a
# person frees room, then runs it again, which resumes from the last committed checkpoint
# (EX_CANTCREAT from sysexits.h).
EXIT_NO_SPACE = 73

# SIGTERM arrived but no checkpoint newer than the last committed one was committed on the way
# out (before training started, or the upload did not land within the grace period): the run
# is interrupted and nothing new is saved. A resume loses the steps since the last commit, so
# the Job counts this against backoffLimit (a pod that never saves must not loop for free);
# a real disruption is still replaced for free by the DisruptionTarget rule.
EXIT_INTERRUPTED_UNSAVED = 76

# A sweep's controller stopped this trial early (the run folder's PRUNE marker, contract.layout):
# the run left at its next checkpoint. Not a failure and not to be retried: the trial Job's
# podFailurePolicy ends the Job at once, and the controller records the trial as pruned. Not a
# sysexits.h code (none means this); unused by Python and by shells (126-165).
EXIT_PRUNED = 79
