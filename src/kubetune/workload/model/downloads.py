"""Download a folder once, atomically: into a temporary sibling, renamed into place, then marked.

Models, tokenized data and checkpoints are fetched into local folders that several processes
(ranks on one node, a restarted pod on the same cache volume) may look at concurrently. None
of them may ever see a half-written folder, so every downloader goes through `download_once`:
fill a fresh temporary folder next to the target, rename it onto the target (atomic on one
file system; a process that loses the race keeps the winner's copy), then mark it complete.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

COMPLETE_MARKER = ".complete"


def download_once(target: Path, fill: Callable[[Path], None],
                  is_complete: Callable[[Path], bool] | None = None) -> Path:
    """`target`, filled by `fill(folder)` unless already complete. Completeness is the
    COMPLETE_MARKER file inside the folder, or `is_complete(target)` when given (a folder whose
    contents say themselves whether they are whole, such as a checkpoint and its commit
    marker; no marker is written then)."""
    complete = is_complete or (lambda folder: (folder / COMPLETE_MARKER).exists())
    if target.is_dir() and complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # another process on this disk renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)
    if is_complete is None:
        (target / COMPLETE_MARKER).touch()
    return target
