"""The promotion gate: given a candidate's and the current model's scores on the same gate data,
promote or not, and say why (docs/retraining.md).

Pure (numbers in, a decision out), so the retrain entrypoint and `kubetune models promote`
decide identically, and the tests can state the rule directly.
"""

from __future__ import annotations

import math
from typing import Any

from kubetune.contract.errors import UserError
from kubetune.contract.spec.retrain import PromotionSpec


class GateError(UserError):
    """The gate asks for a metric the scores do not have (exit code 2)."""


def _value(scores: dict[str, Any], metric: str, field: str, known: str) -> float:
    value = scores.get(metric)
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        numeric = sorted(k for k, v in scores.items() if isinstance(v, (int, float)))
        raise GateError(f"{field}: the task does not produce metric {metric!r} on the {known} "
                        f"(it has: {', '.join(numeric)})")
    return float(value)


def _failure(check: dict[str, Any]) -> str:
    """A failed check with its two numbers (`min accuracy 0.4750 < 0.5000`), so a refusal says
    by how much without a look into the history."""
    if check["check"].endswith("max_drop"):
        return f"{check['check']} (dropped {check['value']:.4f} > {check['limit']:.4f})"
    return f"{check['check']} ({check['value']:.4f} < {check['limit']:.4f})"


def decide(promotion: PromotionSpec, candidate: dict[str, Any], current: dict[str, Any] | None,
           current_version: str | None = None) -> dict[str, Any]:
    """The decision as data: `promote`, `reason`, the numbers compared and each check's result.
    "Beats" is strict: the candidate must be higher by more than nothing and by at least
    `min_delta`, so an identical retrain never churns the version."""
    metric = promotion.metric
    cand = _value(candidate, metric, "promotion.metric", "gate data")
    checks: list[dict[str, Any]] = []
    for name, floor in sorted(promotion.min.items()):
        value = _value(candidate, name, f"promotion.min.{name}", "gate data")
        checks.append({"check": f"min {name}", "value": value, "limit": floor, "ok": value >= floor})
    cur = _value(current, metric, "promotion.metric", "current model's gate scores") if current is not None else None
    for guard in promotion.guards:
        value = _value(candidate, guard.metric, "promotion.guards", "gate data")
        if guard.min is not None:
            checks.append({"check": f"guard {guard.metric} min", "value": value, "limit": guard.min,
                           "ok": value >= guard.min})
        if guard.max_drop is not None and current is not None:
            before = _value(current, guard.metric, "promotion.guards", "current model's gate scores")
            checks.append({"check": f"guard {guard.metric} max_drop", "value": before - value,
                           "limit": guard.max_drop, "ok": before - value <= guard.max_drop})
    failed = [_failure(c) for c in checks if not c["ok"]]
    delta = None if cur is None else cand - cur
    if failed:
        promote, reason = False, f"failed {', '.join(failed)}"
    elif cur is None:
        promote, reason = True, f"first version: {metric} {cand:.4f} passes the floors"
    elif delta is not None and delta > 0 and delta >= promotion.min_delta:
        promote, reason = True, f"{metric} {cand:.4f} beats {current_version} {cur:.4f} by {delta:+.4f}"
    else:
        promote, reason = False, (f"{metric} {cand:.4f} does not beat {current_version} {cur:.4f} "
                                  f"by at least {promotion.min_delta} (delta {delta:+.4f})")
    return {"promote": promote, "reason": reason, "metric": metric, "candidate_value": cand,
            "current_value": cur, "delta": delta, "current_version": current_version, "checks": checks,
            "candidate": candidate, "current": current}
