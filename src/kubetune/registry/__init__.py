"""A job's model registry in the store, next to its runs: numbered versions, CURRENT, history.

Used by both sides: the workload's retrain entrypoint promotes, the launcher's `kubetune
models` verbs list, show and roll back. So it imports only the contract and `storage` (no
torch, no workload). No extra service: the store's own atomic operations carry it.

What is stored under `registry/<job>/` (names from `contract.layout.RegistryLayout`):

* `versions/vNNNN/version.json`: one object per version (run, model folder, gate metrics,
  lineage). A version exists exactly when this object does, and it is one atomic write, so a
  reader never sees half a version; the number is claimed with an exclusive create, so two
  writers never share one.
* `pointers/NNNNNNNN.json`: every move of CURRENT (promote, rollback) is the exclusive create
  of the next generation. This is the compare-and-swap: of two promotions decided against the
  same CURRENT, exactly one creates the next generation; the other learns that CURRENT moved
  and records that it was not promoted. A crash before this create leaves CURRENT as it was.
* `CURRENT`: the newest pointer, written atomically last for people and other tools. It may
  lag by a generation after a crash; `current()` follows newer pointers, so it never does.
* `history/<time>-<uuid>.json`: one object per decision, promote or not, and per rollback.
  Never overwritten, so concurrent writers cannot lose an entry.

Exclusive create: S3 `PutObject` with `If-None-Match: *` (s3fs `mode="create"`); a local
folder: `os.link` of a finished temporary file, which POSIX makes atomic and exclusive.
Written by hand because fsspec has no portable compare-and-swap; these two calls are it.
"""

from __future__ import annotations

import json
import posixpath
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kubetune.contract.errors import UserError
from kubetune.contract.layout import RegistryLayout, RunLayout, version_name, version_number
from kubetune.contract.model_ref import CURRENT_REF, check_model_ref
from kubetune.integrity import summary, verify_committed
from kubetune.storage import Store


class RegistryError(UserError):
    """A registry operation the store's contents do not allow (exit code 2)."""


@dataclass(frozen=True)
class Promotion:
    """The outcome of `promote`: whether CURRENT moved, and to which version."""

    promoted: bool
    version: str | None
    reason: str


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def create_exclusive(store: Store, rel: str, data: Any) -> bool:
    """Write `data` as JSON to `rel` only if it does not exist yet; False when another writer
    was first (`Store.create_exclusive`)."""
    return store.create_exclusive(rel, json.dumps(data, indent=2, sort_keys=True) + "\n")


class Registry:
    """One job's registry in one store."""

    def __init__(self, store: Store, job: str):
        self.store = store
        self.job = job
        self.layout = RegistryLayout(job)

    # -- reading -------------------------------------------------------------------------------
    def current(self) -> dict[str, Any] | None:
        """The newest pointer ({generation, version, run, ...}), or None before the first
        promotion. Starts at CURRENT and follows any newer generation a crashed writer left."""
        pointer = self.store.read_json(self.layout.current) if self.store.exists(self.layout.current) else None
        generation = pointer["generation"] if pointer else 0
        while self.store.exists(self.layout.pointer(generation + 1)):
            generation += 1
            pointer = self.store.read_json(self.layout.pointer(generation))
        return pointer

    def version_names(self) -> list[str]:
        names = [n for n in self.store.list_dirs(self.layout.versions) if version_number(n) is not None]
        return [n for n in sorted(names, key=lambda n: version_number(n) or 0)
                if self.store.exists(self.layout.version(n))]

    def version(self, name: str) -> dict[str, Any]:
        if version_number(name) is None or not self.store.exists(self.layout.version(name)):
            known = ", ".join(self.version_names()) or "none"
            raise RegistryError(f"{self.store.url(self.layout.versions)}: no version {name!r} (versions: {known})")
        return self.store.read_json(self.layout.version(name))

    def versions(self) -> list[dict[str, Any]]:
        return [self.version(n) for n in self.version_names()]

    def history(self) -> list[dict[str, Any]]:
        base = self.store.path(self.layout.history)
        if not self.store.fs.exists(base):
            return []
        names = sorted(posixpath.basename(p) for p in self.store.fs.ls(base, detail=False, refresh=True))
        return [self.store.read_json(f"{self.layout.history}/{n}") for n in names if n.endswith(".json")]

    def model_run(self, ref: str) -> RunLayout:
        """The run whose model a `--model` reference means: `current`, a version `vNNNN`, or a
        run name."""
        return self.resolve(ref)[0]

    def resolve(self, ref: str) -> tuple[RunLayout, str | None]:
        """A `--model` reference as (run, registry version or None for a plain run name)."""
        check_model_ref(ref)
        if ref == CURRENT_REF:
            pointer = self.current()
            if pointer is None:
                raise RegistryError(f"--model current: {self.store.url(self.layout.base)}: no current version yet "
                                    "(nothing promoted)")
            return RunLayout(pointer["run"]), pointer["version"]
        if version_number(ref) is not None:
            return RunLayout(self.version(ref)["run"]), ref
        return RunLayout(ref), None

    # -- writing -------------------------------------------------------------------------------
    def record(self, entry: dict[str, Any]) -> None:
        """Append one history entry (its own object: concurrent writers lose nothing)."""
        entry = {"time": now(), "job": self.job, **entry}
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{time.time_ns() % 10**9:09d}-{uuid.uuid4().hex[:8]}.json"
        create_exclusive(self.store, f"{self.layout.history}/{name}", entry)

    def _register(self, record: dict[str, Any]) -> str:
        """Claim the next free version number for `record`; returns its name."""
        numbers = [version_number(n) or 0 for n in self.version_names()]
        number = max(numbers, default=0) + 1
        while True:
            name = version_name(number)
            if create_exclusive(self.store, self.layout.version(name), {**record, "version": name}):
                return name
            number += 1

    def _move(self, base: dict[str, Any] | None, pointer: dict[str, Any]) -> dict[str, Any] | None:
        """Compare-and-swap CURRENT from `base` to `pointer`; the new pointer, or None when
        another writer moved it first. CURRENT (the mirror) is written last."""
        generation = (base["generation"] if base else 0) + 1
        pointer = {**pointer, "generation": generation, "previous": base["version"] if base else None, "time": now()}
        if not create_exclusive(self.store, self.layout.pointer(generation), pointer):
            return None
        self.store.write_json(self.layout.current, pointer)
        return pointer

    def check_model(self, run: str) -> None:
        """Refuse a run without a committed model, or whose model files do not match its
        COMMITTED marker (every file read back and hashed: `kubetune.integrity`)."""
        model = RunLayout(run).model
        if not self.store.is_committed(model):
            raise RegistryError(f"{self.store.url(model)}: no committed model to promote")
        problems = verify_committed(self.store, model)
        if problems:
            raise RegistryError(f"{self.store.url(model)}: not promoted: its files do not match its "
                                f"COMMITTED marker ({summary(problems)})")

    def promote(self, run: str, decision: dict[str, Any], base: dict[str, Any] | None, action: str = "promote") -> Promotion:
        """Make `run`'s model a new version and CURRENT, if CURRENT is still `base` (the
        pointer the decision compared against). Records the outcome in the history either way."""
        self.check_model(run)
        lineage_rel = RunLayout(run).lineage
        lineage = self.store.read_json(lineage_rel) if self.store.exists(lineage_rel) else None
        record = {"run": run, "model": RunLayout(run).model, "created": now(), "decision": decision,
                  "lineage": lineage, "parent": base["version"] if base else None}
        name = self._register(record)
        moved = self._move(base, {"version": name, "run": run, "action": action})
        if moved is None:
            reason = f"registered as {name} but not promoted: CURRENT moved while deciding (compare again)"
            self.record({"action": action, "run": run, "version": name, "promoted": False, "reason": reason,
                         "decision": decision})
            return Promotion(False, name, reason)
        self.record({"action": action, "run": run, "version": name, "promoted": True, "generation": moved["generation"],
                     "previous": moved["previous"], "reason": decision.get("reason", action), "decision": decision})
        return Promotion(True, name, decision.get("reason", action))

    def reject(self, run: str, decision: dict[str, Any]) -> None:
        """Record a candidate that was not promoted (CURRENT does not move)."""
        self.record({"action": "promote", "run": run, "version": None, "promoted": False,
                     "reason": decision.get("reason"), "decision": decision})

    def rollback(self, to: str | None = None) -> dict[str, Any]:
        """Point CURRENT back at `to`, or at the version in use before the current one."""
        base = self.current()
        if base is None:
            raise RegistryError(f"{self.store.url(self.layout.base)}: nothing to roll back (no current version)")
        target = to or base.get("previous")
        if target is None:
            raise RegistryError(f"{self.store.url(self.layout.base)}: no earlier version to roll back to "
                                f"(current is {base['version']}, the first)")
        if target == base["version"]:
            raise RegistryError(f"--to: {target} is already the current version")
        record = self.version(target)
        moved = self._move(base, {"version": target, "run": record["run"], "action": "rollback"})
        if moved is None:
            raise RegistryError("CURRENT moved during the rollback (a concurrent promotion); run it again")
        self.record({"action": "rollback", "version": target, "run": record["run"], "promoted": True,
                     "generation": moved["generation"], "previous": base["version"],
                     "reason": f"rollback from {base['version']} to {target}"})
        return moved
