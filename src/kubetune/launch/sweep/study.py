"""The sweep's Optuna study, kept in the store: a restarted controller continues it.

The study is an Optuna `JournalStorage` (the log of every operation, replayed on load) over a
backend of our own, `StoreJournal`: each batch of operations the study appends is one object
`sweeps/<job>/study/<first log number>.json`, created exclusively. Why not Optuna's
`JournalFileBackend`: it appends to one local file under POSIX locks, which an object store
(S3) has neither of; why not a journal file synced to the store: a controller killed between a
change and its sync would lose that change. Objects created exclusively are atomic on every
store (`Storage.create_exclusive`), never rewritten, and a second controller on the same sweep
fails its first write instead of interleaving with the first one.

Also here: the `sweep:` section's names mapped to Optuna's samplers, pruners and distributions
(names to factories, never dotted paths from YAML).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.storages.journal import BaseJournalBackend, JournalStorage

from kubetune.contract.errors import UserError
from kubetune.contract.layout import SweepLayout
from kubetune.contract.spec.sweep import ParameterSpec, SweepSpec
from kubetune.storage import Store


class StoreJournal(BaseJournalBackend):
    """Optuna's journal as immutable objects in the store (see the module's docstring). One
    controller writes; the objects already read are kept in memory."""

    def __init__(self, store: Store, layout: SweepLayout):
        self.store = store
        self.layout = layout
        self._logs: list[dict[str, Any]] = []

    def _load_new(self) -> None:
        while self.store.exists(self.layout.journal_entry(len(self._logs))):
            batch = self.store.read_json(self.layout.journal_entry(len(self._logs)))
            if not batch:
                break
            self._logs.extend(batch)

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        self._load_new()
        return list(self._logs[log_number_from:])

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._load_new()
        if not self.store.create_exclusive(self.layout.journal_entry(len(self._logs)), json.dumps(logs)):
            raise UserError(f"{self.store.url(self.layout.journal)}: another controller is writing this sweep's "
                            "study; stop it first (one controller per sweep)")
        self._logs.extend(logs)


def open_study(store: Store, job: str, sweep: SweepSpec) -> optuna.Study:
    """The sweep's study, created on the first start and loaded on every later one."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(StoreJournal(store, SweepLayout(job)))
    study = optuna.create_study(
        study_name=job,
        storage=storage,
        load_if_exists=True,
        direction=sweep.objective.direction,
        sampler=make_sampler(sweep),
        pruner=make_pruner(sweep),
    )
    # A restarted controller's sampler must not replay the first one's random stream (a seeded
    # random or TPE sampler would propose trial 0's values again): its seed moves on by the
    # number of trials the study already holds, so `seed` still makes a whole sweep repeatable.
    started = len(study.get_trials(deepcopy=False))
    if started and sweep.seed is not None:
        study.sampler = make_sampler(sweep, seed=sweep.seed + started)
    return study


def distributions(sweep: SweepSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """Each parameter of the space as Optuna's distribution."""
    return {name: _distribution(p) for name, p in sweep.parameters.items()}


def _distribution(p: ParameterSpec) -> optuna.distributions.BaseDistribution:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.type == "categorical":
        return CategoricalDistribution(p.choices or [])
    if p.type == "int":
        return IntDistribution(int(p.low), int(p.high), step=p.step or 1, log=p.log)  # type: ignore[arg-type]
    return FloatDistribution(float(p.low), float(p.high), log=p.type == "loguniform")  # type: ignore[arg-type]


def grid_size(sweep: SweepSpec) -> int:
    size = 1
    for values in _grid(sweep).values():
        size *= len(values)
    return size


def _grid(sweep: SweepSpec) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for name, p in sweep.parameters.items():
        if p.type == "categorical":
            grid[name] = list(p.choices or [])
        else:  # int (the spec allows nothing else with grid)
            grid[name] = list(range(int(p.low), int(p.high) + 1, p.step or 1))  # type: ignore[arg-type]
    return grid


class SweepGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its own stop: once the grid is spent it calls
    `Study.stop`, which raises outside `Study.optimize` (the controller uses ask and tell).
    The controller's budget is at most the grid's size (`controller.budget`), so nothing more
    is needed to end the sweep."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: D102 (see the class)
        return None


def make_sampler(sweep: SweepSpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """sweep.sampler -> Optuna's sampler: tpe (with a constant liar when trials run at once,
    so parallel trials spread out), random, or grid over every combination (the grid skips
    the combinations the study has already run). `seed`: instead of sweep.seed."""
    seed = sweep.seed if seed is None else seed
    if sweep.sampler == "grid":
        return SweepGridSampler(_grid(sweep), seed=seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=sweep.parallel > 1)


def make_pruner(sweep: SweepSpec) -> optuna.pruners.BasePruner:
    """sweep.pruner -> Optuna's pruner: median, asha (successive halving; its rungs in steps),
    or none."""
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner_startup_trials,
                                           n_warmup_steps=sweep.pruner_warmup_steps)
    if sweep.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(sweep.pruner_warmup_steps, 1),
                                                      reduction_factor=sweep.asha_reduction_factor)
    return optuna.pruners.NopPruner()
