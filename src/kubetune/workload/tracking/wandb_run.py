"""Weights & Biases, from the spec's `tracking.wandb`: one W&B run per kubetune run, across resumes.

The Hugging Face Trainer's `WandbCallback` logs every logging step and evaluation. kubetune
calls `wandb.init` itself first, with the run id stored with the first checkpoint (a resumed
pod passes the same id with `resume="allow"`, so W&B continues that run) and the spec's fields
as config, screened for secrets; the callback then logs into that run. The callback also adds
the `TrainingArguments` to the config (its `to_dict` masks the `*_token` fields; kubetune puts
no credential into them). A sweep's trial's run is in the sweep's group (the job's name), with
job type `trial` and the sweep's tags (`wandb_init_arguments`), so W&B's "group by" shows a
sweep's trials together. The API key is only ever the environment's WANDB_API_KEY (a Secret
by reference on a cluster); without one, and without WANDB_MODE=offline, the run stops before
the model loads with one line.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from kubetune.contract import names as kn
from kubetune.contract.errors import UserError
from kubetune.contract.spec.job import JobSpec
from kubetune.workload.stages.run import PodEnv, Run
from kubetune.workload.tracking.run_ids import remember_run_id, spec_params, stored_run_ids, sweep_of

# WANDB_MODE values that need no API key: files written locally, or nothing at all.
KEYLESS_MODES = ("offline", "disabled", "dryrun")


def check_wandb(env: PodEnv) -> None:
    """Before the model loads: the library is installed, and a key is there (in the pod's
    environment, `env`) unless the user chose a mode that needs none."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise UserError("tracking.wandb: needs the wandb package: pip install 'kubetune[tracking]'") from None
    if env.wandb_mode not in KEYLESS_MODES and not env.wandb_api_key_set:
        raise UserError(f"tracking.wandb: {kn.ENV_WANDB_API_KEY} is not set: map it from a Secret "
                        f"(kubernetes.secret_env: {{{kn.ENV_WANDB_API_KEY}: {{secret: NAME, key: KEY}}}}), "
                        f"export it for --local, or set {kn.ENV_WANDB_MODE}=offline")


def wandb_init_arguments(spec: JobSpec, env: PodEnv, run_id: str, folder: str) -> dict[str, Any]:
    """`wandb.init`'s arguments for this run: the run id to resume by, the spec's screened
    fields as config and, for a sweep's trial, the sweep as its group, `trial` as its job type
    and the sweep's tags (`kubetune.sweep=<job>`, `kubetune.trial=<n>`)."""
    config = spec.tracking.wandb
    arguments: dict[str, Any] = {"project": config.project, "entity": config.entity, "id": run_id,
                                 "resume": "allow", "name": spec.name, "dir": folder, "config": spec_params(spec)}
    sweep = sweep_of(env)
    if sweep:
        arguments.update(group=env.sweep, job_type="trial", tags=[f"{k}={v}" for k, v in sweep.items()])
    return arguments


def wandb_callbacks(run: Run) -> list[Any]:
    """Open (or resume) the W&B run and return the Trainer callbacks that log into it."""
    import wandb
    from transformers import TrainerCallback
    from transformers.integrations import WandbCallback

    config = run.spec.tracking.wandb
    os.environ.setdefault(kn.ENV_WANDB_PROJECT, config.project)  # what WandbCallback reads
    if config.entity:
        os.environ.setdefault(kn.ENV_WANDB_ENTITY, config.entity)
    folder = str(run.env.wandb_dir or run.workdir)  # a pod: the rendered cache folder
    os.environ[kn.ENV_WANDB_DIR] = folder  # wandb's own default, as given to init below
    os.makedirs(folder, exist_ok=True)
    stored = stored_run_ids(run.store, run.layout).get("wandb")
    run_id = stored or uuid.uuid4().hex[:12]  # wandb's own id generator is not public API
    wandb.init(**wandb_init_arguments(run.spec, run.env, run_id, folder))
    print(f"kubetune: wandb: {'continuing' if stored else 'started'} run {run_id} in project {config.project!r}",
          flush=True)
    store, layout = run.store, run.layout

    class WandbRunKeeper(TrainerCallback):
        """Stores the run id with the first checkpoint; finishes the W&B run when training ends."""

        def on_save(self, args, state, control, **kwargs):
            remember_run_id(store, layout, "wandb", run_id)

        def on_train_end(self, args, state, control, **kwargs):
            wandb.finish()

    return [WandbCallback(), WandbRunKeeper()]
