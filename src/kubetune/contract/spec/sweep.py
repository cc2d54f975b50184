"""The `sweep:` section of a job spec: a hyperparameter search run as a batch of ordinary runs
(docs/sweeps.md).

In the contract because both sides must agree on it: the launcher's sweep controller reads the
search space, objective and budget; the workload reads nothing of it (a trial is the job's spec
with the trial's values written in, and no `sweep:` section), but the objective must be a
metric the task reports on the validation split, which `VALIDATION_METRICS` states here once
(a test holds it to each workload task's `metric_names`). pydantic only.

Which fields a sweep may set (`SWEEPABLE_SECTIONS`): the leaf fields of `train:` and
`generation:` (what a run computes), except the operational ones (an attempt may change those
without becoming another run) and `train.metric`, which a trial sets to the objective so that
the model each trial keeps is the one its objective scored.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from kubetune.contract.spec.kubernetes import Strict

# The validation metrics each task reports (its Trainer's `eval_<metric>`), by task name.
VALIDATION_METRICS: dict[str, tuple[str, ...]] = {
    "text-classification": ("accuracy", "f1_macro", "loss"),
    "token-classification": ("f1", "precision", "recall", "accuracy", "loss"),
    "question-answering": ("f1", "exact_match", "loss"),
    "seq2seq": ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len", "loss"),
    "causal-lm": ("loss", "perplexity"),
}
SWEEPABLE_SECTIONS = ("train", "generation")
# Set by the sweep itself for each trial, or how a run is kept rather than what it computes.
NOT_SWEEPABLE = frozenset({"train.metric", "train.keep_checkpoints", "train.keep_checkpoints_after_success",
                           "train.max_restarts", "train.collective_timeout_seconds"})
# A trial's run folder is `<job name>-tNNN`, and object names add to it: the job name must
# leave room for the suffix within the 40 characters a name may have (job.MAX_NAME_LENGTH).
TRIAL_SUFFIX_LENGTH = 5

ParamValue = str | int | float | bool


class ParameterSpec(Strict):
    """One dimension of the search space: a range (`loguniform`, `uniform`, `int`) or a list
    of choices (`categorical`)."""

    type: Literal["loguniform", "uniform", "int", "categorical"] = Field(
        description="loguniform/uniform: a float in [low, high]; int: an integer in [low, high]; categorical: one of choices"
    )
    low: float | int | None = Field(default=None, description="the range's lower end (loguniform: > 0)")
    high: float | int | None = Field(default=None, description="the range's upper end; must be above low")
    step: int | None = Field(default=None, gt=0, description="int: the spacing of the values (default 1)")
    log: bool = Field(default=False, description="int: sample on a log scale")
    choices: list[ParamValue] | None = Field(default=None, description="categorical: the values to choose from")

    @model_validator(mode="after")
    def _shape(self) -> "ParameterSpec":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty list of choices")
            if self.low is not None or self.high is not None:
                raise ValueError("categorical takes choices, not low/high")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low and high, not choices")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs low and high")
        if self.type == "int" and not (isinstance(self.low, int) and isinstance(self.high, int)):
            raise ValueError("int needs integer low and high")
        if self.low >= self.high:
            raise ValueError(f"empty range: low {self.low} is not below high {self.high}")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0 (got {self.low})")
        return self

    def bounds(self) -> list[ParamValue]:
        """The values whose validity stands for the whole dimension: every choice, or both ends
        (and, for a float range, a fractional value inside it: a float range on an integer field
        fails there)."""
        if self.type == "categorical":
            return list(self.choices or [])
        ends: list[ParamValue] = [self.low, self.high]  # type: ignore[list-item]
        return ends if self.type == "int" else [*ends, (float(self.low) + float(self.high)) / 2 + 1e-9]  # type: ignore[arg-type]


class ObjectiveSpec(Strict):
    """What a trial is scored by: a validation metric of the task, and which way is better."""

    metric: str = Field(min_length=1, description="a validation metric the task reports, e.g. accuracy, f1, loss")
    direction: Literal["maximize", "minimize"] = Field(description="maximize (accuracy, f1) or minimize (loss)")


class SweepSpec(Strict):
    """A hyperparameter search: trials of this job with values from `parameters`, scored by
    `objective`, searched by Optuna (docs/sweeps.md)."""

    parameters: dict[str, ParameterSpec] = Field(
        min_length=1, description="spec field (train.learning_rate, train.lora.r, ...) -> its range or choices"
    )
    objective: ObjectiveSpec = Field(description="the validation metric a trial is scored by, and its direction")
    trials: int | None = Field(default=None, gt=0, description="how many trials in all (the budget; with or instead of timeout_minutes)")
    timeout_minutes: float | None = Field(
        default=None, gt=0, description="wall-clock budget: no trial starts after it (with or instead of trials)"
    )
    parallel: int = Field(default=1, gt=0, description="trials running at once (locally: processes; on a cluster: Jobs)")
    sampler: Literal["tpe", "random", "grid"] = Field(
        default="tpe", description="Optuna's sampler; grid needs every parameter categorical or int"
    )
    pruner: Literal["median", "asha", "none"] = Field(
        default="median",
        description="stop bad trials at their next checkpoint: median (below the median of finished trials at the "
        "same step), asha (successive halving), none",
    )
    pruner_startup_trials: int = Field(
        default=1, ge=0, description="median: finished trials needed before any trial is pruned"
    )
    pruner_warmup_steps: int = Field(
        default=0, ge=0, description="no pruning before this step (asha: its minimum resource, in steps; 0: 1)"
    )
    asha_reduction_factor: int = Field(default=3, ge=2, description="asha: the share of trials each rung keeps is 1/this")
    seed: int | None = Field(default=None, description="the sampler's seed (the same seed proposes the same trials)")
    promote: bool = Field(
        default=False, description="after the sweep, gate the best trial's model against CURRENT (the promotion gate)"
    )

    @model_validator(mode="after")
    def _budget_and_sampler(self) -> "SweepSpec":
        if self.trials is None and self.timeout_minutes is None:
            raise ValueError("sweep.trials: set a budget: trials, timeout_minutes or both")
        if self.sampler == "grid":
            ranged = [name for name, p in self.parameters.items() if p.type in ("loguniform", "uniform")]
            if ranged:
                raise ValueError(f"sweep.sampler: grid needs every parameter categorical or int "
                                 f"({ranged[0]} is {self.parameters[ranged[0]].type})")
        return self


def set_field(data: dict[str, Any], path: str, value: Any) -> None:
    """Write `value` at a dotted `path` of a spec mapping, making the sections on the way (as
    `--set` does, but with the value as it is, not parsed from text)."""
    *sections, leaf = path.split(".")
    node = data
    for part in sections:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def _field_model(model: type[BaseModel], path: str) -> tuple[bool, bool]:
    """(exists, is a leaf) of a dotted field path in the spec models."""
    from kubetune.contract.spec.loading import _section_model

    current: type[BaseModel] | None = model
    parts = path.split(".")
    for i, part in enumerate(parts):
        if current is None or part not in current.model_fields:
            return False, False
        current = _section_model(current.model_fields[part].annotation)
        if i < len(parts) - 1 and current is None:
            return False, False
    return True, current is None


def check_sweep(spec: BaseModel, job_model: type[BaseModel], task: str) -> None:
    """Everything about `spec.sweep` that needs the whole spec: each parameter names a field
    that exists and may be swept, every bound or choice makes a valid spec, the objective is a
    metric the task reports, the job name leaves room for the trials' suffix. Raises ValueError
    naming the field (one line: `format_errors` shows it as it is)."""
    sweep: SweepSpec = spec.sweep  # type: ignore[attr-defined]
    name: str = spec.name  # type: ignore[attr-defined]
    max_name = 40 - TRIAL_SUFFIX_LENGTH
    if len(name) > max_name:
        raise ValueError(f"name: a job with a sweep must be at most {max_name} characters (its trials are <name>-tNNN)")
    metrics = VALIDATION_METRICS[task]
    if sweep.objective.metric.removeprefix("eval_") not in metrics:
        raise ValueError(f"sweep.objective.metric: {task} reports no validation metric "
                         f"{sweep.objective.metric!r} (choose: {', '.join(metrics)})")
    base = spec.model_dump(mode="json")
    base.pop("sweep", None)
    for path, param in sweep.parameters.items():
        where = f"sweep.parameters.{path}"
        exists, leaf = _field_model(job_model, path)
        if not exists:
            raise ValueError(f"{where}: no such spec field")
        if path.split(".")[0] not in SWEEPABLE_SECTIONS or path in NOT_SWEEPABLE or not leaf:
            raise ValueError(f"{where}: cannot be swept (only the leaf fields of "
                             f"{' and '.join(SWEEPABLE_SECTIONS)} that define what a run computes)")
        parent = path.rpartition(".")[0]
        if _get(base, parent) is None:
            raise ValueError(f"{where}: {parent} is not set in the spec (set it, then sweep its fields)")
        for value in param.bounds():
            _check_value(base, path, value, where, job_model)


def _get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _check_value(base: dict[str, Any], path: str, value: Any, where: str, job_model: type[BaseModel]) -> None:
    data = copy.deepcopy(base)
    set_field(data, path, value)
    try:
        job_model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        loc = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {value!r} makes an invalid spec ({loc + ': ' if loc else ''}{message})") from None

