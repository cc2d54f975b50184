"""The `retrain:` and `promotion:` sections: when a scheduled run trains, and when its model
replaces the one in use (docs/retraining.md).

In the contract because both sides read them: the workload's retrain entrypoint decides with
them, the launcher's `kubetune models promote` records a manual decision against the same
gate. pydantic only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kubetune.contract.spec.kubernetes import Strict


class RetrainSpec(Strict):
    """What a retrain run (the CronJob pod, `kubetune retrain --local`) does before training."""

    when: Literal["changed", "always"] = Field(
        default="changed",
        description="changed: skip training when the resolved data equals the current version's; always: train anyway",
    )
    init: Literal["pretrained", "current"] = Field(
        default="pretrained", description="current: warm-start the candidate from the current version's model"
    )


class GuardSpec(Strict):
    """One more metric that must hold for a candidate to be promoted."""

    metric: str = Field(min_length=1, description="a gate metric, e.g. accuracy, f1_macro or f1_class_<label>")
    min: float | None = Field(default=None, description="absolute floor for the candidate")
    max_drop: float | None = Field(default=None, ge=0, description="largest allowed drop against the current model")

    @model_validator(mode="after")
    def _one_rule(self) -> "GuardSpec":
        if self.min is None and self.max_drop is None:
            raise ValueError("a guard needs min or max_drop")
        return self


class PromotionSpec(Strict):
    """The gate a candidate must pass to become the current version."""

    metric: str = Field(default="accuracy", min_length=1, description="gate metric; higher is better")
    min_delta: float = Field(default=0.0, ge=0, description="how much the candidate must beat the current model by")
    gate_data: str | None = Field(default=None, description="data both models are scored on; default data.test")
    guards: list[GuardSpec] = Field(
        default_factory=list, description="more metrics that must hold: each a floor (min) or a largest drop (max_drop)"
    )
    min: dict[str, float] = Field(
        default_factory=dict, description="absolute floors (metric -> value); the first version must pass them"
    )
