"""A reader that closes the pipe early (`kubetune runs | head`) ends the command quietly, with
a shell's code for a process the pipe stopped, not a BrokenPipeError traceback (issue 28,
point 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [["validate", "jobs/quickstart.yaml"], ["runs", "--store", "{store}"]])
def test_a_closed_pipe_ends_the_command_quietly(tmp_path, args):
    store = tmp_path / "store"
    for name in ("alpha", "beta"):  # two runs in the store, so `runs` prints a table
        (store / "runs" / name).mkdir(parents=True)
        (store / "runs" / name / "spec.yaml").write_text(
            (REPO / "jobs" / "quickstart.yaml").read_text().replace("name: quickstart", f"name: {name}"))
    argv = [sys.executable, "-m", "kubetune.cli.main", *[a.format(store=store) for a in args]]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command prints its first line
    proc = subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120)
    os.close(write)
    assert proc.returncode == 128 + signal.SIGPIPE, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


def test_an_open_pipe_still_gets_everything():
    proc = subprocess.run([sys.executable, "-m", "kubetune.cli.main", "validate", "jobs/quickstart.yaml"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("name: quickstart"), proc.stderr


# The verbs that only read (a store, a registry or a cluster): each prints for people and, with
# --json, for scripts (issue 28, point 5).
READ_VERBS = (["runs"], ["show"], ["status"], ["list"], ["models", "list"], ["models", "show"])


def test_every_read_verb_takes_json():
    from kubetune.cli.main import build_parser

    def subparser(parser, name):
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        return action.choices[name]

    for verb in READ_VERBS:
        parser = build_parser()
        for word in verb:
            parser = subparser(parser, word)
        assert "--json" in parser._option_string_actions, f"kubetune {' '.join(verb)} has no --json"
