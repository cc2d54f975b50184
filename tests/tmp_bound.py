"""A bound on what a failed session leaves under pytest's temporary folder (issue 28, point 6).

With `tmp_path_retention_policy = "failed"` pytest removes a passed test's `tmp_path` at once,
but after any failure it keeps the whole session folder: the failed tests' folders and every
module's and session's `mktemp` folder (stores holding MiniLM copies, checkpoints, optimizer
states). One failed run left 3.2 GB. After the session, this hook removes the largest files
first (weights, checkpoints, data copies) until the folder holds at most KEPT_TMP_MB; the
logs, specs and metrics a failure is read from are small and stay. It runs in each xdist
worker (its own folder) and then in the controller (the folder holding theirs), so the bound
holds for the whole run. pytest has no size-based retention of its own, hence this hook.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# What a session's temporary folder may still hold after it ended (docs/development.md).
KEPT_TMP_MB = 200
PRUNED_NOTE = "PRUNED-BY-CONFTEST.txt"


def prune(root: Path, limit_bytes: int) -> list[Path]:
    """Remove the largest files under `root` until their sizes add up to `limit_bytes` at most;
    returns what was removed (and notes it in PRUNED_NOTE, so a reader knows why it is gone)."""
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    sizes = {p: p.stat().st_size for p in files}
    total = sum(sizes.values())
    removed = []
    for path in sorted(files, key=sizes.__getitem__, reverse=True):
        if total <= limit_bytes:
            break
        path.unlink(missing_ok=True)
        total -= sizes[path]
        removed.append(path)
    if removed:
        (root / PRUNED_NOTE).write_text(f"{len(removed)} largest files removed after the session to keep "
                                        f"{KEPT_TMP_MB} MB at most (tests/tmp_bound.py)\n")
    return removed


@pytest.hookimpl(trylast=True)  # after pytest's own clean-up, which removes the folder when all passed
def pytest_sessionfinish(session: pytest.Session) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)  # None: no test asked for a temporary folder
    if basetemp is not None and Path(basetemp).is_dir():
        prune(Path(basetemp), KEPT_TMP_MB * 2**20 - 4096)  # room for the note
