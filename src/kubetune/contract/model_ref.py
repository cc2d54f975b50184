"""What `--model REF` may say (docs/retraining.md#using-a-registered-model---model): `current` (the
registry's CURRENT version), a version `vNNNN`, or a run's folder name under `runs/`.

Shared by the launcher, which checks a reference before it renders an evaluate or predict Job
(or runs one locally), and the registry, which resolves it in the pod: a mistyped reference
(`v12x`, `v12`, `../x`) is one line before anything is rendered or run, not a Job that fails
in its pod. Which stages take `--model` at all is stated here too (`check_model_stage`), so
`render`, `run --local` and `submit` refuse it with one line.
"""

from __future__ import annotations

import re

from kubetune.contract import names as kn
from kubetune.contract.errors import SpecError, UserError
from kubetune.contract.layout import version_name, version_number

# The registry's current version.
CURRENT_REF = "current"
# The stages that use a model made elsewhere; every stage that trains makes its own.
MODEL_STAGES: tuple[str, ...] = (kn.STAGE_EVALUATE, kn.STAGE_PREDICT)
# A run's folder name: what a Job name or a `<name>-<UTC time>` run folder is made of.
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def check_model_ref(ref: str) -> str:
    """`ref` if it is a model reference; a UserError naming `--model` otherwise."""
    if ref == CURRENT_REF:
        return ref
    if ref[:1] == "v" and ref[1:2].isdigit():  # meant as a version: it must be one
        number = version_number(ref)
        if number is None or version_name(number) != ref:
            hint = f" (did you mean {version_name(number)}?)" if number is not None else ""
            raise UserError(f"--model {ref}: not a version name like v0001{hint}")
        return ref
    if not _RUN_NAME.fullmatch(ref) or ".." in ref:
        raise UserError(f"--model {ref!r}: not a model reference: use current, a version like v0001, "
                        "or a run name (letters, digits, '.', '_', '-')")
    return ref


def check_model_stage(stage: str, ref: str | None) -> None:
    """Refuse `--model` with a stage that trains (train, all): the one rule and the one line for
    every verb that takes `--model` (a SpecError: exit 2 before anything is rendered or run)."""
    if ref is not None and stage not in MODEL_STAGES:
        raise SpecError(f"--model belongs to --stage {' or '.join(MODEL_STAGES)}, not {stage} "
                        "(training makes its own model)")
