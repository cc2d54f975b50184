"""Names of a job's objects and the check of a `--schedule`: the strings every other part of
the launcher (renderer, cluster client, local executor) takes from here, never formats itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubetune.contract.spec.job import JobSpec, SpecError

# Pod names (`<job>-<index>-xxxxx`) and hostnames must stay DNS labels: 63 characters.
MAX_LABEL = 63
# CronJob names are limited to 52 characters (the controller appends 11).
MAX_CRONJOB_NAME = 52


class RenderError(SpecError):
    """The spec cannot become valid Kubernetes objects; one line, exit code 2."""


@dataclass(frozen=True)
class Names:
    """Object names of one job. The launcher, cluster client and local executor use these,
    never their own string formatting."""

    job: str
    configmap: str
    train: str
    evaluate: str
    service: str
    network_policy: str
    cronjob: str
    predict: str
    progress: str  # the Job and JobSet engines' progress ConfigMap, and its Role and RoleBinding

    def pod_hostname(self, index: int) -> str:
        """Hostname of a train pod of the Indexed Job (`<job>-<index>`)."""
        return f"{self.train}-{index}"

    def master_addr(self, job_name: str | None = None) -> str:
        """DNS name of rank 0's pod through the headless Service."""
        return f"{job_name or self.train}-0.{self.service}"


def names(spec: JobSpec) -> Names:
    """The object names of `spec`'s job; RenderError when one would exceed a Kubernetes limit."""
    name = spec.name
    # A Service name must be a DNS-1035 label (start with a letter).
    service = f"{name}-workers" if name[0].isalpha() else f"kt-{name}-workers"
    out = Names(
        job=name,
        configmap=f"{name}-spec",
        train=f"{name}-train",
        evaluate=f"{name}-evaluate",
        service=service,
        network_policy=name,
        cronjob=f"{name}-train",
        predict=f"{name}-predict",
        progress=f"{name}-progress",
    )
    for value in (out.configmap, out.train, out.evaluate, out.service, out.pod_hostname(spec.resources.max_nodes - 1)):
        if len(value) > MAX_LABEL:
            raise RenderError(f"name: {name!r} is too long: {value!r} exceeds {MAX_LABEL} characters")
    if len(out.cronjob) > MAX_CRONJOB_NAME:
        raise RenderError(f"name: {name!r} is too long for a CronJob ({MAX_CRONJOB_NAME} characters)")
    return out


_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}),
    ("day of week", 0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}),
)


def validate_schedule(schedule: str) -> str:
    """A standard 5-field cron expression (or @daily-style macro), as the CronJob controller
    parses it; one-line SpecError naming the bad field otherwise."""
    text = " ".join(schedule.split())
    if text.lower() in _CRON_MACROS:
        return text
    if text.upper().startswith(("TZ=", "CRON_TZ=")):
        raise SpecError(f"--schedule {schedule!r}: time zones are not allowed in the schedule (it runs in UTC)")
    fields = text.split(" ")
    if len(fields) != 5:
        raise SpecError(
            f"--schedule {schedule!r}: expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    for value, (what, low, high, words) in zip(fields, _CRON_FIELDS):
        for item in value.split(","):
            if not _cron_item_ok(item.lower(), low, high, words, what):
                raise SpecError(f"--schedule {schedule!r}: bad {what} field {value!r} (allowed {low}-{high})")
    return text


def _cron_item_ok(item: str, low: int, high: int, words: dict[str, int], what: str) -> bool:
    match = re.fullmatch(r"(\*|\?|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?", item)
    if not match:
        return False
    base, step = match.group(1), match.group(2)
    if step is not None and int(step) == 0:
        return False
    if base == "?":
        return what in ("day of month", "day of week")
    if base == "*":
        return True
    bounds = []
    for part in base.split("-"):
        if part.isdigit():
            bounds.append(int(part))
        elif part in words:
            bounds.append(words[part])
        else:
            return False
    return all(low <= b <= high for b in bounds) and bounds == sorted(bounds)

