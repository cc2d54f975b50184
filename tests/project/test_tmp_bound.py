"""A failed session's temporary folder stays under tmp_bound.KEPT_TMP_MB (issue 28, point 6):
a real inner pytest session whose failing test leaves a large checkpoint-sized file (sparse:
no disk is written) and a small log, with this suite's hook."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tmp_bound import KEPT_TMP_MB, PRUNED_NOTE, prune

TESTS = Path(__file__).resolve().parents[1]


def size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def sparse(path: Path, megabytes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.truncate(megabytes * 2**20)


def test_the_largest_files_go_first_and_small_ones_stay(tmp_path):
    sparse(tmp_path / "a" / "model.safetensors", 90)
    sparse(tmp_path / "b" / "optimizer.pt", 60)
    (tmp_path / "b" / "train.log").write_text("step 1\n")
    removed = prune(tmp_path, 100 * 2**20)
    assert [p.name for p in removed] == ["model.safetensors"]
    assert (tmp_path / "b" / "optimizer.pt").exists() and (tmp_path / "b" / "train.log").read_text() == "step 1\n"
    assert PRUNED_NOTE in os.listdir(tmp_path)
    assert prune(tmp_path, 100 * 2**20) == []  # under the bound: nothing more


def test_a_failed_sessions_folder_is_pruned_to_the_bound(tmp_path):
    (tmp_path / "conftest.py").write_text("from tmp_bound import pytest_sessionfinish  # noqa: F401\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(f"""
        def test_fails_after_writing_a_checkpoint(tmp_path, tmp_path_factory):
            for folder, name in ((tmp_path, "model.safetensors"), (tmp_path_factory.mktemp("store"), "weights.bin")):
                with (folder / name).open("wb") as handle:
                    handle.truncate({KEPT_TMP_MB} * 2**20)
            (tmp_path / "train.log").write_text("step 4: loss nan")
            assert False, "the failure a reader comes to see"
    """))
    basetemp = tmp_path / "basetemp"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", f"--basetemp={basetemp}",
         "-o", "tmp_path_retention_policy=failed", "test_inner.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])})
    assert result.returncode == 1 and "the failure a reader comes to see" in result.stdout, result.stdout[-3000:]
    assert size(basetemp) <= KEPT_TMP_MB * 2**20
    assert [p.read_text() for p in basetemp.rglob("train.log")] == ["step 4: loss nan"]
    assert (basetemp / PRUNED_NOTE).exists()
