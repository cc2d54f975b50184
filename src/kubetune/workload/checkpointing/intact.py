"""Which checkpoint a resume can trust: the one the resume rule picks, if its files match its
COMMITTED marker, else the newest older one that does (docs/recovery.md#verified-checkpoints).

A damaged checkpoint (a file missing, short or with another hash, an unreadable marker) is
reported in one line and set aside under `runs/<job>/damaged/` (rank 0 moves it; nothing is
deleted), so neither this resume nor a later one, nor `kubetune runs`, takes it again. Every rank
walks the same candidates in the same order and verifies its own copy, so all ranks land on the
same checkpoint without talking to each other: a folder rank 0 has moved away meanwhile is
simply no longer there for the others.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kubetune.contract.layout import RunLayout, checkpoint_name
from kubetune.integrity import DamagedError, set_aside
from kubetune.storage import Store
from kubetune.workload.checkpointing.protocol import committed_steps, fetch_checkpoint, find_resume_step


def resume_candidates(store: Store, layout: RunLayout) -> list[int]:
    """The committed checkpoints in the order a resume tries them: the resume rule's pick
    (`protocol.find_resume_step`), then every other committed one, newest first."""
    first = find_resume_step(store, layout)
    if first is None:
        return []
    return [first] + [step for step in reversed(committed_steps(store, layout)) if step != first]


def fetch_intact(store: Store, layout: RunLayout, local_root: Path, is_main: bool) -> tuple[int, Path] | None:
    """(step, verified local copy) of the newest intact checkpoint, setting aside each damaged
    one tried before it (`is_main`: this rank moves them); None when no checkpoint is intact."""
    candidates = resume_candidates(store, layout)
    for step in candidates:
        try:
            return step, fetch_checkpoint(store, layout, step, local_root)
        except DamagedError as exc:
            if is_main:
                report_damaged(store, layout, step, str(exc))
    if candidates and is_main:
        print("kubetune: warning: no intact checkpoint left: starting from the beginning", file=sys.stderr, flush=True)
    return None


def report_damaged(store: Store, layout: RunLayout, step: int, reason: str) -> str:
    """Set checkpoint `step` aside and say so in one line; returns where it went."""
    where = set_aside(store, layout.checkpoint(step), layout.damaged_checkpoint(step), reason)
    print(f"kubetune: warning: checkpoint {checkpoint_name(step)} is damaged ({reason}); set aside as "
          f"{store.url(where)}; trying the one before it", file=sys.stderr, flush=True)
    return where
